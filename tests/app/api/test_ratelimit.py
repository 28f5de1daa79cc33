"""The per-caller rate limit: the token buckets on a clock of the test's own, then the real app and
database with a small limit (0.1 a second in bursts of 3, so that nothing refills during a test and
nothing sleeps): 429 with Retry-After in the API's error shape, one bucket per API key and per JWT
subject, a refused request does nothing, unauthenticated requests and probes are never counted, 0 is off."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import psycopg
import pytest
from litestar.testing import TestClient

from app.api.app import create_app
from app.api.auth import Caller
from app.api.ratelimit import RateLimited, RateLimiter, TokenBuckets
from tests.support.api import PUBLIC_URL, ApiTenant, bearer, make_jwt, new_api_tenant


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_admits_its_burst_then_one_request_per_token():
    clock = Clock()
    buckets = TokenBuckets(rate=2, burst=3, clock=clock)
    assert [buckets.take("a") for _ in range(3)] == [0, 0, 0]
    assert buckets.take("a") == pytest.approx(0.5)  # a token every 0.5 s
    clock.now += 0.25
    assert buckets.take("a") == pytest.approx(0.25)  # a refused request takes nothing
    clock.now += 0.25
    assert buckets.take("a") == 0
    assert buckets.take("b") == 0  # another key, another bucket


def test_an_idle_bucket_refills_to_its_burst_and_no_further():
    clock = Clock()
    buckets = TokenBuckets(rate=1, burst=2, clock=clock)
    buckets.take("a"), buckets.take("a")
    clock.now += 3600
    assert [buckets.take("a") for _ in range(3)] == [0, 0, pytest.approx(1.0)]


def test_buckets_idle_until_full_are_dropped():
    clock = Clock()
    buckets = TokenBuckets(rate=1, burst=5, clock=clock)
    for key in ("a", "b", "c"):
        buckets.take(key)
        clock.now += 1
    assert len(buckets) == 3
    clock.now += 2.5  # "a" was last used 5.5 s ago: full again; "b" and "c" are still refilling
    buckets.take("d")
    assert len(buckets) == 3
    clock.now += 10
    buckets.take("a")
    assert len(buckets) == 1


def test_at_most_max_buckets_are_kept_the_least_recently_used_going_first():
    clock = Clock()
    buckets = TokenBuckets(rate=1, burst=2, max_buckets=2, clock=clock)
    buckets.take("a"), buckets.take("a")
    buckets.take("b")
    buckets.take("a")  # refused, and now the most recently used
    buckets.take("c")  # evicts "b"
    assert len(buckets) == 2
    assert buckets.take("a") > 0  # still limited: its bucket was kept


def test_retry_after_is_whole_seconds_and_at_least_one():
    caller = Caller(claims={"sub": "k1"}, api_key=True)
    limiter = RateLimiter(rate=40, burst=1)
    limiter.admit(caller)
    with pytest.raises(RateLimited) as refused:
        limiter.admit(caller)
    assert refused.value.headers == {"Retry-After": "1"}  # 0.025 s, rounded up
    assert refused.value.status_code == 429
    RateLimiter(rate=0, burst=1).admit(caller)  # off
    RateLimiter(rate=0, burst=1).admit(caller)


# -- on the real app and database

RATE, BURST = 0.1, 3  # a token every 10 s: none comes back during a test


@pytest.fixture
def limited(api_settings) -> Iterator[TestClient]:
    """The real app, with DRUMBEAT_RATE_LIMIT=0.1 and DRUMBEAT_RATE_LIMIT_BURST=3."""
    settings = dataclasses.replace(api_settings, rate_limit_per_second=RATE, rate_limit_burst=BURST)
    with TestClient(create_app(settings), base_url=PUBLIC_URL) as test_client:
        yield test_client


@pytest.fixture
def acme(limited) -> ApiTenant:
    """A tenant made through the limited app: its user has spent 2 of their 3 tokens (the workspace,
    the key); its key has spent none."""
    return new_api_tenant(limited, "Acme")


def assert_rate_limited(response, caller: str) -> int:
    """The Retry-After of a 429 in the API's error shape."""
    assert response.status_code == 429, response.text
    error = response.json()["error"]
    assert error["code"] == "too_many_requests", error
    assert (
        f"from this {caller}" in error["message"] and "0.1 a second, in bursts of up to 3" in error["message"]
    )
    return int(response.headers["retry-after"])


def test_an_api_key_over_its_burst_is_429_with_retry_after_from_its_bucket(acme):
    assert [acme.get("/senders").status_code for _ in range(BURST)] == [200] * BURST
    refused = acme.get("/senders")
    retry_after = assert_rate_limited(refused, "API key")
    assert 9 <= retry_after <= 10  # the bucket is empty: its next token is ~10 s away
    assert f"retry in {retry_after} s" in refused.json()["error"]["message"]
    assert refused.headers["x-request-id"]  # still answered through the whole app


def test_every_api_key_and_every_user_has_a_bucket_of_its_own(limited, acme):
    for _ in range(BURST):
        acme.get("/senders")
    assert_rate_limited(acme.get("/senders"), "API key")
    globex = new_api_tenant(limited, "Globex")
    assert globex.get("/senders").status_code == 200  # another key
    assert limited.get("/api/v1/workspaces", headers=acme.user_headers).status_code == 200  # its user
    # The user's bucket is theirs, whichever token they send: the JWT's subject, not the token, counts.
    another_token = bearer(make_jwt(acme.user_id, expires_in=300))
    assert_rate_limited(limited.get("/api/v1/workspaces", headers=another_token), "user")
    assert globex.get("/senders").status_code == 200


def test_a_refused_request_does_nothing(acme, db_url):
    for _ in range(BURST):
        acme.get("/senders")
    refused = acme.post("/senders", {"channel": "sms", "address": "+15550000001"})
    assert_rate_limited(refused, "API key")
    with psycopg.connect(db_url) as conn:
        [(senders,)] = conn.execute(
            "SELECT count(*) FROM drumbeat.senders WHERE workspace_id = %s", (acme.workspace_id,)
        ).fetchall()
    assert senders == 0


def test_unauthenticated_requests_and_probes_are_never_counted(limited, acme):
    for _ in range(2 * BURST):
        assert limited.get("/api/v1/senders").status_code == 401
        assert limited.get("/api/v1/senders", headers=bearer("dbk_not_a_key")).status_code == 401
        assert limited.get("/api/v1/senders", headers=bearer(acme.key + "x")).status_code == 401
        assert limited.get("/healthz").status_code == 200
        assert limited.get("/readyz").status_code == 200
    assert [acme.get("/senders").status_code for _ in range(BURST)] == [200] * BURST
    assert_rate_limited(acme.get("/senders"), "API key")


def test_a_rate_of_zero_turns_the_limit_off(api_settings):
    settings = dataclasses.replace(api_settings, rate_limit_per_second=0, rate_limit_burst=1)
    with TestClient(create_app(settings), base_url=PUBLIC_URL) as unlimited:
        tenant = new_api_tenant(unlimited)
        assert {tenant.get("/senders").status_code for _ in range(10)} == {200}
