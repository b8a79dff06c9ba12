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
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from ig_gate.errors import IgGateError
from ig_gate.middleware.bounded import Deadlines
from ig_gate.middleware.settings import RISK_LEVELS

log = logging.getLogger(__name__)

RISK_RANK = {level: rank for rank, level in enumerate(RISK_LEVELS)}
# what a device-compliance status may be: the CAEP statuses and the posture names themselves
DEVICE_STATUSES = ("compliant", "not-compliant", "managed", "unmanaged", "untrusted", "jailbroken")

_T = TypeVar("_T")
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
        if max_entries < 1:
            raise ValueError(f"risk store: max_entries must be >= 1, got {max_entries}")
        self._ttl_s = ttl_s
        # lock-free reads that never miss an entry being replaced; a live deadline is never shortened
        self._sessions: Deadlines[str, RiskOverride] = Deadlines(max_entries, clock)
        self._devices: Deadlines[str, str] = Deadlines(max_entries, clock)
        self._listeners = Listeners()

    def subscribe(self, listener: Listener) -> None:
        """Call listener(kind, key) after every change (from the writer's thread)."""
        self._listeners.add(listener)

    def get(self, session_key: str) -> RiskOverride | None:
        """The live override for a session key, or None."""
        return self._sessions.get(session_key)

    def raise_risk(self, session_key: str, risk: str, *, reason: str, ttl_s: float | None = None) -> None:
        """Raise a session's risk to at least `risk` (never lowers); a revocation stays."""
        if risk not in RISK_RANK:
            raise ValueError(f"risk store: risk must be one of {RISK_LEVELS}, got {risk!r}")

        def merge(old: RiskOverride | None, left_s: float) -> RiskOverride:
            if old is not None and old.risk is not None and RISK_RANK[old.risk] > RISK_RANK[risk]:
                return RiskOverride(old.risk, old.revoked, old.reason, time.time() + left_s)
            return RiskOverride(risk, old is not None and old.revoked, reason, time.time() + left_s)

        self._write(self._sessions, session_key, ttl_s, merge, SESSION)

    def revoke(self, session_key: str, *, reason: str, ttl_s: float | None = None) -> None:
        """Mark a session revoked (its raised risk, if any, is kept)."""

        def merge(old: RiskOverride | None, left_s: float) -> RiskOverride:
            return RiskOverride(old.risk if old is not None else None, True, reason, time.time() + left_s)

        self._write(self._sessions, session_key, ttl_s, merge, SESSION)

    def set_posture(self, device_key: str, posture: str, *, reason: str, ttl_s: float | None = None) -> None:
        """Record a device's latest compliance status; replaces the previous one."""
        if posture not in DEVICE_STATUSES:
            raise ValueError(f"risk store: device status must be one of {DEVICE_STATUSES}, got {posture!r}")
        log.info("device %s status %s (%s)", device_key, posture, reason)
        self._write(self._devices, device_key, ttl_s, lambda _old, _left_s: posture, DEVICE)

    def get_posture(self, device_key: str) -> str | None:
        """The live compliance status for a device key, or None."""
        return self._devices.get(device_key)

    def __len__(self) -> int:
        return len(self._sessions) + len(self._devices)

    def _write(
        self,
        entries: Deadlines[str, _T],
        key: str,
        ttl_s: float | None,
        merge: Callable[[_T | None, float], _T],
        kind: str,
    ) -> None:
        """entries[key] = merge(live value, seconds left) for ttl_s (the store's when None); announced."""
        dropped = entries.update(key, self._ttl(ttl_s), merge)
        if dropped:
            log.warning("risk store full: dropped %d live %s entries (oldest first)", dropped, kind)
        self._listeners.announce(kind, key)

    def _ttl(self, ttl_s: float | None) -> float:
        if ttl_s is None:
            return self._ttl_s
        if ttl_s <= 0:
            raise ValueError(f"risk store: ttl_s must be > 0, got {ttl_s}")
        return ttl_s

