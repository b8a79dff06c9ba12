"""Session risk raised after issue (IdP risk events, CAEP): the RiskStore protocol and an in-memory store.

Session keys: a token's `sid` claim when present, else its `sub`; the SessionVerifier consults both, so an
event that names the user (sub) reaches every session of that user. Device keys: the attested `device_id`
(or a session key) for CAEP device-compliance-change events.
Risk only ever goes up in a store (`raise_risk` never lowers it; `revoke` is final until the entry lapses).
A device posture entry holds the latest reported status and may go either way (compliant / not-compliant).
A Redis implementation with the same protocol comes with the sidecar.
Every write is announced to the callbacks given to `subscribe(callback)` as callback(kind, key), kind
SESSION or DEVICE: the gate re-decides the open connections of that session (middleware/live.py).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from ig_gate.errors import IgGateError
from ig_gate.middleware.settings import RISK_LEVELS

log = logging.getLogger(__name__)

RISK_RANK = {level: rank for rank, level in enumerate(RISK_LEVELS)}
# what a device-compliance status may be: the CAEP statuses and the posture names themselves
DEVICE_STATUSES = ("compliant", "not-compliant", "managed", "unmanaged", "untrusted", "jailbroken")

_V = TypeVar("_V")
# what a store announces to its listeners: (kind, key); RESYNC (key "") after a lost subscription
SESSION, DEVICE, RESYNC = "session", "device", "resync"
Listener = Callable[[str, str], None]


class RiskStoreError(IgGateError, RuntimeError):
    """The risk store cannot answer: a shared store unreachable, timed out or refused the command, or its
    local view is out of sync and does not know the key (the gate fails by `failure_mode`)."""


@dataclass(frozen=True, slots=True)
class RiskOverride:
    """What a store says about a session: raised risk (or None), revoked, why, and until when (epoch s)."""

    risk: str | None
    revoked: bool
    reason: str
    until: float  # wall-clock epoch seconds, informational; expiry itself runs on a monotonic clock


class RiskStore(Protocol):
    """Where IdP risk events raise a session's risk, revoke it, or report a device's compliance."""

    def get(self, session_key: str) -> RiskOverride | None:
        """The live override for a session key, or None."""

    def raise_risk(self, session_key: str, risk: str, *, reason: str, ttl_s: float | None = None) -> None:
        """Raise a session's risk to at least `risk` (never lowers)."""

    def revoke(self, session_key: str, *, reason: str, ttl_s: float | None = None) -> None:
        """Mark a session revoked."""

    def set_posture(self, device_key: str, posture: str, *, reason: str, ttl_s: float | None = None) -> None:
        """Record a device's latest compliance status (one of DEVICE_STATUSES)."""

    def get_posture(self, device_key: str) -> str | None:
        """The live compliance status for a device key, or None."""

    def subscribe(self, listener: Listener) -> None:
        """Call listener(kind, key) after every change (from the writer's thread; it must not block)."""


class Listeners:
    """The callbacks of a store's `subscribe`; a failing callback is logged, never raised to the writer."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def add(self, listener: Listener) -> None:
        """Call listener on every announce()."""
        self._listeners.append(listener)

    def announce(self, kind: str, key: str) -> None:
        """Tell every listener that `key` (of `kind`) changed."""
        for listener in self._listeners:
            try:
                listener(kind, key)
            except Exception:
                log.exception("risk store listener failed for a %s change", kind)


class _Bounded:
    """A thread-safe dict of (value, monotonic deadline) with a size bound; reads take no lock."""

    __slots__ = ("_clock", "_entries", "_lock", "_max", "_what")

    def __init__(self, max_entries: int, clock: Callable[[], float], what: str) -> None:
        if max_entries < 1:
            raise ValueError(f"risk store: max_entries must be >= 1, got {max_entries}")
        self._entries: OrderedDict[str, tuple[object, float]] = OrderedDict()
        self._lock = threading.Lock()
        self._max = max_entries
        self._clock = clock
        self._what = what

    def get(self, key: str) -> object | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[1] > self._clock():
            return entry[0]
        with self._lock:
            if self._entries.get(key) is entry:
                del self._entries[key]
        return None

    def update(self, key: str, ttl_s: float, merge: Callable[[_V | None, float], _V]) -> None:
        """Replace key's value by merge(live value or None, seconds left), under the lock.

        A live entry's deadline is never shortened: the new deadline is the later of the two.
        """
        with self._lock:
            now = self._clock()
            old = self._entries.get(key)
            live = old[0] if old is not None and old[1] > now else None
            deadline = max(now + ttl_s, old[1]) if old is not None and live is not None else now + ttl_s
            # replaced in place (never absent in between: lock-free readers must not miss a revocation)
            self._entries[key] = (merge(live, deadline - now), deadline)  # type: ignore[arg-type]
            self._entries.move_to_end(key)
            if len(self._entries) > self._max:
                self._evict(now)

    def __len__(self) -> int:
        return len(self._entries)

    def _evict(self, now: float) -> None:
        for key in [k for k, (_, deadline) in self._entries.items() if deadline <= now]:
            del self._entries[key]
        dropped = 0
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)
            dropped += 1
        if dropped:
            log.warning("risk store full: dropped %d live %s entries (oldest first)", dropped, self._what)


class InMemoryRiskStore:
    """A bounded, TTL'd, thread-safe RiskStore for one process (monotonic clock for expiry)."""

    def __init__(
        self,
        *,
        ttl_s: float = 86_400.0,
        max_entries: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl_s <= 0:
            raise ValueError(f"risk store: ttl_s must be > 0, got {ttl_s}")
        self._ttl_s = ttl_s
        self._sessions = _Bounded(max_entries, clock, "session")
        self._devices = _Bounded(max_entries, clock, "device")
        self._listeners = Listeners()

    def subscribe(self, listener: Listener) -> None:
        """Call listener(kind, key) after every change (from the writer's thread)."""
        self._listeners.add(listener)

    def get(self, session_key: str) -> RiskOverride | None:
        """The live override for a session key, or None."""
        return self._sessions.get(session_key)  # type: ignore[return-value]

    def raise_risk(self, session_key: str, risk: str, *, reason: str, ttl_s: float | None = None) -> None:
        """Raise a session's risk to at least `risk` (never lowers); a revocation stays."""
        if risk not in RISK_RANK:
            raise ValueError(f"risk store: risk must be one of {RISK_LEVELS}, got {risk!r}")

        def merge(old: RiskOverride | None, left_s: float) -> RiskOverride:
            if old is not None and old.risk is not None and RISK_RANK[old.risk] > RISK_RANK[risk]:
                return RiskOverride(old.risk, old.revoked, old.reason, time.time() + left_s)
            return RiskOverride(risk, old is not None and old.revoked, reason, time.time() + left_s)

        self._sessions.update(session_key, self._ttl(ttl_s), merge)
        self._listeners.announce(SESSION, session_key)

    def revoke(self, session_key: str, *, reason: str, ttl_s: float | None = None) -> None:
        """Mark a session revoked (its raised risk, if any, is kept)."""

        def merge(old: RiskOverride | None, left_s: float) -> RiskOverride:
            return RiskOverride(old.risk if old is not None else None, True, reason, time.time() + left_s)

        self._sessions.update(session_key, self._ttl(ttl_s), merge)
        self._listeners.announce(SESSION, session_key)

    def set_posture(self, device_key: str, posture: str, *, reason: str, ttl_s: float | None = None) -> None:
        """Record a device's latest compliance status; replaces the previous one."""
        if posture not in DEVICE_STATUSES:
            raise ValueError(f"risk store: device status must be one of {DEVICE_STATUSES}, got {posture!r}")
        log.info("device %s status %s (%s)", device_key, posture, reason)
        self._devices.update(device_key, self._ttl(ttl_s), lambda _old, _left_s: posture)
        self._listeners.announce(DEVICE, device_key)

    def get_posture(self, device_key: str) -> str | None:
        """The live compliance status for a device key, or None."""
        return self._devices.get(device_key)  # type: ignore[return-value]

    def __len__(self) -> int:
        return len(self._sessions) + len(self._devices)

    def _ttl(self, ttl_s: float | None) -> float:
        if ttl_s is None:
            return self._ttl_s
        if ttl_s <= 0:
            raise ValueError(f"risk store: ttl_s must be > 0, got {ttl_s}")
        return ttl_s

