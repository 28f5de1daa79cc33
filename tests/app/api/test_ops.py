"""Operations endpoints: liveness, readiness (database reachable, schema current) and Prometheus metrics
(database figures and, with the middleware installed, HTTP request latency)."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator

import psycopg
import pytest
from litestar.testing import TestClient
from psycopg.types.json import Jsonb

from app.api import ops
from app.api.app import create_app
from app.core.sqlfiles import migration_files
from tests.sql.factories import SMS_SEQUENCE, new_tenant
from tests.support.api import PUBLIC_URL
from workers.dispatcher import Dispatcher
from workers.transports import Message, SendResult

NOW = "2026-11-23 14:00Z"
SAMPLE = re.compile(
    r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})? (\S+)$'
)


def parse(text: str) -> dict[str, float]:
    """Every sample of a text exposition as {'name{labels}': value}, checking the format on the way:
    each family has HELP and TYPE before its samples, and every sample line is well formed."""
    samples: dict[str, float] = {}
    typed: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# HELP ") or not line:
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("gauge", "counter", "histogram"), line
            typed.add(name)
            continue
        match = SAMPLE.match(line)
        assert match, f"malformed sample line: {line!r}"
        name = match.group(1)
        assert name in typed or re.sub(r"_(bucket|count|sum)$", "", name) in typed, f"no TYPE for {name}"
        samples[name + (match.group(2) or "")] = float(match.group(3))
    return samples


def test_healthz_needs_nothing(client):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_readyz_when_every_migration_is_applied(client):
    response = client.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ok", "migrations": len(migration_files())}


def test_readyz_shows_a_held_channel_and_still_serves(client, db_url):
    with psycopg.connect(db_url) as conn:
        conn.execute(
            """INSERT INTO drumbeat.channel_holds (channel, reason, error_code, held_since, probe_at)
               VALUES ('sms', 'auth', '20003', '2026-11-23 14:00Z', '2026-11-23 14:01Z')"""
        )
    response = client.get("/readyz")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "degraded"
    assert body["held_channels"] == [
        {
            "channel": "sms",
            "reason": "auth",
            "error_code": "20003",
            "held_since": "2026-11-23T14:00:00+00:00",
            "next_probe_at": "2026-11-23T14:01:00+00:00",
        }
    ]


def test_readyz_is_503_naming_a_missing_migration(client, db_url):
    last = migration_files()[-1].name
    with psycopg.connect(db_url) as conn:
        conn.execute("DELETE FROM drumbeat_meta.schema_migrations WHERE name = %s", (f"migrations/{last}",))
    response = client.get("/readyz")
    assert response.status_code == 503
    error = response.json()["error"]
    assert (
        error["code"] == "not_ready" and last in error["message"] and "drumbeat migrate" in error["message"]
    )
    assert client.get("/healthz").status_code == 200  # alive, just not ready


def test_readyz_is_503_naming_a_function_file_the_database_runs_another_version_of(client, db_url):
    """A server newer than the database's functions (deployed before `drumbeat migrate`) is not ready."""
    with psycopg.connect(db_url) as conn:
        conn.execute(
            "UPDATE drumbeat_meta.schema_migrations SET checksum = 'older' WHERE name = 'functions/dispatch.sql'"
        )
    response = client.get("/readyz")
    assert response.status_code == 503
    assert "functions/dispatch.sql" in response.json()["error"]["message"]


class Capturing:
    name = "capture"
    concurrent = False

    def send(self, message: Message) -> SendResult:
        return SendResult(sent=True, provider_message_id=f"SM-{message.delivery_id}")


@pytest.fixture
def activity(db_url) -> dict:
    """Three SMS deliveries sent through a real claim (then placed in the last hour with known send times:
    0.05 s, 0.7 s and 45 s after their claim), and two enrollments of an active sequence due 90 s ago."""
    with psycopg.connect(db_url) as conn:
        conn.execute("SELECT set_config('drumbeat.clock', %s, false)", (NOW,))
        tenant = new_tenant(conn)
        sent = tenant.sequence(SMS_SEQUENCE)
        tenant.enroll(sent, tenant.contacts(*({"phone": f"+1555010100{i}"} for i in range(3))))
        waiting = tenant.sequence({**SMS_SEQUENCE, "name": "Waiting"})
        due = [
            r[1]
            for r in tenant.enroll(
                waiting,
                tenant.contacts(*({"phone": f"+1555010200{i}"} for i in range(2))),
                start_at="2026-12-31",
            )
        ]
        conn.commit()
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("SELECT set_config('drumbeat.clock', %s, false)", (NOW,))
        assert Dispatcher(conn, {"sms": Capturing()}).run_once() == 3
    # Test data placed in time as superuser: what the metrics read is when things happened.
    with psycopg.connect(db_url) as conn:
        conn.execute(
            """UPDATE drumbeat.deliveries d SET claimed_at = now() - interval '5 minutes',
                      scheduled_for = now() - interval '5 minutes',
                      sent_at = now() - interval '5 minutes' + x.lateness * interval '1 second'
               FROM (SELECT id, (ARRAY[0.05, 0.7, 45])[row_number() OVER (ORDER BY id)] AS lateness
                     FROM drumbeat.deliveries) AS x WHERE x.id = d.id"""
        )
        conn.execute(
            """UPDATE drumbeat.enrollments SET next_action_at = CASE WHEN id = ANY (%s)
                   THEN now() - interval '90 seconds' ELSE now() + interval '1 day' END
               WHERE status IN ('scheduled', 'active')""",
            (due,),
        )
    return {"due": due}


def test_metrics_report_deliveries_backlog_and_lateness(client, db_url, activity):
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = parse(response.text)
    assert samples['drumbeat_deliveries_last_hour{channel="sms",status="sent"}'] == 3
    assert samples["drumbeat_deliveries_sending"] == 0
    assert samples["drumbeat_due_enrollments"] == 2
    assert 90 <= samples["drumbeat_due_oldest_age_seconds"] < 150
    buckets = {
        key.split('le="')[1].rstrip('"}'): v
        for key, v in samples.items()
        if key.startswith("drumbeat_send_lateness_seconds_bucket")
    }
    assert buckets == {
        "0.1": 1,
        "0.25": 1,
        "0.5": 1,
        "1": 2,
        "2.5": 2,
        "5": 2,
        "10": 2,
        "30": 2,
        "60": 3,
        "+Inf": 3,
    }
    assert samples["drumbeat_send_lateness_seconds_count"] == 3
    assert samples["drumbeat_send_lateness_seconds_sum"] == pytest.approx(45.75)
    assert samples["drumbeat_database_up"] == 1
    # Aggregates only: no tenant, contact, enrollment or delivery ids, no phone numbers.
    with psycopg.connect(db_url) as conn:
        ids = [
            str(r[0])
            for r in conn.execute(
                "SELECT id FROM drumbeat.workspaces UNION ALL SELECT id FROM drumbeat.deliveries"
            )
        ]
    assert not any(i in response.text for i in ids + [str(d) for d in activity["due"]])
    assert "+1555" not in response.text


def test_metrics_on_an_empty_database(client):
    samples = parse(client.get("/metrics").text)
    assert samples["drumbeat_due_enrollments"] == 0 and samples["drumbeat_due_oldest_age_seconds"] == 0
    assert samples['drumbeat_send_lateness_seconds_bucket{le="+Inf"}'] == 0
    assert not any(k.startswith("drumbeat_deliveries_last_hour") for k in samples)


@pytest.fixture
def instrumented(api_settings) -> Iterator[TestClient]:
    """The real app, whose on_app_init installs the request-latency middleware (ops.install)."""
    with TestClient(create_app(api_settings), base_url=PUBLIC_URL) as test_client:
        yield test_client


def test_http_latency_histogram_per_route_template(instrumented):
    for _ in range(2):
        assert instrumented.get("/healthz").status_code == 200
    token = "c2VjcmV0LXRva2VuLXRoYXQtbXVzdC1ub3QtbGVhaw"
    assert instrumented.get(f"/t/o/{token}").status_code == 200
    assert instrumented.get("/api/v1/workspaces").status_code == 401
    text = instrumented.get("/metrics").text
    samples = parse(text)
    name = "drumbeat_http_request_duration_seconds"
    assert samples[f'{name}_count{{method="GET",route="/healthz",status="200"}}'] == 2
    assert samples[f'{name}_bucket{{method="GET",route="/healthz",status="200",le="+Inf"}}'] == 2
    assert samples[f'{name}_count{{method="GET",route="/t/o/{{token}}",status="200"}}'] == 1
    assert samples[f'{name}_count{{method="GET",route="/api/v1/workspaces",status="401"}}'] == 1
    assert token not in text  # route templates, never concrete paths
    bounds = [k for k in samples if k.startswith(f'{name}_bucket{{method="GET",route="/healthz"')]
    assert len(bounds) == len(ops.HTTP_BUCKETS) + 1


def test_http_histogram_exposition_escapes_labels():
    registry = ops.HttpMetrics(buckets=(0.1, 1))
    registry.observe("GET", '/a"b\\c\nd', 200, 0.5)
    lines = registry.exposition()
    assert 'route="/a\\"b\\\\c\\nd"' in lines[2]
    assert (
        parse("\n".join(lines))[
            'drumbeat_http_request_duration_seconds_bucket{method="GET",route="/a\\"b\\\\c\\nd",status="200",le="1"}'
        ]
        == 1
    )


def test_webhooks_and_ops_are_documented_without_bearer_auth(client):
    spec = client.get("/docs/openapi.json").json()
    for path, method in (("/webhooks/twilio/status", "post"), ("/t/c/{token}", "get"), ("/metrics", "get")):
        assert spec["paths"][path][method]["security"] == [{}], path


def test_numbers_render_as_prometheus_expects():
    assert ops.number(3) == "3" and ops.number(0.25) == "0.25" and ops.number(float("inf")) == "+Inf"
    assert ops.number(None) == "NaN" and ops.number(dt.timedelta(seconds=1.5).total_seconds()) == "1.5"


def test_metrics_show_the_webhook_backlog_and_switched_off_endpoints(client, db_url):
    with psycopg.connect(db_url) as conn:
        tenant = new_tenant(conn)
        tenant.as_owner()
        endpoints = [
            conn.execute(
                "SELECT drumbeat_api.create_webhook_endpoint(%s, %s)",
                (tenant.workspace_id, Jsonb({"url": f"https://hooks{n}.example.com/"})),
            ).fetchone()[0]["id"]
            for n in range(2)
        ]
        for endpoint in endpoints:
            conn.execute("SELECT drumbeat_api.test_webhook_endpoint(%s)", (endpoint,))
        conn.execute("RESET ROLE")
        conn.execute("UPDATE drumbeat.webhook_messages SET next_attempt_at = now() - interval '90 seconds'")
        conn.execute(
            "SELECT drumbeat.disable_webhook_endpoint(%s, 'gone', 'the receiver answered 410 Gone')",
            (endpoints[1],),
        )
        conn.commit()
    samples = parse(client.get("/metrics").text)
    assert samples["drumbeat_webhooks_due"] == 2  # one of them waits for its endpoint to be switched back on
    assert 89 <= samples["drumbeat_webhooks_due_oldest_age_seconds"] < 150
    assert samples["drumbeat_webhook_endpoints_disabled"] == 1
