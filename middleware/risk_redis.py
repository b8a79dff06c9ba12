"""A RiskStore in Redis, shared by every replica, read on the request path from a local view.

Entries are Redis hashes with a TTL, written by one Lua script so that concurrent writers on several
replicas keep the store's rules: risk never goes down, a revocation stays, a live entry's deadline is
never shortened. Keys: `<prefix>s:<session key>` (sid or sub) and `<prefix>d:<device key>`. The script
publishes every write on the channel `<prefix>events` as `<kind>:<key>` (no write goes unannounced).

The request path never touches the network: `get` and `get_posture` read a local view
(middleware/risk_view.py), a full mirror of the live entries. One background thread keeps it current:
it subscribes to the channel; on every (re)subscription it loads the whole state (SCAN + pipelined
HGETALL/PTTL) and announces RESYNC; on every message it fetches that key; every `stale_after_s / 4` it
sends a PING on the subscription, and the answer proves that every change published before it was sent
has been applied.

Staleness bound: a change written to Redis by any replica is applied here as soon as its message arrives
(a round trip, milliseconds); the view is *synced* while it heard from Redis within `stale_after_s`
(default 2 s), so a change is never missed for longer than that without the gate knowing it. Out of sync
(Redis stopped, unreachable, or the subscription lost), keys keep their known state (an entry the view
holds; a warm session it proved clear while in sync stays clear) and a lookup of any other key raises
RiskStoreError: the gate fails by `failure_mode` (closed: 503 `risk_store_unavailable`). A subscription
that gets no answer for `stale_after_s` is dropped and made again (a fresh load follows). Metrics:
`ig_gate_risk_view_age_seconds`, `ig_gate_risk_view_synced`, `ig_gate_risk_view_dropped_total`
(middleware/metrics.py `watch_risk_store`).

Writes (`raise_risk`, `revoke`, `set_posture`, the SSF `jti` claims) do one Redis round trip and block
the calling thread: call them from a worker thread, never on an event loop (the SSF endpoint does). The
entry as Redis merged it is applied to the local view at once, then announced to the listeners. After a
connection failure or timeout, writes fail fast (RiskStoreError, no network) for `retry_after_s`; a
command Redis refuses (e.g. WRONGTYPE) raises without that back-off.

The subscriber thread starts with `start()` or `subscribe()` (the gate's start, at ASGI lifespan startup),
which wait for its first load (at most `stale_after_s`), or lazily on the first lookup for servers without
lifespan, which does not wait: until its first load the view is out of sync.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable, Iterable
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
    RiskStoreError,
)
from ig_gate.middleware.risk_view import DEVICES, SESSIONS, RiskView
from ig_gate.middleware.settings import RISK_LEVELS, ConfigError, Settings

__all__ = ["DEFAULT_PREFIX", "RedisRiskStore", "RiskStoreError", "risk_store_from_settings", "safe_url"]

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "ig-gate:"
_PURGE_EVERY_S = 10.0  # expired entries leave the view (lookups already ignore them)
_RELOAD_EVERY_S = 30.0  # while the view is incomplete (entries dropped), a full load is tried again
_BATCH = 500  # keys fetched per pipeline during a load

# KEYS[1] entry; ARGV: op (risk|revoke|posture), value, rank, reason, ttl ms, now (epoch s), channel, message
# returns {ttl ms, the entry's fields} as Redis now has them
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
return {ttl, redis.call('HGETALL', key)}
"""


class _Stalled(Exception):
    """The subscription got no answer within the staleness bound: drop it and subscribe again."""


class RedisRiskStore:
    """RiskStore in Redis, read through a local view; see the module docstring for the staleness bound."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        where: str = "redis",
        ttl_s: float = 86_400.0,
        prefix: str = DEFAULT_PREFIX,
        stale_after_s: float = 2.0,
        max_entries: int = 100_000,
        retry_after_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl_s <= 0:
            raise ValueError(f"risk store: ttl_s must be > 0, got {ttl_s}")
        self.redis = client
        self.where = where  # the URL without credentials, for messages
        self.prefix = prefix
        self.channel = prefix + "events"
        self.view = RiskView(
            stale_after_s=stale_after_s, max_entries=max_entries, where=f"risk store {where}", clock=clock
        )
        self._ttl_s = ttl_s
        self._retry_after = retry_after_s
        self._beat = stale_after_s / 4
        self._clock = clock
        self._down_until = 0.0
        self._last_error: str | None = None
        self._update = client.register_script(_UPDATE)
        self._listeners = Listeners()
        self._subscriber: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._stop = threading.Event()
        self._loaded = threading.Event()  # the first full load is applied

    @classmethod
    def from_url(cls, url: str, *, timeout_s: float = 1.0, **options: Any) -> RedisRiskStore:
        """A store on a `redis://`, `rediss://` or `unix://` URL (socket timeouts `timeout_s`: only the
        background thread and writers wait on them)."""
        try:
            where = safe_url(url)
            client = redis.Redis.from_url(
                url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, decode_responses=True,
                protocol=2,  # RESP2: a PING on a subscription is answered as a "pong" message
            )
        except ValueError as exc:
            raise ConfigError(f"risk_store.redis_url: {exc}") from None
        return cls(client, where=where, **options)

    # -- reads (request path: the local view, no I/O) -----------------------------------------------

    def get(self, session_key: str) -> RiskOverride | None:
        """The live override for a session key, or None; RiskStoreError when the view is out of sync and
        does not know the key."""
        if self._subscriber is None:
            self._start()
        return self.view.session(session_key)

    def get_posture(self, device_key: str) -> str | None:
        """The live compliance status for a device key, or None; RiskStoreError as for get()."""
        if self._subscriber is None:
            self._start()
        return self.view.posture(device_key)

    # -- writes (IdP events; from a worker thread, never on an event loop) ---------------------------

    def raise_risk(self, session_key: str, risk: str, *, reason: str, ttl_s: float | None = None) -> None:
        """Raise a session's risk to at least `risk` (never lowers); a revocation stays."""
        if risk not in RISK_RANK:
            raise ValueError(f"risk store: risk must be one of {RISK_LEVELS}, got {risk!r}")
        self._write(SESSIONS, session_key, "risk", risk, RISK_RANK[risk], reason, ttl_s)

    def revoke(self, session_key: str, *, reason: str, ttl_s: float | None = None) -> None:
        """Mark a session revoked (its raised risk, if any, is kept)."""
        self._write(SESSIONS, session_key, "revoke", "", 0, reason, ttl_s)

    def set_posture(self, device_key: str, posture: str, *, reason: str, ttl_s: float | None = None) -> None:
        """Record a device's latest compliance status; replaces the previous one."""
        if posture not in DEVICE_STATUSES:
            raise ValueError(f"risk store: device status must be one of {DEVICE_STATUSES}, got {posture!r}")
        self._write(DEVICES, device_key, "posture", posture, 0, reason, ttl_s)

    def _write(
        self, kind: str, key: str, op: str, value: str, rank: int, reason: str, ttl_s: float | None
    ) -> None:
        ttl = self._ttl_s if ttl_s is None else ttl_s
        if ttl <= 0:
            raise ValueError(f"risk store: ttl_s must be > 0, got {ttl_s}")
        announced = _ANNOUNCED[kind]
        args = [
            op, value, rank, reason, max(1, int(ttl * 1000)), time.time(), self.channel, f"{announced}:{key}"
        ]
        left_ms, flat = self._call(lambda: self._update(keys=[f"{self.prefix}{kind}:{key}"], args=args))
        self.view.apply(kind, key, _PARSE[kind](_pairs(flat)), int(left_ms) / 1000)
        self._listeners.announce(announced, key)

    # -- the subscriber: keeps the view current ------------------------------------------------------

    def subscribe(self, listener: Listener) -> None:
        """Call listener(kind, key) after every change by any replica (and RESYNC after each full load);
        starts the subscriber."""
        self._listeners.add(listener)
        self.start()

    def start(self) -> None:
        """Start the subscriber thread (once; no I/O on the calling thread), then wait for its first load
        up to stale_after_s, so that a process starting up (lifespan startup: no request is waiting) serves
        its first request in sync; with Redis down it goes on out of sync."""
        self._start()
        self._loaded.wait(self.view.stale_after_s)

    def _start(self) -> None:
        """Start the subscriber thread once (the lazy start of a lookup does not wait for its load)."""
        with self._start_lock:
            if self._subscriber is not None or self._stop.is_set():
                return
            self._subscriber = threading.Thread(target=self._follow, name="ig-gate-risk-view", daemon=True)
            self._subscriber.start()

    def _follow(self) -> None:
        while not self._stop.is_set():
            try:
                self._follow_once()
            except (redis.RedisError, OSError, _Stalled) as exc:
                self._failed(f"subscription: {type(exc).__name__}: {exc}")
            self._stop.wait(self._retry_after)

    def _follow_once(self) -> None:
        """One subscription, from SUBSCRIBE until it fails or stalls (raises) or the store closes."""
        pubsub = self.redis.pubsub()
        pings: deque[float] = deque()  # send times of the PINGs not answered yet, oldest first
        loaded, next_beat = False, 0.0
        since = self._clock()  # the subscription must be confirmed within the bound too
        housekeeping = _Housekeeping(self._clock())
        try:
            pubsub.subscribe(self.channel)
            while not self._stop.is_set():
                message = pubsub.get_message(timeout=self._beat)
                if message is not None:
                    kind = message["type"]
                    if kind == "subscribe":  # (re)subscribed: what was published meanwhile is lost
                        pubsub.ping()  # its answer proves the load plus the messages queued behind it
                        pings.append(self._clock())
                        self._load()
                        loaded = True
                    elif kind == "pong" and pings:
                        self.view.heard(pings.popleft())
                        self._last_error = None
                    elif kind == "message":
                        self._changed(message["data"])
                now = self._clock()
                if loaded and now >= next_beat:
                    pubsub.ping()
                    pings.append(now)
                    next_beat = now + self._beat
                waiting = pings[0] if pings else None if loaded else since
                if waiting is not None and now - waiting > self.view.stale_after_s:
                    raise _Stalled(f"no answer for {now - waiting:.1f}s")
                if housekeeping.due(now, self.view) and loaded:
                    self._load()
                self.view.tick()
        finally:
            pubsub.close()

    def _load(self) -> None:
        """Replace the view by the whole state in Redis, then announce RESYNC."""
        self.view.begin_load()
        try:
            loaded = {kind: dict(self._scan(kind)) for kind in (SESSIONS, DEVICES)}
        except BaseException:
            self.view.abort_load()
            raise
        self.view.finish_load(loaded)
        self._loaded.set()
        log.info("risk store %s: view loaded (%d entries)", self.where, len(self.view))
        self._listeners.announce(RESYNC, "")

    def _scan(self, kind: str) -> Iterable[tuple[str, tuple[Any, float]]]:
        start = len(self.prefix) + len(kind) + 1
        batch: list[str] = []
        for name in self.redis.scan_iter(match=f"{_glob_escape(self.prefix)}{kind}:*", count=1000):
            batch.append(name)
            if len(batch) >= _BATCH:
                yield from self._fetch(kind, batch, start)
                batch = []
        yield from self._fetch(kind, batch, start)

    def _fetch(self, kind: str, names: list[str], start: int) -> Iterable[tuple[str, tuple[Any, float]]]:
        """(key, (value, seconds left)) of each named entry, in one pipelined round trip."""
        if not names:
            return
        pipe = self.redis.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(name)
            pipe.pttl(name)
        replies = pipe.execute(raise_on_error=False)
        parse = _PARSE[kind]
        for name, fields, left_ms in zip(names, replies[0::2], replies[1::2], strict=True):
            if isinstance(fields, Exception) or isinstance(left_ms, Exception):  # not an entry (WRONGTYPE)
                log.warning("risk store %s: %s is not a risk entry (%s); ignored", self.where, name, fields)
                continue
            yield name[start:], (parse(fields), _seconds_left(left_ms, self._ttl_s))

    def _changed(self, data: str | bytes) -> None:
        """A change published by a replica (this one too): fetch the entry, apply it, announce it."""
        text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
        announced, _, key = text.partition(":")
        kind = _KINDS.get(announced)
        if kind is None:
            return
        for _, (value, left_s) in self._fetch(kind, [f"{self.prefix}{kind}:{key}"], 0):
            self.view.apply(kind, key, value, left_s)
        self._listeners.announce(announced, key)

    def _failed(self, error: str) -> None:
        if error != self._last_error:
            log.warning("risk store %s: %s; retrying", self.where, error)
        self._last_error = error

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
        """Where the store is, whether its view is in sync, how old and how full it is."""
        view = self.view
        age = view.age()
        return {
            "backend": "redis",
            "url": self.where,
            "synced": view.synced(),
            "view_age_s": round(age, 3) if math.isfinite(age) else None,
            "stale_after_s": view.stale_after_s,
            "entries": len(view),
            "max_entries": view.max_entries,
            "dropped": view.dropped,
            "available": view.synced() and self._clock() >= self._down_until,
            "last_error": self._last_error,
        }

    def close(self) -> None:
        """Stop the subscriber and close the connection pool."""
        self._stop.set()
        if self._subscriber is not None:
            self._subscriber.join(2 * self._beat + 2)
        self.redis.close()


class _Housekeeping:
    """When the subscriber purges expired entries, and reloads a view that had to drop entries."""

    def __init__(self, now: float) -> None:
        self._purge_at = now + _PURGE_EVERY_S
        self._reload_at = now + _RELOAD_EVERY_S

    def due(self, now: float, view: RiskView) -> bool:
        """Purge when it is time; True when a full load is due (the view dropped entries)."""
        if now >= self._purge_at:
            self._purge_at = now + _PURGE_EVERY_S
            view.purge()
        if now < self._reload_at:
            return False
        self._reload_at = now + _RELOAD_EVERY_S
        return view.dropped > 0 and not view.synced()


def risk_store_from_settings(settings: Settings) -> RiskStore:
    """Redis when `risk_store.redis_url` is set (replicas share it), else an in-memory store."""
    store = settings.risk_store
    if store.redis_url:
        return RedisRiskStore.from_url(
            store.redis_url,
            ttl_s=store.ttl_s,
            stale_after_s=store.stale_after_s,
            max_entries=store.max_entries,
        )
    return InMemoryRiskStore(ttl_s=store.ttl_s)


def safe_url(url: str) -> str:
    """url without user:password@ (safe for logs and status pages)."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.password is None and parsed.username is None:
        return url
    host = parsed.hostname or ""
    port = f":{parsed.port}" if parsed.port else ""
    return parsed._replace(netloc=host + port).geturl()


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


def _pairs(flat: list[str]) -> dict[str, str]:
    """HGETALL's flat [field, value, ...] reply (as a script returns it) as a dict."""
    return dict(zip(flat[0::2], flat[1::2], strict=True))


def _seconds_left(left_ms: int, default_s: float) -> float:
    """PTTL in seconds: -2 (gone) -> 0; -1 (no expiry, not written by this store) -> default_s."""
    if left_ms == -1:
        return default_s
    return max(0, left_ms) / 1000


def _glob_escape(text: str) -> str:
    """text matched literally in a SCAN MATCH pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


_KINDS = {SESSION: SESSIONS, DEVICE: DEVICES}  # what a change is announced as -> the kind of entry
_ANNOUNCED = {kind: announced for announced, kind in _KINDS.items()}
_PARSE: dict[str, Callable[[dict[str, str]], Any]] = {SESSIONS: _override, DEVICES: _posture}
