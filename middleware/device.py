"""The device signal: posture from a signed device-attestation JWT, else from a session claim.

An attestation is trusted only when signed by a key of the MDM key set (`device.attestation_jwks`) with an
allowed algorithm and carrying `exp`; anything missing, unsigned, expired or signed by another key is
"unknown". Verified attestations are cached by header value until `exp` (bounded LRU).
A device status recorded in the risk store (CAEP device-compliance-change, keyed by `device_id`, or by the
session key) can only make the posture worse: "not-compliant" -> "untrusted".
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from cachetools import LRUCache

from ig_gate.middleware.jwks import JWKSet, JWTRejected
from ig_gate.middleware.risk import RiskStore
from ig_gate.middleware.session import Session
from ig_gate.middleware.settings import DeviceSettings

POSTURES = ("managed", "unmanaged", "untrusted", "jailbroken")
UNKNOWN = "unknown"
# worse is higher; "unknown" sits between what a device says about itself and what marks it bad
_RANK = {"managed": 0, "unmanaged": 1, UNKNOWN: 2, "untrusted": 3, "jailbroken": 4}
_STATUS_POSTURE = {"not-compliant": "untrusted", "untrusted": "untrusted", "jailbroken": "jailbroken",
                   "unmanaged": "unmanaged"}


class DevicePosture:
    """posture(attestation header, session) -> managed|unmanaged|untrusted|jailbroken|unknown."""

    def __init__(
        self,
        jwks: JWKSet | None,
        settings: DeviceSettings,
        clock: Callable[[], float] = time.time,
        *,
        risk_store: RiskStore | None = None,
        cache_size: int = 10_000,
    ) -> None:
        self._jwks = jwks
        self._algorithms = tuple(a for a in settings.algorithms if a.lower() != "none")
        self._clock = clock
        self._store = risk_store
        self._cache: LRUCache[str, tuple[str, str | None, float]] = LRUCache(cache_size)
        self._lock = threading.Lock()

    def posture(self, attestation: str | None, session: Session | None) -> str:
        """The device posture for this request (never raises for a bad attestation: "unknown")."""
        posture, device_id = UNKNOWN, None
        if attestation and self._jwks is not None:
            posture, device_id = self._attested(attestation)
        elif session is not None and session.posture_claim is not None:
            posture = _normalize(session.posture_claim)
        store = self._store
        if store is not None:
            if device_id is not None:
                posture = _worse(posture, store.get_posture(device_id))
            if session is not None:
                posture = _worse(posture, store.get_posture(session.session_key))
        return posture

    def _attested(self, attestation: str) -> tuple[str, str | None]:
        now = self._clock()
        try:
            with self._lock:
                posture, device_id, exp = self._cache[attestation]
            if exp > now:
                return posture, device_id
        except KeyError:
            pass
        assert self._jwks is not None
        try:
            claims = self._jwks.decode(attestation, algorithms=self._algorithms, now=now, require=("exp",))
        except JWTRejected:
            return UNKNOWN, None
        raw_id = claims.get("device_id")
        device_id = raw_id if isinstance(raw_id, str) and raw_id else None
        posture = _normalize(claims.get("posture"))
        with self._lock:
            self._cache[attestation] = (posture, device_id, float(claims["exp"]))
        return posture, device_id


def _normalize(value: object) -> str:
    return value if isinstance(value, str) and value in POSTURES else UNKNOWN


def _worse(posture: str, status: str | None) -> str:
    """posture, made worse by a store status if that status says worse ("compliant" changes nothing)."""
    reported = _STATUS_POSTURE.get(status) if status is not None else None
    if reported is not None and _RANK[reported] > _RANK[posture]:
        return reported
    return posture
