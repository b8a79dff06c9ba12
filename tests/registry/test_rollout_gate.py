"""Staged rollout end to end: a real registry, the BundleManager, the RolloutController and the real Gate.

v1 becomes active; v2 denies everything and is reverted in shadow (v1 still decides, the digest is
rejected, persisted, and not fetched again, not even after a restart); a healthy v3 goes through
shadow and both canary stages, is promoted and becomes the persisted last-good.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from ig_gate.bundles.archive import build_bundle
from ig_gate.bundles.detached import sign_blob
from ig_gate.bundles.manager import BundleManager
from ig_gate.bundles.registry import RegistryClient
from ig_gate.bundles.rollout import IDLE, SHADOW, RolloutController
from ig_gate.bundles.signing import sign_bundle
from ig_gate.bundles.verify import VerifyOptions
from ig_gate.middleware.compose import build_gate
from ig_gate.middleware.gate import Gate, GateRequest
from ig_gate.middleware.settings import Settings, settings_from_dict
from tests.registry.kit import CountingClient
from tests.support import tokens
from tests.support.keys import KeyPair, make_keypair, write_jwks

pytestmark = pytest.mark.integration

REPO = "policies/rollout"
TENANTS = [f"tenant-{i}" for i in range(24)]
LATE_TENANTS = [f"late-{i}" for i in range(24)]  # traffic that only shows up once a canary is under way
MIN_SAMPLES = 20
_sources = itertools.count()


def publish_policy(
    client: RegistryClient, root: Path, signer: KeyPair, version: str, decision: str, repo: str = REPO
) -> str:
    """Build, sign (OPA + detached) and push a bundle whose decision is `decision`; return its OCI digest."""
    src = root / f"src-{next(_sources)}"
    src.mkdir()
    (src / "rt.rego").write_text(f"package rt\n\ndecision := {decision}\n")
    bundle = sign_bundle(build_bundle(src, version=version), signer.private_pem, key_id=signer.kid)
    return client.push(repo, "prod", bundle.archive, sign_blob(bundle.archive, signer.private_pem))


@dataclass
class World:
    root: Path
    signer: KeyPair
    client: CountingClient
    settings: Settings
    bearer: dict[str, str]  # tenant -> session token
    manager_and_gate: Callable[[], tuple[BundleManager, RolloutController, Gate]]

    def publish(self, version: str, decision: str) -> str:
        return publish_policy(self.client, self.root, self.signer, version, decision)


@pytest.fixture
def world(tmp_path: Path, registry, signer, trusted_key, clock):
    """Settings, tokens per tenant, and a gate wired to a manager + rollout controller (like the sidecar)."""
    idp = make_keypair("ES256", kid="idp")
    settings = settings_from_dict({
        "bundle": {"path": None, "query": "data.rt.decision"},
        "identity": {"jwks": str(write_jwks(tmp_path / "idp.jwks", idp))},
        "rollout": {"stages": [0.5, 1.0], "min_samples": MIN_SAMPLES},
        "metrics": {"tenants": TENANTS},
    })
    client = CountingClient(registry.host, plain_http=True, env={}, timeout_s=5.0)
    made: list[tuple[RolloutController, Gate]] = []

    def manager_and_gate() -> tuple[BundleManager, RolloutController, Gate]:
        manager = BundleManager(client, REPO, "prod", VerifyOptions(key=trusted_key), tmp_path / "state",
                                clock=clock)
        controller = RolloutController(manager, settings.rollout)
        manager.on_candidate = controller.offer
        gate = build_gate(settings, policy=manager, rollout=controller)
        made.append((controller, gate))
        return manager, controller, gate

    bearer = {t: tokens.session_token(idp, tenant=t, sub=f"user-{t}") for t in TENANTS + LATE_TENANTS}
    yield World(tmp_path, signer, client, settings, bearer, manager_and_gate)
    for controller, gate in made:
        controller.close()
        gate.close()


def request(world: World, tenant: str) -> GateRequest:
    headers = {"authorization": f"Bearer {world.bearer[tenant]}", "content-type": "application/json"}
    return GateRequest("POST", "/graphql", b"", headers, "203.0.113.5", b'{"query": "{ me { id } }"}')


def decide_until(
    gate: Gate, world: World, controller: RolloutController, stage: int, tenants: list[str] = TENANTS
) -> list:
    """Send requests round-robin over tenants until `stage` is judged; (tenant, reasons) of each."""
    assert controller.stage_index == stage
    before = controller.status().last_check
    seen = []
    for tenant in itertools.islice(itertools.cycle(tenants), 2000):
        decision = gate.decide(request(world, tenant))
        assert decision.outcome in ("allow", "deny"), decision
        seen.append((tenant, decision.reasons))
        if controller.status().last_check is not before:
            return seen
    pytest.fail(f"rollout stage {stage} not judged after 2000 requests: {controller.status()}")


def metric(gate: Gate, name: str, **labels: str) -> float:
    return gate.metrics.registry.get_sample_value(name, labels) or 0.0


def test_deny_heavy_candidate_is_reverted_and_never_retried_then_a_healthy_one_is_promoted(world):
    manager, controller, gate = world.manager_and_gate()
    world.publish("1.0.0", '{"allow": true, "reasons": ["v1"]}')
    assert manager.poll_once() == "candidate"  # handed to the controller: no active bundle, promoted at once
    assert manager.current().verified.version == "1.0.0" and controller.stage_index == IDLE
    # a first activation is not a promotion (issue 12 B5): nothing was rolled out
    assert controller.status().promotions == 0
    assert metric(gate, "ig_gate_bundle_events_total", kind="rollout_promoted") == 0
    assert gate.decide(request(world, TENANTS[0])).reasons == ("v1",)

    # v2 denies everything: reverted in shadow, never enforced
    v2 = world.publish("1.1.0", '{"deny": true, "reasons": ["v2"]}')
    assert manager.poll_once() == "candidate" and controller.stage_index == SHADOW
    seen = decide_until(gate, world, controller, SHADOW)
    assert len(seen) == MIN_SAMPLES and {reasons for _, reasons in seen} == {("v1",)}
    controller.wait_settled()
    status = manager.status()
    assert status.rejected == (v2,) and status.candidate is None and status.active.version == "1.0.0"
    assert gate.decide(request(world, TENANTS[1])).reasons == ("v1",)
    check = controller.status().last_check
    assert not check.passed and check.stage == SHADOW and "deny rate 1.000 vs 0.000" in check.breaches[0]
    assert metric(gate, "ig_gate_rollout_reverts_total") == 1
    assert metric(gate, "ig_gate_bundle_events_total", kind="rollout_reverted") == 1
    assert metric(gate, "ig_gate_decisions_by_role_total", role="candidate", outcome="deny") == MIN_SAMPLES
    assert metric(gate, "ig_gate_decisions_by_role_total", role="active", outcome="allow") == MIN_SAMPLES
    assert metric(gate, "ig_gate_rollout_stage") == IDLE
    state = world.root / "state"
    assert json.loads((state / "rejected.json").read_text())["digests"] == [v2]

    fetches = world.client.fetches
    assert manager.poll_once() == "refused"  # the rejected digest is still on the channel: not downloaded
    restarted, restarted_controller, _ = world.manager_and_gate()
    assert restarted.load_last_good() and restarted.current().verified.version == "1.0.0"
    assert restarted.poll_once() == "refused" and restarted_controller.stage_index == IDLE
    assert world.client.fetches == fetches

    # v3 is healthy: shadow -> 50 % canary (sticky by tenant) -> 100 % -> promoted, persisted as last-good
    world.publish("1.2.0", '{"allow": true, "reasons": ["v3"]}')
    assert manager.poll_once() == "candidate"
    assert {reasons for _, reasons in decide_until(gate, world, controller, SHADOW)} == {("v1",)}
    canary = decide_until(gate, world, controller, 1)
    by_tenant: dict[str, set] = {}
    for tenant, reasons in canary:
        by_tenant.setdefault(tenant, set()).add(reasons)
    assert all(len(reasons) == 1 for reasons in by_tenant.values())  # sticky: one bundle per tenant
    deciders = {next(iter(reasons)) for reasons in by_tenant.values()}
    assert deciders == {("v1",), ("v3",)}  # both bundles decide at 50 %
    full = decide_until(gate, world, controller, 2)
    assert {reasons for _, reasons in full} == {("v3",)}
    controller.wait_settled()
    assert manager.current().verified.version == "1.2.0" and controller.status().promotions == 1  # v3 only
    assert gate.decide(request(world, TENANTS[2])).reasons == ("v3",)
    record = json.loads((state / "last-good.json").read_text())
    assert record["version"] == "1.2.0" and record["digest"] == manager.current().digest
    assert metric(gate, "ig_gate_bundle_events_total", kind="rollout_promoted") == 1
    assert metric(gate, "ig_gate_rollout_stage") == IDLE
    assert gate.status()["rollout"]["last_check"]["passed"] is True


def test_a_candidate_that_cannot_be_persisted_is_withdrawn_and_offered_again(world, trusted_key, clock):
    repo = "policies/rollout-unwritable"
    publish_policy(world.client, world.root, world.signer, "1.0.0", '{"allow": true}', repo)
    not_a_dir = world.root / "state-file"
    not_a_dir.write_text("")
    options = VerifyOptions(key=trusted_key)
    manager = BundleManager(world.client, repo, "prod", options, not_a_dir, clock=clock)
    controller = RolloutController(manager, world.settings.rollout)
    manager.on_candidate = controller.offer
    try:
        fetches = world.client.fetches
        assert manager.poll_once() == "candidate"  # no active bundle: promoted at once, which fails
        status = manager.status()
        assert manager.current() is None and status.candidate is None and status.last_error.kind == "persist"
        assert status.rejected == ()  # withdrawn, not rejected: the next poll fetches and offers it again
        assert manager.poll_once() == "candidate" and world.client.fetches == fetches + 2
    finally:
        controller.close()


def test_a_candidate_that_denies_only_traffic_arriving_during_the_canary_is_reverted_in_the_canary(world):
    manager, controller, gate = world.manager_and_gate()
    world.publish("1.0.0", '{"allow": true, "reasons": ["v1"]}')
    manager.poll_once()
    late_deny = (  # the decision, then the rule it reads
        '{"allow": true, "deny": late, "reasons": ["v2"]}\n\n'
        'default late := false\n\nlate if startswith(input.tenant, "late-")'
    )
    v2 = world.publish("1.1.0", late_deny)
    assert manager.poll_once() == "candidate"
    decide_until(gate, world, controller, SHADOW)  # early tenants only: v2 agrees with v1
    assert controller.stage_index == 1 and controller.status().last_check.passed

    decide_until(gate, world, controller, 1, LATE_TENANTS)  # the canary's share of late tenants: denied
    controller.wait_settled()
    check = controller.status().last_check
    assert not check.passed and check.stage == 1 and "deny rate 1.000 vs 0.000" in check.breaches[0]
    status = manager.status()
    assert status.rejected == (v2,) and status.active.version == "1.0.0" and controller.stage_index == IDLE
    assert {gate.decide(request(world, t)).reasons for t in LATE_TENANTS} == {("v1",)}
    assert metric(gate, "ig_gate_rollout_reverts_total") == 1
    assert metric(gate, "ig_gate_decisions_by_role_total", role="candidate", outcome="deny") == MIN_SAMPLES
    assert manager.poll_once() == "refused"  # not retried
