"""Staged rollout of a candidate bundle: shadow, sticky canary stages, ACA-style checks, automatic revert.

The BundleManager hands each new bundle to `offer()` instead of activating it. Stage 0 is **shadow**:
the gate evaluates the candidate beside the active bundle on every request and enforces the active
one. Stages 1..n are **canary** stages (`stages`, e.g. 5 % -> 25 % -> 100 %): a request whose sticky
key (tenant or session) hashes below the stage's fraction is decided by the candidate (the active
bundle is still evaluated beside it); other requests never see the candidate.

The gate reports each compared request with `observe()` (plain outcomes and engine seconds; this
module knows nothing of HTTP or the middleware). When both sides have `min_samples`, the stage is
judged: deny-rate and step-up-rate deltas (either direction), candidate engine-error rate, median
engine latency ratio. A breach **reverts** at once (the candidate is dropped, the manager rejects
its digest for good); a pass advances, and a pass at the last stage **promotes** the candidate (the
manager activates it and persists it as last-good). Manager calls run on one background thread, never
on a request. Requests read the current stage with one attribute read; counters are plain ints under
one lock.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import logging
import statistics
import threading
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from ig_gate.bundles.errors import BundleError
from ig_gate.bundles.manager import Candidate, EventHook, jsonable, utcnow
from ig_gate.bundles.policy import PolicySnapshot

log = logging.getLogger(__name__)

IDLE = -1  # stage index when no candidate is rolling out
SHADOW = 0
DENY, STEPUP, ERROR = "deny", "stepup", "error"  # observed outcomes that the checks count
LATENCY_MIN_SAMPLES = 20  # engine timings needed on each side before latency is judged
LATENCY_RESERVOIR = 2048  # engine timings kept per side and stage
_HASH_SPACE = float(2**32)

StageHook = Callable[[int], None]


class RolloutLimits(Protocol):
    """What the controller needs from the settings (`RolloutSettings` has these fields)."""

    @property
    def stages(self) -> tuple[float, ...]: ...
    @property
    def sticky_by(self) -> str: ...
    @property
    def min_samples(self) -> int: ...
    @property
    def max_deny_rate_delta(self) -> float: ...
    @property
    def max_stepup_rate_delta(self) -> float: ...
    @property
    def max_error_rate(self) -> float: ...
    @property
    def max_latency_ratio(self) -> float: ...


class RolloutTarget(Protocol):
    """The BundleManager side of a rollout."""

    def current(self) -> PolicySnapshot | None: ...
    def promote(self, candidate: Candidate) -> None: ...
    def reject(self, candidate: Candidate, reason: str) -> None: ...
    def withdraw(self, candidate: Candidate) -> None: ...


class Ticket(NamedTuple):
    """A request's part in the rollout: evaluate `snapshot` beside the active bundle; enforce it or not."""

    snapshot: PolicySnapshot
    enforce: bool
    epoch: int  # the stage it was issued for: observations from an earlier stage are dropped


@dataclass(frozen=True, slots=True)
class RoleStats:
    """One side (active bundle or candidate) over one stage's compared requests."""

    samples: int
    deny_rate: float
    stepup_rate: float
    error_rate: float
    evaluations: int  # requests the engine really evaluated (not memoized): the latency sample
    latency_p50_s: float | None


@dataclass(frozen=True, slots=True)
class StageCheck:
    """The verdict on one stage: passed, or the breaches that reverted the candidate."""

    stage: int
    passed: bool
    breaches: tuple[str, ...]
    active: RoleStats
    candidate: RoleStats
    at: dt.datetime


@dataclass(frozen=True, slots=True)
class RolloutStatus:
    """A consistent copy of the controller's state, for `/v1/status`, logs and tests."""

    state: str  # idle | shadow | canary | promoting
    stage: int  # IDLE, SHADOW, or canary stage k (enforcing stages[k - 1])
    fraction: float  # share of traffic the candidate decides
    stages: tuple[float, ...]
    candidate: str | None  # where the candidate came from (registry/repo@digest)
    revision: str | None
    version: str | None
    started_at: dt.datetime | None
    active_stats: RoleStats | None  # the current stage so far
    candidate_stats: RoleStats | None
    last_check: StageCheck | None
    promotions: int
    reverts: int

    def to_json(self) -> dict[str, Any]:
        """JSON-friendly dict (datetimes as ISO 8601 strings)."""
        return jsonable(self)  # type: ignore[return-value]


class _Tally:
    """Counts for one side of one stage (only touched under the controller's lock)."""

    __slots__ = ("deny", "error", "latencies", "samples", "stepup")

    def __init__(self) -> None:
        self.samples = self.deny = self.stepup = self.error = 0
        self.latencies: list[float] = []

    def add(self, outcome: str, seconds: float | None) -> None:
        self.samples += 1
        if outcome == DENY:
            self.deny += 1
        elif outcome == STEPUP:
            self.stepup += 1
        elif outcome == ERROR:
            self.error += 1
        if seconds is not None and len(self.latencies) < LATENCY_RESERVOIR:
            self.latencies.append(seconds)

    def stats(self) -> RoleStats:
        n = self.samples or 1
        p50 = statistics.median(self.latencies) if self.latencies else None
        return RoleStats(
            self.samples, self.deny / n, self.stepup / n, self.error / n, len(self.latencies), p50
        )


@dataclass(frozen=True, slots=True)
class _Stage:
    """What requests read (one attribute, swapped whole): the candidate, its stage, prebuilt tickets."""

    candidate: Candidate
    index: int
    fraction: float
    salt: int  # the sticky hash is salted by the candidate: each rollout canaries different tenants first
    watch: Ticket  # evaluate, do not enforce
    enforce: Ticket
    promoting: bool = False


def breaches(active: RoleStats, candidate: RoleStats, limits: RolloutLimits) -> tuple[str, ...]:
    """The ACA-style comparison of one stage: each limit the candidate exceeds, said in one phrase."""
    found = []
    for name, ours, theirs, limit in (
        ("deny rate", candidate.deny_rate, active.deny_rate, limits.max_deny_rate_delta),
        ("step-up rate", candidate.stepup_rate, active.stepup_rate, limits.max_stepup_rate_delta),
    ):
        if abs(ours - theirs) > limit:
            found.append(f"{name} {ours:.3f} vs {theirs:.3f} (|delta| > {limit})")
    if candidate.error_rate > limits.max_error_rate:
        found.append(f"engine error rate {candidate.error_rate:.3f} > {limits.max_error_rate}")
    if (
        candidate.latency_p50_s is not None
        and active.latency_p50_s
        and min(candidate.evaluations, active.evaluations) >= LATENCY_MIN_SAMPLES
        and candidate.latency_p50_s / active.latency_p50_s > limits.max_latency_ratio
    ):
        ratio = candidate.latency_p50_s / active.latency_p50_s
        found.append(f"median engine latency x{ratio:.1f} the active's (> x{limits.max_latency_ratio})")
    return tuple(found)


def share(key: str | None, salt: int) -> float:
    """Where a sticky key falls in [0, 1): a stable hash (CRC-32, salted), the same in every process."""
    data = (key or "").encode("utf-8", "surrogatepass")
    return zlib.crc32(data, salt) / _HASH_SPACE


class RolloutController:
    """Takes candidates from a BundleManager through shadow and canary stages to promotion or revert.

    Hooks (attributes, set before the first candidate): `on_event(kind, detail)` with kinds
    rollout_started, rollout_advanced, rollout_promoted, rollout_reverted, rollout_superseded,
    rollout_promote_failed; `on_stage(index)` whenever the stage changes (IDLE when none).
    """

    def __init__(
        self,
        target: RolloutTarget,
        limits: RolloutLimits,
        *,
        clock: Callable[[], dt.datetime] = utcnow,
        on_event: EventHook | None = None,
        on_stage: StageHook | None = None,
    ) -> None:
        stages = tuple(limits.stages)
        if stages[-1:] != (1.0,) or any(a >= b for a, b in itertools.pairwise((0.0, *stages))):
            raise ValueError(f"rollout.stages: increasing fractions in (0, 1] ending with 1.0, got {stages}")
        if limits.sticky_by not in ("tenant", "session"):
            raise ValueError(f"rollout.sticky_by must be 'tenant' or 'session', got {limits.sticky_by!r}")
        if limits.min_samples < 1:
            raise ValueError(f"rollout.min_samples must be >= 1, got {limits.min_samples}")
        self.target = target
        self.limits = limits
        self.stages = stages
        self.on_event = on_event
        self.on_stage = on_stage
        self._by_tenant = limits.sticky_by == "tenant"
        self._clock = clock
        self._lock = threading.Lock()
        self._stage: _Stage | None = None
        self._epoch = 0
        self._active = _Tally()
        self._candidate = _Tally()
        self._started_at: dt.datetime | None = None
        self._last_check: StageCheck | None = None
        self._promotions = 0
        self._reverts = 0
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rollout")

    # -- the request path (serving threads) --------------------------------------------------------

    def assign(self, tenant: str | None, session: str | None) -> Ticket | None:
        """This request's ticket, or None: no candidate, or a canary stage that leaves this key out."""
        stage = self._stage
        if stage is None:
            return None
        if stage.index == SHADOW:
            return stage.watch
        key = tenant if self._by_tenant else session
        if stage.fraction >= 1.0 or share(key, stage.salt) < stage.fraction:
            return stage.enforce
        return None

    def observe(
        self,
        ticket: Ticket,
        active_outcome: str,
        active_seconds: float | None,
        candidate_outcome: str,
        candidate_seconds: float | None,
    ) -> None:
        """Record one compared request (outcomes allow|stepup|deny|error; seconds None when memoized);
        judges the stage once both sides have `min_samples`."""
        with self._lock:
            stage = self._stage
            if stage is None or stage.promoting or stage.watch.epoch != ticket.epoch:
                return
            self._active.add(active_outcome, active_seconds)
            self._candidate.add(candidate_outcome, candidate_seconds)
            if min(self._active.samples, self._candidate.samples) < self.limits.min_samples:
                return
            check = self._judge(stage)
            if not check.passed:
                self._stage = None
                self._reverts += 1
                step = self._reverted
            elif stage.index == len(self.stages):
                self._stage = dataclasses.replace(stage, promoting=True)
                step = self._promoting
            else:
                self._stage = self._new_stage(stage.candidate, stage.index + 1)
                step = self._advanced
        step(stage, check)

    # -- the manager hook (poll thread) ------------------------------------------------------------

    def offer(self, candidate: Candidate) -> None:
        """The manager's `on_candidate` hook: start a rollout (or, with no active bundle, promote at once)."""
        if self.target.current() is None:  # a first activation, not a promotion: nothing is counted
            log.info("no active bundle: %s activated without a rollout", candidate.source)
            self._promote(candidate, rolled_out=False)
            return
        with self._lock:
            previous = self._stage
            self._stage = self._new_stage(candidate, SHADOW)
            self._started_at = self._clock()
            self._last_check = None
        if previous is not None:
            self._emit("rollout_superseded", f"{previous.candidate.source} replaced by {candidate.source}")
        log.info("rollout of %s started in shadow (stages %s)", candidate.source, self.stages)
        self._emit("rollout_started", candidate.source)
        self._publish_stage()

    # -- lifecycle and status ----------------------------------------------------------------------

    @property
    def stage_index(self) -> int:
        """IDLE, SHADOW, or the canary stage number."""
        stage = self._stage
        return IDLE if stage is None else stage.index

    def wait_settled(self, timeout_s: float = 10.0) -> None:
        """Wait until every promote/reject handed to the manager so far has finished (TimeoutError)."""
        self._worker.submit(lambda: None).result(timeout_s)

    def close(self) -> None:
        """Finish pending manager calls and stop the worker thread."""
        self._worker.shutdown(wait=True)

    def status(self) -> RolloutStatus:
        """A consistent copy of the rollout state."""
        with self._lock:
            stage = self._stage
            verified = stage.candidate.verified if stage is not None else None
            if stage is None:
                state = "idle"
            elif stage.promoting:
                state = "promoting"
            else:
                state = "shadow" if stage.index == SHADOW else "canary"
            return RolloutStatus(
                state=state,
                stage=IDLE if stage is None else stage.index,
                fraction=0.0 if stage is None else stage.fraction,
                stages=self.stages,
                candidate=stage.candidate.source if stage is not None else None,
                revision=verified.revision if verified is not None else None,
                version=verified.version if verified is not None else None,
                started_at=self._started_at if stage is not None else None,
                active_stats=self._active.stats() if stage is not None else None,
                candidate_stats=self._candidate.stats() if stage is not None else None,
                last_check=self._last_check,
                promotions=self._promotions,
                reverts=self._reverts,
            )

    # -- internals ---------------------------------------------------------------------------------

    def _new_stage(self, candidate: Candidate, index: int) -> _Stage:
        """A fresh stage with new tallies (caller holds the lock)."""
        self._epoch += 1
        self._active, self._candidate = _Tally(), _Tally()
        fraction = 0.0 if index == SHADOW else self.stages[index - 1]
        snapshot = candidate.snapshot
        salt = zlib.crc32(candidate.verified.digest.encode())
        watch, enforce = Ticket(snapshot, False, self._epoch), Ticket(snapshot, True, self._epoch)
        return _Stage(candidate, index, fraction, salt, watch, enforce)

    def _judge(self, stage: _Stage) -> StageCheck:
        """Compare both sides of the finished stage (caller holds the lock)."""
        active, candidate = self._active.stats(), self._candidate.stats()
        found = breaches(active, candidate, self.limits)
        check = StageCheck(stage.index, not found, found, active, candidate, self._clock())
        self._last_check = check
        return check

    def _reverted(self, stage: _Stage, check: StageCheck) -> None:
        candidate = stage.candidate
        reason = f"{_stage_name(stage.index)}: {'; '.join(check.breaches)}"
        log.warning(
            "rollout of %s reverted at %s over %d requests; active bundle stays",
            candidate.source, reason, check.candidate.samples,
        )
        self._emit("rollout_reverted", f"{candidate.source} {reason}")
        self._publish_stage()
        self._submit(self.target.reject, candidate, f"rollout reverted at {reason}")

    def _advanced(self, stage: _Stage, check: StageCheck) -> None:
        fraction = self.stages[stage.index]
        log.info(
            "rollout of %s passed %s over %d requests; canary stage %d now decides %.0f%% of traffic",
            stage.candidate.source, _stage_name(stage.index), check.candidate.samples, stage.index + 1,
            fraction * 100,
        )
        self._emit("rollout_advanced", f"{stage.candidate.source} stage {stage.index + 1} ({fraction})")
        self._publish_stage()

    def _promoting(self, stage: _Stage, check: StageCheck) -> None:
        log.info("rollout of %s passed every stage; promoting", stage.candidate.source)
        self._submit(self._promote, stage.candidate)

    def _promote(self, candidate: Candidate, *, rolled_out: bool = True) -> None:
        """Ask the manager to activate and persist the candidate; on failure withdraw it (offered again).
        Only a candidate that went through the stages (`rolled_out`) counts as a promotion."""
        try:
            self.target.promote(candidate)
        except Exception as exc:  # e.g. the last-good cannot be persisted; a bug must not strand the stage
            detail = str(exc) if isinstance(exc, BundleError) else type(exc).__name__
            log.error("rollout of %s: promotion failed, active bundle stays: %s", candidate.source, detail)
            self._emit("rollout_promote_failed", f"{candidate.source}: {detail}")
            self._call(self.target.withdraw, candidate)
            promoted = False
        else:
            if rolled_out:
                self._emit("rollout_promoted", candidate.source)
            promoted = rolled_out
        with self._lock:
            self._promotions += promoted
            ours = self._stage is not None and self._stage.candidate is candidate
            if ours:
                self._stage = None
        if ours:
            self._publish_stage()

    def _submit(self, fn: Callable[..., None], *args: Any) -> None:
        """Run fn on the worker thread (after close(): dropped with a log line; the active bundle stays)."""
        try:
            self._worker.submit(self._call, fn, *args)
        except RuntimeError:
            log.warning("rollout controller closed: %s not run", getattr(fn, "__name__", fn))

    def _call(self, fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        except Exception:
            log.exception("rollout: manager call %s failed", getattr(fn, "__name__", fn))

    def _publish_stage(self) -> None:
        """Tell on_stage the stage as it is now (read at call time: the last caller publishes the latest)."""
        if self.on_stage is not None:
            self._hook(self.on_stage, self.stage_index)

    def _emit(self, kind: str, detail: str) -> None:
        if self.on_event is not None:
            self._hook(self.on_event, kind, detail)

    @staticmethod
    def _hook(hook: Callable[..., None], *args: Any) -> None:
        try:
            hook(*args)
        except Exception:
            log.exception("rollout hook failed")


def _stage_name(index: int) -> str:
    return "shadow" if index == SHADOW else f"canary stage {index}"
