"""Prometheus metrics of the gate, with bounded label values and cached label children.

Every metric lives in the `CollectorRegistry` given to `GateMetrics` (a fresh one per
instance by default, never the global REGISTRY), so many gates can coexist in one
process (tests). Label children are bound once and kept in dicts keyed by the label
tuple: `labels()` costs ~1.6 µs, an already bound child ~0.5 µs.

The two per-request calls, `observe_decision()` and `memo()`, only append to a deque
(thread-safe, ~0.1 µs): every `BATCH` records, and before every collection of the
registry (a scrape, `get_sample_value`), `flush()` adds them up and applies them to the
prometheus metrics, one locked increment per distinct series instead of four per request.
A collection therefore always sees every request recorded before it. `flush()` adds up
mostly in C (deques drained by `islice`, series counted by `collections.Counter`, memo
results by `list.count`, durations sorted and bucketed by one bisection per bound): the
record costs 0.48 µs a request with its share of the flushes, 0.78 µs with the per-record
Python loop it replaced (`bench/test_hot_steps.py`; bench/RESULTS.md, "Levers measured
one by one"). A custom collector counting in plain ints would save only the per-series
increments (one per distinct series a batch) and would not be aggregated across workers
in multiprocess mode, so the prometheus metrics stay.

Exposition: the sidecar serves `GateMetrics.exposition()` on `/metrics`. Under a
multi-worker server set `PROMETHEUS_MULTIPROC_DIR` (an empty directory, before the
workers start): the metrics then live in per-process mmap files, gauges use
multiprocess modes, and `exposition()` aggregates all workers' files. Use one
`GateMetrics` per process in that mode.
"""

from __future__ import annotations

import os
import threading
from bisect import bisect_right
from collections import Counter as Tally
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Iterator
from itertools import islice
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from ig_gate.middleware.risk_view import RiskView

PREFIX = "ig_gate_"
OTHER = "other"
NONE = "none"  # label value for a missing tenant / reason

DECISION_BUCKETS = (
    5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2,
)
OUTCOMES = ("allow", "stepup", "deny", "unauthenticated", "too_many_requests", "error")
PROFILES = ("read", "write", "subscription", "ingest")
# reasons the gate and the example policy (policies/ig/*.rego) give; anything else is "other"
REASONS = (
    "ok", "excluded", "fail_open", "no_rule_allowed",
    "token_missing", "token_invalid", "token_expired", "token_revoked",
    "risk_high", "risk_medium", "risk_unknown", "stepup_required", "auth_too_old",
    "device_jailbroken", "device_untrusted", "device_unmanaged", "device_unmanaged_write", "device_unknown",
    "geo_fenced", "geo_anomaly", "geo_unknown", "unknown_tenant",
    "purpose_missing", "purpose_unknown", "purpose_denied", "purpose_not_granted",
    "purpose_operation_forbidden",
    "no_bundle", "engine_error", "identity_unconfigured", "jwks_unavailable", "internal_error",
    "risk_store_unavailable",
    "malformed_request", "body_too_large", "ambiguous_path", "tenant_over_cap",
)


RAW_KEY_LIMIT = 4096  # raw label tuples remembered by flush() before it normalizes each time
BATCH = 256  # per-request records kept before flush() applies them (1 in multiprocess mode)


def _drain(pending: deque[Any]) -> list[Any]:
    """Pop the records present now, in C (only one flush drains at a time: `GateMetrics._flushing`)."""
    return list(islice(iter(pending.popleft, None), len(pending))) if pending else []


class _DecisionHistogram(Histogram):
    """An unlabeled histogram that takes many observations at once.

    It relies on prometheus-client's `_sum`, `_buckets` and `_upper_bounds`, as flush relies on
    a Counter child's `_value`; tests read the values back through the registry, so a change
    there fails loudly.
    """

    def observe_sorted(self, amounts: list[float]) -> None:
        """Observe durations in seconds, sorted ascending: one bisection per bucket bound."""
        below, total = 0, len(amounts)
        for bucket, bound in zip(self._buckets, self._upper_bounds, strict=True):
            upto = bisect_right(amounts, bound)  # a bucket counts the amounts <= its bound
            if upto > below:
                bucket.inc(upto - below)
                if upto == total:
                    break
                below = upto
        self._sum.inc(sum(amounts))


class _Flush:
    """A collector that yields nothing: registered before the metrics, it applies pending records first."""

    def __init__(self, flush: Callable[[], None]) -> None:
        self._flush = flush

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        self._flush()
        return iter(())


def label_table(values: Iterable[str]) -> dict[str | None, str]:
    """A lookup table value -> label value; a miss means "other"."""
    table: dict[str | None, str] = {v: v for v in values}
    table[None] = table[""] = NONE
    return table


def _child_cache(metric: Any) -> Callable[..., Any]:
    """Return `bind(*labels)`: the bound child of `metric` for these labels, bound once."""
    children: dict[Hashable, Any] = {}

    def bind(*labels: str) -> Any:
        try:
            return children[labels]
        except KeyError:
            child = children[labels] = metric.labels(*labels)
            return child

    return bind


class GateMetrics:
    """All ig_gate_* metrics; tenant, reason, outcome and profile label values are bounded.

    `tenants` keep their names as label values (others: "other"); `reasons` is the known
    reason vocabulary. `multiprocess` defaults to whether PROMETHEUS_MULTIPROC_DIR is set
    (prometheus-client itself switches to mmap files when that variable is set at import).
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        tenants: Iterable[str] = (),
        reasons: Iterable[str] = REASONS,
        *,
        multiprocess: bool | None = None,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        if multiprocess is None:
            multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self.multiprocess = multiprocess
        self._tenants = label_table(tenants)
        self._reasons = label_table(reasons)
        self._outcomes = label_table(OUTCOMES)
        self._profiles = label_table(PROFILES)
        reg = self.registry
        # (outcome, reason, tenant, profile, size) and seconds per decision; True/False per memo lookup
        self._pending: deque[tuple[Any, ...]] = deque()
        self._pending_seconds: deque[float] = deque()
        self._pending_memo: deque[bool] = deque()
        self._flushing = threading.Lock()
        self._batch = 1 if multiprocess else BATCH  # other processes read mmap files: keep them current
        reg.register(_Flush(self.flush))

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(PREFIX + name, doc, labels, registry=reg)

        def gauge(name: str, doc: str, labels: tuple[str, ...], mode: str) -> Gauge:
            return Gauge(PREFIX + name, doc, labels, registry=reg, multiprocess_mode=mode)  # type: ignore[arg-type]

        self._decisions = counter(
            "decisions", "Gate decisions.", ("outcome", "reason", "tenant", "profile")
        )
        self._decision_seconds = _DecisionHistogram(
            PREFIX + "decision_seconds", "Time to decide one request.", buckets=DECISION_BUCKETS, registry=reg
        )
        self._request_bytes = counter(
            "request_bytes", "Request body bytes (Content-Length) of decided requests.", ("tenant", "profile")
        )
        self._memo = counter("memo_lookups", "Decision memo lookups.", ("result",))
        self._jwks = counter("jwks_refresh", "JWKS refreshes.", ("result",))
        self._geo_anomalies = counter("geo_anomalies", "Impossible-travel anomalies.", ("tenant",))
        self._failures = counter("failure_mode", "Failure-mode events.", ("kind", "mode"))
        self._malformed = counter("forwarded_header_malformed", "Malformed forwarding headers.")
        self._device_refused = counter(
            "device_attestation_refused", "Device attestations sent but not used, by reason.", ("reason",)
        )
        self._log_dropped = counter("decision_log_dropped", "Decision-log entries dropped (queue full, I/O).")
        self._log_written = counter("decision_log_written", "Decision-log entries written.")
        self._bundle_events = counter("bundle_events", "Bundle manager events.", ("kind",))
        self._by_role = counter("decisions_by_role", "Decisions by rollout role.", ("role", "outcome"))
        self._reverts = counter("rollout_reverts", "Automatic rollout reverts.")
        self._bundle_info = gauge(
            "bundle_info", "The active policy bundle (value 1).", ("revision", "digest", "version"), "livemax"
        )
        self._rollout_stage = gauge(
            "rollout_stage", "Rollout stage: -1 none (no candidate, or no rollout configured), 0 shadow, k "
            "canary stage k.", (), "livemostrecent",
        )
        self._rollout_stage.set(-1)  # a fresh gauge reads 0, i.e. "shadow": none until one starts
        self._floor_unset = gauge(
            "rollback_floor_unset",
            "1 while no rollback floor protects against older signed bundles (registry mode), else 0.",
            (),
            "livemax",
        )
        self._active_bundle: tuple[str, str, str] | None = None
        self._risk_view_watched = False
        # raw label tuple -> the bound child's value increment (skips Counter.inc's checks, ~0.15 µs)
        self._decision_incs: dict[tuple[Any, ...], Callable[[float], None]] = {}

        self._bind_decision = _child_cache(self._decisions)
        self._bind_memo = _child_cache(self._memo)
        self._bind_jwks = _child_cache(self._jwks)
        self._bind_anomaly = _child_cache(self._geo_anomalies)
        self._bind_failure = _child_cache(self._failures)
        self._bind_device_refused = _child_cache(self._device_refused)
        self._bind_bundle_event = _child_cache(self._bundle_events)
        self._bind_role = _child_cache(self._by_role)
        self._bind_bytes = _child_cache(self._request_bytes)

    # -- label bounding ---------------------------------------------------------------------------

    def tenant_label(self, tenant: str | None) -> str:
        """The label value for a tenant: its name if configured, else "other" ("none" if missing)."""
        return self._tenants.get(tenant, OTHER)

    def reason_label(self, reason: str | None) -> str:
        """The label value for a reason: a known reason, else "other"."""
        return self._reasons.get(reason, OTHER)

    # -- the request path -------------------------------------------------------------------------

    def observe_decision(
        self,
        outcome: str,
        reason: str | None,
        tenant: str | None,
        profile: str,
        seconds: float,
        size: int = 0,
    ) -> None:
        """Count one decision, observe its duration, add its body bytes (applied by the next flush)."""
        self._pending_seconds.append(seconds)
        pending = self._pending
        pending.append((outcome, reason, tenant, profile, size))
        if len(pending) >= self._batch:
            self.flush()

    def memo(self, hit: bool) -> None:
        """Count one decision-memo lookup (applied by the next flush: in multiprocess mode, with the
        request's decision record that follows)."""
        pending = self._pending_memo
        pending.append(bool(hit))
        if len(pending) >= BATCH:
            self.flush()

    def flush(self) -> None:
        """Apply the records pending so far to the prometheus metrics (any thread; also on collection)."""
        with self._flushing:
            records = _drain(self._pending)
            seconds = _drain(self._pending_seconds)
            lookups = _drain(self._pending_memo)
        if records:
            self._apply_decisions(records)
        if seconds:
            seconds.sort()
            self._decision_seconds.observe_sorted(seconds)
        if lookups:
            hits = lookups.count(True)
            if hits:
                self._bind_memo("hit").inc(hits)
            if hits < len(lookups):
                self._bind_memo("miss").inc(len(lookups) - hits)

    def _apply_decisions(self, records: list[tuple[Any, ...]]) -> None:
        """Add up (outcome, reason, tenant, profile, size) records: one increment per distinct series."""
        counts = Tally(records) if len(records) > 1 else {records[0]: 1}  # one: multiprocess mode
        decisions: dict[tuple[Any, ...], int] = {}
        sizes: dict[tuple[Any, ...], int] = {}  # (tenant, profile) -> body bytes
        for (outcome, reason, tenant, profile, size), count in counts.items():
            key = (outcome, reason, tenant, profile)
            decisions[key] = decisions.get(key, 0) + count
            if size:
                sizes[tenant, profile] = sizes.get((tenant, profile), 0) + size * count
        for key, count in decisions.items():
            try:
                increment = self._decision_incs[key]
            except KeyError:
                increment = self._bind_raw_decision(*key)
            increment(count)
        for (tenant, profile), size in sizes.items():
            self._bind_bytes(self._tenants.get(tenant, OTHER), self._profiles.get(profile, OTHER)).inc(size)

    def _bind_raw_decision(
        self, outcome: str, reason: str | None, tenant: str | None, profile: str
    ) -> Callable[[float], None]:
        """The increment for raw label values; remembers the raw tuple while the cache is small."""
        increment = self._bind_decision(
            self._outcomes.get(outcome, OTHER),
            self._reasons.get(reason, OTHER),
            self._tenants.get(tenant, OTHER),
            self._profiles.get(profile, OTHER),
        )._value.inc
        if len(self._decision_incs) < RAW_KEY_LIMIT:
            self._decision_incs[(outcome, reason, tenant, profile)] = increment
        return increment

    def geo_anomaly(self, tenant: str | None) -> None:
        """Count one impossible-travel anomaly."""
        self._bind_anomaly(self._tenants.get(tenant, OTHER)).inc()

    def failure(self, kind: str, mode: str) -> None:
        """Count one failure-mode event (kind e.g. no_bundle / engine_error; mode closed|open)."""
        self._bind_failure(kind, mode).inc()

    def device_attestation_refused(self, reason: str) -> None:
        """Count one device attestation not used (device_attestation_invalid | device_binding_mismatch)."""
        self._bind_device_refused(reason).inc()

    def malformed_forwarded(self) -> None:
        """Count one malformed X-Forwarded-For / Forwarded header."""
        self._malformed.inc()

    # -- background and control path --------------------------------------------------------------

    def jwks_refresh(self, ok: bool) -> None:
        """Count one JWKS refresh attempt (result ok|error)."""
        self._bind_jwks("ok" if ok else "error").inc()

    def decision_log_dropped(self) -> None:
        """Count one dropped decision-log entry (DecisionLog `on_drop` hook)."""
        self._log_dropped.inc()

    def decision_log_written(self, count: int = 1) -> None:
        """Count written decision-log entries (DecisionLog `on_write` hook)."""
        self._log_written.inc(count)

    def bundle_info(self, revision: str, digest: str, version: str | None) -> None:
        """Mark the active bundle: its series is 1, the previously active one is removed."""
        labels = (revision, digest, version or "")
        previous, self._active_bundle = self._active_bundle, labels
        if previous is not None and previous != labels:
            if self.multiprocess:  # mmap files cannot forget a series: zero it instead
                self._bundle_info.labels(*previous).set(0)
            else:
                self._bundle_info.remove(*previous)
        self._bundle_info.labels(*labels).set(1)

    def rollback_floor(self, floor: str | None) -> None:
        """Record the rollback floor in force (BundleManager `on_floor` hook): the gauge is 1 while unset."""
        self._floor_unset.set(1 if floor is None else 0)

    def bundle_event(self, kind: str) -> None:
        """Count one bundle-manager event (e.g. activated, verify_failed, fetch_failed)."""
        self._bind_bundle_event(kind).inc()

    def decision_by_role(self, role: str, outcome: str) -> None:
        """Count one decision by rollout role (baseline | candidate | shadow)."""
        self._bind_role(role, self._outcomes.get(outcome, OTHER)).inc()

    def rollout_stage(self, stage: float) -> None:
        """Set the current rollout stage."""
        self._rollout_stage.set(stage)

    def rollout_revert(self) -> None:
        """Count one automatic rollout revert."""
        self._reverts.inc()

    def watch_risk_store(self, store: object) -> None:
        """Export the local view of a shared risk store (RedisRiskStore.view), once per registry:
        `risk_view_age_seconds` (since it last heard from Redis), `risk_view_synced` (0/1),
        `risk_view_dropped_total`; set at each collection and each heartbeat of the view's thread."""
        view = getattr(store, "view", None)
        if not isinstance(view, RiskView) or self._risk_view_watched:
            return
        self._risk_view_watched = True
        reg = self.registry
        seen = [0]

        def refresh(_: RiskView | None = None) -> None:
            age.set(view.age())
            synced.set(1 if view.synced() else 0)
            if view.dropped > seen[0]:
                dropped.inc(view.dropped - seen[0])
                seen[0] = view.dropped

        reg.register(_Flush(refresh))  # before the metrics: a collection sees current values
        age = Gauge(
            PREFIX + "risk_view_age_seconds", "Seconds since the risk store's local view last heard from "
            "Redis (+Inf before its first load).", registry=reg, multiprocess_mode="livemax",
        )
        synced = Gauge(
            PREFIX + "risk_view_synced", "1 while the risk store's local view is in sync (a session it does "
            "not know has no risk event), else 0.", registry=reg, multiprocess_mode="livemin",
        )
        dropped = Counter(PREFIX + "risk_view_dropped", "New risk entries the full local view dropped.",
                          registry=reg)
        view.watch(refresh)

    # -- exposition -------------------------------------------------------------------------------

    def exposition(self) -> tuple[bytes, str]:
        """The text exposition and its content type; aggregates all workers in multiprocess mode."""
        if self.multiprocess:
            self.flush()
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
