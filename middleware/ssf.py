"""IdP risk events: `POST /ssf/events` receives Security Event Tokens (RFC 8417) pushed per RFC 8935.

Served wherever the gate is (built by middleware/compose.py when `ssf.transmitter_jwks` is set): the
sidecar routes it on its client port, and ZeroTrustMiddleware answers `POST /ssf/events` itself, in front
of the app and without a user's decision (a SET carries its own signature; `exclude_paths` need not name it).

A SET is accepted (202) only when: Content-Type is `application/secevent+jwt`; the JOSE `typ`, when
present, is `secevent+jwt`; its signature verifies against the transmitter's JWKS (`ssf.transmitter_jwks`,
algorithms `ssf.algorithms`); `iss` is `ssf.issuer` and `aud` names `ssf.audience`; it has `jti`, `iat`
(not older than the replay window, not in the future) and a non-empty `events` object; its (iss, jti)
was not received before within the replay window (remembered in Redis when the risk store is Redis, so
every replica refuses a replay). Otherwise 400 with RFC 8935's `{"err", "description"}`; a risk store
that cannot be written gives 503 (the transmitter should retry): the jti is released, and a jti whose
release fails too is only held for `PENDING_S` (it is claimed for that long until its events are applied).

Metrics (in the gate's registry): `ig_gate_ssf_sets_total{outcome}` — accepted, replayed, unavailable, or
the RFC 8935 error code — and `ig_gate_ssf_events_total{type}` for the events of accepted SETs (the CAEP
event name, or "other").

CAEP events -> risk store (session keys are a token's `sid`, else `sub`):
| event                      | effect                                                          |
|----------------------------|-----------------------------------------------------------------|
| session-revoked            | revoke the session                                              |
| risk-level-change          | raise risk to `current_level` (LOW/MEDIUM/HIGH)                 |
| assurance-level-change     | a decrease raises risk to medium                                |
| device-compliance-change   | record `current_status` for the device (not-compliant -> untrusted posture) |
| token-claims-change        | a changed risk claim (`identity.risk_claim`) raises risk to it  |
Other event types are accepted and ignored. The subject is the SET's `sub_id` (SSF 1.0) or the event's
`subject` (older CAEP drafts): formats `opaque` (id), `iss_sub` (sub), `email`, `phone_number`,
`account`, `uri`, `did`, `aliases`, and `complex` (its `session` names the session; else its `user`;
its `device` names the device). Formats that name no session or user (jwt_id, saml_assertion_id...)
change nothing.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import jwt
from prometheus_client import CollectorRegistry, Counter
from starlette.concurrency import run_in_threadpool

from ig_gate.errors import IgGateError
from ig_gate.middleware.asgi_body import (
    JSON_HEADERS,
    BodyTooLarge,
    Receive,
    Scope,
    Send,
    read_body,
    respond,
    respond_json,
)
from ig_gate.middleware.bounded import Deadlines
from ig_gate.middleware.gate import Gate
from ig_gate.middleware.jwks import JWKSet, JWTRejected
from ig_gate.middleware.risk import RISK_RANK, RiskStore
from ig_gate.middleware.risk_redis import RedisRiskStore
from ig_gate.middleware.settings import ConfigError, Settings

log = logging.getLogger(__name__)

PATH = "/ssf/events"
CONTENT_TYPE = "application/secevent+jwt"
CAEP = "https://schemas.openid.net/secevent/caep/event-type/"
REPLAY_WINDOW_S = 86_400.0  # a SET older than this is refused; its jti is remembered this long
PENDING_S = 60.0  # a jti is claimed this long while its events are applied (then for REPLAY_WINDOW_S)
MAX_SET_BYTES = 65_536
MAX_KEY_CHARS = 512
_TYPS = frozenset({"secevent+jwt", "application/secevent+jwt"})
_SIMPLE_FORMATS = {
    "opaque": "id", "iss_sub": "sub", "email": "email", "phone_number": "phone_number",
    "account": "uri", "uri": "uri", "did": "url",
}
_RISK_LEVELS = {"LOW": "low", "MEDIUM": "medium", "HIGH": "high"}
_COMPLIANCE = frozenset({"compliant", "not-compliant"})
Payload = Mapping[str, Any]


class SETRejected(IgGateError):
    """A SET that is refused: `err` is an RFC 8935 error code, `description` safe to return."""

    outcome = ""  # the metrics label when it is not `err`

    def __init__(self, err: str, description: str) -> None:
        super().__init__(f"{err}: {description}")
        self.err = err
        self.description = description


class SETReplayed(SETRejected):
    """A SET whose (iss, jti) was already received within the replay window."""

    outcome = "replayed"

    def __init__(self) -> None:
        super().__init__("invalid_request", "SET already received (jti replayed)")


class ReplayGuard(Protocol):
    """Remembers which SETs (by issuer and jti) were already received."""

    def claim_once(self, key: str, ttl_s: float) -> bool:
        """True the first time key is claimed within ttl_s, False afterwards."""

    def remember(self, key: str, ttl_s: float) -> None:
        """Keep a claim for ttl_s from now."""

    def release(self, key: str) -> None:
        """Forget a claim."""


class MemoryReplayGuard:
    """ReplayGuard for one process: bounded (when full, lapsed claims go first, then the oldest), TTL'd."""

    def __init__(self, max_entries: int = 100_000, clock: Callable[[], float] = time.monotonic) -> None:
        self._seen: Deadlines[str, bool] = Deadlines(max_entries, clock)

    def claim_once(self, key: str, ttl_s: float) -> bool:
        """True the first time key is claimed within ttl_s, False afterwards."""
        return self._seen.add(key, True, ttl_s)

    def remember(self, key: str, ttl_s: float) -> None:
        """Keep a claim for (at least) ttl_s from now."""
        self._seen.update(key, ttl_s, lambda _old, _left_s: True)

    def release(self, key: str) -> None:
        """Forget a claim."""
        self._seen.pop(key)


@dataclass(frozen=True, slots=True)
class SubjectKeys:
    """Risk-store keys named by a subject identifier."""

    sessions: tuple[str, ...] = ()
    principals: tuple[str, ...] = ()  # users (matched against a token's sub) or opaque ids (sid or sub)
    devices: tuple[str, ...] = ()

    @property
    def targets(self) -> tuple[str, ...]:
        """What a session-scoped event acts on: the named session, else the user."""
        return self.sessions or self.principals


@dataclass(frozen=True, slots=True)
class Action:
    """One risk-store write planned from a SET."""

    op: str  # revoke | raise_risk | set_posture
    key: str
    value: str  # the risk level or device status ("" for revoke)
    reason: str

    def apply(self, store: RiskStore) -> None:
        """Write this action to store."""
        if self.op == "revoke":
            store.revoke(self.key, reason=self.reason)
        elif self.op == "raise_risk":
            store.raise_risk(self.key, self.value, reason=self.reason)
        else:
            store.set_posture(self.key, self.value, reason=self.reason)


def subject_keys(sub_id: Any) -> SubjectKeys:
    """The keys a subject identifier (RFC 9493 / SSF) names; SETRejected when it is malformed."""
    if not isinstance(sub_id, Mapping) or not isinstance(sub_id.get("format"), str):
        raise SETRejected("invalid_request", "subject identifier has no format")
    fmt = sub_id["format"]
    if fmt == "complex":
        parts = {role: subject_keys(sub_id[role]).principals for role in ("session", "user", "device")
                 if role in sub_id}
        return SubjectKeys(parts.get("session", ()), parts.get("user", ()), parts.get("device", ()))
    if fmt == "aliases":
        identifiers = sub_id.get("identifiers")
        if not isinstance(identifiers, list) or not identifiers:
            raise SETRejected("invalid_request", "aliases subject has no identifiers")
        return SubjectKeys(principals=tuple(k for i in identifiers for k in subject_keys(i).principals))
    member = _SIMPLE_FORMATS.get(fmt)
    if member is None:
        return SubjectKeys()  # a format that names no session, user or device here
    value = sub_id.get(member)
    if not isinstance(value, str) or not value or len(value) > MAX_KEY_CHARS:
        raise SETRejected("invalid_request", f"{fmt} subject needs a string {member!r}")
    return SubjectKeys(principals=(value,))


class EventPlanner:
    """Turns the CAEP events of a verified SET into risk-store actions (pure: no I/O)."""

    def __init__(self, risk_claim: str) -> None:
        self._risk_claim = risk_claim
        self._handlers: dict[str, Callable[[Payload, SubjectKeys, str], list[Action]]] = {
            CAEP + "session-revoked": self._session_revoked,
            CAEP + "risk-level-change": self._risk_level_change,
            CAEP + "assurance-level-change": self._assurance_level_change,
            CAEP + "device-compliance-change": self._device_compliance_change,
            CAEP + "token-claims-change": self._token_claims_change,
        }

    def plan(self, claims: Mapping[str, Any]) -> list[Action]:
        """Actions for every event of the SET (unknown event types add none); SETRejected if malformed."""
        events = claims.get("events")
        if not isinstance(events, Mapping) or not events:
            raise SETRejected("invalid_request", "SET has no events")
        actions: list[Action] = []
        for event_type, payload in events.items():
            if not isinstance(payload, Mapping):
                raise SETRejected("invalid_request", f"event {event_type} is not an object")
            handler = self._handlers.get(event_type)
            if handler is None:
                continue
            subject = payload.get("subject", claims.get("sub_id"))
            if subject is None:
                raise SETRejected("invalid_request", f"event {event_type} has no subject (sub_id)")
            reason = f"ssf {event_type.removeprefix(CAEP)} jti={str(claims.get('jti'))[:64]}"
            actions.extend(handler(payload, subject_keys(subject), reason))
        return actions

    def _session_revoked(self, payload: Payload, keys: SubjectKeys, reason: str) -> list[Action]:
        return [Action("revoke", key, "", reason) for key in keys.targets]

    def _risk_level_change(self, payload: Payload, keys: SubjectKeys, reason: str) -> list[Action]:
        level = payload.get("current_level")
        risk = _RISK_LEVELS.get(level.upper()) if isinstance(level, str) else None
        if risk is None:
            raise SETRejected("invalid_request", "risk-level-change current_level: LOW, MEDIUM or HIGH")
        return [Action("raise_risk", key, risk, reason) for key in keys.targets]

    def _assurance_level_change(self, payload: Payload, keys: SubjectKeys, reason: str) -> list[Action]:
        if not isinstance(payload.get("namespace"), str) or not isinstance(payload.get("current_level"), str):
            raise SETRejected("invalid_request", "assurance-level-change needs namespace and current_level")
        if payload.get("change_direction") != "decrease":
            return []
        return [Action("raise_risk", key, "medium", reason) for key in keys.targets]

    def _device_compliance_change(self, payload: Payload, keys: SubjectKeys, reason: str) -> list[Action]:
        status = payload.get("current_status")
        if status not in _COMPLIANCE:
            raise SETRejected("invalid_request", "device-compliance-change current_status: (not-)compliant")
        return [Action("set_posture", key, status, reason) for key in (*keys.devices, *keys.targets)]

    def _token_claims_change(self, payload: Payload, keys: SubjectKeys, reason: str) -> list[Action]:
        claims = payload.get("claims")
        if not isinstance(claims, Mapping) or not claims:
            raise SETRejected("invalid_request", "token-claims-change needs a claims object")
        if self._risk_claim not in claims:
            return []
        value = claims[self._risk_claim]
        risk = value if isinstance(value, str) and value in RISK_RANK else "high"  # unknown value: fail safe
        return [Action("raise_risk", key, risk, reason) for key in keys.targets]


class SSFMetrics:
    """The receiver's counters, registered in the gate's metrics registry (label values are bounded)."""

    OUTCOMES = frozenset({"accepted", "replayed", "unavailable", "invalid_request", "invalid_key",
                          "authentication_failed", "invalid_audience", "invalid_issuer"})
    EVENT_TYPES = frozenset({"session-revoked", "risk-level-change", "assurance-level-change",
                             "device-compliance-change", "token-claims-change"})

    def __init__(self, registry: CollectorRegistry) -> None:
        self._sets = Counter(
            "ig_gate_ssf_sets", "Security Event Tokens received, by outcome.", ("outcome",), registry=registry
        )
        self._events = Counter(
            "ig_gate_ssf_events", "Events of accepted SETs, by CAEP event type.", ("type",), registry=registry
        )

    def received(self, outcome: str) -> None:
        """Count one SET by its outcome."""
        self._sets.labels(outcome if outcome in self.OUTCOMES else "invalid_request").inc()

    def events(self, event_types: Any) -> None:
        """Count the events of one accepted SET by type."""
        for event_type in event_types:
            name = str(event_type).removeprefix(CAEP)
            self._events.labels(name if name in self.EVENT_TYPES else "other").inc()


class SETReceiver:
    """Verifies pushed SETs and applies their events to the risk store."""

    def __init__(
        self,
        jwks: JWKSet,
        settings: Settings,
        store: RiskStore,
        replay: ReplayGuard,
        *,
        metrics: SSFMetrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        ssf = settings.ssf
        if not ssf.issuer or not ssf.audience:
            missing = "ssf.issuer" if not ssf.issuer else "ssf.audience"
            raise ConfigError(f"{missing}: required when ssf.transmitter_jwks is set")
        self.jwks = jwks
        self._issuer = ssf.issuer
        self._audience = ssf.audience
        self._algorithms = tuple(a for a in ssf.algorithms if a.lower() != "none")
        self._leeway = float(settings.identity.leeway_s)
        self._store = store
        self._replay = replay
        self._planner = EventPlanner(settings.identity.risk_claim)
        self._metrics = metrics
        self._clock = clock

    def receive(self, token: str) -> list[Action]:
        """Verify token and apply its events; the actions applied. SETRejected, or the store's errors."""
        claims = self._verify(token)
        actions = self._planner.plan(claims)
        key = "ssf-jti:" + hashlib.sha256(f"{claims['iss']}\x1f{claims['jti']}".encode()).hexdigest()
        if not self._replay.claim_once(key, PENDING_S):
            raise SETReplayed
        try:
            for action in actions:
                action.apply(self._store)
        except Exception:
            try:
                self._replay.release(key)
            except Exception as exc:  # the claim then lapses after PENDING_S
                log.warning("SET jti=%.64s: claim not released (%s)", claims["jti"], exc)
            raise
        try:
            self._replay.remember(key, REPLAY_WINDOW_S)
        except Exception as exc:  # applied: a replay is refused for PENDING_S only
            log.warning("SET jti=%.64s: replay window not extended (%s)", claims["jti"], exc)
        if self._metrics is not None:
            self._metrics.events(claims["events"])
        log.info("SET jti=%.64s from %s: %d risk-store updates", claims["jti"], claims["iss"], len(actions))
        return actions

    def _verify(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise SETRejected("invalid_request", "body is not a compact JWS") from None
        typ = header.get("typ")
        if typ is not None and (not isinstance(typ, str) or typ.lower() not in _TYPS):
            raise SETRejected("invalid_request", "JOSE typ must be secevent+jwt")
        if header.get("alg") not in self._algorithms:
            raise SETRejected("invalid_key", "signing algorithm not accepted")
        kid = header.get("kid")
        if not isinstance(kid, str | None) or self.jwks.key(kid) is None:
            raise SETRejected("invalid_key", "signing key unknown to this receiver")
        try:
            claims = self.jwks.decode(
                token, algorithms=self._algorithms, now=self._clock(), leeway=self._leeway,
                require=("iss", "iat", "jti", "events"),
            )
        except JWTRejected as exc:
            if exc.description == "signature invalid":
                raise SETRejected("authentication_failed", "SET signature does not verify") from None
            if exc.description.startswith("signing"):  # algorithm not allowed, or not the key's own
                raise SETRejected("invalid_key", exc.description) from None
            raise SETRejected("invalid_request", exc.description) from None
        if claims["iss"] != self._issuer:
            raise SETRejected("invalid_issuer", "SET issuer is not the configured transmitter")
        audience = claims.get("aud")
        if audience != self._audience and not (isinstance(audience, list) and self._audience in audience):
            raise SETRejected("invalid_audience", "SET audience does not name this receiver")
        iat = claims["iat"]
        if not isinstance(claims["jti"], str) or not claims["jti"]:
            raise SETRejected("invalid_request", "jti must be a non-empty string")
        if isinstance(iat, bool) or not isinstance(iat, int | float) or iat < self._clock() - REPLAY_WINDOW_S:
            raise SETRejected("invalid_request", "SET iat is missing or older than the replay window")
        return claims


class SSFEndpoint:
    """The pure-ASGI `POST /ssf/events` endpoint (RFC 8935 push delivery)."""

    def __init__(self, receiver: SETReceiver, metrics: SSFMetrics) -> None:
        self.receiver = receiver
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # a refusal before the body is read to its end closes the connection: the server would otherwise
        # receive and discard all an unauthenticated sender announces (1 GB, an endless chunked body)
        content_type = _header_value(scope["headers"], b"content-type")
        if content_type.split(";")[0].strip().lower() != CONTENT_TYPE:
            await self._refuse(send, "invalid_request", f"Content-Type must be {CONTENT_TYPE}", close=True)
            return
        declared = _header_value(scope["headers"], b"content-length").encode("latin-1") or None
        try:
            body = await read_body(receive, MAX_SET_BYTES, declared)  # a larger declared length: unread
        except BodyTooLarge:
            await self._refuse(send, "invalid_request", f"SET larger than {MAX_SET_BYTES} bytes", close=True)
            return
        if body is None:
            return
        try:
            token = body.decode("ascii").strip()
            await run_in_threadpool(self.receiver.receive, token)
        except UnicodeDecodeError:
            await self._refuse(send, "invalid_request", "body is not a compact JWS")
        except SETRejected as exc:
            log.info("SET refused: %s", exc)
            await self._refuse(send, exc.err, exc.description, exc.outcome)
        except Exception as exc:  # the risk store could not be written: the transmitter retries
            log.warning("SET not applied: %s", exc)
            self.metrics.received("unavailable")
            await respond_json(send, 503, {"err": "temporarily_unavailable",
                                           "description": "risk store unavailable; retry later"})
        else:
            self.metrics.received("accepted")
            await respond(send, 202, [], b"")

    async def _refuse(
        self, send: Send, err: str, description: str, outcome: str = "", *, close: bool = False
    ) -> None:
        self.metrics.received(outcome or err)
        headers = [*JSON_HEADERS, (b"connection", b"close")] if close else JSON_HEADERS
        await respond_json(send, 400, {"err": err, "description": description}, headers)


def _header_value(headers: Any, name: bytes) -> str:
    for key, value in headers:
        if key == name:
            return value.decode("latin-1")
    return ""


def ssf_endpoint(settings: Settings, gate: Gate) -> SSFEndpoint:
    """The `POST /ssf/events` endpoint for `ssf.*` (its key set not started: GateSystem starts it);
    replays are remembered in Redis when the gate's risk store is Redis, else in this process."""
    source = settings.ssf.transmitter_jwks
    if not source:
        raise ConfigError("ssf.transmitter_jwks: not set")
    if gate.risk_store is None:
        raise ConfigError("ssf.transmitter_jwks: the gate has no risk store to update")
    store = gate.risk_store
    replay = store if isinstance(store, RedisRiskStore) else MemoryReplayGuard()
    metrics = SSFMetrics(gate.metrics.registry)
    receiver = SETReceiver(JWKSet.from_source(source), settings, store, replay, metrics=metrics)
    return SSFEndpoint(receiver, metrics)
