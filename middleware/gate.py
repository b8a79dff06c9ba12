"""The enforcement core: extract -> signals -> decide -> enforce -> record, independent of transport.

`Gate.decide(GateRequest)` runs synchronously on the serving thread (the Rego engine is thread-affine;
`PolicySnapshot` keeps one engine per thread) and never raises: malformed input is a 400/401 decision,
anything unexpected is a failure-mode decision (503 unless `failure_mode: open`), counted and logged
without secrets. Missing or invalid tokens are refused before the policy is consulted.
Nothing on that path waits on the network: a shared risk store is read from its local view
(middleware/risk_view.py), and transports on an event loop call `Gate.decide_async`, which awaits a
remote PDP's answer off the loop (decide() itself for every other policy source).
A transport that reads the body only once the token verified calls `Gate.begin` first and passes what it
returned (`Authenticated`: the session, the headers it was verified from) to decide(): one pass per request.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from ig_gate.bundles.errors import BundleError, PolicyEvalError
from ig_gate.bundles.pin import Pin
from ig_gate.bundles.policy import PolicySnapshot, PolicySource
from ig_gate.bundles.rollout import RolloutController
from ig_gate.bundles.signing import VerificationKey
from ig_gate.bundles.verify import VerifyOptions
from ig_gate.geo.anomaly import TravelAnomalyDetector
from ig_gate.geo.client_ip import ClientIPResolver
from ig_gate.geo.lookup import GeoReader
from ig_gate.middleware.decision import (
    ALLOW,
    BAD_REQUEST,
    ERROR,
    NOT_ALLOWED,
    TOO_LARGE,
    TOO_MANY,
    UNAUTHENTICATED,
    Decision,
    DecisionIds,
    DecisionMemo,
    Identity,
    InputKey,
    PolicyResultError,
    Verdict,
    policy_input,
    verdict_from_result,
)
from ig_gate.middleware.decision_log import DecisionLog
from ig_gate.middleware.device import DevicePosture
from ig_gate.middleware.extract import (
    CONTENT_LENGTH,
    CONTENT_TYPE,
    FORWARDED,
    PURPOSE,
    X_FORWARDED_FOR,
    HeaderMap,
    MalformedRequest,
    RawHeaders,
    TokenReader,
    ascii_or_none,
    header_map,
    label,
)
from ig_gate.middleware.graphql import UNKNOWN, Classifier, GraphQLRequestError
from ig_gate.middleware.jwks import JWKSet
from ig_gate.middleware.live import LiveConnections
from ig_gate.middleware.logs import DECISION_NOTE
from ig_gate.middleware.metrics import GateMetrics
from ig_gate.middleware.profile import workload_profile
from ig_gate.middleware.risk import RiskStore, RiskStoreError
from ig_gate.middleware.rollout_eval import RolloutComparison
from ig_gate.middleware.session import Session, SessionVerifier, TokenError
from ig_gate.middleware.settings import ConfigError, Settings
from ig_gate.middleware.workload import Workload

log = logging.getLogger("ig_gate.gate")

# a GraphQL request the gate cannot classify, by GraphQLRequestError.status
_UNCLASSIFIABLE = {400: BAD_REQUEST, 405: NOT_ALLOWED, 413: TOO_LARGE}
_LOG_EVERY_S = 10.0
_MAX_FLAGGED = 65_536  # subjects remembered as currently flagged for impossible travel
# builds a NamedTuple from all its fields without the generated __new__ (~0.2 µs less per call, hot path);
# keyword construction (Decision(outcome=...), Identity, a NamedTuple memo key) measured +2.5-3 µs on the
# warm path (bench/test_middleware_path.py, min of 3 runs), so the allowed path's fields go in declaration
# order; refusals and failures (not the warm path) build theirs by field name
_new = tuple.__new__


class GateRequest(NamedTuple):
    """One request as the gate sees it; headers: ASGI raw pairs, a str mapping (any case), or a HeaderMap."""

    method: str
    path: str
    query_string: bytes | str
    headers: RawHeaders | Mapping[str, str] | HeaderMap
    peer: str | None
    body: bytes | None = None
    is_websocket: bool = False
    operation: str | None = None  # a GraphQL operation sent over an open WebSocket (its type decides)
    graphql: bool = False  # a GraphQL request whatever its path (the Apollo Router coprocessor)


@dataclass(slots=True)
class _Trace:
    """What decide() learned about one request so far: for refusals, failures and the record. Returned by
    `Gate.begin` once the token verified (an `Authenticated` request): decide() continues from it."""

    graphql: bool
    profile: str | None = None  # set once the request is classified (after authentication)
    session: Session | None = None
    posture: str | None = None
    device_reason: str | None = None  # why a device attestation sent was not used (decision log, metrics)
    country: str | None = None
    input: Mapping[str, Any] | InputKey | None = None
    result: Mapping[str, Any] | None = None
    revision: str | None = None
    answer: Answer | None = None  # decide_async: defer a remote memo miss, or the remote's answer
    size: int = 0  # the request body's bytes (Content-Length), for ig_gate_request_bytes_total
    headers: HeaderMap | None = None  # the request's headers, once read (the ones its token came from)


HeaderGet = Callable[[bytes], bytes | None]  # HeaderMap.get, bound once per request
Authenticated = _Trace  # a request whose token verified (Gate.begin), decided next by decide()
# (input key, verdict or None when the remote failed, input document): what decide_async awaited for an
# input; key None answers any input (the last pass of an input that kept changing)
Answer = tuple[InputKey | None, Verdict | None, Mapping[str, Any] | None]
_DEFER: Answer = ((object(),), None, None)  # no answer yet: a memo miss on a remote source is deferred
_ASKS = 3  # remote answers awaited for one request before its input is given up on (engine_error)


class _Deferred(Exception):
    """A memo miss on a policy source that answers over the network: decide_async awaits it off the loop."""

    def __init__(self, snapshot: PolicySnapshot, key: InputKey) -> None:
        super().__init__("remote policy evaluation deferred")
        self.snapshot: Any = snapshot  # a remote snapshot: it has evaluate_async
        self.key = key
        self.document = policy_input(key)


class _Throttle:
    """Lets a log line through at most once per `every_s` per key (failure storms stay readable)."""

    def __init__(self, every_s: float) -> None:
        self._every = every_s
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def __call__(self, key: str, now: float) -> int | None:
        """None to stay quiet, else the number of lines suppressed since the last one let through."""
        if now - self._last.get(key, -self._every) < self._every:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return None
        self._last[key] = now
        return self._suppressed.pop(key, 0)


class Gate:
    """Decides allow / step-up / deny for requests, from explicit collaborators (no globals)."""

    def __init__(
        self,
        settings: Settings,
        policy: PolicySource,
        sessions: SessionVerifier | None,
        devices: DevicePosture,
        ip_resolver: ClientIPResolver,
        geo: GeoReader,
        anomalies: TravelAnomalyDetector,
        metrics: GateMetrics,
        decision_log: DecisionLog | None = None,
        clock: Callable[[], float] = time.time,
        *,
        problems: Iterable[str] = (),
        risk_store: RiskStore | None = None,
        key_sets: Mapping[str, JWKSet] | None = None,
        rollout: RolloutController | None = None,
    ) -> None:
        self.settings = settings
        self.policy = policy
        self.sessions = sessions
        self.devices = devices
        self.ip_resolver = ip_resolver
        self.geo = geo
        self.anomalies = anomalies
        self.metrics = metrics
        self.decision_log = decision_log
        self.risk_store = risk_store  # where IdP risk events raise a session's risk (sidecar)
        self.live = LiveConnections(policy, risk_store)  # open WebSockets, re-decided as things change
        # tenant caps and demand by profile (one admit() per request), recommendations in the background
        self.workload = Workload(settings, metrics.registry, getattr(risk_store, "redis", None))
        metrics.watch_risk_store(risk_store)  # a shared store's local view: its age, whether in sync
        self.awaits_remote = hasattr(policy, "evaluate_async")  # a remote PDP: decide_async awaits it
        self.key_sets = dict(key_sets or {})
        self.problems = list(problems)
        if sessions is None:
            self.problems.append("identity: no session verifier (identity.jwks is not set)")
        self._clock = clock
        self._query = settings.bundle.query
        self._log_path = settings.bundle.query.removeprefix("data.").replace(".", "/")
        self._mode = settings.failure_mode
        self._open = settings.failure_mode == "open"
        memo = settings.memo
        self._memo = DecisionMemo(memo.size, memo.ttl_s) if memo.enabled else None
        self._ids = DecisionIds()
        self._tokens = TokenReader(settings.identity.cookie)
        self.classifier = Classifier(settings.graphql.paths, settings.graphql.max_document_bytes)
        self._device_header = settings.device.header.lower().encode("latin-1")
        tenant_header = settings.identity.tenant_header
        self._tenant_header = tenant_header.lower().encode("latin-1") if tenant_header else None
        self._snapshot: PolicySnapshot | None = None
        self._throttle = _Throttle(_LOG_EVERY_S)
        self._flagged: dict[str, None] = {}  # subjects whose travel anomaly was already reported
        self.rollout = rollout  # staged rollout of a candidate bundle; its events feed our metrics
        self._comparison = None if rollout is None else RolloutComparison(
            rollout, metrics, self._memo, self._evaluate, self._log_failure, self._log_candidate_failure
        )

    # -- the request path ----------------------------------------------------------------------------

    def decide(self, request: GateRequest, session: Session | Authenticated | None = None) -> Decision:
        """The decision for one request; never raises. `session`: what authenticate() or begin() returned
        for it (begin's Authenticated continues that pass: nothing of phase one is done again)."""
        decision = self._run(request, session, True)
        assert type(decision) is Decision
        return decision

    def authenticate(self, request: GateRequest) -> Session | Decision:
        """Phase one for a transport that has yet to read the body: the request's verified Session (pass
        it to decide() with the body), or its recorded refusal, decided without the body."""
        outcome = self._run(request, None, False)
        return outcome.session if type(outcome) is _Trace else outcome  # type: ignore[return-value]

    def begin(self, request: GateRequest) -> Authenticated | Decision:
        """authenticate() for a transport that decides the same request next: its Authenticated state (the
        verified session, what was read of the headers; pass it to decide() or decide_async() once, with
        the body) or its recorded refusal, decided without the body."""
        outcome = self._run(request, None, False)
        assert type(outcome) is _Trace or type(outcome) is Decision
        return outcome

    async def decide_async(
        self, request: GateRequest, session: Session | Authenticated | None = None
    ) -> Decision:
        """decide() for a transport on an event loop. A policy source that answers over the network (the
        remote PDP: `evaluate_async`) is never called on the loop: a memo miss is awaited (a worker thread,
        the source's timeout) and the request decided again with that answer; an input that changed
        meanwhile is asked again, at most _ASKS times, then fails (engine_error). Other sources (the Rego
        engine is thread-affine) decide at once, as decide()."""
        if not self.awaits_remote:
            decision = self._run(request, session, True)
            assert type(decision) is Decision
            return decision
        outcome = self._run(request, session, True, _DEFER)
        for _ in range(_ASKS):
            if type(outcome) is not _Deferred:
                break
            outcome = self._run(request, session, True, await self._ask(outcome))
        if type(outcome) is _Deferred:
            outcome = self._run(request, session, True, (None, None, outcome.document))
        assert type(outcome) is Decision
        return outcome

    async def _ask(self, deferred: _Deferred) -> Answer:
        """The remote source's verdict for a deferred input (None when it failed: logged here)."""
        try:
            result = await deferred.snapshot.evaluate_async(self._query, deferred.document)
            verdict: Verdict | None = verdict_from_result(result)
        except (PolicyEvalError, PolicyResultError) as exc:
            self._log_failure("engine_error", exc)
            verdict = None
        return deferred.key, verdict, deferred.document

    def _run(
        self,
        request: GateRequest,
        session: Session | Authenticated | None,
        whole: bool,
        answer: Answer | None = None,
    ) -> Decision | Authenticated | _Deferred:
        started = time.perf_counter()
        if type(session) is _Trace:  # begin() authenticated this request: continue from there
            trace = session
            trace.answer = answer
        else:
            graphql = request.graphql or request.is_websocket or self.classifier.is_graphql(request.path)
            trace = _Trace(graphql)  # keyword arguments cost the dataclass __init__ twice as much (~0.25 µs)
            trace.session, trace.answer = session, answer  # type: ignore[assignment]
        try:
            decision = self._decide(request, trace, whole)
            if type(decision) is _Trace:
                return decision
        except _Deferred as deferred:  # nothing recorded: decide_async asks the remote, then decides
            return deferred
        # one name per clause: mypyc (setup.py) types an `except ... as` name by its first clause
        except MalformedRequest as bad:
            decision = self._refusal(
                BAD_REQUEST, "malformed_request", bad.detail, trace, "malformed" if bad.auth else None
            )
        except GraphQLRequestError as unclassifiable:
            decision = self._refusal(
                _UNCLASSIFIABLE[unclassifiable.status], "malformed_request", unclassifiable.detail, trace
            )
        except RiskStoreError as unavailable:  # the shared store's view cannot prove "no risk event"
            decision = self._failure("risk_store_unavailable", unavailable, trace)
        except Exception as exc:  # fail by failure_mode, never a 500
            decision = self._failure("internal_error", exc, trace)
        except BaseException as panic:  # an engine panic (pyo3 PanicException) must not take the process down
            if type(panic).__name__ != "PanicException":
                raise
            decision = self._failure("engine_error", panic, trace)
        self._record(decision, trace, time.perf_counter() - started, request)  # type: ignore[arg-type]
        return decision

    def refuse(self, request: GateRequest, outcome: str, reason: str, detail: str) -> Decision:
        """The (recorded) refusal of a request for a reason found outside the gate (a WebSocket's origin,
        subprotocol or frame); `detail` is safe to show."""
        trace = _Trace(self.classifier.is_graphql(request.path))
        decision = self._refusal(outcome, reason, detail, trace)
        self._record(decision, trace, 0.0, request)
        return decision

    def refuse_too_large(self, request: GateRequest, limit: int) -> Decision:
        """The (recorded) decision for a request whose body exceeds `limit` bytes."""
        trace = _Trace(request.graphql or self.classifier.is_graphql(request.path), profile="ingest")
        decision = self._refusal(TOO_LARGE, "body_too_large", f"request body exceeds {limit} bytes", trace)
        self._record(decision, trace, 0.0, request)
        return decision

    def _decide(self, request: GateRequest, trace: _Trace, whole: bool) -> Decision | Authenticated:
        """Authenticate first (nothing of the request is parsed, nothing of it cached before the token
        verifies), then classify, then the signals and the policy's verdict; with whole=False stop at the
        trace. The steps are methods called once each, handed what they need as arguments (no per-request
        object beyond the trace)."""
        headers = trace.headers
        if headers is None:  # read once per request (begin() read them for the request it authenticated)
            raw = request.headers
            headers = raw if type(raw) is HeaderMap else header_map(raw)  # the middleware passes a HeaderMap
            trace.headers = headers
            length = headers.get(CONTENT_LENGTH)
            if length is not None and length.isdigit():
                trace.size = int(length)
        get = headers.get
        session = trace.session
        if session is None:
            verified = self._session(headers, trace)
            if type(verified) is not Session:
                return verified  # type: ignore[return-value]
            session = verified
            if not whole:
                return trace

        method, content_type = request.method, get(CONTENT_TYPE)
        media = "" if content_type is None else content_type.decode("latin-1")
        purpose = label(get(PURPOSE), "X-Purpose header")
        if request.operation is not None:  # classified by the WebSocket guard (middleware/websocket.py)
            op = request.operation
            trace.profile = workload_profile(method, "", op, media)
        elif request.is_websocket:
            op = trace.profile = "subscription"
        elif trace.graphql:
            op, trace.profile = self.classifier.kind(method, request.query_string, request.body, media)
        else:
            op, trace.profile = UNKNOWN, workload_profile(method, "", UNKNOWN, media)
        if not self.workload.admit(session.tenant, trace.profile, request.path):
            return self._refusal(TOO_MANY, "tenant_over_cap", "tenant over its request cap", trace)
        anomaly = self._signals(request, get, session, trace)
        return self._policy(request, session, trace, op, purpose, anomaly)

    def _signals(self, request: GateRequest, get: HeaderGet, session: Session, trace: _Trace) -> bool:
        """The request's signals besides the session (`get`: its headers' get): device posture and country
        (kept in trace), and whether the subject's travel is anomalous (returned)."""
        forwarded_for, forwarded = get(X_FORWARDED_FOR), get(FORWARDED)
        client = self.ip_resolver.resolve(
            request.peer,
            None if forwarded_for is None else forwarded_for.decode("latin-1"),
            None if forwarded is None else forwarded.decode("latin-1"),
        )
        if client.malformed:
            self.metrics.malformed_forwarded()
        attestation = ascii_or_none(get(self._device_header))
        trace.posture, device_reason = self.devices.assess(attestation, session)
        if device_reason is not None:
            trace.device_reason = device_reason
            self.metrics.device_attestation_refused(device_reason)
        country = trace.country = self.geo.country(client.address)
        anomaly = self.anomalies.observe(session.subject, country, self._clock())
        if anomaly:
            if session.subject not in self._flagged:
                self._report_anomaly(session, country)
        elif self._flagged:
            self._flagged.pop(session.subject, None)
        return anomaly

    def _policy(
        self,
        request: GateRequest,
        session: Session,
        trace: _Trace,
        op: str,
        purpose: str | None,
        anomaly: bool,
    ) -> Decision:
        """The policy's verdict for the request's input (memoized, or in a rollout compared with the
        candidate's), as the Decision."""
        snapshot = self.policy.current()
        revision = trace.revision = snapshot.revision if snapshot is not None else None
        # the memo key starts with the bundle's digest: two bundles never share entries, even when
        # published with the same revision string (a rollout candidate's entries are keyed the same way)
        digest = snapshot.digest if snapshot is not None else None
        key = trace.input = (
            digest, session.tenant, session.risk, session.acr, session.auth_age_s, session.subject,
            session.stepup_satisfied, trace.posture, trace.country, anomaly, request.method, request.path, op,
            purpose,
        )  # fmt: skip
        if snapshot is None:
            return self._failure("no_bundle", None, trace)
        if snapshot is not self._snapshot:
            self._activate(snapshot)
        comparison = self._comparison
        ticket = None if comparison is None else comparison.ticket(session.tenant, session.session_key)
        if comparison is None or ticket is None:
            verdict, trace.input = self._verdict(snapshot, key, trace.answer)
        else:
            snapshot, verdict, trace.input = comparison.compare(ticket, snapshot, key)
            revision = trace.revision = snapshot.revision
        if verdict is None:  # the engine failed; _verdict logged the cause
            return self._failure("engine_error", None, trace)
        trace.result = verdict.result
        decision_id = self._ids.next()
        passes = verdict.outcome == ALLOW
        identity = _identity(trace, decision_id) if passes else None
        return _new(Decision, (
            verdict.outcome, verdict.reasons, decision_id, revision, passes, trace.graphql, identity, None,
            "", trace.input,
        ))  # fmt: skip

    def _session(self, headers: HeaderMap, trace: _Trace) -> Session | Decision:
        """The verified Session for the request's bearer token (kept in trace), else its refusal."""
        tenant_header = None
        if self._tenant_header:
            tenant_header = label(headers.get(self._tenant_header), "tenant header")
        token = self._tokens.token(headers)
        if token is None:
            return self._refusal(UNAUTHENTICATED, "token_missing", "bearer token missing", trace, "missing")
        if self.sessions is None:
            return self._failure("identity_unconfigured", None, trace)
        try:
            session = trace.session = self.sessions.verify(token, tenant_header)
        except TokenError as exc:
            if not self._identity_keys_loaded():  # the IdP's keys never arrived: not the token's fault
                return self._failure("jwks_unavailable", None, trace)
            return self._refusal(UNAUTHENTICATED, f"token_{exc.code}", exc.description, trace, exc.code)
        self._tokens.verified(headers, token)
        return session

    def _verdict(
        self, snapshot: PolicySnapshot, key: InputKey, answer: Answer | None = None
    ) -> tuple[Verdict | None, Mapping[str, Any]]:
        """(verdict, or None when the engine failed; the input document); memoized when the bundle allows.
        `answer` (decide_async only): the remote's verdict for this input, or defer a remote memo miss."""
        memo = self._memo if snapshot.cacheable else None
        if answer is not None and (answer[0] is None or answer[0] == key):  # awaited for this input
            verdict, document = answer[1], answer[2] or policy_input(key)
            if verdict is not None and memo is not None:
                memo.put(key, (verdict, document))
            return verdict, document
        if memo is not None:
            memoized = memo.get(key)
            self.metrics.memo(memoized is not None)
            if memoized is not None:
                return memoized
        if answer is not None and hasattr(snapshot, "evaluate_async"):  # never over the network on the loop
            raise _Deferred(snapshot, key)
        return self._evaluate(snapshot, key, memo, self._log_failure)

    def _evaluate(
        self,
        snapshot: PolicySnapshot,
        key: InputKey,
        memo: DecisionMemo | None,
        report: Callable[[str, BaseException], None],
    ) -> tuple[Verdict | None, Mapping[str, Any]]:
        """Ask the engine (a memo miss); an engine failure is reported and gives no verdict."""
        document = policy_input(key)
        try:
            verdict = verdict_from_result(snapshot.evaluate(self._query, document))
        except (PolicyEvalError, PolicyResultError) as exc:
            report("engine_error", exc)
            return None, document
        if memo is not None:
            memo.put(key, (verdict, document))
        return verdict, document

    def _log_candidate_failure(self, kind: str, exc: BaseException) -> None:
        if self._throttle(f"candidate_{kind}", time.monotonic()) is not None:
            log.warning("ig-gate rollout candidate %s (the active bundle decides): %s", kind, _describe(exc))

    # -- refusals and failures -----------------------------------------------------------------------

    def _refusal(
        self, outcome: str, reason: str, detail: str, trace: _Trace, token_error: str | None = None
    ) -> Decision:
        snapshot = self._snapshot
        trace.revision = snapshot.revision if snapshot is not None else None
        return Decision(
            outcome=outcome,
            reasons=(reason,),
            decision_id=self._ids.next(),
            revision=trace.revision,
            passes=False,
            graphql=trace.graphql,
            token_error=token_error,
            detail=detail,
        )

    def _report_anomaly(self, session: Session, country: str | None) -> None:
        """One metric increment and one log line per subject newly flagged for impossible travel."""
        if len(self._flagged) >= _MAX_FLAGGED:
            self._flagged.clear()
        self._flagged[session.subject] = None
        self.metrics.geo_anomaly(session.tenant)
        log.warning(
            "ig-gate geo anomaly: subject %r (tenant %r, session %s) changed country to %s too fast",
            session.subject,
            session.tenant,
            session.token_id,
            country,
        )

    def _failure(self, kind: str, exc: BaseException | None, trace: _Trace) -> Decision:
        """A failure-mode decision: refused (503) when closed. When open it passes, but only a request whose
        session was verified: failing open is about the policy, never about authentication."""
        self.metrics.failure(kind, self._mode)
        # an engine error without exc was logged with its cause where it happened
        if kind != "engine_error" or exc is not None:
            self._log_failure(kind, exc)
        decision_id = self._ids.next()
        passes = self._open and trace.session is not None
        identity = _identity(trace, decision_id) if passes else None
        return Decision(
            outcome=ERROR,
            reasons=(kind,),
            decision_id=decision_id,
            revision=trace.revision,
            passes=passes,
            graphql=trace.graphql,
            identity=identity,
        )

    def _log_failure(self, kind: str, exc: BaseException | None) -> None:
        suppressed = self._throttle(kind, time.monotonic())
        if suppressed is None:
            return
        cause = _describe(exc) if exc is not None else self._unavailable_reason()
        more = f" ({suppressed} more since the last line)" if suppressed else ""
        log.error("ig-gate %s, failing %s: %s%s", kind, self._mode, cause, more)

    def _unavailable_reason(self) -> str:
        reason = getattr(self.policy, "reason", None)
        return reason or "; ".join(self.problems) or "no usable policy bundle"

    # -- record --------------------------------------------------------------------------------------

    def _record(self, decision: Decision, trace: _Trace, seconds: float, request: GateRequest) -> None:
        session = trace.session
        reasons = decision.reasons
        profile = trace.profile
        if profile is None:  # refused before it was classified: the method says what it was
            profile = _method_profile(request)
        self.metrics.observe_decision(
            decision.outcome,
            reasons[0] if reasons else "ok",
            session.tenant if session is not None else None,
            profile,
            seconds,
            trace.size,
        )
        note = DECISION_NOTE.get()  # the sidecar's access log quotes the decision id (None: log off)
        if note is not None:
            note.append(decision.decision_id)
        if self.decision_log is None:
            return
        document = trace.input
        if isinstance(document, tuple):
            document = policy_input(document)
        elif document is None:  # refused before the policy input existed: log what was asked
            document = {"request": {"method": request.method, "path": request.path}}
        if trace.device_reason is not None:  # logged beside the posture; not a policy input
            document = {**document, "device": {**document.get("device", {}), "reason": trace.device_reason}}
        self.decision_log.append_decision(
            decision.decision_id,
            self._log_path,
            document,
            trace.result if trace.result is not None else {"reasons": list(reasons)},
            decision.revision,
            decision.outcome,
        )

    def _activate(self, snapshot: PolicySnapshot) -> None:
        """A new snapshot is in force: publish its identity as the bundle_info metric."""
        self._snapshot = snapshot
        version = getattr(snapshot.verified, "version", None)
        self.metrics.bundle_info(snapshot.revision, snapshot.digest, version)

    # -- lifecycle -----------------------------------------------------------------------------------

    def _identity_keys_loaded(self) -> bool:
        key_set = self.key_sets.get("identity")
        return key_set is None or key_set.loaded

    def _key_sets_loaded(self) -> bool:
        return all(key_set.loaded for key_set in self.key_sets.values())

    def status(self) -> dict[str, Any]:
        """What the gate runs with: policy revision (or why there is none), failure mode, memo, key sets."""
        snapshot = self.policy.current()
        policy = None
        if snapshot is not None:
            policy = {
                "revision": snapshot.revision,
                "digest": snapshot.digest,
                "cacheable": snapshot.cacheable,
            }
        return {
            "ready": snapshot is not None and self.sessions is not None and self._key_sets_loaded(),
            "policy": policy,
            "policy_problem": None if snapshot is not None else self._unavailable_reason(),
            "problems": self._problems(snapshot),
            "failure_mode": self._mode,
            "memo_entries": len(self._memo) if self._memo is not None else None,
            "key_sets": {name: key_set.status() for name, key_set in self.key_sets.items()},
            "rollout": self.rollout.status().to_json() if self.rollout is not None else None,
        }

    def _problems(self, snapshot: PolicySnapshot | None) -> list[str]:
        """The fixed problems, and why the policy source has no bundle now (a watched file may get one)."""
        reason = getattr(self.policy, "reason", None) if snapshot is None else None
        return [*self.problems, reason] if reason and reason not in self.problems else list(self.problems)

    def start(self) -> None:
        """Start the background work (construction starts none; idempotent): key-set refreshers, the
        decision-log writer, the risk-store subscription and the open-connection watcher."""
        for key_set in self.key_sets.values():
            key_set.start()
        if self.decision_log is not None:
            self.decision_log.start()
        self.live.start()
        self.workload.start()

    def close(self) -> None:
        """Flush the decision log and stop background key-set refreshers and the open-connection watcher."""
        self.live.close()
        self.workload.close()
        if self.decision_log is not None:
            self.decision_log.close()
        for key_set in self.key_sets.values():
            key_set.close()


def _method_profile(request: GateRequest) -> str:
    """The workload profile of a request from its method and content type alone (nothing parsed)."""
    content_type = header_map(request.headers).get(CONTENT_TYPE)
    media = "" if content_type is None else content_type.decode("latin-1")
    return workload_profile(request.method, "", UNKNOWN, media, websocket=request.is_websocket)


def _identity(trace: _Trace, decision_id: str) -> Identity:
    session = trace.session
    assert session is not None
    return _new(Identity, (
        session.subject, session.tenant, session.risk, trace.posture, trace.country, decision_id,
        trace.profile, session.acr, session.stepup_satisfied,
    ))  # fmt: skip


async def evaluate_policy(snapshot: PolicySnapshot, query: str, input: Mapping[str, Any]) -> Any:
    """snapshot.evaluate(query, input) for a caller on an event loop: awaited off the loop (with its
    timeout) when the snapshot answers over the network (the remote PDP), else evaluated here."""
    evaluate_async = getattr(snapshot, "evaluate_async", None)
    if evaluate_async is not None:
        return await evaluate_async(query, input)
    return snapshot.evaluate(query, input)


def verify_options(settings: Settings) -> VerifyOptions:
    """How bundles are verified, from the `bundle` settings (key, pin); ConfigError when unsigned bundles
    would be accepted without `bundle.allow_unsigned`."""
    bundle = settings.bundle
    if bundle.verification_key is None and not bundle.allow_unsigned:
        raise ConfigError("bundle.verification_key: not set (bundle.allow_unsigned is for development only)")
    key = None
    if bundle.verification_key is not None:
        key = VerificationKey.from_file(bundle.verification_key, bundle.key_alg, bundle.key_id, bundle.scope)
    pin = Pin(version_spec=bundle.require_version, digests=frozenset(bundle.require_digests))
    return VerifyOptions(key=key, pin=pin)


def _describe(exc: BaseException) -> str:
    """A log-safe description: our named errors keep their message; anything else only its type and where
    it was raised (messages of unexpected errors may quote request data)."""
    if isinstance(exc, BundleError | PolicyResultError | ConfigError | OSError):
        return f"{type(exc).__name__}: {str(exc)[:300]}"
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    where = f" at {Path(tb.tb_frame.f_code.co_filename).name}:{tb.tb_lineno}" if tb is not None else ""
    return f"{type(exc).__name__}{where}"
