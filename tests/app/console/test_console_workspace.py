"""The console's contacts and settings pages in-process: adding a contact and importing a CSV file with a
result per row, the workspace's time zone and holidays, senders and webhook endpoints; bad input is
refused next to its field with nothing written, and a member cannot change what only admins may."""

from __future__ import annotations

import html
import re

import psycopg

from tests.support.api import ApiTenant

CSRF = re.compile(r'name="_csrf" value="([^"]+)"')


def sign_in(client, credential: str) -> str:
    token = CSRF.search(client.get("/console/login").text).group(1)
    assert client.post("/console/login", data={"_csrf": token, "api_key": credential}).status_code == 200
    return CSRF.search(client.get("/console/settings").text).group(1)


def field_errors(response) -> dict[str, str]:
    found = re.findall(r'class="field-error" id="([\w-]+)-error">([^<]+)<', response.text)
    return {field: html.unescape(message) for field, message in found}


def test_a_contact_is_added_and_a_bad_phone_is_refused_by_name(client, tenant: ApiTenant):
    csrf = sign_in(client, tenant.key)
    bad = client.post("/console/contacts", data={"_csrf": csrf, "first_name": "Ada", "phone": "12"})
    assert bad.status_code == 422 and "phone" in field_errors(bad)
    assert 'value="Ada"' in bad.text  # what was typed stays
    assert tenant.get("/contacts").json()["total"] == 0
    saved = client.post(
        "/console/contacts",
        data={"_csrf": csrf, "first_name": "Ada", "phone": "(212) 555-0147"},
        follow_redirects=False,
    )
    assert saved.status_code == 303 and saved.headers["location"].startswith("/console/contacts/")
    page = client.get(saved.headers["location"])
    assert "Ada" in page.text and "+12125550147" in page.text and "America/New_York" in page.text


def test_a_csv_import_lists_every_row_and_the_reason_of_each_rejected_one(client, tenant: ApiTenant):
    csrf = sign_in(client, tenant.key)
    csv = "first_name,phone,email\nAda,+12125550148,ada@example.com\nBob,not a phone,\nCy,,cy@example.com\n"
    imported = client.post(
        "/console/contacts/import", data={"_csrf": csrf}, files={"file": ("people.csv", csv, "text/csv")}
    )
    assert imported.status_code == 200, imported.text
    assert "Import: 2 created, 0 updated, 1 rejected of 3" in imported.text
    rows = re.findall(
        r'data-label="Row" class="num">(\d+)</td><td data-label="Outcome"><span class="badge (\w+)"',
        imported.text,
    )
    assert rows == [("1", "created"), ("2", "rejected"), ("3", "created")]
    assert "phone: " in html.unescape(imported.text)
    again = client.post(
        "/console/contacts/import", data={"_csrf": csrf}, files={"file": ("people.csv", csv, "text/csv")}
    )
    assert "0 created, 2 updated, 1 rejected" in again.text  # the same file creates nothing new
    none = client.post("/console/contacts/import", data={"_csrf": csrf})
    assert none.status_code == 422 and field_errors(none)["file"] == "choose a CSV file to import"


def test_the_workspace_time_zone_and_holidays_are_changed_and_bad_ones_refused(client, tenant: ApiTenant):
    csrf = sign_in(client, tenant.key)
    bad_zone = client.post(
        "/console/settings/workspace", data={"_csrf": csrf, "name": "Acme", "timezone": "Mars/Base"}
    )
    assert bad_zone.status_code == 422 and "timezone" in field_errors(bad_zone)
    assert tenant.get(f"/workspaces/{tenant.workspace_id}").json()["timezone"] == "America/New_York"
    saved = client.post(
        "/console/settings/workspace",
        data={"_csrf": csrf, "name": "Acme EU", "timezone": "Europe/Berlin"},
        follow_redirects=False,
    )
    assert saved.status_code == 303
    workspace = tenant.get(f"/workspaces/{tenant.workspace_id}").json()
    assert (workspace["name"], workspace["timezone"]) == ("Acme EU", "Europe/Berlin")
    bad_day = client.post("/console/settings/holidays", data={"_csrf": csrf, "holidays": "2026-12-25\nXmas"})
    assert field_errors(bad_day)["holidays"] == "line 2: 'Xmas' is not a date (YYYY-MM-DD)"
    client.post("/console/settings/holidays", data={"_csrf": csrf, "holidays": "2026-12-25\n2027-01-01\n"})
    assert "2026-12-25\n2027-01-01" in client.get("/console/settings").text


def test_the_api_changes_a_workspace_too_and_names_a_bad_zone(tenant: ApiTenant):
    refused = tenant.patch(f"/workspaces/{tenant.workspace_id}", {"timezone": "Nowhere/Town"})
    assert refused.status_code == 422 and refused.json()["error"]["field"] == "timezone"
    changed = tenant.patch(f"/workspaces/{tenant.workspace_id}", {"timezone": "Asia/Tokyo"})
    assert changed.status_code == 200 and changed.json()["timezone"] == "Asia/Tokyo"
    assert changed.json()["name"] == "Acme"  # left out: unchanged


def test_senders_are_added_and_a_bad_number_is_refused(client, tenant: ApiTenant):
    csrf = sign_in(client, tenant.key)
    bad = client.post("/console/settings/senders", data={"_csrf": csrf, "channel": "sms", "address": "555"})
    assert bad.status_code == 422 and "address" in field_errors(bad)
    slow = client.post(
        "/console/settings/senders",
        data={"_csrf": csrf, "channel": "sms", "address": "+12025550100", "rate_per_second": "fast"},
    )
    assert field_errors(slow)["rate_per_second"] == "must be a number, not 'fast'"
    client.post(
        "/console/settings/senders",
        data={"_csrf": csrf, "channel": "sms", "address": "+12025550100", "name": "Main"},
    )
    assert [s["address"] for s in tenant.get("/senders").json()] == ["+12025550100"]


def test_a_webhook_endpoint_shows_its_secret_once_and_a_private_url_is_refused(client, tenant: ApiTenant):
    csrf = sign_in(client, tenant.key)
    private = client.post(
        "/console/settings/webhooks", data={"_csrf": csrf, "url": "http://127.0.0.1:9/hook"}
    )
    assert private.status_code == 422 and "url" in field_errors(private)
    added = client.post(
        "/console/settings/webhooks", data={"_csrf": csrf, "url": "https://93.184.215.14/hook"}
    )
    assert added.status_code == 200
    assert re.search(r'class="secret-value">whsec_', added.text)
    [endpoint] = tenant.get("/webhook-endpoints").json()
    assert endpoint["event_types"] == ["*"]
    assert "whsec_" not in client.get("/console/settings").text  # once only
    log = client.get(f"/console/settings/webhooks/{endpoint['id']}")
    assert log.status_code == 200 and "Nothing sent to it yet" in log.text


def test_a_member_sees_settings_but_cannot_change_them(client, tenant: ApiTenant, db_url):
    member_key = tenant.post("/api-keys", {"name": "rep", "role": "member"}).json()["token"]
    csrf = sign_in(client, member_key)
    page = client.get("/console/settings")
    assert "an admin changes these" in page.text and "Webhook endpoints" not in page.text
    refused = client.post(
        "/console/settings/workspace", data={"_csrf": csrf, "name": "Mine", "timezone": "UTC"}
    )
    assert refused.status_code == 422 or refused.status_code == 403
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT name FROM drumbeat.workspaces").fetchone()[0] == "Acme"
