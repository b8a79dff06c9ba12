"""Per-tenant request caps: a token bucket per (tenant, profile) from `tenants.<id>.max_qps.<profile>`.

A bucket holds at most `max_qps` tokens (one second of burst) and refills at `max_qps` tokens/s; a
request takes one token or is refused (429, `Retry-After: 1`: caps are >= 1 request/s, so a token is
back within a second). Tenants and profiles without a cap have no bucket and cost one dict miss.

**Shared across processes and replicas** when `risk_store.redis_url` is set: the request path still
only touches the local bucket (no I/O on the event loop). A background sync (`sync()`, every
`SYNC_S` from the gate's workload thread) sends each bucket's tokens consumed since the last sync to
Redis, where a Lua script keeps the global bucket (refilled at `max_qps`, capped at `max_qps`), records
the process as a sharer, and answers the global tokens left and the number of processes that used the
bucket in the last `SHARER_TTL_S`; the local bucket is then set to `left / sharers`, refilling at
`max_qps / sharers`. Bound: between two syncs the N sharers admit at most the global tokens left plus
`max_qps * SYNC_S` in total, i.e. a tenant gets at most `max_qps * (1 + SYNC_S)` in any second while its
sharers stay the same (a process that starts sharing is counted from its first sync). When Redis cannot
be reached the local buckets keep their last share (fail safe for the others: never more than the local
cap) and `ig_gate_caps_redis_synced` is 0.

Without Redis (documented in docs/autoscaling.md) each process enforces the cap on its own: N workers
or replicas admit up to N x `max_qps` between them.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from ig_gate.middleware.settings import TenantSettings

log = logging.getLogger("ig_gate.caps")

SYNC_S = 0.25  # seconds between Redis syncs of consumed tokens
SHARER_TTL_S = 2.0  # a process that has not synced a bucket for this long no longer shares it
RETRY_AFTER_S = 1
KEY_PREFIX = "ig-gate:caps:"

# KEYS[1] bucket hash, KEYS[2] sharers zset; ARGV: rate, consumed, now (s), process id, sharer ttl (s)
_LUA = """
local rate = tonumber(ARGV[1])
local consumed = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local tokens = tonumber(redis.call('HGET', KEYS[1], 'tokens') or ARGV[1])
local at = tonumber(redis.call('HGET', KEYS[1], 'at') or ARGV[3])
tokens = math.min(rate, tokens + math.max(0, now - at) * rate) - consumed
if tokens < -rate then tokens = -rate end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('EXPIRE', KEYS[1], 60)
redis.call('ZADD', KEYS[2], now, ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[5]))
redis.call('EXPIRE', KEYS[2], 60)
return {tostring(tokens), redis.call('ZCARD', KEYS[2])}
"""


class TokenBucket:
    """A local token bucket; `take()` costs ~0.3 µs. Not locked: the gate's loop thread is its only
    taker; a sync from another thread only replaces `tokens`/`rate` (a request racing it may be decided
    with the value before the sync, which the next sync accounts for)."""

    __slots__ = ("at", "cap", "consumed", "rate", "tokens")

    def __init__(self, cap: float, now: float) -> None:
        self.cap = self.rate = self.tokens = cap
        self.at = now
        self.consumed = 0

    def take(self, now: float) -> bool:
        tokens = self.tokens + (now - self.at) * self.rate
        if tokens > self.cap:
            tokens = self.cap
        self.at = now
        if tokens < 1.0:
            self.tokens = tokens
            return False
        self.tokens = tokens - 1.0
        self.consumed += 1
        return True


class TenantCaps:
    """The buckets of every capped (tenant, profile); shared through Redis when a client is given."""

    def __init__(
        self,
        tenants: Mapping[str, TenantSettings],
        redis: Any = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        now = clock()
        self.caps = {(t, p): cap for t, s in tenants.items() for p, cap in s.max_qps.items()}
        self._buckets = {key: TokenBucket(cap, now) for key, cap in self.caps.items()}
        self.refused: dict[tuple[str, str], int] = dict.fromkeys(self.caps, 0)
        self._redis = redis
        self._script = redis.register_script(_LUA) if redis is not None else None
        self.process_id = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"  # this process, in Redis
        self.synced: bool | None = None if redis is None else False

    def take(self, tenant: str | None, profile: str) -> bool:
        """False when the tenant is over its cap for this profile (the refusal is counted)."""
        bucket = self._buckets.get((tenant, profile))  # type: ignore[arg-type]
        if bucket is None or bucket.take(self._clock()):
            return True
        self.refused[(tenant, profile)] += 1  # type: ignore[index]
        return False

    def sync(self) -> None:
        """Exchange consumed tokens with Redis (a background thread; no-op without Redis)."""
        if self._script is None:
            return
        try:
            now = time.time()
            for (tenant, profile), bucket in self._buckets.items():
                consumed, bucket.consumed = bucket.consumed, 0
                key = f"{KEY_PREFIX}{tenant}:{profile}"
                left, sharers = self._script(
                    keys=[key, key + ":sharers"],
                    args=[bucket.cap, consumed, now, self.process_id, SHARER_TTL_S],
                )
                sharers = max(1, int(sharers))
                bucket.rate = bucket.cap / sharers
                bucket.tokens = min(float(left), bucket.cap) / sharers
                bucket.at = self._clock()
            self.synced = True
        except Exception as exc:  # redis.RedisError, OSError: keep the last shares, say so
            if self.synced is not False:
                log.warning("ig-gate caps: Redis sync failed (local shares kept): %s", type(exc).__name__)
            self.synced = False
