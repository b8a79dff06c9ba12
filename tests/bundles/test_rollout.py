"""RolloutController: shadow -> canary stages -> promote, automatic revert on a breach, sticky canary keys.

The controller is pure logic: these tests feed it plain observations and watch what it asks of its
target (the BundleManager's promote / reject / withdraw) on real compiled snapshots.
"""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import pytest

from ig_gate.bundles.archive import build_bundle
from ig_gate.bundles.errors import BundleError
from ig_gate.bundles.manager import Candidate
from ig_gate.bundles.policy import PolicySnapshot
from ig_gate.bundles.rollout import (
    IDLE,
    LATENCY_MIN_SAMPLES,
    SHADOW,
    RoleStats,
    RolloutController,
    breaches,
)
from ig_gate.bundles.verify import VerifyOptions, verify_bundle
from ig_gate.middleware.settings import RolloutSettings

LIMITS = RolloutSettings(stages=(0.5, 1.0), min_samples=10)
TENANTS = [f"tenant-{i}" for i in range(400)]
_labels = itertools.count()


def snapshot(root: Path, label: str) -> PolicySnapshot:
    src = root / f"src-{label}-{next(_labels)}"
    src.mkdir(parents=True)
    (src / "p.rego").write_text(f'package t\n\ndecision := {{"allow": true, "reasons": ["{label}"]}}\n')
    bundle = build_bundle(src, version="1.0.0")
    return PolicySnapshot.from_verified(verify_bundle(bundle.archive, VerifyOptions(key=None)))


class Target:
    """Stands in for the BundleManager: records what the controller asks of it."""

    def __init__(self, active: PolicySnapshot | None, fail_promote: bool = False) -> None:
        self.active = active
        self.fail_promote = fail_promote
        self.promoted: list[Candidate] = []
        self.rejected: list[tuple[Candidate, str]] = []
        self.withdrawn: list[Candidate] = []

    def current(self) -> PolicySnapshot | None:
        return self.active

    def promote(self, candidate: Candidate) -> None:
        if self.fail_promote:
            raise BundleError("state: cannot persist last-good (No space left on device)")
        self.promoted.append(candidate)
        self.active = candidate.snapshot

    def reject(self, candidate: Candidate, reason: str) -> None:
        self.rejected.append((candidate, reason))

    def withdraw(self, candidate: Candidate) -> None:
        self.withdrawn.append(candidate)


@dataclasses.dataclass
class Rig:
    controller: RolloutController
    target: Target
    candidate: Candidate
    events: list[str]
    stages: list[int]

    def feed(self, n: int, active: str = "allow", candidate: str = "allow", seconds: float | None = None,
             tenants: list[str] = TENANTS) -> int:
        """Send n compared requests (from tenants that get a ticket); return how many were fed."""
        fed = 0
        for tenant in itertools.cycle(tenants):
            if fed == n:
                break
            ticket = self.controller.assign(tenant, None)
            if ticket is None:
                continue
            self.controller.observe(ticket, active, seconds, candidate, seconds)
            fed += 1
        return fed


@pytest.fixture
def rig(tmp_path: Path):
    def make(limits: RolloutSettings = LIMITS, **target_args) -> Rig:
        target = Target(snapshot(tmp_path, "v1"), **target_args)
        events: list[str] = []
        stages: list[int] = []
        controller = RolloutController(
            target, limits, on_event=lambda kind, detail: events.append(kind), on_stage=stages.append
        )
        candidate = Candidate(snapshot(tmp_path, "v2"), "reg/policies@sha256:c2", "sha256:c2", None)
        controller.offer(candidate)
        made.append(controller)
        return Rig(controller, target, candidate, events, stages)

    made: list[RolloutController] = []
    yield make
    for controller in made:
        controller.close()


def test_healthy_candidate_advances_through_every_stage_and_is_promoted(rig):
    r = rig()
    assert r.controller.stage_index == SHADOW and r.controller.status().state == "shadow"
    r.feed(10)
    assert r.controller.stage_index == 1 and r.controller.status().fraction == 0.5
    r.feed(10)
    assert r.controller.stage_index == 2
    assert all(r.controller.assign(t, None).enforce for t in TENANTS)  # 100 %: every tenant
    r.feed(10)
    r.controller.wait_settled()
    assert r.target.promoted == [r.candidate] and r.target.rejected == []
    status = r.controller.status()
    assert (status.state, status.stage, status.promotions, status.reverts) == ("idle", IDLE, 1, 0)
    assert status.last_check.passed and status.last_check.stage == 2
    assert r.controller.assign("tenant-1", None) is None
    assert r.stages == [SHADOW, 1, 2, IDLE]
    assert r.events == ["rollout_started", "rollout_advanced", "rollout_advanced", "rollout_promoted"]


def test_deny_heavy_candidate_is_reverted_in_shadow_only_after_min_samples(rig):
    r = rig()
    r.feed(9, active="allow", candidate="deny")
    assert r.controller.stage_index == SHADOW and r.target.rejected == []  # 9 < min_samples: no verdict yet
    assert r.controller.status().candidate_stats.deny_rate == 1.0
    r.feed(1, active="allow", candidate="deny")
    r.controller.wait_settled()
    assert r.controller.stage_index == IDLE and r.controller.assign("tenant-1", None) is None
    [(candidate, reason)] = r.target.rejected
    assert candidate is r.candidate and "shadow" in reason and "deny rate 1.000 vs 0.000" in reason
    assert r.target.promoted == []
    status = r.controller.status()
    assert status.reverts == 1 and not status.last_check.passed and status.last_check.stage == SHADOW
    assert r.events == ["rollout_started", "rollout_reverted"] and r.stages == [SHADOW, IDLE]


def test_candidate_fine_in_shadow_but_erroring_in_canary_is_reverted_in_canary(rig):
    r = rig()
    r.feed(10)
    assert r.controller.stage_index == 1
    r.feed(10, candidate="error")
    r.controller.wait_settled()
    [(_, reason)] = r.target.rejected
    assert reason.startswith("rollout reverted at canary stage 1") and "engine error rate 1.000" in reason
    assert r.controller.status().last_check.stage == 1 and r.stages == [SHADOW, 1, IDLE]


def test_candidate_fine_in_shadow_but_deny_heavy_in_canary_is_reverted_in_canary(rig):
    r = rig()
    r.feed(10)
    r.feed(10, candidate="deny")
    r.controller.wait_settled()
    [(candidate, reason)] = r.target.rejected
    assert candidate is r.candidate and r.target.promoted == []
    assert reason.startswith("rollout reverted at canary stage 1") and "deny rate 1.000 vs 0.000" in reason
    assert r.controller.assign("tenant-1", None) is None and r.events[-1] == "rollout_reverted"


def test_a_candidate_that_allows_what_the_active_denies_is_reverted_too(rig):
    r = rig()
    r.feed(10, active="deny", candidate="allow")
    r.controller.wait_settled()
    assert len(r.target.rejected) == 1 and "deny rate 0.000 vs 1.000" in r.target.rejected[0][1]


def test_small_differences_within_the_limits_pass(rig):
    r = rig(dataclasses.replace(LIMITS, min_samples=100))
    r.feed(96)
    r.feed(4, candidate="stepup")  # step-up rate +0.04 <= 0.05
    assert r.controller.stage_index == 1 and r.controller.status().last_check.passed


def test_the_same_tenant_always_gets_the_same_role_and_stays_in_the_canary_as_it_grows(tmp_path, rig):
    r = rig(RolloutSettings(stages=(0.25, 0.5, 1.0), min_samples=10))
    assert all(r.controller.assign(t, None).enforce is False for t in TENANTS)  # shadow: all watched
    r.feed(10)
    first = {t for t in TENANTS if r.controller.assign(t, None) is not None}
    assert first == {t for t in TENANTS if r.controller.assign(t, None) is not None}  # sticky
    assert all(r.controller.assign(t, "some-session").enforce for t in first)
    assert 0.15 < len(first) / len(TENANTS) < 0.35
    r.feed(10)
    second = {t for t in TENANTS if r.controller.assign(t, None) is not None}
    assert first < second and 0.4 < len(second) / len(TENANTS) < 0.6


def test_sticky_by_session_splits_one_tenant_by_session(rig):
    r = rig(dataclasses.replace(LIMITS, sticky_by="session"))
    r.feed(10)
    sessions = [f"sid-{i}" for i in range(200)]
    roles = [r.controller.assign("acme", s) is not None for s in sessions]
    assert 0 < sum(roles) < len(sessions)
    assert roles == [r.controller.assign("acme", s) is not None for s in sessions]


def test_observations_from_an_earlier_stage_are_dropped(rig):
    r = rig()
    stale = r.controller.assign("tenant-1", None)
    r.feed(10)
    for _ in range(20):
        r.controller.observe(stale, "allow", None, "deny", None)
    assert r.controller.status().candidate_stats.samples == 0 and r.target.rejected == []


def test_a_new_candidate_supersedes_the_one_rolling_out_without_rejecting_it(rig, tmp_path):
    r = rig()
    r.feed(10)
    newer = Candidate(snapshot(tmp_path, "v3"), "reg/policies@sha256:c3", "sha256:c3", None)
    r.controller.offer(newer)
    status = r.controller.status()
    assert (status.stage, status.candidate) == (SHADOW, newer.source)
    assert r.controller.assign("tenant-1", None).snapshot is newer.snapshot
    assert r.target.rejected == [] and "rollout_superseded" in r.events


def test_with_no_active_bundle_the_candidate_is_activated_at_once_and_not_counted_as_a_promotion(tmp_path):
    target = Target(None)
    events: list[str] = []
    controller = RolloutController(target, LIMITS, on_event=lambda kind, detail: events.append(kind))
    candidate = Candidate(snapshot(tmp_path, "v1"), "reg/p@sha256:c1", "sha256:c1", None)
    controller.offer(candidate)
    assert target.promoted == [candidate] and controller.stage_index == IDLE
    assert controller.status().promotions == 0 and events == []  # a first activation, nothing rolled out
    controller.close()


def test_a_failed_promotion_withdraws_the_candidate_and_keeps_the_active(rig):
    r = rig(fail_promote=True)
    r.feed(30)
    r.controller.wait_settled()
    assert r.target.withdrawn == [r.candidate] and r.target.promoted == [] and r.target.rejected == []
    assert r.controller.stage_index == IDLE and "rollout_promote_failed" in r.events


def stats(samples: int = 100, deny: float = 0.0, evaluations: int = 0, p50: float | None = None) -> RoleStats:
    return RoleStats(samples, deny, 0.0, 0.0, evaluations, p50)


def test_latency_is_judged_on_median_engine_time_with_enough_evaluations():
    enough = LATENCY_MIN_SAMPLES
    slow = breaches(stats(evaluations=enough, p50=10e-6), stats(evaluations=enough, p50=40e-6), LIMITS)
    assert len(slow) == 1 and "median engine latency x4.0" in slow[0]
    assert breaches(stats(evaluations=enough, p50=10e-6), stats(evaluations=enough, p50=25e-6), LIMITS) == ()
    few = stats(evaluations=enough - 1, p50=40e-6)
    assert breaches(stats(evaluations=enough, p50=10e-6), few, LIMITS) == ()  # too few timings: not judged


def test_memoized_requests_do_not_count_as_latency_samples(rig):
    r = rig()
    r.feed(10, seconds=None)
    check = r.controller.status().last_check
    assert check.passed and check.candidate.evaluations == 0 and check.candidate.latency_p50_s is None


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"stages": (0.5, 0.25, 1.0)}, "increasing"),
        ({"stages": (0.5,)}, "ending with 1.0"),
        ({"sticky_by": "ip"}, "sticky_by"),
        ({"min_samples": 0}, "min_samples"),
    ],
)
def test_bad_limits_are_refused_with_the_setting_named(changes, message):
    limits = dataclasses.replace(LIMITS, **changes)
    with pytest.raises(ValueError, match=message):
        RolloutController(Target(None), limits)


def test_a_revert_after_close_still_drops_the_candidate_without_raising_on_the_request(rig):
    r = rig()
    r.controller.close()
    r.feed(10, candidate="deny")
    assert r.controller.stage_index == IDLE and r.target.rejected == []  # not run: the process is stopping
