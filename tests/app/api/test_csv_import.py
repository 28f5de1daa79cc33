"""The streamed CSV import (POST /contacts/import): per-row outcomes and reasons, idempotent re-upload,
multipart uploads, time zones inferred without overwriting, rejections only the database can decide,
whole-file errors, tenancy; and a large file streamed through the ASGI app chunk by chunk with the
process's memory measured (tracemalloc)."""

from __future__ import annotations

import asyncio
import os
import time
import tracemalloc
from collections.abc import AsyncIterator, Iterator

import msgspec
import psycopg
import pytest
from psycopg.rows import dict_row

from app.core.csv_import import csv_records, multipart_file
from tests.support.api import ApiTenant

HEADER = "phone,email,first_name,last_name,company,title,timezone,plan,tags\n"
# Rows: 1 created, 2 created (national format, inferred zone), 3 bad phone, 4 bad email, 5 bad time
# zone, 6 no phone nor email, 7 too few cells, 8 repeats row 1 (an update), 9 email only with a custom
# field, 10 quoted cells with a comma and a line break.
FILE = (
    HEADER
    + "+12125550100,ada@example.com,Ada,Lovelace,Engines,,,pro,vip;nyc\n"
    + "(415) 555-0101,,Alan,Turing,,,,,\n"
    + "123-456-7890,bad-phone@example.com,Bad,Phone,,,,,\n"
    + "+12125550103,not-an-email,Bad,Email,,,,,\n"
    + "+12125550104,,Bad,Zone,,,Mars/Olympus,,\n"
    + ",,Nobody,,,,,,\n"
    + "+12125550106,short@example.com\n"
    + "+1 212 555 0100,,,,Engines Ltd,Countess,,,\n"
    + ',grace@example.com,Grace,Hopper,"Navy, US",,America/New_York,enterprise,\n'
    + '+12125550109,,"Multi\nLine",Name,,,,,\n'
)


@pytest.fixture
def db(db_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(db_url, autocommit=True, row_factory=dict_row) as connection:
        yield connection


def upload(tenant: ApiTenant, text: str | bytes, results: str | None = None, **kwargs):
    params = {"results": results} if results else {}
    params.update(kwargs.pop("params", {}))
    headers = {**tenant.headers, "Content-Type": kwargs.pop("content_type", "text/csv")}
    body = text.encode() if isinstance(text, str) else text
    return tenant.client.post(
        "/api/v1/contacts/import", content=body, params=params, headers=headers, **kwargs
    )


def contacts_of(db: psycopg.Connection, workspace_id: str) -> dict[str, dict]:
    rows = db.execute(
        "SELECT * FROM drumbeat.contacts WHERE workspace_id = %s ORDER BY created_at, id", (workspace_id,)
    ).fetchall()
    return {r["phone"] or r["email"]: r for r in rows}


def test_import_summary_and_rejected_rows_with_reasons(tenant, db):
    response = upload(tenant, FILE)
    assert response.status_code == 200, response.text
    body = response.json()
    assert {k: body[k] for k in ("created", "updated", "rejected", "total")} == {
        "created": 4,
        "updated": 1,
        "rejected": 5,
        "total": 10,
    }
    rejected = {r["row"]: r for r in body["results"]}
    assert sorted(rejected) == [3, 4, 5, 6, 7]
    assert all(r["outcome"] == "rejected" and r["contact_id"] is None for r in body["results"])
    assert rejected[3]["field"] == "phone"
    assert rejected[3]["reason"] == "phone: not a valid number for region US"
    assert rejected[4]["field"] == "email" and rejected[4]["reason"].startswith("email: ")
    assert rejected[5]["field"] == "timezone" and "Mars/Olympus" in rejected[5]["reason"]
    assert rejected[6]["reason"] == "phone: a contact needs a phone or an email"
    assert rejected[7]["reason"] == "has 2 cells, the header row has 9"

    stored = contacts_of(db, tenant.workspace_id)
    assert set(stored) == {"+12125550100", "+14155550101", "grace@example.com", "+12125550109"}
    ada = stored["+12125550100"]
    assert (ada["first_name"], ada["company"], ada["title"]) == ("Ada", "Engines Ltd", "Countess")
    assert ada["email"] == "ada@example.com"  # the empty cell of row 8 kept it
    assert ada["fields"] == {"plan": "pro"} and ada["tags"] == ["vip", "nyc"]
    assert ada["timezone"] == "America/New_York"
    assert stored["+14155550101"]["timezone"] == "America/Los_Angeles"
    grace = stored["grace@example.com"]
    assert grace["company"] == "Navy, US" and grace["fields"] == {"plan": "enterprise"}
    assert grace["timezone"] == "America/New_York" and grace["phone"] is None
    assert stored["+12125550109"]["first_name"] == "Multi\nLine"


def test_reupload_is_idempotent(tenant, db):
    first = upload(tenant, FILE, results="all").json()
    before = contacts_of(db, tenant.workspace_id)
    second = upload(tenant, FILE, results="all").json()
    assert (second["created"], second["updated"], second["rejected"]) == (0, 5, 5)
    assert contacts_of(db, tenant.workspace_id).keys() == before.keys()
    assert db.execute(
        "SELECT count(*) AS n FROM drumbeat.contacts WHERE workspace_id = %s", (tenant.workspace_id,)
    ).fetchone()["n"] == len(before)
    ids = {r["row"]: r["contact_id"] for r in first["results"] if r["contact_id"]}
    assert ids == {r["row"]: r["contact_id"] for r in second["results"] if r["contact_id"]}


def test_results_all_lists_every_row_in_order(tenant):
    body = upload(tenant, FILE, results="all").json()
    assert [r["row"] for r in body["results"]] == list(range(1, 11))
    outcomes = [r["outcome"] for r in body["results"]]
    assert outcomes == ["created", "created"] + ["rejected"] * 5 + ["updated", "created", "created"]
    assert body["results"][7]["contact_id"] == body["results"][0]["contact_id"]
    assert upload(tenant, FILE, results="some").status_code == 422


def test_multipart_upload(tenant, db):
    response = tenant.client.post(
        "/api/v1/contacts/import",
        headers=tenant.headers,
        data={"note": "a form field before the file"},
        files={"file": ("contacts.csv", FILE.encode(), "text/csv")},
    )
    assert response.status_code == 200, response.text
    assert response.json()["created"] == 4 and response.json()["rejected"] == 5
    assert len(contacts_of(db, tenant.workspace_id)) == 4


def test_inferred_time_zone_never_overwrites_a_stored_one(tenant, db):
    tenant.post("/contacts", {"phone": "+12125550100", "timezone": "Europe/London"})
    body = upload(tenant, HEADER + "+12125550100,,Ada,,,,,,\n+12125550120,,Bob,,,,,,\n").json()
    assert (body["created"], body["updated"]) == (1, 1)
    stored = contacts_of(db, tenant.workspace_id)
    assert stored["+12125550100"]["timezone"] == "Europe/London"
    assert stored["+12125550120"]["timezone"] == "America/New_York"
    # An explicit zone in the file does replace it.
    upload(tenant, "phone,timezone\n+12125550100,Asia/Tokyo\n")
    assert contacts_of(db, tenant.workspace_id)["+12125550100"]["timezone"] == "Asia/Tokyo"


def test_rows_only_the_database_can_judge_are_rejected_and_the_rest_imported(tenant, db):
    tenant.post("/contacts", {"phone": "+12125550100", "email": "ada@example.com"})
    tenant.post("/contacts", {"phone": "+12125550101", "email": "alan@example.com"})
    text = (
        "phone,email,first_name\n"
        "+12125550100,alan@example.com,Confused\n"  # phone of Ada, email of Alan
        "+12125550102,new@example.com,New\n"
        "+12125550103,ada@example.com,Ada's email\n"  # a new phone on Ada's email: updates Ada
        "+12125550102,,New again\n"  # repeats row 2 in the same chunk: applies after it
    )
    body = upload(tenant, text, results="all").json()
    assert [(r["row"], r["outcome"]) for r in body["results"]] == [
        (1, "rejected"),
        (2, "created"),
        (3, "updated"),
        (4, "updated"),
    ]
    assert body["results"][0]["field"] == "email"
    assert "another contact" in body["results"][0]["reason"]
    stored = contacts_of(db, tenant.workspace_id)
    assert stored["+12125550102"]["first_name"] == "New again"
    assert stored["+12125550103"]["email"] == "ada@example.com"  # Ada's phone changed to the new one
    assert "+12125550100" not in stored


def test_a_nul_character_rejects_its_row_only(tenant, db):
    body = upload(tenant, "phone,first_name\n+12125550100,Ada\x00\n+12125550101,Alan\n").json()
    assert (body["created"], body["rejected"]) == (1, 1)
    assert body["results"][0]["row"] == 1 and "NUL" in body["results"][0]["reason"]
    assert set(contacts_of(db, tenant.workspace_id)) == {"+12125550101"}


def test_small_chunks_give_the_same_outcome(tenant, db, monkeypatch):
    monkeypatch.setattr("app.core.csv_import.CHUNK_ROWS", 2)
    body = upload(tenant, FILE).json()
    assert (body["created"], body["updated"], body["rejected"]) == (4, 1, 5)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("\n\n", "empty"),
        ("first_name,last_name\nAda,Lovelace\n", "phone or an email column"),
        ("phone,,email\n", "column 2"),
        ("phone,Phone\n", "twice"),
        (b"phone,first_name\n+12125550100,Ad\xe9\n", "UTF-8"),
    ],
)
def test_unusable_files_are_422_and_import_nothing(tenant, db, text, message):
    response = upload(tenant, text)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == "file" and message in error["message"], error
    assert contacts_of(db, tenant.workspace_id) == {}


def test_a_bad_file_late_in_the_stream_rolls_back_everything(tenant, db):
    rows = "".join(f"+1212555{i:04d},,Row{i}\n" for i in range(2500))
    response = upload(tenant, ("phone,email,first_name\n" + rows).encode() + b"\xff\xfe\n")
    assert response.status_code == 422 and response.json()["error"]["field"] == "file"
    assert contacts_of(db, tenant.workspace_id) == {}


def test_other_media_types_are_415(tenant):
    response = upload(tenant, '{"phone": "+12125550100"}', content_type="application/json")
    assert response.status_code == 415, response.text
    assert response.json()["error"]["code"] == "unsupported_media_type"


def test_another_tenants_workspace_is_404_and_unchanged(tenant, other_tenant, db):
    other_tenant.post("/contacts", {"phone": "+12125550100", "first_name": "Theirs"})
    before = contacts_of(db, other_tenant.workspace_id)
    response = upload(tenant, FILE, params={"workspace_id": other_tenant.workspace_id})
    assert response.status_code == 404 and response.json()["error"]["field"] == "workspace_id"
    assert contacts_of(db, other_tenant.workspace_id) == before
    # My own import of the same phone makes my own contact.
    assert upload(tenant, FILE).json()["created"] == 4
    assert contacts_of(db, other_tenant.workspace_id) == before


# -- the stream plumbing


async def pieces(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def collect(iterator) -> list:
    return [item async for item in iterator]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64])
def test_records_survive_any_chunking(size):
    text = '\ufeffa,b,c\r\n1,"x, ""quoted""\nsecond line",3\r\n\r\nnaïve,"",\n"last","no newline"'
    records = asyncio.run(collect(csv_records(pieces(text.encode(), size))))
    assert records == [
        ["a", "b", "c"],
        ["1", 'x, "quoted"\nsecond line', "3"],
        [],
        ["naïve", "", ""],
        ["last", "no newline"],
    ]


@pytest.mark.parametrize("size", [1, 5, 17, 1000])
def test_multipart_file_part_survives_any_chunking(size):
    boundary = "----boundary42"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="note"\r\n\r\nhello\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="c.csv"\r\n'
        f"Content-Type: text/csv\r\n\r\nphone\r\n+12125550100\r\n--not-the-boundary\r\n"
        f"--{boundary}--\r\n"
    ).encode()
    data = b"".join(asyncio.run(collect(multipart_file(pieces(body, size), boundary))))
    assert data == b"phone\r\n+12125550100\r\n--not-the-boundary"


# -- a large file, streamed

LARGE_ROWS = int(os.environ.get("DRUMBEAT_IMPORT_ROWS", "100000"))


def large_csv_chunks(rows: int, start: int = 0, chunk_bytes: int = 65536) -> Iterator[bytes]:
    """A CSV of `rows` distinct contacts (numbered from `start`), generated piece by piece (never whole)."""
    buffer = [b"phone,email,first_name,last_name,company,plan,notes\n"]
    notes = "met at the spring conference; interested in the enterprise plan and a call back in May"
    size = len(buffer[0])
    for i in range(start, start + rows):
        phone = f"(212) {200 + i // 10000:03d}-{i % 10000:04d}"
        line = f"{phone},user{i}@example.com,First{i},Last{i},Co {i % 97},p{i % 3},{notes}\n"
        buffer.append(line.encode())
        size += len(line)
        if size >= chunk_bytes:
            yield b"".join(buffer)
            buffer, size = [], 0
    if buffer:
        yield b"".join(buffer)


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def stream_import(
    client, tenant: ApiTenant, rows: int, start: int = 0, on_event=None
) -> tuple[int, dict, int, int]:
    """POST the generated CSV through the ASGI app in 64 KiB request events, the way a server hands
    over an upload; returns (status, body, file bytes, request events read by the handler)."""
    sent = {"bytes": 0, "events": 0}
    chunks = large_csv_chunks(rows, start)
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/api/v1/contacts/import",
        "raw_path": b"/api/v1/contacts/import",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"testserver.local"),
            (b"authorization", f"Bearer {tenant.key}".encode()),
            (b"content-type", b"text/csv; charset=utf-8"),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver.local", 80),
        "state": {},
    }
    response: dict = {"status": None, "body": b""}

    async def receive() -> dict:
        if on_event:
            on_event()
        chunk = next(chunks, None)
        if chunk is None:
            return {"type": "http.request", "body": b"", "more_body": False}
        sent["bytes"] += len(chunk)
        sent["events"] += 1
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            response["status"] = message["status"]
        elif message["type"] == "http.response.body":
            response["body"] += message.get("body", b"")

    async def run() -> None:
        await client.app(scope, receive, send)

    client.blocking_portal.call(run)
    return response["status"], msgspec.json.decode(response["body"]), sent["bytes"], sent["events"]


@pytest.mark.slow  # 100k rows through the real API: ~25 s alone, ~2 min on a loaded 2-core machine
@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="reads the resident set size from /proc")
def test_a_100k_row_file_is_streamed_in_bounded_memory(client, tenant, other_tenant, db):
    stream_import(client, other_tenant, 2000)  # warm up: code paths, pools, caches
    baseline = resident_bytes()
    peak = {"rss": baseline}

    def sample() -> None:
        peak["rss"] = max(peak["rss"], resident_bytes())

    started = time.perf_counter()
    status, body, file_bytes, events = stream_import(client, tenant, LARGE_ROWS, on_event=sample)
    elapsed = time.perf_counter() - started
    assert status == 200, body
    assert body == {"created": LARGE_ROWS, "updated": 0, "rejected": 0, "total": LARGE_ROWS, "results": []}
    assert events >= file_bytes // 65536 > 100  # the body was read as it arrived, 64 KiB at a time
    # Sampled at every read of the body: the process never grew by as much as half the file.
    growth = peak["rss"] - baseline
    assert growth < file_bytes / 2, f"grew {growth / 1e6:.1f} MB for a {file_bytes / 1e6:.1f} MB file"
    stored = db.execute(
        "SELECT count(*) AS n, count(DISTINCT phone) AS phones,"
        " count(*) FILTER (WHERE timezone = 'America/New_York') AS ny,"
        " count(*) FILTER (WHERE fields ->> 'plan' = 'p1') AS p1"
        " FROM drumbeat.contacts WHERE workspace_id = %s",
        (tenant.workspace_id,),
    ).fetchone()
    assert stored["n"] == stored["phones"] == stored["ny"] == LARGE_ROWS
    assert stored["p1"] == len([i for i in range(LARGE_ROWS) if i % 3 == 1])
    print(
        f"\n{LARGE_ROWS} rows, {file_bytes / 1e6:.1f} MB: {elapsed:.1f} s, resident set grew {growth / 1e6:.1f} MB"
    )


def test_import_memory_does_not_grow_with_the_file(client, tenant, other_tenant):
    """Python allocations (tracemalloc) peak the same for a file four times as long: one chunk of rows
    is held at a time, never the file or its rows."""
    stream_import(client, other_tenant, 1000)  # warm up
    peaks = []
    for rows, start in ((5000, 0), (20000, 10_000)):
        tracemalloc.start()
        try:
            status, body, _, _ = stream_import(client, tenant, rows, start=start)
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
        assert status == 200 and body["created"] == rows, body
    small, large = peaks
    assert large < small * 1.5, f"peak {small / 1e6:.1f} MB for 5k rows, {large / 1e6:.1f} MB for 20k rows"
