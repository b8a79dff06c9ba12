"""BundleManager: keep the gate's policy bundle current from a registry channel, never lose the last good one.

Cycle: resolve the channel tag -> (unchanged digest: nothing downloaded) -> pull by digest (digests and
sizes checked) -> verify (signature, detached signature, pin, expiry) -> rollback check -> compile ->
hand to the rollout hook as a candidate, or activate -> persist as last-good -> swap one reference.

Readers call `current()` (one attribute read, no lock): a request sees the old snapshot or the new
one, never a mix. Every failure keeps the active bundle, is counted by kind, reported through
`on_event(kind, detail)`, and shown by `status()`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import random
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

from ig_gate.bundles.errors import BundleError, RegistryError
from ig_gate.bundles.laststate import REJECTED_LIMIT, LastGoodRecord, LastGoodStore
from ig_gate.bundles.manifest import expiry_instant
from ig_gate.bundles.policy import ActivationHook, PolicySnapshot, log_activation
from ig_gate.bundles.rollback import check_min_version, check_rollback, effective_floor
from ig_gate.bundles.ticker import Ticker
from ig_gate.bundles.verify import VerifiedBundle, VerifyOptions, verify_artifact

if TYPE_CHECKING:  # the registry client (oras, requests) is loaded only by whoever builds one
    from ig_gate.bundles.registry import RegistryClient

log = logging.getLogger(__name__)

FAILURE_KINDS = (
    "fetch",
    "verify",
    "pin",
    "expiry",
    "compile",
    "rollback",
    "persist",
    "last_good",
    "internal",
)
"""Failure kinds counted in `status().failures` and passed to `on_event`. Other events: `activated` (a
bundle became active), `active_expired` (the active bundle passed its expiry: alert), `rejected` (the
rollout controller turned a candidate down)."""

EventHook = Callable[[str, str], None]
FloorHook = Callable[[str | None], None]  # the rollback floor in force (None: unset), after start/activation
FLOOR_UNSET = (
    "rollback floor unset: no versioned bundle has been active with this state directory and "
    "bundle.min_version is not set, so an older validly signed bundle would be accepted"
)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def failure_kind(exc: BaseException) -> str:
    """The failure kind of an exception: a bundle error's code, else `internal`."""
    return exc.code if isinstance(exc, BundleError) else "internal"


@dataclass(frozen=True, slots=True)
class Candidate:
    """A fetched, verified and compiled bundle that is not active yet (what a rollout controller gets)."""

    snapshot: PolicySnapshot
    source: str  # where it came from, e.g. "host/repo@sha256:..."
    oci_digest: str | None
    detached_signature: bytes | None

    @property
    def verified(self) -> VerifiedBundle:
        return self.snapshot.verified


CandidateHook = Callable[[Candidate], None]


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """The last failure: its kind, message, when it first happened and when it was last seen."""

    kind: str
    message: str
    since: dt.datetime
    last_seen: dt.datetime


@dataclass(frozen=True, slots=True)
class ActiveInfo:
    """What is in force now."""

    digest: str
    oci_digest: str | None
    revision: str
    version: str | None
    channel: str | None
    source: str
    key_id: str | None
    verified_at: dt.datetime
    activated_at: dt.datetime
    expires_at: dt.datetime | None


@dataclass(frozen=True, slots=True)
class BundleStatus:
    """A consistent copy of the manager's state, for `/status`, logs and tests."""

    registry: str
    repository: str
    channel: str
    active: ActiveInfo | None
    candidate: str | None  # OCI digest handed to the rollout hook and not decided yet
    last_poll_at: dt.datetime | None
    last_fetch_at: dt.datetime | None  # last time the registry answered
    last_error: ErrorInfo | None
    failures: Mapping[str, int]
    activations: int
    alerts: tuple[str, ...]
    rejected: tuple[str, ...]
    rollback_floor: str | None = None  # the version older bundles are refused below (None: unset, alerted)

    def to_json(self) -> dict:
        """JSON-friendly dict (datetimes as ISO 8601 strings)."""
        return jsonable(self)  # type: ignore[return-value]


def jsonable(value: object) -> object:
    """Dataclasses -> dicts, datetimes -> ISO 8601, mappings and sequences recursively."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [jsonable(v) for v in value]
    return value


@dataclass(slots=True)
class _State:
    """Mutable bookkeeping, only touched under the manager's lock."""

    active_info: ActiveInfo | None = None
    candidate: Candidate | None = None
    last_poll_at: dt.datetime | None = None
    last_fetch_at: dt.datetime | None = None
    last_error: ErrorInfo | None = None
    failures: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FAILURE_KINDS, 0))
    activations: int = 0
    refused: str | None = None  # OCI digest refused by verify/pin/expiry/compile/rollback: not re-downloaded
    rejected: list[str] = field(default_factory=list)  # OCI digests reverted by rollout (persisted)
    expired_alerted: str | None = None
    consecutive_errors: int = 0


class BundleManager:
    """Polls one registry channel and keeps a verified, compiled PolicySnapshot active (a PolicySource).

    Hooks (constructor arguments or attributes, set before `start()`):
    `on_event(kind, detail)` for metrics (see FAILURE_KINDS), `on_activate(snapshot, source)` when a bundle
    becomes active (the last-good at start, a new or promoted one), and `on_candidate(candidate)` for a
    rollout controller: when set, a new bundle is handed over instead of activated, and the controller
    later calls `promote(candidate)` or `reject(candidate, reason)`.
    """

    def __init__(
        self,
        client: RegistryClient,
        repository: str,
        channel: str,
        options: VerifyOptions,
        state_dir: Path,
        *,
        poll_interval_s: float = 30.0,
        jitter: float = 0.1,
        max_backoff_s: float | None = None,
        clock: Callable[[], dt.datetime] = utcnow,
        on_event: EventHook | None = None,
        on_candidate: CandidateHook | None = None,
        rng: random.Random | None = None,
        min_version: str | None = None,
        on_floor: FloorHook | None = None,
        on_activate: ActivationHook | None = None,
    ) -> None:
        max_backoff_s = max(300.0, poll_interval_s) if max_backoff_s is None else max_backoff_s
        if poll_interval_s <= 0 or not 0 <= jitter < 1 or max_backoff_s < poll_interval_s:
            raise ValueError("need poll_interval_s > 0, 0 <= jitter < 1, max_backoff_s >= poll_interval_s")
        self.client = client
        self.repository = repository
        self.channel = channel
        self.options = options
        self.store = LastGoodStore(state_dir)
        self.poll_interval_s = poll_interval_s
        self.jitter = jitter
        self.max_backoff_s = max_backoff_s
        self._clock = clock
        self.on_event = on_event
        self.on_candidate = on_candidate
        self.min_version = min_version  # bundle.min_version: a floor no pin overrides, state dir or not
        self.on_floor = on_floor
        self.on_activate = on_activate
        self._rng = rng or random.Random()
        self._active: PolicySnapshot | None = None
        self._state = _State(rejected=self.store.read_rejected())
        self._cycle = threading.RLock()  # one poll / load / promote / reject at a time
        self._lock = threading.RLock()  # guards _state for status(); never held across I/O
        self._poller = Ticker(f"bundle-poll-{channel}", self.poll_once, self.next_delay)

    # -- PolicySource --------------------------------------------------------------------------

    def current(self) -> PolicySnapshot | None:
        """The active snapshot (None: no usable bundle -> the gate fails closed). Lock-free."""
        return self._active

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Load and re-verify the last-good bundle, then poll in a background thread (first poll at once)."""
        self.load_last_good()
        self._publish_floor()
        self._poller.start()

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the poll thread (the active snapshot stays readable)."""
        self._poller.stop(timeout_s)

    def next_delay(self) -> float:
        """Seconds to the next poll: the interval (doubled per consecutive failed poll, capped) +/- jitter."""
        with self._lock:
            errors = self._state.consecutive_errors
        base = min(self.max_backoff_s, self.poll_interval_s * 2 ** min(errors, 32))
        return base * (1 + self._rng.uniform(-self.jitter, self.jitter))

    # -- last-good -----------------------------------------------------------------------------

    def load_last_good(self) -> bool:
        """Re-verify the persisted last-good and activate it; a damaged or failing one is moved aside."""
        with self._cycle:
            try:
                stored = self.store.load()
                if stored is None:
                    return False
                record = stored.record
                where = f"last-good {record.source}"
                verified = self._verify(stored.archive, stored.signature, where)
                self._check_floor(verified.version, self.store.read_floor(), where)
                snapshot = PolicySnapshot.from_verified(verified)
            except BundleError as exc:
                self._fail("last_good", f"{exc} [{failure_kind(exc)}]")
                try:
                    self.store.move_aside(self._clock())
                except OSError as moved:  # never used all the same: it failed verification
                    self._fail("persist", f"{self.store.state_dir}: cannot move the last-good aside "
                               f"({moved.strerror})")
                return False
            with self._lock:
                self._swap(snapshot, record.source, record.oci_digest, record.channel)
            source = f"{record.source} (last-good in {self.store.state_dir})"
            log_activation(snapshot, source, self.on_activate)
            return True

    # -- polling -------------------------------------------------------------------------------

    def poll_once(self) -> str:
        """One poll cycle; returns what happened: unchanged|activated|candidate|refused|failed.

        Network, verification and compilation run outside the state lock: status() never waits on them.
        """
        with self._cycle:
            now = self._clock()
            with self._lock:
                self._state.last_poll_at = now
            self._check_active_expiry(now)
            where = f"{self.client.host}/{self.repository}:{self.channel}"
            try:
                digest = self.client.resolve(self.repository, self.channel)
                with self._lock:
                    self._state.last_fetch_at = self._clock()
                outcome = self._consider(digest, where)
            except BundleError as exc:
                return self._refuse(exc, where)
            except Exception as exc:  # a bug must not kill the poll thread or drop the last-good
                log.exception("bundle poll of %s failed unexpectedly", where)
                return self._refuse(exc, where)
            with self._lock:
                self._state.consecutive_errors = 0
            return outcome

    def _consider(self, digest: str | None, where: str) -> str:
        """Decide on the digest the tag points at; raises BundleError subclasses on refusal."""
        state = self._state
        if digest is None:
            raise RegistryError(f"{where}: channel tag not found")
        active = state.active_info
        pending = state.candidate.oci_digest if state.candidate else None
        if digest in (active.oci_digest if active else None, pending):
            self._clear_error()
            return "unchanged"
        if digest == state.refused or digest in state.rejected:
            return "refused"  # same bad digest still on the channel: keep the error, download nothing
        source = f"{self.client.host}/{self.repository}@{digest}"
        artifact = self.client.fetch(self.repository, digest)
        state.refused = digest  # until it passes every check below
        verified = self._verify(artifact.archive, artifact.signature, source)
        self._check_floor(verified.version, self._floor(), source)
        candidate = Candidate(PolicySnapshot.from_verified(verified), source, digest, artifact.signature)
        state.refused = None
        if self.on_candidate is None:
            self._activate(candidate)
            return "activated"
        with self._lock:
            state.candidate = candidate
            state.last_error = None
        self.on_candidate(candidate)
        return "candidate"

    def _floor(self) -> str | None:
        """The rollback floor: the persisted one, else (file missing or damaged) the active version."""
        floor = self.store.read_floor()
        if floor is None and (active := self._state.active_info) is not None:
            floor = active.version
        return floor

    def _check_floor(self, version: str | None, floor: str | None, where: str) -> None:
        """Refuse a rollback below the floor (an exact pin may allow it) or below bundle.min_version."""
        check_rollback(version, floor, self.options.pin.version_spec, where)
        check_min_version(version, self.min_version, where)

    def rollback_floor(self) -> str | None:
        """The floor in force: the higher of the persisted floor and bundle.min_version (None: unset)."""
        return effective_floor(self._floor(), self.min_version)

    def _publish_floor(self) -> None:
        if self.on_floor is None:
            return
        try:
            self.on_floor(self.rollback_floor())
        except Exception:
            log.exception("bundle rollback-floor hook failed")

    def _verify(self, archive: bytes, signature: bytes | None, where: str) -> VerifiedBundle:
        options = dataclasses.replace(self.options, now=self._clock())
        try:
            return verify_artifact(archive, signature, options)
        except BundleError as exc:
            raise type(exc)(f"{where}: {exc}") from exc

    # -- rollout hook API ----------------------------------------------------------------------

    def promote(self, candidate: Candidate) -> None:
        """Make a candidate active and last-good (the rollout controller's verdict: healthy).

        Waits for a poll cycle in flight; call it from a background thread, not a request.
        Raises BundleError (kind `persist`, also recorded) when the last-good cannot be written.
        """
        with self._cycle:
            try:
                self._activate(candidate)
            except _PersistError as exc:
                self._fail("persist", str(exc))
                raise

    def reject(self, candidate: Candidate, reason: str) -> None:
        """Drop a candidate; its digest is never downloaded again (persisted in the state dir, so a restart
        does not retry it either). A failure to persist is recorded (kind `persist`); the rejection holds."""
        with self._cycle:
            with self._lock:
                digest = candidate.oci_digest
                if digest and digest not in self._state.rejected:
                    self._state.rejected.append(digest)
                    del self._state.rejected[:-REJECTED_LIMIT]
                if self._state.candidate is candidate:
                    self._state.candidate = None
                rejected = list(self._state.rejected)
            try:
                self.store.write_rejected(rejected)
            except OSError as exc:
                where = self.store.state_dir
                self._fail("persist", f"{where}: cannot persist rejected digests ({exc.strerror})")
        self._emit("rejected", f"{candidate.source}: {reason}")

    def withdraw(self, candidate: Candidate) -> None:
        """Forget a pending candidate without rejecting it: the next poll fetches and offers it again."""
        with self._cycle, self._lock:
            if self._state.candidate is candidate:
                self._state.candidate = None

    # -- internals -----------------------------------------------------------------------------

    def _activate(self, candidate: Candidate) -> None:
        """Persist as last-good (and raise the rollback floor), then swap it in."""
        verified = candidate.verified
        record = LastGoodRecord(
            digest=verified.digest,
            version=verified.version,
            revision=verified.revision,
            verified_at=verified.verified_at.isoformat(),
            key_id=verified.signature.key_id if verified.signature else None,
            source=candidate.source,
            channel=self.channel,
            oci_digest=candidate.oci_digest,
            has_signature=candidate.detached_signature is not None,
        )
        try:
            self.store.save(verified.bundle.archive, candidate.detached_signature, record)
            self.store.write_floor(verified.version, verified.digest)
        except OSError as exc:
            raise _PersistError(f"{self.store.state_dir}: cannot persist last-good ({exc.strerror})") from exc
        with self._lock:
            self._swap(candidate.snapshot, candidate.source, candidate.oci_digest, self.channel)
            if self._state.candidate is candidate:
                self._state.candidate = None
            self._state.activations += 1
            self._state.last_error = None
        self._publish_floor()
        self._emit("activated", f"{candidate.source} version={verified.version} revision={verified.revision}")
        log_activation(candidate.snapshot, candidate.source, self.on_activate)

    def _swap(
        self, snapshot: PolicySnapshot, source: str, oci_digest: str | None, channel: str | None
    ) -> None:
        """Record what is active and swap the one reference readers see (caller holds the state lock)."""
        verified = snapshot.verified
        expires = verified.bundle.manifest.expires
        self._state.active_info = ActiveInfo(
            digest=verified.digest,
            oci_digest=oci_digest,
            revision=verified.revision,
            version=verified.version,
            channel=channel,
            source=source,
            key_id=verified.signature.key_id if verified.signature else None,
            verified_at=verified.verified_at,
            activated_at=self._clock(),
            expires_at=expiry_instant(expires) if expires is not None else None,
        )
        self._active = snapshot  # the one atomic reference swap readers observe

    def _check_active_expiry(self, now: dt.datetime) -> None:
        info = self._state.active_info
        if (
            not (info and info.expires_at and now >= info.expires_at)
            or self._state.expired_alerted == info.digest
        ):
            return
        self._state.expired_alerted = info.digest
        detail = f"active bundle {info.digest} expired at {info.expires_at.isoformat()}"
        log.warning("%s; it stays in force until a newer bundle verifies", detail)
        self._emit("active_expired", detail)

    def _refuse(self, exc: BaseException, where: str) -> str:
        kind = failure_kind(exc)
        message = str(exc) if isinstance(exc, BundleError) else f"{where}: {type(exc).__name__}: {exc}"
        transient = kind in ("fetch", "internal", "persist")
        self._fail(kind, message)
        with self._lock:  # back off while the registry (or this host) is failing, not on a bad bundle
            self._state.consecutive_errors = self._state.consecutive_errors + 1 if transient else 0
        return "failed" if transient else "refused"

    def _fail(self, kind: str, message: str) -> None:
        with self._lock:
            now, previous = self._clock(), self._state.last_error
            same = previous is not None and (previous.kind, previous.message) == (kind, message)
            self._state.last_error = ErrorInfo(kind, message, previous.since if same else now, now)
            self._state.failures[kind] += 1
        log.warning("bundle %s failure: %s", kind, message)
        self._emit(kind, message)

    def _clear_error(self) -> None:
        with self._lock:
            self._state.last_error = None

    def _emit(self, kind: str, detail: str) -> None:
        if self.on_event is None:
            return
        try:
            self.on_event(kind, detail)
        except Exception:
            log.exception("bundle event hook failed for %s", kind)

    # -- status --------------------------------------------------------------------------------

    def status(self) -> BundleStatus:
        """A consistent copy of the manager's state (never waits for a poll in flight)."""
        floor = self.rollback_floor()  # reads the state directory: outside the lock
        with self._lock:
            state, now = self._state, self._clock()
            info = state.active_info
            alerts = []
            if info and info.expires_at and now >= info.expires_at:
                alerts.append(f"active bundle expired at {info.expires_at.isoformat()}")
            if info is None:
                alerts.append("no active bundle: requests fail closed")
            if floor is None:
                alerts.append(FLOOR_UNSET)
            return BundleStatus(
                registry=self.client.host,
                repository=self.repository,
                channel=self.channel,
                active=info,
                candidate=state.candidate.oci_digest if state.candidate else None,
                last_poll_at=state.last_poll_at,
                last_fetch_at=state.last_fetch_at,
                last_error=state.last_error,
                failures=MappingProxyType(dict(state.failures)),
                activations=state.activations,
                alerts=tuple(alerts),
                rejected=tuple(sorted(state.rejected)),
                rollback_floor=floor,
            )


class _PersistError(BundleError):
    """The last-good bundle could not be written; the new bundle is not activated."""

    code = "persist"
