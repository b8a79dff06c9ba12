"""The device signal: posture from a signed device-attestation JWT bound to the session, else a session claim.

An attestation is trusted only when signed by a key of the MDM key set (`device.attestation_jwks`) with an
allowed algorithm, carrying `exp`, and — when configured — the MDM's `iss` (`device.issuer`) and an `aud`
naming `device.audience`. Otherwise it is "unknown" with the reason `device_attestation_invalid`.

A valid attestation counts only for the session it was issued for (it is not a bearer credential):
- its `device.subject_claim` (default `sub`) must equal the session's subject;
- when the IdP token names a device (`identity.device_claim`), the attestation's `device.device_id_claim`
  must equal it;
- when the attestation carries `cnf.jkt` (RFC 7800: the JWK SHA-256 thumbprint of the device key), the IdP
  token must carry the same `cnf.jkt` (a DPoP-bound token, RFC 9449). A token bound to a key accepts an
  attestation that names none. A `cnf` without a string `jkt` cannot be compared: invalid.
  ig-gate compares thumbprints only: it does not verify a DPoP proof in the request, so proof of possession
  of that key is only as strong as whoever checks the DPoP proof (the IdP at issue, the app on use).
Otherwise the posture is "unknown" with the reason `device_binding_mismatch`. The reason is returned by
`assess()` for the decision log and metrics; an attestation that was not used never falls back to the
token's posture claim.

Verified attestations are cached by header value until `exp` (bounded LRU); the binding is checked on
every call, against that call's session.
A device status recorded in the risk store (CAEP device-compliance-change, keyed by the device id of a bound
attestation, or by the session key) can only make the posture worse: "not-compliant" -> "untrusted".
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from ig_gate.middleware.bounded import LRU
from ig_gate.middleware.jwks import JWKSet, JWTRejected
from ig_gate.middleware.risk import RiskStore
from ig_gate.middleware.session import Session
from ig_gate.middleware.settings import DeviceSettings

POSTURES = ("managed", "unmanaged", "untrusted", "jailbroken")
UNKNOWN = "unknown"
DEVICE_ATTESTATION_INVALID = "device_attestation_invalid"
DEVICE_BINDING_MISMATCH = "device_binding_mismatch"
REASONS = (DEVICE_ATTESTATION_INVALID, DEVICE_BINDING_MISMATCH)
# worse is higher; "unknown" sits between what a device says about itself and what marks it bad
_RANK = {"managed": 0, "unmanaged": 1, UNKNOWN: 2, "untrusted": 3, "jailbroken": 4}
_STATUS_POSTURE = {"not-compliant": "untrusted", "untrusted": "untrusted", "jailbroken": "jailbroken",
                   "unmanaged": "unmanaged"}


class DeviceSignal(NamedTuple):
    """The posture, and why an attestation that was sent was not used (None when it was, or none was sent)."""

    posture: str
    reason: str | None


@dataclass(frozen=True, slots=True)
class _Attested:
    """What a verified attestation says, fixed until it expires."""

    posture: str
    device_id: str | None
    subject: str | None
    jkt: str | None
    exp: float


class DevicePosture:
    """assess(attestation header, session) -> DeviceSignal; posture(...) -> its posture alone."""

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
        self._settings = settings
        self._algorithms = tuple(a for a in settings.algorithms if a.lower() != "none")
        self._clock = clock
        self._store = risk_store
        self._cache: LRU[str, _Attested] = LRU(cache_size)

    def posture(self, attestation: str | None, session: Session | None) -> str:
        """The device posture for this request (never raises for a bad attestation: "unknown")."""
        return self.assess(attestation, session).posture

    def assess(self, attestation: str | None, session: Session | None) -> DeviceSignal:
        """The posture and, when an attestation was sent but not used, why (never raises for it)."""
        posture, device_id, reason = UNKNOWN, None, None
        if attestation and self._jwks is not None:
            attested = self._attested(attestation)
            if attested is None:
                reason = DEVICE_ATTESTATION_INVALID
            elif not _bound(attested, session):
                reason = DEVICE_BINDING_MISMATCH
            else:
                posture, device_id = attested.posture, attested.device_id
        elif session is not None and session.posture_claim is not None:
            posture = _normalize(session.posture_claim)
        store = self._store
        if store is not None:
            if device_id is not None:
                posture = _worse(posture, store.get_posture(device_id))
            if session is not None:
                posture = _worse(posture, store.get_posture(session.session_key))
        return DeviceSignal(posture, reason)

    def _attested(self, attestation: str) -> _Attested | None:
        """The verified attestation (cached until exp), or None when it is not valid."""
        now = self._clock()
        try:
            attested = self._cache[attestation]
            if attested.exp > now:
                return attested
        except KeyError:
            pass
        assert self._jwks is not None
        settings = self._settings
        try:
            claims = self._jwks.decode(
                attestation, algorithms=self._algorithms, now=now, require=("exp",),
                issuer=settings.issuer, audience=settings.audience,
            )
            attested = _Attested(
                _normalize(claims.get("posture")),
                _text(claims.get(settings.device_id_claim)),
                _text(claims.get(settings.subject_claim)),
                _confirmation(claims),
                float(claims["exp"]),
            )
        except (JWTRejected, ValueError):
            return None
        self._cache[attestation] = attested
        return attested


def _bound(attested: _Attested, session: Session | None) -> bool:
    """True when the attestation belongs to this session (subject, device id, confirmation key)."""
    if session is None or attested.subject is None or attested.subject != session.subject:
        return False
    if session.device_id is not None and attested.device_id != session.device_id:
        return False
    return attested.jkt is None or attested.jkt == session.cnf_jkt


def _confirmation(claims: Mapping[str, Any]) -> str | None:
    """The attestation's `cnf.jkt`, None without `cnf`; ValueError for a confirmation we cannot compare."""
    cnf = claims.get("cnf")
    if cnf is None:
        return None
    jkt = cnf.get("jkt") if isinstance(cnf, dict) else None
    if not isinstance(jkt, str) or not jkt:
        raise ValueError("cnf without a jkt")
    return jkt


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _normalize(value: object) -> str:
    return value if isinstance(value, str) and value in POSTURES else UNKNOWN


def _worse(posture: str, status: str | None) -> str:
    """posture, made worse by a store status if that status says worse ("compliant" changes nothing)."""
    reported = _STATUS_POSTURE.get(status) if status is not None else None
    if reported is not None and _RANK[reported] > _RANK[posture]:
        return reported
    return posture
