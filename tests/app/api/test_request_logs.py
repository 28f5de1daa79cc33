"""Request ids, the access line and the enrollment lines, on the real app and database: every line of a
request carries its X-Request-ID, and neither the API key, the JWT nor a query string is ever logged."""

from __future__ import annotations

import logging
import re
import uuid

import pytest

from tests.log_capture import captured_logs
from tests.support.api import ApiTenant, Contract, bearer

HEX_ID = re.compile("[0-9a-f]{32}")


@pytest.fixture
def mine(db_url: str, tenant: ApiTenant) -> Contract:
    contract = Contract(db_url, tenant)
    contract.sender("sms", "+15550000001")
    return contract


def access_line(captured, request_id: str) -> dict:
    [line] = [line for line in captured.named("request") if line["correlation_id"] == request_id]
    return line


def test_a_sane_request_id_is_echoed_and_on_the_access_line(client):
    with captured_logs(logging.DEBUG) as captured:  # probes' access lines are DEBUG
        response = client.get("/healthz?token=abc", headers={"X-Request-ID": "trace-7.a:B_c"})
    assert response.headers["x-request-id"] == "trace-7.a:B_c"
    line = access_line(captured, "trace-7.a:B_c")
    assert (line["method"], line["route"], line["status"], line["level"]) == ("GET", "/healthz", 200, "DEBUG")
    assert line["duration_ms"] >= 0 and "token=abc" not in captured.text


@pytest.mark.parametrize(
    "incoming", ["has space", "x" * 129, "-leading-dash", "semi;colon", "ünïcode".encode("latin-1"), ""]
)
def test_an_insane_request_id_is_replaced_by_a_new_one(client, incoming):
    with captured_logs() as captured:
        response = client.get("/api/v1/sequences", headers={"X-Request-ID": incoming})
    request_id = response.headers["x-request-id"]
    assert HEX_ID.fullmatch(request_id)
    assert access_line(captured, request_id)["status"] == 401


def test_without_one_each_request_gets_its_own_id_even_a_404(client):
    with captured_logs() as captured:
        first = client.get("/no/such/path/dbk_secret?api_key=dbk_secret")
        second = client.get("/api/v1/sequences")
    ids = [first.headers["x-request-id"], second.headers["x-request-id"]]
    assert all(HEX_ID.fullmatch(i) for i in ids) and ids[0] != ids[1]
    unmatched = access_line(captured, ids[0])
    assert (unmatched["route"], unmatched["status"]) == ("unmatched", 404)
    assert access_line(captured, ids[1])["route"] == "/api/v1/sequences"
    assert "dbk_secret" not in captured.text


def test_enrolling_logs_the_ids_under_the_request_id_and_never_the_credentials(client, tenant, mine):
    sequence, contact = mine.sequence(), mine.contact()
    jwt_headers = tenant.user_headers
    with captured_logs() as captured:
        response = client.post(
            "/api/v1/enrollments",
            json={"sequence_id": sequence, "contact_id": contact},
            headers=tenant.headers | {"X-Request-ID": "req-enroll-1"},
        )
        assert response.status_code == 201, response.text
        assert client.get("/api/v1/enrollments", headers=jwt_headers).status_code == 200
    enrollment = response.json()
    [line] = captured.named("enrolled")
    assert line == line | {
        "workspace_id": tenant.workspace_id,
        "sequence_id": sequence,
        "enrollment_id": enrollment["id"],
        "contact_id": contact,
        "status": enrollment["status"],
        "correlation_id": "req-enroll-1",
        "logger": "drumbeat.enrollments",
    }
    assert access_line(captured, "req-enroll-1")["route"] == "/api/v1/enrollments"
    for secret in (tenant.key, tenant.key[:12], jwt_headers["Authorization"].split()[1], "Bearer"):
        assert secret not in captured.text


def test_a_bulk_enrollment_is_one_line_of_counts(client, tenant, mine):
    sequence = mine.sequence()
    contacts = [mine.contact(), mine.contact(), str(uuid.uuid4())]
    with captured_logs() as captured:
        response = tenant.post("/enrollments/bulk", {"sequence_id": sequence, "contact_ids": contacts})
    assert response.status_code == 200, response.text
    [line] = captured.named("enrolled_bulk")
    assert (line["workspace_id"], line["sequence_id"]) == (tenant.workspace_id, sequence)
    assert (line["contacts"], line["enrolled"], line["not_found"]) == (3, 2, 1)
    assert line["correlation_id"] == response.headers["x-request-id"]
    assert captured.named("enrolled") == []


def test_a_reply_reported_through_the_api_is_logged_with_the_exit(client, tenant, mine):
    sequence, contact = mine.sequence(), mine.contact()
    enrolled = tenant.post("/enrollments", {"sequence_id": sequence, "contact_id": contact}).json()
    payload = {"channel": "sms", "note": "MARKER-reply-text"}
    with captured_logs() as captured:
        response = tenant.post("/events", {"contact_id": contact, "kind": "replied", "payload": payload})
    assert response.status_code == 201, response.text
    [line] = captured.named("replied")
    assert (line["enrollment_id"], line["sequence_id"], line["workspace_id"]) == (
        enrolled["id"],
        sequence,
        tenant.workspace_id,
    )
    assert (line["enrollment_status"], line["exit_reason"]) == ("replied", "replied")
    assert "MARKER-reply-text" not in captured.text


def test_a_refused_token_is_not_logged(client):
    token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.not-a-valid-signature"
    with captured_logs() as captured:
        response = client.get("/api/v1/sequences", headers=bearer(token))
    assert response.status_code == 401
    assert token not in captured.text and token.split(".")[2] not in captured.text
