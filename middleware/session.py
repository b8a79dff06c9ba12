"""The session signal: a bearer JWT verified against the IdP's key set, cached until it expires.

Per call (cache hit or not): the risk store is consulted (a revoked session wins over the cache; the
effective risk is the higher of the token's claim and the store), and step-up freshness is evaluated
with the clock, since `auth_time` ages.
Risk claim: missing -> `identity.default_risk`; a value other than exactly low|medium|high -> "high"
(fail safe). Session key for the risk store: `sid` when present, else `sub`; both are consulted.
Tenant: the `tenant_claim` claim; else, when `identity.tenant_header` is configured, the header value
(only if it looks like an identifier: 1-128 of [A-Za-z0-9._:@-]).
Device: `identity.device_claim` (absent, or a non-empty string, else the token is invalid) and `cnf.jkt`
are kept for DevicePosture, which binds a device attestation to them.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ig_gate.errors import IgGateError
from ig_gate.middleware.bounded import FIFO
from ig_gate.middleware.jwks import JWKSet, JWTExpired, JWTRejected
from ig_gate.middleware.risk import RISK_RANK, RiskOverride, RiskStore
from ig_gate.middleware.settings import RISK_LEVELS, IdentitySettings

_HIGH = RISK_RANK["high"]
_TENANT_HEADER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}")
_REQUIRED = ("exp", "iss", "sub")


class TokenError(IgGateError):
    """The bearer token is unusable; a subclass says why, `code` names it in the refusal reason
    (`token_<code>`), and description is safe to show (no token data)."""

    code = "invalid"
    label = "token rejected"

    def __init__(self, description: str) -> None:
        super().__init__(f"{self.code}: {description}")
        self.description = description


class TokenMissing(TokenError):
    """No bearer token was sent."""

    code = "missing"


class TokenInvalid(TokenError):
    """The token does not verify or its claims are malformed."""


class TokenExpired(TokenError):
    """The token's `exp` has passed."""

    code = "expired"


class TokenRevoked(TokenError):
    """The session was revoked (risk store)."""

    code = "revoked"


@dataclass(frozen=True, slots=True)
class Session:
    """A verified session as the policy sees it (risk is the effective one, step-up evaluated now)."""

    subject: str
    tenant: str | None
    risk: str
    acr: str | None
    amr: tuple[str, ...]
    auth_time: float | None
    auth_age_s: int | None
    exp: float
    session_key: str
    stepup_satisfied: bool
    posture_claim: str | None
    token_id: str  # first 12 hex of sha256(token), for logs
    device_id: str | None = None  # the token's `identity.device_claim`: the device the IdP saw
    cnf_jkt: str | None = None  # the token's `cnf.jkt` (RFC 7800/9449): the key it is bound to


class _Verified:
    """What a verified token says, fixed for its lifetime; `last` is the latest Session built from it."""

    __slots__ = (
        "acr", "amr", "auth_time", "cnf_jkt", "device_id", "exp", "last", "posture_claim", "risk_rank",
        "session_key", "strong_auth", "sub_key", "subject", "tenant", "token_id",
    )

    def __init__(self, claims: Mapping[str, Any], token: str, identity: IdentitySettings,
                 posture_claim: str | None) -> None:
        self.subject: str = claims["sub"]
        if not self.subject:
            raise TokenInvalid("claim 'sub' empty")
        sid = claims.get("sid")
        self.session_key: str = sid if isinstance(sid, str) and sid else self.subject
        self.sub_key = self.subject if self.session_key != self.subject else None
        self.tenant = _tenant_claim(claims.get(identity.tenant_claim), identity.tenant_claim)
        self.risk_rank = _risk_claim_rank(claims.get(identity.risk_claim), identity.default_risk)
        acr = claims.get("acr")
        self.acr = acr if isinstance(acr, str) else None
        amr = claims.get("amr")
        self.amr = tuple(m for m in amr if isinstance(m, str)) if isinstance(amr, list) else ()
        stepup = identity.stepup
        self.strong_auth = self.acr in stepup.acr_values or not set(stepup.amr_values).isdisjoint(self.amr)
        self.auth_time = _number(claims.get("auth_time"))
        self.exp = float(claims["exp"])
        value = claims.get(posture_claim) if posture_claim else None
        self.posture_claim = value if isinstance(value, str) else None
        self.device_id = _optional_text(claims.get(identity.device_claim), identity.device_claim)
        cnf = claims.get("cnf")
        self.cnf_jkt = cnf.get("jkt") if isinstance(cnf, dict) and isinstance(cnf.get("jkt"), str) else None
        self.token_id = hashlib.sha256(token.encode()).hexdigest()[:12]
        self.last: Session | None = None


class SessionVerifier:
    """Verify bearer tokens (pyjwt, allowed algorithms only) into Sessions; bad tokens raise TokenError only.

    `posture_claim` names the claim that DevicePosture falls back to (settings.device.posture_claim).
    A token cache size of 0 disables the cache. Errors of the risk store itself propagate unchanged.
    """

    def __init__(
        self,
        jwks: JWKSet,
        identity: IdentitySettings,
        risk_store: RiskStore,
        clock: Callable[[], float] = time.time,
        *,
        posture_claim: str | None = None,
    ) -> None:
        self._jwks = jwks
        self._identity = identity
        self._store = risk_store
        self._clock = clock
        self._posture_claim = posture_claim
        self._algorithms = tuple(a for a in identity.algorithms if a.lower() != "none")
        self._leeway = float(identity.leeway_s)
        self._max_age = float(identity.stepup.max_age)
        self._use_tenant_header = identity.tenant_header is not None
        # verified tokens, least recently used evicted first: a FIFO whose hits are moved to its end (the
        # LRU policy at C speed on the hottest cache: bounded.LRU's Python-level read costs ~0.06 us more)
        size = identity.token_cache_size
        self._cache: FIFO[str, _Verified] | None = FIFO(size) if size > 0 else None

    def verify(self, token: str | None, tenant_header: str | None = None) -> Session:
        """The Session for token, or TokenError (missing/invalid/expired/revoked)."""
        if not token:
            raise TokenMissing("bearer token missing")
        entry = self._cached(token)
        if entry is None:
            entry = self._verify_uncached(token)
        now = self._clock()
        if entry.exp <= now - self._leeway:
            self._forget(token)
            raise TokenExpired("token expired")
        rank = entry.risk_rank
        store = self._store
        rank = _apply(store.get(entry.session_key), rank)
        if entry.sub_key is not None:
            rank = _apply(store.get(entry.sub_key), rank)
        risk = RISK_LEVELS[rank]

        age: int | None = None
        satisfied = False
        if entry.auth_time is not None:
            age_f = now - entry.auth_time
            age = int(age_f) if age_f > 0 else 0
            satisfied = entry.strong_auth and -self._leeway <= age_f <= self._max_age
        tenant = entry.tenant
        if tenant is None and self._use_tenant_header and tenant_header and _TENANT_HEADER.fullmatch(
            tenant_header
        ):
            tenant = tenant_header

        last = entry.last
        if (last is not None and last.risk == risk and last.stepup_satisfied is satisfied
                and last.auth_age_s == age and last.tenant == tenant):
            return last
        session = Session(
            entry.subject, tenant, risk, entry.acr, entry.amr, entry.auth_time, age, entry.exp,
            entry.session_key, satisfied, entry.posture_claim, entry.token_id, entry.device_id, entry.cnf_jkt,
        )
        entry.last = session
        return session

    def _cached(self, token: str) -> _Verified | None:
        cache = self._cache
        if cache is None:
            return None
        try:
            entry = cache[token]
            cache.move_to_end(token)
        except (KeyError, TypeError):  # evicted meanwhile; TypeError: not hashable, so never cached
            return None
        return entry

    def _forget(self, token: str) -> None:
        if self._cache is not None:
            self._cache.pop(token, None)

    def _verify_uncached(self, token: str) -> _Verified:
        identity = self._identity
        try:
            claims = self._jwks.decode(
                token, algorithms=self._algorithms, now=self._clock(), leeway=self._leeway,
                issuer=identity.issuer, audience=identity.audience, require=_REQUIRED,
            )
            entry = _Verified(claims, token, identity, self._posture_claim)
        except JWTExpired as exc:
            raise TokenExpired(exc.description) from None
        except JWTRejected as exc:
            raise TokenInvalid(exc.description) from None
        except TokenError:
            raise
        except Exception:
            raise TokenInvalid("token claims malformed") from None
        cache = self._cache
        if cache is not None:
            cache[token] = entry
        return entry


def _apply(override: RiskOverride | None, rank: int) -> int:
    """rank raised by a store override; a revoked session raises TokenError."""
    if override is None:
        return rank
    if override.revoked:
        raise TokenRevoked("session revoked")
    if override.risk is None:
        return rank
    return max(rank, RISK_RANK.get(override.risk, _HIGH))


def _risk_claim_rank(value: Any, default: str) -> int:
    if value is None:
        return RISK_RANK[default]
    return RISK_RANK.get(value, _HIGH) if isinstance(value, str) else _HIGH


def _tenant_claim(value: Any, name: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise TokenInvalid(f"claim {name!r} malformed")


def _optional_text(value: Any, name: str) -> str | None:
    """A claim that is absent or a non-empty string; anything else makes the token invalid."""
    if value is None or (isinstance(value, str) and value):
        return value
    raise TokenInvalid(f"claim {name!r} malformed")


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None
