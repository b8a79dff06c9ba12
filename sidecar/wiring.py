"""What every sidecar endpoint shares. The gate itself comes from the composition root
(middleware/compose.py), as for ZeroTrustMiddleware; the sidecar only brings its client-IP resolver,
which also serves coprocessor payloads (no socket peer: trusted hops)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ig_gate.geo.client_ip import ClientIPResolver
from ig_gate.middleware.compose import GateSystem, PolicyWiring
from ig_gate.middleware.decision import BAD_REQUEST, Decision, DecisionIds
from ig_gate.middleware.gate import Gate
from ig_gate.middleware.responses import Responses
from ig_gate.middleware.settings import Settings


def client_ip_resolver(settings: Settings) -> ClientIPResolver:
    """The sidecar's resolver: `geo.*` trusted proxies; for coprocessor payloads (hops 0: no hops mode,
    client headers unread) `server.coprocessor_trusted_hops`."""
    return ClientIPResolver(
        settings.geo.trusted_proxies,
        trusted_hops=settings.server.coprocessor_trusted_hops or None,
        source=settings.geo.forwarded_source,
    )


@dataclass(slots=True)
class Sidecar:
    """What every sidecar endpoint shares: settings, the gate system (gate, policy wiring), responses."""

    settings: Settings
    system: GateSystem
    gate: Gate = field(init=False)
    policy: PolicyWiring = field(init=False)
    responses: Responses = field(init=False)
    ids: DecisionIds = field(init=False, default_factory=DecisionIds)  # for Data API queries

    def __post_init__(self) -> None:
        self.gate = self.system.gate
        self.policy = self.system.policy
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
