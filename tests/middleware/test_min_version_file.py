"""`bundle.min_version` holds for a bundle file too: an older signed bundle is refused and the gate fails
closed (the world's signed example bundle is version 1.0.0)."""

from __future__ import annotations

from ig_gate.middleware.compose import build_gate
from tests.middleware.conftest import World


def test_a_bundle_file_older_than_min_version_is_refused_and_the_gate_fails_closed(world: World) -> None:
    gate = build_gate(world.settings(bundle={"min_version": "1.1"}))
    try:
        (problem,) = gate.status()["problems"]
        assert "older than bundle.min_version 1.1" in problem
        assert gate.policy.current() is None
    finally:
        gate.close()


def test_a_bundle_file_at_min_version_is_served(world: World) -> None:
    gate = build_gate(world.settings(bundle={"min_version": "1.0.0"}))
    try:
        assert gate.status()["problems"] == [] and gate.policy.current().verified.version == "1.0.0"
    finally:
        gate.close()
