"""The console's pages in-process (the real app on a private database per test): the session and its
cookie, CSRF on every form, errors shown next to the field with nothing written, and no tenant reaching
another's data. The whole story in a real browser is tests/e2e/test_console_browser.py."""

from __future__ import annotations

import html
import re
import uuid

import psycopg
import pytest

from tests.support.api import ApiTenant, dispatch

CSRF = re.compile(r'name="_csrf" value="([^"]+)"')


def sign_in(client, credential: str) -> str:
    """Sign in through the form; the page's CSRF token for the forms that follow."""
    form = client.get("/console/login")
    token = CSRF.search(form.text).group(1)
    signed_in = client.post(
        "/console/login", data={"_csrf": token, "api_key": credential}, follow_redirects=False
    )
    assert signed_in.status_code == 303, signed_in.text
    return CSRF.search(client.get("/console/sequences").text).group(1)


def banner(response) -> list[str]:
    return [html.unescape(text) for text in re.findall(r'role="alert">([^<]+)<', response.text)]


def field_errors(response) -> dict[str, str]:
    found = re.findall(r'class="field-error" id="([\w-]+)-error">([^<]+)<', response.text)
    return {field: html.unescape(message) for field, message in found}


def new_sequence(client, csrf: str, **fields) -> str:
    data = {
        "_csrf": csrf,
        "name": "Cadence",
        "channel": "sms",
        "body": "Hi {{ contact.first_name }}",
    } | fields
    created = client.post("/console/sequences", data=data, follow_redirects=False)
    assert created.status_code == 303, banner(created)
    return created.headers["location"].split("?")[0]


def test_a_console_page_without_a_session_redirects_to_sign_in_and_back(client, tenant: ApiTenant):
    page = client.get("/console/tasks?tab=upcoming", follow_redirects=False)
    assert page.status_code == 303
    assert page.headers["location"] == "/console/login?next=/console/tasks%3Ftab%3Dupcoming"
    form = client.get(page.headers["location"])
    token = CSRF.search(form.text).group(1)
    assert 'name="next" value="/console/tasks?tab=upcoming"' in form.text
    signed_in = client.post(
        "/console/login",
        data={"_csrf": token, "api_key": tenant.key, "next": "/console/tasks?tab=upcoming"},
        follow_redirects=False,
    )
    assert signed_in.headers["location"] == "/console/tasks?tab=upcoming"
    cookie = signed_in.headers["set-cookie"]
    assert "drumbeat_console=" in cookie and "HttpOnly" in cookie and "samesite=lax" in cookie.lower()
    assert "Path=/console" in cookie and "Secure" not in cookie  # plain HTTP here; Secure over HTTPS
    assert tenant.key not in cookie  # sealed, not readable
    assert client.get("/console/tasks").status_code == 200


def test_sign_in_refuses_bad_credentials_a_missing_token_and_foreign_next_pages(client, tenant: ApiTenant):
    token = CSRF.search(client.get("/console/login").text).group(1)
    wrong = client.post("/console/login", data={"_csrf": token, "api_key": "dbk_not_a_key"})
    assert wrong.status_code == 401 and "unknown or revoked" in wrong.text
    token = CSRF.search(wrong.text).group(1)  # each form shown carries a new token
    empty = client.post("/console/login", data={"_csrf": token, "api_key": ""})
    assert empty.status_code == 422 and "enter an API key" in empty.text
    token = CSRF.search(empty.text).group(1)
    forged = client.post("/console/login", data={"_csrf": "forged", "api_key": tenant.key})
    token = CSRF.search(forged.text).group(1)
    assert forged.status_code == 403 and "drumbeat_console=" not in forged.headers.get("set-cookie", "")
    away = client.post(
        "/console/login",
        data={"_csrf": token, "api_key": tenant.key, "next": "https://evil.example/console/"},
        follow_redirects=False,
    )
    assert away.headers["location"] == "/console/sequences"


def test_a_jwt_signs_in_too(client, tenant: ApiTenant):
    token = CSRF.search(client.get("/console/login").text).group(1)
    jwt = tenant.user_headers["Authorization"].removeprefix("Bearer ")
    signed_in = client.post(
        "/console/login", data={"_csrf": token, "access_token": jwt}, follow_redirects=False
    )
    assert signed_in.status_code == 303
    assert "Acme" in client.get("/console/sequences").text


def test_every_form_needs_the_sessions_csrf_token_and_nothing_is_done_without_it(client, tenant: ApiTenant):
    csrf = sign_in(client, tenant.key)
    tenant.sender("sms")
    for data in ({}, {"_csrf": "someone-elses"}):
        refused = client.post("/console/sequences", data=data | {"name": "Forged", "body": "x"})
        assert refused.status_code == 403 and "did not come from this console" in refused.text
    assert tenant.get("/sequences").json()["total"] == 0
    new_sequence(client, csrf)
    assert tenant.get("/sequences").json()["total"] == 1


def test_pages_allow_only_their_own_origin(client, tenant: ApiTenant):
    sign_in(client, tenant.key)
    page = client.get("/console/sequences")
    policy = page.headers["content-security-policy"]
    assert (
        "default-src 'self'" in policy
        and "script-src 'self'" in policy
        and "frame-ancestors 'none'" in policy
    )
    assert page.headers["cache-control"] == "no-store"
    assert not re.search(r'(src|href)="(https?:)?//', page.text)
    assert client.get("/console/static/console.css").status_code == 200


def test_a_revoked_key_ends_its_session(client, tenant: ApiTenant, db_url):
    sign_in(client, tenant.key)
    with psycopg.connect(db_url) as conn:
        conn.execute("UPDATE drumbeat.api_keys SET revoked_at = now()")
    page = client.get("/console/sequences", follow_redirects=False)
    assert page.status_code == 303 and "reason=signed%20out" in page.headers["location"]


def test_builder_shows_day_numbers_and_puts_errors_next_to_their_field(client, tenant: ApiTenant):
    csrf = sign_in(client, tenant.key)
    tenant.sender("sms")
    builder = new_sequence(client, csrf)
    step = {
        "_csrf": csrf,
        "kind": "call",
        "name": "Call",
        "delay_value": "2",
        "delay_unit": "days",
        "task_description": "Call {{ contact.first_name }}",
    }
    assert client.post(f"{builder}/steps", data=step, follow_redirects=False).status_code == 303
    broken = client.post(f"{builder}/steps", data=step | {"kind": "sms", "body": "Hi {{ contact.first_name "})
    assert broken.status_code == 422
    assert "template does not compile" in field_errors(broken)["body"]
    assert banner(broken)[0].startswith("steps[2].body:")
    negative = client.post(f"{builder}/steps", data=step | {"delay_value": "-1"})
    assert negative.status_code == 422 and "delay" in field_errors(negative)
    words = client.post(f"{builder}/steps", data=step | {"delay_value": "two"})
    assert field_errors(words)["delay"] == "must be a whole number, not 'two'"
    unknown = client.post(f"{builder}/steps", data=step | {"kind": "fax"})
    assert "choose a step kind" in field_errors(unknown)["kind"]
    page = client.get(builder)
    assert re.findall(r'class="day">([^<]+)', page.text) == ["Day 1", "Day 3"]  # nothing half-written
    no_name = client.post("/console/sequences", data={"_csrf": csrf, "name": "", "body": "Hi"})
    assert no_name.status_code == 422 and field_errors(no_name)["name"] == "a sequence needs a name"


def test_settings_refuse_a_bad_time_zone_by_name(client, tenant: ApiTenant):
    csrf = sign_in(client, tenant.key)
    tenant.sender("sms")
    builder = new_sequence(client, csrf)
    refused = client.post(
        f"{builder}/settings", data={"_csrf": csrf, "name": "Cadence", "timezone": "Mars/Olympus"}
    )
    assert refused.status_code == 422 and "timezone" in field_errors(refused), banner(refused)
    saved = client.post(
        f"{builder}/settings",
        data={
            "_csrf": csrf,
            "name": "Cadence",
            "timezone": "Europe/Paris",
            "quiet_start": "09:00",
            "quiet_end": "20:00",
            "hours_start": "09:00",
            "hours_end": "17:00",
            "day_monday": "on",
            "exclude_holidays": "on",
        },
        follow_redirects=False,
    )
    assert saved.status_code == 303, banner(saved)
    settings = tenant.get(f"/sequences/{builder.rsplit('/', 1)[1]}").json()["settings"]
    assert settings["timezone"] == "Europe/Paris" and settings["exclude_holidays"] is True
    assert settings["business_hours"] == {"monday": {"start": "09:00", "end": "17:00"}}


def test_the_preview_renders_for_a_contact_with_its_segment_count(client, tenant: ApiTenant):
    csrf = sign_in(client, tenant.key)
    tenant.sender("sms")
    builder = new_sequence(client, csrf)
    contact = tenant.post("/contacts", {"phone": "+12125550141", "first_name": "Zoë"}).json()["id"]
    shown = client.post(
        f"{builder}/preview",
        data={
            "_csrf": csrf,
            "kind": "sms",
            "contact_id": contact,
            "body": "Hi {{ contact.first_name }} " + "x" * 70,
        },
    )
    assert (
        "Hi Zoë" in shown.text and "2 SMS segments" in shown.text
    )  # ë is GSM-7; 77 chars: one... of UCS-2? no
    broken = client.post(f"{builder}/preview", data={"_csrf": csrf, "kind": "sms", "body": "{{ 1/0 }}"})
    assert 'class="error"' in broken.text


@pytest.mark.parametrize("path", ["/console/sequences/{sequence}", "/console/contacts/{contact}"])
def test_another_tenants_pages_are_not_found(client, tenant: ApiTenant, other_tenant: ApiTenant, path):
    other_tenant.sender("sms")
    sequence = other_tenant.post(
        "/sequences",
        {
            "name": "Theirs",
            "channel": "sms",
            "steps": [{"kind": "sms", "delay": {"value": 0, "unit": "minutes"}, "body": "Hi"}],
        },
    ).json()["id"]
    contact = other_tenant.post("/contacts", {"phone": "+12125550142"}).json()["id"]
    sign_in(client, tenant.key)
    page = client.get(path.format(sequence=sequence, contact=contact))
    assert page.status_code == 404 and "not found" in page.text
    assert "Theirs" not in page.text


def test_another_tenants_enrollments_and_sequences_cannot_be_changed(
    client, tenant: ApiTenant, other_tenant: ApiTenant
):
    other_tenant.sender("sms")
    sequence = other_tenant.post(
        "/sequences",
        {
            "name": "Theirs",
            "channel": "sms",
            "steps": [{"kind": "sms", "delay": {"value": 2, "unit": "days"}, "body": "Hi"}],
        },
    ).json()["id"]
    assert other_tenant.post(f"/sequences/{sequence}/activate").status_code == 200
    contact = other_tenant.post("/contacts", {"phone": "+12125550143"}).json()["id"]
    enrollment = other_tenant.post("/enrollments", {"sequence_id": sequence, "contact_id": contact}).json()[
        "id"
    ]
    csrf = sign_in(client, tenant.key)
    paused = client.post(
        "/console/enrollments/actions",
        data={"_csrf": csrf, "action": "pause", "enrollment_id": enrollment},
        follow_redirects=False,
    )
    assert "0+of+1+done" in paused.headers["location"]
    assert other_tenant.get(f"/enrollments/{enrollment}").json()["status"] == "active"
    archived = client.post(
        f"/console/sequences/{sequence}/lifecycle", data={"_csrf": csrf, "action": "archive"}
    )
    assert archived.status_code == 404
    assert other_tenant.get(f"/sequences/{sequence}").json()["status"] == "active"


def test_the_cookies_are_secure_when_the_console_is_served_over_https(api_settings):
    """Behind a proxy that terminates TLS the request arrives as plain HTTP: DRUMBEAT_PUBLIC_URL tells.
    (The session cookie is made by the same function as the sign-in form's.)"""
    from dataclasses import replace

    from litestar.testing import TestClient

    from app.api.app import create_app

    with TestClient(create_app(replace(api_settings, public_url="https://drumbeat.example"))) as behind_proxy:
        form = behind_proxy.get("/console/login")
        assert "drumbeat_console_login=" in form.headers["set-cookie"]
        assert "Secure" in form.headers["set-cookie"]


def test_a_user_of_two_workspaces_switches_between_them(client, tenant: ApiTenant):
    from tests.support.api import bearer, make_jwt

    second = client.post(
        "/api/v1/workspaces",
        json={"name": "Zeta", "timezone": "UTC"},
        headers=bearer(make_jwt(tenant.user_id)),
    ).json()["id"]
    csrf = sign_in(client, make_jwt(tenant.user_id))
    page = client.get("/console/sequences")
    assert re.search(r'<option value="[^"]+" selected>Acme</option>', page.text)
    switched = client.post(
        "/console/workspace", data={"_csrf": csrf, "workspace_id": second}, follow_redirects=False
    )
    assert switched.status_code == 303
    assert re.search(r'<option value="[^"]+" selected>Zeta</option>', client.get("/console/sequences").text)
    # A workspace that is not the user's own is not switched to.
    csrf = CSRF.search(client.get("/console/sequences").text).group(1)
    client.post("/console/workspace", data={"_csrf": csrf, "workspace_id": str(uuid.uuid4())})
    assert re.search(r'<option value="[^"]+" selected>Zeta</option>', client.get("/console/sequences").text)


def test_bulk_actions_pause_resume_and_skip_the_ticked_enrollments(client, tenant: ApiTenant):
    tenant.sender("sms")
    steps = [{"kind": "sms", "delay": {"value": 1, "unit": "days"}, "body": f"Step {n}"} for n in (1, 2, 3)]
    sequence = tenant.post("/sequences", {"name": "Bulk", "channel": "sms", "steps": steps}).json()["id"]
    assert tenant.post(f"/sequences/{sequence}/activate").status_code == 200
    enrollments = []
    for phone in ("+12125550151", "+12125550152"):
        contact = tenant.post("/contacts", {"phone": phone}).json()["id"]
        enrollments.append(
            tenant.post("/enrollments", {"sequence_id": sequence, "contact_id": contact}).json()["id"]
        )
    csrf = sign_in(client, tenant.key)

    def act(action: str, **extra) -> str:
        data = {"_csrf": csrf, "action": action, "enrollment_id": enrollments} | extra
        return client.post("/console/enrollments/actions", data=data, follow_redirects=False).headers[
            "location"
        ]

    assert "Pause%3A+2+of+2+done" in act("pause")
    assert {tenant.get(f"/enrollments/{e}").json()["status"] for e in enrollments} == {"paused"}
    listed = client.get("/console/enrollments?status=paused")
    assert listed.text.count('name="enrollment_id"') == 2
    assert "Resume%3A+2+of+2+done" in act("resume")
    assert "Skip%3A+2+of+2+done" in act("skip", position="3")
    assert {tenant.get(f"/enrollments/{e}").json()["current_step_position"] for e in enrollments} == {3}
    assert "skip+to+which+step%3F+give+its+number" in act("skip")


def test_the_builder_shows_each_variant_against_the_control_and_a_manual_step_s_tasks(
    client, tenant: ApiTenant, db_url
):
    tenant.sender("sms")
    variants = [{"key": "A", "weight": 1, "body": "Hi"}, {"key": "B", "weight": 1, "body": "Hey"}]
    steps = [
        {"kind": "sms", "name": "Opener", "body": "Hi", "variants": variants},
        {"kind": "call", "name": "Ring", "task_description": "Call them"},
    ]
    sequence = tenant.post("/sequences", {"name": "AB", "channel": "sms", "steps": steps}).json()["id"]
    assert tenant.post(f"/sequences/{sequence}/activate").status_code == 200
    for n in range(24):  # variants are drawn by weight: 24 make a run without a B a one-in-8-million event
        contact = tenant.post("/contacts", {"phone": f"+1212555{100 + n:04d}"}).json()["id"]
        assert (
            tenant.post("/enrollments", {"sequence_id": sequence, "contact_id": contact}).status_code == 201
        )
    dispatch(db_url)
    sign_in(client, tenant.key)
    page = client.get(f"/console/sequences/{sequence}")
    assert page.status_code == 200
    table = page.text[page.text.index("A/B variants") :]
    assert re.search(r"<td>#1</td><td>A</td>.*?<td>control</td>", table)
    assert re.search(r"<td>#1</td><td>B</td>.*?<td>not enough data</td>", table)  # no replies yet
    assert "Ring: 0 of 24 done, 24 waiting" in page.text


def test_a_condition_on_a_link_is_built_in_the_console(client, tenant: ApiTenant):
    csrf = sign_in(client, tenant.key)
    tenant.sender("sms")
    builder = new_sequence(client, csrf)
    condition = {
        "_csrf": csrf,
        "kind": "condition",
        "condition_if": "clicked",
        "condition_step": "1",
        "then": "exit",
        "else": "continue",
    }
    bad = client.post(
        f"{builder}/steps",
        data=condition | {"condition_if": "replied", "condition_link": "https://x.example"},
    )
    assert bad.status_code == 422 and "only clicked and not_clicked" in field_errors(bad)["condition"]
    made = client.post(
        f"{builder}/steps",
        data=condition | {"condition_link": "https://acme.example/pricing"},
        follow_redirects=False,
    )
    assert made.status_code == 303, banner(made)
    sequence_id = builder.rsplit("/", 1)[1]
    steps = tenant.get(f"/sequences/{sequence_id}").json()["steps"]
    assert steps[1]["condition"] == {"if": "clicked", "step": 1, "link": "https://acme.example/pricing"}
    assert 'value="https://acme.example/pricing"' in client.get(builder).text  # shown back for editing
    by_name = client.post(
        f"{builder}/steps", data=condition | {"condition_link_name": "Pricing"}, follow_redirects=False
    )
    assert by_name.status_code == 303, banner(by_name)
    steps = tenant.get(f"/sequences/{sequence_id}").json()["steps"]
    assert steps[2]["condition"] == {"if": "clicked", "step": 1, "link_name": "Pricing"}
    assert 'value="Pricing"' in client.get(builder).text
