"""The per-caller rate limit: a token bucket for each API key (by its id) and each JWT subject.

A caller may send `burst` requests at once, then `rate` a second on average; a request over that is
refused with 429 and a Retry-After header saying in how many seconds its bucket will hold a token again.
It is checked right after authentication (only then is the caller known: an API key is looked up in the
database) and before the request's own work, in memory: it adds no database round trip. Unauthenticated
requests, webhooks and /healthz, /readyz and /metrics never reach it (they are not under /api/v1).

The limit is per API process: each process (uvicorn --workers, replicas) keeps its own buckets, so a
caller's ceiling is `rate` times the number of processes serving it.

Memory stays bounded: a bucket left idle until it has refilled is the same as no bucket and is dropped,
and at most `max_buckets` are kept (the least recently used goes first)."""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

from litestar.exceptions import TooManyRequestsException

from app.api.auth import Caller

# About 300 bytes a bucket, its key included (measured): ~30 MB at most. Only callers seen within the
# last burst/rate seconds (2 s by default) hold one, so it takes that many distinct live keys to get there.
MAX_BUCKETS = 100_000


class TokenBuckets:
    """Token buckets by key, each holding up to `burst` tokens and refilled at `rate` tokens a second.

    Not locked: take() never awaits, so on the event loop one call runs to its end before the next."""

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        max_buckets: int = MAX_BUCKETS,
        clock: Callable[[], float] = time.monotonic,
    ):
        if rate <= 0 or burst < 1:
            raise ValueError("a token bucket needs a rate > 0 and a burst >= 1")
        self.rate = rate
        self.burst = burst
        self.max_buckets = max_buckets
        self._clock = clock
        self._full_after = burst / rate  # seconds in which an empty bucket refills completely
        # key -> (tokens, when they were counted), least recently used first
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str) -> float:
        """Take a token from key's bucket: 0.0 when it had one, else the seconds until it will."""
        now = self._clock()
        self._drop_refilled(now)
        tokens = self._tokens(key, now)
        if tokens >= 1:
            self._keep(key, tokens - 1, now)
            return 0.0
        self._keep(key, tokens, now)
        return (1 - tokens) / self.rate

    def __len__(self) -> int:
        return len(self._buckets)

    def _tokens(self, key: str, now: float) -> float:
        """The tokens in key's bucket now (taking it out of the order; _keep puts it back last)."""
        bucket = self._buckets.pop(key, None)
        if bucket is None:
            return float(self.burst)
        tokens, counted_at = bucket
        return min(float(self.burst), tokens + (now - counted_at) * self.rate)

    def _keep(self, key: str, tokens: float, now: float) -> None:
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > self.max_buckets:
            self._buckets.popitem(last=False)

    def _drop_refilled(self, now: float) -> None:
        """Drop the buckets idle long enough to be full again: oldest first, so this stops at the first
        one still refilling (amortized O(1) a call)."""
        while self._buckets:
            key, (_, counted_at) = next(iter(self._buckets.items()))
            if now - counted_at < self._full_after:
                return
            del self._buckets[key]


class RateLimited(TooManyRequestsException):
    """429, with Retry-After in whole seconds (at least 1)."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(detail=message, headers={"Retry-After": str(retry_after)})


class RateLimiter:
    """The app's per-caller limit (app state `rate_limiter`); `rate` 0 turns it off."""

    def __init__(self, rate: float, burst: int):
        self.rate = rate
        self.burst = burst
        self._buckets = TokenBuckets(rate, burst) if rate > 0 else None

    def admit(self, caller: Caller) -> None:
        """Count one request of caller's, or raise RateLimited when its bucket is empty."""
        if self._buckets is None:
            return
        wait = self._buckets.take(caller_key(caller))
        if wait > 0:
            retry_after = max(1, math.ceil(wait))
            raise RateLimited(
                f"too many requests from this {'API key' if caller.api_key else 'user'} (the limit is "
                f"{self.rate:g} a second, in bursts of up to {self.burst}): retry in {retry_after} s",
                retry_after,
            )


def caller_key(caller: Caller) -> str:
    """An API key's id and a user's id are both UUIDs; the prefix keeps the two from ever sharing a bucket."""
    return f"{'key' if caller.api_key else 'user'}:{caller.user_id}"
