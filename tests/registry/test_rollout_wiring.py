"""The sidecar wiring puts a RolloutController between the registry's BundleManager and the Gate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ig_gate.bundles.rollout import IDLE, RolloutController
from ig_gate.middleware.compose import compose, policy_wiring
from ig_gate.middleware.settings import ConfigError, Settings, settings_from_dict
from tests.support.keys import make_keypair, write_jwks


def registry_settings(tmp_path: Path, **rollout: Any) -> Settings:
    _, bundle_pub = make_keypair("ES256", kid="bundles").write(tmp_path, "bundle")
    return settings_from_dict({
        "bundle": {"registry": "127.0.0.1:9", "repository": "ig/policy", "plain_http": True,
                   "state_dir": str(tmp_path / "state"), "verification_key": str(bundle_pub)},
        "identity": {"jwks": str(write_jwks(tmp_path / "idp.jwks", make_keypair("ES256", kid="idp")))},
        "rollout": rollout,
    })


def test_registry_wiring_hands_new_bundles_to_the_rollout_that_the_gate_drives(tmp_path):
    system = compose(registry_settings(tmp_path, min_samples=50))
    gate, policy = system.gate, system.policy
    try:
        assert isinstance(policy.rollout, RolloutController) and gate.rollout is policy.rollout
        assert policy.source.on_candidate == policy.rollout.offer
        assert policy.rollout.limits.min_samples == 50
        assert policy.status()["rollout"]["state"] == "idle" and gate.status()["rollout"]["stage"] == IDLE
        assert gate.metrics.registry.get_sample_value("ig_gate_rollout_stage") == IDLE
    finally:
        system.close()


def test_rollout_disabled_activates_new_bundles_directly(tmp_path):
    policy = policy_wiring(registry_settings(tmp_path, enabled=False))
    assert policy.rollout is None and policy.source.on_candidate is None
    assert "rollout" not in policy.status()


def test_bad_rollout_settings_are_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"rollout\.sticky_by"):
        policy_wiring(registry_settings(tmp_path, sticky_by="ip"))
