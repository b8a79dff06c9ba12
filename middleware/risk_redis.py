"""A RiskStore in Redis, shared by every sidecar replica, and the factory that picks memory or Redis.

Entries are Redis hashes with a TTL, written by one Lua script so that concurrent writers on several
replicas keep the store's rules: risk never goes down, a revocation stays, a live entry's deadline is
never shortened. Keys: `<prefix>s:<session key>` (sid or sub) and `<prefix>d:<device key>`.

The request path reads through a small local cache (`cache_ttl_s`, default 1 s, None answers cached too)
so that a warm request costs no network round trip. Staleness bound: an event written by ANOTHER replica
is enforced here at most `cache_ttl_s` later; a write through THIS store is visible here at once.

Every write is published on the channel `<prefix>events` (by the same script, so no write goes
unannounced) as `<kind>:<key>`. `subscribe(listener)` starts one thread that listens there: a message
drops the key from the local cache, then the listener is told (middleware/risk.py `Listeners`); each
(re)subscription is announced as RESYNC, since messages sent while the subscription was down are lost.
A write through this store is also announced at once, before Redis echoes it.

Errors of Redis itself raise RiskStoreError (the gate treats them as failure-mode events). After a
connection failure or timeout the store fails fast (no network) for `retry_after_s`, so a dead Redis
does not stall every request on a socket timeout; a command Redis refuses (e.g. WRONGTYPE) raises
without that back-off.
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

import redis

from ig_gate.middleware.risk import (
    DEVICE,
    DEVICE_STATUSES,
    RESYNC,
    RISK_RANK,
    SESSION,
    InMemoryRiskStore,
    Listener,
    Listeners,
    RiskOverride,
    RiskStore,
)
from ig_gate.middleware.settings import RISK_LEVELS, ConfigError, Settings

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "ig-gate:"

# KEYS[1] entry; ARGV: op (risk|revoke|posture), value, rank, reason, ttl ms, now (epoch s), channel, message
_UPDATE = """
local key, op, value, rank, reason = KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local ttl, now = tonumber(ARGV[5]), tonumber(ARGV[6])
local left = redis.call('PTTL', key)
if left > ttl then ttl = left end
if op == 'risk' then
  if rank >= tonumber(redis.call('HGET', key, 'rank') or '-1') then
    redis.call('HSET', key, 'risk', value, 'rank', rank, 'reason', reason)
  end
elseif op == 'revoke' then
  redis.call('HSET', key, 'revoked', '1', 'reason', reason)
else
  redis.call('HSET', key, 'posture', value, 'reason', reason)
end
redis.call('HSET', key, 'until', tostring(now + ttl / 1000))
redis.call('PEXPIRE', key, ttl)
redis.call('PUBLISH', ARGV[7], ARGV[8])
return ttl
"""


class RiskStoreError(RuntimeError):
    """The risk store cannot answer (Redis unreachable, timed out, or refused the command)."""


class RedisRiskStore:
    """RiskStore in Redis with a local read cache; see the module docstring for the staleness bound."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        where: str = "redis",
        ttl_s: float = 86_400.0,
        prefix: str = DEFAULT_PREFIX,
        cache_ttl_s: float = 1.0,
        cache_size: int = 100_000,
        retry_after_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl_s <= 0:
            raise ValueError(f"risk store: ttl_s must be > 0, got {ttl_s}")
        self.redis = client
        self.where = where  # the URL without credentials, for messages
        self.prefix = prefix
        self._ttl_s = ttl_s
        self._cache_ttl = cache_ttl_s
        self._cache_size = cache_size
        self._retry_after = retry_after_s
        self._clock = clock
        self._cache: dict[str, tuple[Any, float]] = {}
        self._down_until = 0.0
        self._last_error: str | None = None
        self._update = client.register_script(_UPDATE)
        self.channel = prefix + "events"
        self._listeners = Listeners()
        self._subscriber: threading.Thread | None = None
        self._stop = threading.Event()

    @classmethod
    def from_url(cls, url: str, *, timeout_s: float = 0.25, **options: Any) -> RedisRiskStore:
        """A store on a `redis://`, `rediss://` or `unix://` URL; short socket timeouts (hot path)."""
        try:
            where = safe_url(url)
            client = redis.Redis.from_url(
                url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, decode_responses=True
            )
        except ValueError as exc:
            raise ConfigError(f"risk_store.redis_url: {exc}") from None
        return cls(client, where=where, **options)

    # -- reads (request path) -------------------------------------------------------------------

    def get(self, session_key: str) -> RiskOverride | None:
        """The live override for a session key, or None (RiskStoreError when Redis cannot answer)."""
        return self._read(self.prefix + "s:" + session_key, _override)

    def get_posture(self, device_key: str) -> str | None:
        """The live compliance status for a device key, or None (RiskStoreError when Redis cannot answer)."""
        return self._read(self.prefix + "d:" + device_key, _posture)

    def _read(self, key: str, parse: Callable[[dict[str, str]], Any]) -> Any:
        now = self._clock()
        entry = self._cache.get(key)
        if entry is not None and entry[1] > now:
            return entry[0]
        value = parse(self._call(self.redis.hgetall, key))
        if len(self._cache) >= self._cache_size:
            self._cache.clear()
        self._cache[key] = (value, now + self._cache_ttl)
        return value

    # -- writes (IdP events) --------------------------------------------------------------------

    def raise_risk(self, session_key: str, risk: str, *, reason: str, ttl_s: float | None = None) -> None:
        """Raise a session's risk to at least `risk` (never lowers); a revocation stays."""
        if risk not in RISK_RANK:
            raise ValueError(f"risk store: risk must be one of {RISK_LEVELS}, got {risk!r}")
        self._write("s:", session_key, "risk", risk, RISK_RANK[risk], reason, ttl_s)

    def revoke(self, session_key: str, *, reason: str, ttl_s: float | None = None) -> None:
        """Mark a session revoked (its raised risk, if any, is kept)."""
        self._write("s:", session_key, "revoke", "", 0, reason, ttl_s)

    def set_posture(self, device_key: str, posture: str, *, reason: str, ttl_s: float | None = None) -> None:
        """Record a device's latest compliance status; replaces the previous one."""
        if posture not in DEVICE_STATUSES:
            raise ValueError(f"risk store: device status must be one of {DEVICE_STATUSES}, got {posture!r}")
        self._write("d:", device_key, "posture", posture, 0, reason, ttl_s)

    def _write(
        self, kind: str, key: str, op: str, value: str, rank: int, reason: str, ttl_s: float | None
    ) -> None:
        ttl = self._ttl_s if ttl_s is None else ttl_s
        if ttl <= 0:
            raise ValueError(f"risk store: ttl_s must be > 0, got {ttl_s}")
        full = self.prefix + kind + key
        announced = _KINDS[kind]
        message = f"{announced}:{key}"
        args = [op, value, rank, reason, max(1, int(ttl * 1000)), time.time(), self.channel, message]
        self._call(lambda: self._update(keys=[full], args=args))
        self._cache.pop(full, None)
        self._listeners.announce(announced, key)

    # -- change notifications (open connections re-decided) ------------------------------------------

    def subscribe(self, listener: Listener) -> None:
        """Call listener(kind, key) after every change by any replica; starts the listening thread."""
        self._listeners.add(listener)
        if self._subscriber is None:
            self._subscriber = threading.Thread(target=self._listen, name="ig-gate-risk-events", daemon=True)
            self._subscriber.start()

    def _listen(self) -> None:
        pubsub = self.redis.pubsub()
        try:
            while not self._stop.is_set():
                try:
                    if not pubsub.subscribed:
                        pubsub.subscribe(self.channel)
                    message = pubsub.get_message(timeout=1.0)
                except (redis.RedisError, OSError) as exc:
                    log.warning("risk store %s: event subscription failed (%s); retrying", self.where, exc)
                    self._stop.wait(self._retry_after)
                    continue
                if message is not None:
                    self._received(message)
        finally:
            pubsub.close()

    def _received(self, message: dict[str, Any]) -> None:
        if message["type"] == "subscribe":  # (re)subscribed: what was published meanwhile is lost
            self._cache.clear()
            self._listeners.announce(RESYNC, "")
            return
        if message["type"] != "message":
            return
        data = message["data"]
        kind, _, key = (data.decode("utf-8", "replace") if isinstance(data, bytes) else data).partition(":")
        prefix = _PREFIXES.get(kind)
        if prefix is None:
            return
        self._cache.pop(self.prefix + prefix + key, None)
        self._listeners.announce(kind, key)

    # -- replay protection (SSF jti), shared by replicas -------------------------------------------

    def claim_once(self, key: str, ttl_s: float) -> bool:
        """True the first time `key` is claimed within ttl_s (by any replica), False afterwards."""
        name, ttl_ms = self.prefix + "once:" + key, max(1, int(ttl_s * 1000))
        return bool(self._call(lambda: self.redis.set(name, "1", px=ttl_ms, nx=True)))

    def remember(self, key: str, ttl_s: float) -> None:
        """Keep a claim for ttl_s from now (the event it guarded was applied)."""
        name, ttl_ms = self.prefix + "once:" + key, max(1, int(ttl_s * 1000))
        self._call(lambda: self.redis.set(name, "1", px=ttl_ms))

    def release(self, key: str) -> None:
        """Forget a claim (the event it guarded could not be applied and may be sent again); tried even
        while the store fails fast, since the write that failed may have failed for another reason."""
        self._call(self.redis.delete, self.prefix + "once:" + key, back_off=False)

    # -- shared -----------------------------------------------------------------------------------

    def _call(self, fn: Callable[..., Any], *args: Any, back_off: bool = True) -> Any:
        if back_off and self._clock() < self._down_until:
            raise RiskStoreError(f"risk store {self.where}: unavailable ({self._last_error}); retrying soon")
        try:
            return fn(*args)
        except redis.RedisError as exc:
            self._last_error = f"{type(exc).__name__}: {exc}"
            if isinstance(exc, redis.ConnectionError | redis.TimeoutError):  # unreachable: stop asking
                self._down_until = self._clock() + self._retry_after
            log.warning("risk store %s failed: %s", self.where, self._last_error)
            raise RiskStoreError(f"risk store {self.where}: {self._last_error}") from None

    def status(self) -> dict[str, Any]:
        """Where the store is, its local cache, and whether it answered the last call."""
        return {
            "backend": "redis",
            "url": self.where,
            "cache_ttl_s": self._cache_ttl,
            "cached": len(self._cache),
            "available": self._clock() >= self._down_until,
            "last_error": self._last_error,
        }

    def close(self) -> None:
        """Stop listening for changes and close the connection pool."""
        self._stop.set()
        if self._subscriber is not None:
            self._subscriber.join(2)
        self.redis.close()


def risk_store_from_settings(settings: Settings) -> RiskStore:
    """Redis when `risk_store.redis_url` is set (replicas share it), else an in-memory store."""
    store = settings.risk_store
    if store.redis_url:
        return RedisRiskStore.from_url(store.redis_url, ttl_s=store.ttl_s)
    return InMemoryRiskStore(ttl_s=store.ttl_s)


def safe_url(url: str) -> str:
    """url without user:password@ (safe for logs and status pages)."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.password is None and parsed.username is None:
        return url
    host = parsed.hostname or ""
    port = f":{parsed.port}" if parsed.port else ""
    return parsed._replace(netloc=host + port).geturl()


_KINDS = {"s:": SESSION, "d:": DEVICE}  # key prefix -> what a change is announced as
_PREFIXES = {kind: prefix for prefix, kind in _KINDS.items()}


def _override(fields: dict[str, str]) -> RiskOverride | None:
    if "risk" not in fields and "revoked" not in fields:
        return None
    return RiskOverride(
        fields.get("risk"),
        fields.get("revoked") == "1",
        fields.get("reason", ""),
        float(fields.get("until", 0)),
    )


def _posture(fields: dict[str, str]) -> str | None:
    return fields.get("posture")
