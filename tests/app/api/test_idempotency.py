"""Idempotency-Key on the API's POSTs (app/api/idempotency.py, sql/functions/idempotency.sql), as a client
that retries after a timeout uses it: the same key and request get the first answer again and change
nothing; the same key with another request is a 422; a failed request leaves no key; keys are each
caller's own; an answer that showed a secret is never kept. The waits of a retry that arrives while the
first request runs are tested on two real connections."""

from __future__ import annotations

import concurrent.futures
import threading
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg.rows import dict_row

from tests.support import act_as
from tests.support.api import ApiTenant

SEQUENCE = {"name": "Retry-safe", "channel": "sms", "steps": [{"kind": "sms", "body": "Hi"}]}


@pytest.fixture
def db(db_url: str) -> Iterator[psycopg.Connection]:
    """The test database as its owner (RLS bypassed), autocommit: to look at what the API wrote."""
    with psycopg.connect(db_url, autocommit=True, row_factory=dict_row) as connection:
        yield connection


def post(tenant: ApiTenant, path: str, body: dict, key: str | bytes | None, headers: dict | None = None):
    extra = {} if key is None else {"Idempotency-Key": key}
    return tenant.client.post(f"/api/v1{path}", json=body, headers=(headers or tenant.headers) | extra)


def sequences_named(db: psycopg.Connection, workspace_id: str, name: str) -> int:
    return db.execute(
        "SELECT count(*) AS n FROM drumbeat.sequences WHERE workspace_id = %s AND name = %s",
        (workspace_id, name),
    ).fetchone()["n"]


def test_a_retry_with_the_same_key_gets_the_first_answer_and_changes_nothing(tenant: ApiTenant, db):
    key = str(uuid.uuid4())
    first = post(tenant, "/sequences", SEQUENCE, key)
    assert first.status_code == 201, first.text
    assert "idempotent-replayed" not in first.headers
    retry = post(tenant, "/sequences", SEQUENCE, key)
    assert retry.status_code == 201
    assert retry.headers["idempotent-replayed"] == "true"
    assert retry.content == first.content  # byte for byte: the same id, the same timestamps
    assert retry.headers["content-type"] == first.headers["content-type"]
    assert sequences_named(db, tenant.workspace_id, "Retry-safe") == 1
    # Without a key, the same request is a new one.
    assert post(tenant, "/sequences", SEQUENCE, None).status_code == 201
    assert sequences_named(db, tenant.workspace_id, "Retry-safe") == 2


def test_the_same_key_with_another_request_is_refused_naming_the_header(tenant: ApiTenant, db):
    key = str(uuid.uuid4())
    assert post(tenant, "/sequences", SEQUENCE, key).status_code == 201
    for path, body in (
        ("/sequences", {**SEQUENCE, "name": "Other"}),
        ("/contacts", {"phone": "+15550101010"}),
    ):
        refused = post(tenant, path, body, key)
        assert refused.status_code == 422, refused.text
        error = refused.json()["error"]
        assert error["field"] == "Idempotency-Key" and "another request" in error["message"]
    assert sequences_named(db, tenant.workspace_id, "Other") == 0
    assert (
        db.execute("SELECT count(*) AS n FROM drumbeat.contacts WHERE phone = '+15550101010'").fetchone()["n"]
        == 0
    )


def test_a_failed_request_leaves_no_key_and_its_retry_runs(tenant: ApiTenant, db):
    key = str(uuid.uuid4())
    broken = {**SEQUENCE, "steps": [{"kind": "sms", "body": "Hi {{ contact.first_name "}]}
    assert post(tenant, "/sequences", broken, key).status_code == 422
    fixed = post(tenant, "/sequences", SEQUENCE, key)
    assert fixed.status_code == 201 and "idempotent-replayed" not in fixed.headers
    assert sequences_named(db, tenant.workspace_id, "Retry-safe") == 1


def test_keys_are_each_callers_own(tenant: ApiTenant, other_tenant: ApiTenant, db):
    key = "order-42"
    created = [
        post(tenant, "/sequences", SEQUENCE, key),
        post(other_tenant, "/sequences", SEQUENCE, key),  # another tenant: its own key
        post(tenant, "/sequences", SEQUENCE, key, headers=tenant.user_headers),  # the same tenant's user
    ]
    assert [r.status_code for r in created] == [201, 201, 201]
    assert not any("idempotent-replayed" in r.headers for r in created)
    assert len({r.json()["id"] for r in created}) == 3
    assert sequences_named(db, tenant.workspace_id, "Retry-safe") == 2


@pytest.mark.parametrize("key", ["", "x" * 256, "has space", "naïve".encode(), "tab\tin"])
def test_a_malformed_key_is_refused_naming_the_header(tenant: ApiTenant, db, key):
    refused = post(tenant, "/sequences", SEQUENCE, key)
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["field"] == "Idempotency-Key"
    assert sequences_named(db, tenant.workspace_id, "Retry-safe") == 0


def test_a_key_on_a_get_is_ignored(tenant: ApiTenant):
    listed = tenant.client.get("/api/v1/sequences", headers=tenant.headers | {"Idempotency-Key": "k"})
    assert listed.status_code == 200 and "idempotent-replayed" not in listed.headers


def test_an_answer_that_showed_a_secret_is_never_kept(tenant: ApiTenant, db):
    key = str(uuid.uuid4())
    body = {"name": "CRM sync", "role": "member"}
    first = post(tenant, "/api-keys", body, key)
    assert first.status_code == 201, first.text
    token = first.json()["token"]
    retry = post(tenant, "/api-keys", body, key)
    assert retry.status_code == 409 and retry.headers["idempotent-replayed"] == "true"
    error = retry.json()["error"]
    assert error["field"] == "Idempotency-Key" and "already succeeded (HTTP 201)" in error["message"]
    assert token not in retry.text
    assert (
        db.execute("SELECT count(*) AS n FROM drumbeat.api_keys WHERE name = 'CRM sync'").fetchone()["n"] == 1
    )
    [kept] = db.execute(
        "SELECT status, body FROM drumbeat.idempotency_keys WHERE key = %s", (key,)
    ).fetchall()
    assert kept == {"status": 201, "body": None}


def test_the_openapi_document_names_the_header_on_posts_only(client):
    paths = client.get("/docs/openapi.json").json()["paths"]
    for path, operations in paths.items():
        if not path.startswith("/api/v1") or path.startswith("/api/v1/webhooks/"):  # (providers' callbacks)
            continue
        for method, operation in operations.items():
            headers = [p["name"] for p in operation.get("parameters", []) if p["in"] == "header"]
            assert ("Idempotency-Key" in headers) == (method == "post"), (method, path)


# --- a retry while the first request runs: two real connections ---------------------------------


def begin(conn: psycopg.Connection, user: uuid.UUID, key: str, fingerprint: str = "a" * 64):
    act_as(conn, user)
    return conn.execute(
        "SELECT drumbeat_api.begin_idempotent_request(%s, %s)", (key, fingerprint)
    ).fetchone()[0]


def finish(conn: psycopg.Connection, key: str, body: bytes) -> None:
    conn.execute(
        "SELECT drumbeat_api.finish_idempotent_request(%s, %s, 201, 'application/json', NULL, %s)",
        (key, "a" * 64, body),
    )


@pytest.mark.parametrize("first_commits", [True, False])
def test_a_retry_during_the_first_request_waits_for_its_outcome(db_url, first_commits):
    user, key = uuid.uuid4(), "in-flight"
    with psycopg.connect(db_url) as first, psycopg.connect(db_url) as retry:
        assert begin(first, user, key) is None  # the first request holds the key, uncommitted
        waiting = threading.Event()
        with concurrent.futures.ThreadPoolExecutor(1) as pool:

            def retried():
                waiting.set()
                return begin(retry, user, key)

            outcome = pool.submit(retried)
            waiting.wait(5)
            with pytest.raises(concurrent.futures.TimeoutError):
                outcome.result(timeout=0.5)  # blocked on the first request's row
            if first_commits:
                finish(first, key, b'{"id": 1}')
                first.commit()
            else:
                first.rollback()
            stored = outcome.result(timeout=10)
        if first_commits:
            assert stored["status"] == 201 and stored["body"] == "eyJpZCI6IDF9"  # base64 of the body
        else:
            assert stored is None  # the first left nothing: the retry holds the key now
        retry.rollback()


def test_a_key_is_forgotten_after_24_hours(db_url):
    user, key = uuid.uuid4(), "yesterday"
    with psycopg.connect(db_url) as conn:
        assert begin(conn, user, key) is None
        finish(conn, key, b"{}")
        conn.commit()
        assert begin(conn, user, key)["status"] == 201
        conn.rollback()
        conn.execute("UPDATE drumbeat.idempotency_keys SET created_at = now() - interval '25 hours'")
        conn.commit()
        assert begin(conn, user, key, "b" * 64) is None  # new again, even for another request
        conn.commit()  # (and back to the test's own role: act_as is for the transaction)
        assert conn.execute("SELECT fingerprint FROM drumbeat.idempotency_keys").fetchall() == [("b" * 64,)]


def test_handlers_that_build_their_own_response_are_kept_too(tenant: ApiTenant, db):
    """POST /contacts answers 201 or 200 (created or updated) with a Response of its own, with no media type:
    the key keeps the handler's defaults, and the retry is the same answer."""
    key = str(uuid.uuid4())
    body = {"phone": "+12125550155", "first_name": "Ada"}
    first = post(tenant, "/contacts", body, key)
    assert first.status_code == 201, first.text
    retry = post(tenant, "/contacts", body, key)
    assert (retry.status_code, retry.content) == (201, first.content)
    assert retry.headers["content-type"].startswith("application/json")
    event = {"contact_id": first.json()["id"], "kind": "meeting_booked"}
    assert (
        post(tenant, "/events", event, "booked-1").status_code
        == post(tenant, "/events", event, "booked-1").status_code
    )
    kinds = db.execute(
        "SELECT count(*) AS n FROM drumbeat.events WHERE contact_id = %s AND kind = 'meeting_booked'",
        (first.json()["id"],),
    ).fetchone()["n"]
    assert kinds == 1


def test_the_csv_import_takes_no_key_and_is_safe_to_send_again(tenant: ApiTenant, db):
    csv = b"phone,first_name\n+12125550156,Bo\n"
    headers = tenant.headers | {"Idempotency-Key": "import-1", "content-type": "text/csv"}
    for _ in range(2):
        imported = tenant.client.post("/api/v1/contacts/import", content=csv, headers=headers)
        assert imported.status_code == 200 and "idempotent-replayed" not in imported.headers
    assert (
        db.execute("SELECT count(*) AS n FROM drumbeat.contacts WHERE phone = '+12125550156'").fetchone()["n"]
        == 1
    )
    assert db.execute("SELECT count(*) AS n FROM drumbeat.idempotency_keys").fetchone()["n"] == 0


def test_the_worker_prunes_every_callers_expired_keys(db_url):
    """A caller that never comes back (a revoked key) keeps no answers past the 24 hours: the worker's
    periodic clean-up (drumbeat.prune_idempotency_keys) deletes them, and nothing younger."""
    gone, kept = uuid.uuid4(), uuid.uuid4()
    with psycopg.connect(db_url) as conn:
        for user in (gone, kept):
            begin(conn, user, f"key-of-{user}")
            finish(conn, f"key-of-{user}", b"{}")
            conn.commit()
        conn.execute(
            "UPDATE drumbeat.idempotency_keys SET created_at = now() - interval '25 hours' WHERE caller_id = %s",
            (gone,),
        )
        conn.commit()
        conn.execute("SET LOCAL ROLE drumbeat_worker")
        assert conn.execute("SELECT drumbeat.prune_idempotency_keys(100)").fetchone()[0] == 1
        conn.commit()
        assert conn.execute("SELECT caller_id FROM drumbeat.idempotency_keys").fetchall() == [(kept,)]


def test_a_stored_answer_must_look_like_one(db_url):
    with psycopg.connect(db_url) as conn:
        act_as(conn, uuid.uuid4())
        with pytest.raises(psycopg.Error, match="200 to 599") as caught:
            conn.execute(
                "SELECT drumbeat_api.finish_idempotent_request('k', %s, 42, 'application/json', NULL, '')",
                ("a" * 64,),
            )
        assert caught.value.sqlstate == "PT422"
