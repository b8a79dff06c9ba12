"""The composition root: one builder turns Settings into the whole gate, for `ZeroTrustMiddleware` and
`ig-gate serve` alike (the same YAML behaves the same in both).

`compose(settings)` returns a `GateSystem`:
- the policy source: a remote PDP (`bundle.remote_opa_url`), a registry channel (`bundle.registry`: the
  BundleManager with its last-good, and the RolloutController when `rollout.enabled`), else the bundle
  file (`bundle.path`, watched for a new version: bundles/watch.py); each activation is one log line and
  sets `ig_gate_bundle_info` at once (not at the first decision); `GateSystem.reload()` (SIGHUP) reloads;
- the risk store: Redis when `risk_store.redis_url` is set (replicas share revocations), else in memory;
- the SSF receiver when `ssf.transmitter_jwks` is set: an ASGI endpoint for `POST /ssf/events`
  (middleware/ssf.py) that the middleware serves in front of the app and the sidecar on its client port;
- the Gate with its collaborators (`build_gate`): key sets, device posture, geo, decision log, metrics.

Building validates (ConfigError and the key-set, geo and bundle errors name the key) and reads local files
only (keys, JWKS files, the bundle file, the geo database, the last-good records): no network I/O, no
thread. Background work (the last-good load then bundle polling, JWKS refreshers, the risk-store
subscription, the decision-log writer, the open-connection watcher) starts with `GateSystem.start()` and
stops with `close()`; both are idempotent, and a closed system does not start again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ig_gate.bundles.errors import BundleError
from ig_gate.bundles.policy import ActivationHook, PolicySnapshot, PolicySource
from ig_gate.bundles.rollout import RolloutController
from ig_gate.bundles.watch import BundleFile
from ig_gate.geo.anomaly import TravelAnomalyDetector
from ig_gate.geo.client_ip import ClientIPResolver
from ig_gate.geo.lookup import GeoReader
from ig_gate.middleware.analytics import export_cost_model
from ig_gate.middleware.decision_log import DecisionLog
from ig_gate.middleware.device import DevicePosture
from ig_gate.middleware.gate import Gate, verify_options
from ig_gate.middleware.jwks import JWKSet
from ig_gate.middleware.metrics import GateMetrics
from ig_gate.middleware.risk import InMemoryRiskStore, RiskStore
from ig_gate.middleware.session import SessionVerifier
from ig_gate.middleware.settings import ConfigError, Settings

if TYPE_CHECKING:
    from ig_gate.middleware.ssf import SSFEndpoint

log = logging.getLogger("ig_gate.gate")


@dataclass(slots=True)
class PolicyWiring:
    """The gate's policy source with its lifecycle and what status endpoints say about it.

    `start`/`close` are called by GateSystem; `status()` is JSON for /v1/status; `ready()` is None when the
    source can answer, else why not (it may do I/O: call it off the event loop).
    """

    source: PolicySource
    kind: str  # file | registry | remote | given (a ready-made gate)
    start: Callable[[], None] = lambda: None
    close: Callable[[], None] = lambda: None
    status: Callable[[], dict[str, Any]] = dict
    ready: Callable[[], str | None] = lambda: None
    rollout: RolloutController | None = None  # staged rollout of new registry bundles (the gate drives it)
    problems: tuple[str, ...] = ()  # why the source cannot be used (the bundle file), for Gate.status()
    reload: Callable[[], object] = lambda: None  # fetch / re-read the bundle now (SIGHUP; may do I/O)


@dataclass(eq=False)
class GateSystem:
    """The whole gate built from settings: the Gate, its policy source, the SSF endpoint (or None), and
    the background work they need (`start()` / `close()`)."""

    settings: Settings
    gate: Gate
    policy: PolicyWiring
    ssf: SSFEndpoint | None = None
    close_store: bool = True  # close() closes the risk store too (False: the caller owns it)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _state: str = field(default="built", init=False)  # built -> started -> closed

    @property
    def started(self) -> bool:
        """Whether start() ran (and close() has not)."""
        return self._state == "started"

    def start(self) -> None:
        """Start the background work once: load the last-good bundle and poll the registry, refresh key
        sets, follow the risk store, write the decision log. A no-op when started or closed."""
        with self._lock:
            if self._state != "built":
                return
            self._state = "started"
        self.policy.start()
        self._publish_active()
        if self.ssf is not None:
            self.ssf.receiver.jwks.start()
        self.gate.start()

    def _publish_active(self) -> None:
        """The bundle in force from now is on /metrics (`ig_gate_bundle_info`) before any request is decided;
        a source that fails here (a plug-in) is reported by the request path, as it fails there too."""
        try:
            snapshot = self.gate.policy.current()
        except Exception:
            return
        if snapshot is not None:
            self.gate.metrics.bundle_info(
                snapshot.revision, snapshot.digest, getattr(snapshot.verified, "version", None)
            )

    def reload(self) -> None:
        """Load the policy bundle again now (the file, or a registry poll); off the event loop (I/O)."""
        log.info("reloading the policy bundle (%s)", self.policy.kind)
        self.policy.reload()

    def close(self) -> None:
        """Stop the background work, flush the decision log, close the risk store's connections (once)."""
        with self._lock:
            if self._state == "closed":
                return
            self._state = "closed"
        self.policy.close()
        if self.ssf is not None:
            self.ssf.receiver.jwks.close()
        self.gate.close()
        close_store = getattr(self.gate.risk_store, "close", None)  # RedisRiskStore has a connection pool
        if self.close_store and callable(close_store):
            close_store()


def compose(settings: Settings, *, ip_resolver: ClientIPResolver | None = None) -> GateSystem:
    """The whole gate for `settings` (not started). `ip_resolver` replaces the one from `geo.*` (the
    sidecar's resolver for coprocessor payloads)."""
    metrics = GateMetrics(tenants=settings.metrics.tenants)
    export_cost_model(metrics.registry, settings.cost)
    policy = policy_wiring(settings, metrics)
    try:
        store = _risk_store(settings)
        try:
            gate = build_gate(
                settings, metrics=metrics, policy=policy, risk_store=store, ip_resolver=ip_resolver
            )
        except BaseException:
            getattr(store, "close", lambda: None)()
            raise
    except BaseException:
        policy.close()
        raise
    system = GateSystem(settings, gate, policy)
    if settings.ssf.transmitter_jwks:
        from ig_gate.middleware.ssf import ssf_endpoint  # jwt and the SET rules only when configured

        system.ssf = ssf_endpoint(settings, gate)
    return system


def _risk_store(settings: Settings) -> RiskStore:
    """Redis when `risk_store.redis_url` is set (replicas share it), else an in-memory store."""
    if not settings.risk_store.redis_url:
        return InMemoryRiskStore(ttl_s=settings.risk_store.ttl_s)
    from ig_gate.middleware.risk_redis import risk_store_from_settings  # the redis client only when set

    return risk_store_from_settings(settings)


def policy_wiring(settings: Settings, metrics: GateMetrics | None = None) -> PolicyWiring:
    """The policy source the settings ask for: a remote PDP, a registry channel, or the bundle file.
    Bundle-manager events are counted in `metrics` when given."""
    bundle = settings.bundle
    if bundle.remote_opa_url:
        from ig_gate.middleware.remote_pdp import RemotePolicySource  # the HTTP client only when configured

        remote = RemotePolicySource(bundle.remote_opa_url)
        url = bundle.remote_opa_url

        def start() -> None:
            log.info("policy decisions come from the remote PDP %s (no local bundle)", url)

        return PolicyWiring(remote, "remote", start, remote.close, remote.status, remote.ready)
    if bundle.registry:
        return _registry_wiring(settings, metrics)
    return _file_wiring(settings, metrics)


def _activation_hook(metrics: GateMetrics | None) -> ActivationHook | None:
    """Publish each bundle that becomes active as `ig_gate_bundle_info`, when it happens."""
    if metrics is None:
        return None
    return lambda snapshot, source: metrics.bundle_info(
        snapshot.revision, snapshot.digest, snapshot.verified.version
    )


def _registry_wiring(settings: Settings, metrics: GateMetrics | None) -> PolicyWiring:
    from ig_gate.bundles.manager import BundleManager  # the registry client only when configured
    from ig_gate.bundles.registry import RegistryClient

    bundle = settings.bundle
    if not bundle.repository:
        raise ConfigError("bundle.repository: required when bundle.registry is set")
    try:
        client = RegistryClient(bundle.registry or "", plain_http=bundle.plain_http)
    except ValueError as exc:
        raise ConfigError(f"bundle.registry: {exc}") from None
    manager = BundleManager(
        client,
        bundle.repository,
        bundle.channel,
        verify_options(settings),
        Path(bundle.state_dir),
        poll_interval_s=bundle.poll_interval_s,
        on_event=None if metrics is None else lambda kind, detail: metrics.bundle_event(kind),
        min_version=bundle.min_version,
        on_floor=None if metrics is None else metrics.rollback_floor,
        on_activate=_activation_hook(metrics),
    )
    if not settings.rollout.enabled:
        status = lambda: manager.status().to_json()  # noqa: E731
        return PolicyWiring(
            manager, "registry", start=manager.start, close=manager.close, status=status,
            reload=manager.poll_once,
        )
    try:
        rollout = RolloutController(manager, settings.rollout)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    manager.on_candidate = rollout.offer

    def close() -> None:
        manager.close()
        rollout.close()

    def status() -> dict[str, Any]:
        return {**manager.status().to_json(), "rollout": rollout.status().to_json()}

    return PolicyWiring(
        manager, "registry", start=manager.start, close=close, status=status, rollout=rollout,
        reload=manager.poll_once,
    )


class _Unavailable:
    """A policy source that never has a snapshot (the bundle file cannot be used); `reason` says why."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def current(self) -> PolicySnapshot | None:
        return None


def _file_wiring(settings: Settings, metrics: GateMetrics | None = None) -> PolicyWiring:
    """bundle.path as a watched BundleFile, loaded now (a local file). When it cannot be used yet the gate
    fails by `failure_mode` and says why (one log line) until a good file appears; when the key cannot be
    read, an unavailable source and why. Each reason starts with the setting to fix."""
    bundle = settings.bundle
    try:
        if bundle.path is None:
            raise ConfigError("bundle.path: not set (nor bundle.registry, nor bundle.remote_opa_url)")
        options = verify_options(settings)
    except (BundleError, ConfigError) as exc:
        reason = " ".join(str(exc).split())[:300]
        if not reason.startswith("bundle."):
            reason = f"bundle.verification_key: {reason}"
        log.error("ig-gate has no usable policy (failing %s): %s", settings.failure_mode, reason)
        return PolicyWiring(_Unavailable(reason), "file", problems=(reason,))
    source = BundleFile(
        bundle.path, options, min_version=bundle.min_version, interval_s=bundle.watch_interval_s,
        on_activate=_activation_hook(metrics),
    )
    if not source.reload():
        log.error("ig-gate has no usable policy yet (failing %s): %s", settings.failure_mode, source.reason)
    return PolicyWiring(source, "file", start=source.start, close=source.close, reload=source.reload)


def build_gate(
    settings: Settings,
    *,
    metrics: GateMetrics | None = None,
    policy: PolicySource | PolicyWiring | None = None,
    risk_store: RiskStore | None = None,
    ip_resolver: ClientIPResolver | None = None,
    rollout: RolloutController | None = None,
) -> Gate:
    """The Gate and every collaborator from settings (not started); `policy` (a source, or a wiring that
    brings its rollout), `risk_store` and `ip_resolver` replace the defaults (the bundle file, an in-memory
    store, the `geo.*` trusted proxies) when given. Bad settings (key sets, geo database, CIDRs) raise; a
    bundle file that cannot be used does not (see `_file_policy`). A registry channel or a remote PDP has
    a lifecycle of its own: build those with compose()."""
    metrics = metrics or GateMetrics(tenants=settings.metrics.tenants)
    identity, device, geo = settings.identity, settings.device, settings.geo
    if identity.jwks is None:
        raise ConfigError("identity.jwks: required (a JWKS file path or an https URL)")
    if policy is None:
        if settings.bundle.registry or settings.bundle.remote_opa_url:
            key = "bundle.registry" if settings.bundle.registry else "bundle.remote_opa_url"
            raise ConfigError(f"{key}: this policy source is started and stopped by compose(settings)")
        policy = _file_wiring(settings, metrics)
    elif not isinstance(policy, PolicyWiring):
        policy = PolicyWiring(policy, "given")
    key_sets = {"identity": _key_set(identity.jwks, settings, metrics)}
    if device.attestation_jwks:
        key_sets["device"] = _key_set(device.attestation_jwks, settings, metrics)
    risk_store = risk_store or InMemoryRiskStore(ttl_s=settings.risk_store.ttl_s)
    sessions = SessionVerifier(key_sets["identity"], identity, risk_store, posture_claim=device.posture_claim)
    devices = DevicePosture(key_sets.get("device"), device, risk_store=risk_store)
    log_settings = settings.decision_log
    decision_log = None
    if log_settings.path:
        decision_log = DecisionLog(
            log_settings.path,
            log_settings.queue_size,
            metrics.decision_log_dropped,
            metrics.decision_log_written,
            autostart=False,  # Gate.start() starts the writer
            writer=log_settings.writer,
        )
    return Gate(
        settings,
        policy.source,
        sessions,
        devices,
        ip_resolver or ClientIPResolver(geo.trusted_proxies, geo.trusted_hops, source=geo.forwarded_source),
        GeoReader(geo.database, geo.cache_size),
        TravelAnomalyDetector(window_s=geo.anomaly_window_s),
        metrics,
        decision_log,
        problems=policy.problems,
        risk_store=risk_store,
        key_sets=key_sets,
        rollout=rollout or policy.rollout,
    )


def _key_set(source: str, settings: Settings, metrics: GateMetrics) -> JWKSet:
    """A JWKS file (read now) or an https URL (fetched by a refresher once started)."""
    if "://" not in source:
        return JWKSet.from_file(source)
    identity = settings.identity
    return JWKSet.from_url(
        source,
        identity.jwks_refresh_s,
        identity.jwks_min_refresh_interval_s,
        cafile=identity.jwks_ca_file,
        on_refresh=metrics.jwks_refresh,
    )
