"""Build the sidecar's Gate from settings: which policy source (registry, remote PDP, bundle file) and the
client-IP resolver that also serves coprocessor payloads (no socket peer: trusted hops)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ig_gate.bundles.policy import PolicySource
from ig_gate.bundles.rollout import RolloutController
from ig_gate.geo.client_ip import ClientIPResolver
from ig_gate.middleware.decision import BAD_REQUEST, Decision, DecisionIds
from ig_gate.middleware.gate import Gate, verify_options
from ig_gate.middleware.metrics import GateMetrics
from ig_gate.middleware.responses import Responses
from ig_gate.middleware.risk import RiskStore
from ig_gate.middleware.risk_redis import risk_store_from_settings
from ig_gate.middleware.settings import ConfigError, Settings


@dataclass(slots=True)
class PolicyWiring:
    """The gate's policy source with its lifecycle and what ops endpoints say about it.

    `start`/`close` run in the app lifespan; `status()` is JSON for /v1/status; `ready()` is None when the
    source can answer, else why not (it may do I/O: call it off the event loop). Whether a snapshot is
    active at all is asked of the source itself.
    """

    source: PolicySource | None  # None: Gate.from_settings loads bundle.path itself
    kind: str  # file | registry | remote | given (create_app got a ready-made gate)
    start: Callable[[], None] = lambda: None
    close: Callable[[], None] = lambda: None
    status: Callable[[], dict[str, Any]] = dict
    ready: Callable[[], str | None] = lambda: None
    rollout: RolloutController | None = None  # staged rollout of new registry bundles (the gate drives it)


def policy_wiring(settings: Settings, metrics: GateMetrics | None = None) -> PolicyWiring:
    """The policy source the settings ask for: a remote PDP, a registry channel, or the bundle file.
    Bundle-manager events are counted in `metrics` when given."""
    bundle = settings.bundle
    if bundle.remote_opa_url:
        from ig_gate.sidecar.remote_pdp import RemotePolicySource

        remote = RemotePolicySource(bundle.remote_opa_url)
        return PolicyWiring(remote, "remote", close=remote.close, status=remote.status, ready=remote.ready)
    if bundle.registry:
        return _registry_wiring(settings, metrics)
    return PolicyWiring(None, "file")


def _registry_wiring(settings: Settings, metrics: GateMetrics | None) -> PolicyWiring:
    from ig_gate.bundles.manager import BundleManager
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
    )
    if not settings.rollout.enabled:
        status = lambda: manager.status().to_json()  # noqa: E731
        return PolicyWiring(manager, "registry", start=manager.start, close=manager.close, status=status)
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

    return PolicyWiring(manager, "registry", start=manager.start, close=close, status=status, rollout=rollout)


def build_gate(
    settings: Settings,
    policy: PolicyWiring,
    *,
    risk_store: RiskStore | None = None,
    metrics: GateMetrics | None = None,
) -> Gate:
    """The Gate for the sidecar; raises ConfigError (and the geo/JWKS config errors) on bad settings."""
    resolver = ClientIPResolver(  # coprocessor payloads: hops 0 -> no hops mode, client headers unread
        settings.geo.trusted_proxies,
        trusted_hops=settings.server.coprocessor_trusted_hops or None,
        source=settings.geo.forwarded_source,
    )
    store = risk_store or risk_store_from_settings(settings)  # Redis when risk_store.redis_url is set
    return Gate.from_settings(
        settings,
        metrics=metrics,
        policy=policy.source,
        risk_store=store,
        ip_resolver=resolver,
        rollout=policy.rollout,
    )


def close_gate(gate: Gate) -> None:
    """Close the gate (decision log, key-set refreshers) and its risk store's connections."""
    gate.close()
    close_store = getattr(gate.risk_store, "close", None)  # RedisRiskStore has a connection pool
    if callable(close_store):
        close_store()


def wire(settings: Settings) -> tuple[Gate, PolicyWiring]:
    """The sidecar's gate and its policy source, sharing one metrics registry."""
    metrics = GateMetrics(tenants=settings.metrics.tenants)
    policy = policy_wiring(settings, metrics)
    return build_gate(settings, policy, metrics=metrics), policy


@dataclass(slots=True)
class Sidecar:
    """What every sidecar endpoint shares: settings, the gate, its policy wiring, response builders."""

    settings: Settings
    gate: Gate
    policy: PolicyWiring
    responses: Responses = field(init=False)
    ids: DecisionIds = field(init=False, default_factory=DecisionIds)  # for Data API queries

    def __post_init__(self) -> None:
        self.responses = Responses(self.settings.identity.stepup)

    def malformed(self, detail: str, *, graphql: bool = False) -> Decision:
        """A 400 refusal of a request the sidecar cannot even describe to the gate (`detail` is returned)."""
        reasons = ("malformed_request",)
        return Decision(BAD_REQUEST, reasons, self.ids.next(), None, False, graphql, detail=detail)


class SidecarEndpoint:
    """Base of the pure-ASGI sidecar endpoints: the sidecar, its gate and responses, the body limit."""

    def __init__(self, sidecar: Sidecar) -> None:
        self.sidecar = sidecar
        self.gate = sidecar.gate
        self.responses = sidecar.responses
        self.max_body_bytes = sidecar.settings.server.max_body_bytes
