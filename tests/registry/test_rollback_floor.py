"""The rollback floor when the state directory starts empty: `bundle.min_version` seeds it from config, and
/v1/status and `ig_gate_rollback_floor_unset` warn while nothing protects against an older signed bundle.

Through the sidecar's own wiring on a real registry (tests/registry/conftest.py), each sidecar with a
fresh state directory, as a pod with an `emptyDir` gets on every start."""

from __future__ import annotations

import pytest

from ig_gate.bundles.rollback import RollbackError, check_min_version, effective_floor
from ig_gate.middleware.settings import ConfigError, settings_from_dict
from ig_gate.sidecar.ops import status_document
from tests.registry.kit import build, publish
from tests.registry.test_sidecar_registry import Sidecar, start_sidecar  # noqa: F401 (a fixture)
from tests.support.procs import wait_until

UNSET = "rollback floor unset"


def floor_unset_gauge(sidecar: Sidecar) -> float | None:
    registry = sidecar.http.app.state.sidecar.gate.metrics.registry
    return registry.get_sample_value("ig_gate_rollback_floor_unset")


def bundle_status(sidecar: Sidecar) -> dict:
    """The `bundle` part of /v1/status (built by the function that serves it, whichever listener does)."""
    return status_document(sidecar.http.app.state.sidecar)["bundle"]


def floor_alerts(sidecar: Sidecar) -> list[str]:
    return [alert for alert in bundle_status(sidecar)["alerts"] if UNSET in alert]


def test_check_min_version_refuses_older_unversioned_and_unorderable_bundles_whatever_the_pin():
    check_min_version("2.0.0", "2.0", "here")
    check_min_version("0.1", None, "here")
    with pytest.raises(RollbackError, match=r"^here: bundle version 1\.9 is older than bundle\.min_version"):
        check_min_version("1.9", "2.0", "here")
    with pytest.raises(RollbackError, match=r"no version but bundle\.min_version is 2\.0"):
        check_min_version(None, "2.0", "here")
    with pytest.raises(RollbackError, match="cannot be ordered"):
        check_min_version("banana", "2.0", "here")


@pytest.mark.parametrize(
    ("persisted", "minimum", "floor"),
    [(None, None, None), ("1.0", None, "1.0"), (None, "2.0", "2.0"), ("3.0", "2.0", "3.0"),
     ("1.0", "2.0", "2.0"), ("garbage", None, None), ("garbage", "2.0", "2.0")],
)
def test_the_effective_floor_is_the_higher_of_the_persisted_one_and_min_version(persisted, minimum, floor):
    assert effective_floor(persisted, minimum) == floor


@pytest.mark.parametrize("value", ["not a version", "1.0-banana!"])
def test_a_min_version_that_is_not_pep_440_is_a_config_error_naming_the_key(value):
    with pytest.raises(ConfigError, match=r"^bundle\.min_version: not a PEP 440 version"):
        settings_from_dict({"bundle": {"min_version": value}})


def test_an_empty_state_dir_without_min_version_warns_until_a_versioned_bundle_is_active(
    start_sidecar, client, repo, signer, tmp_path  # noqa: F811
):
    sidecar = start_sidecar(repo, state_dir=str(tmp_path / "empty-state"), poll_interval_s=0.2)
    wait_until(lambda: bundle_status(sidecar)["last_poll_at"] is not None, 10, "a first poll")
    assert bundle_status(sidecar)["rollback_floor"] is None and floor_alerts(sidecar)
    assert floor_unset_gauge(sidecar) == 1

    publish(client, repo, "prod", build(tmp_path, "old", "1.0.0", signer, allow=True))
    wait_until(lambda: sidecar.manager.current() is not None, 10, "the bundle to be active")

    assert bundle_status(sidecar)["rollback_floor"] == "1.0.0" and not floor_alerts(sidecar)
    assert floor_unset_gauge(sidecar) == 0


def test_an_unversioned_bundle_leaves_the_floor_unset_and_the_warning_on(
    start_sidecar, client, repo, signer, tmp_path  # noqa: F811
):
    publish(client, repo, "prod", build(tmp_path, "none", None, signer, allow=True))
    sidecar = start_sidecar(repo, state_dir=str(tmp_path / "empty-state"))
    wait_until(lambda: sidecar.manager.current() is not None, 10, "the bundle to be active")
    assert bundle_status(sidecar)["rollback_floor"] is None and floor_alerts(sidecar)
    assert floor_unset_gauge(sidecar) == 1


def test_with_an_empty_state_dir_min_version_refuses_an_older_signed_bundle_even_when_pinned(
    start_sidecar, client, repo, signer, tmp_path  # noqa: F811
):
    publish(client, repo, "prod", build(tmp_path, "replayed", "1.0.0", signer, allow=True))
    sidecar = start_sidecar(
        repo, state_dir=str(tmp_path / "empty-state"), min_version="2.0.0", require_version="==1.0.0"
    )
    wait_until(lambda: bundle_status(sidecar)["failures"]["rollback"] >= 1, 10, "the replayed bundle refused")

    status = bundle_status(sidecar)
    assert status["active"] is None and status["last_error"]["kind"] == "rollback"
    assert "older than bundle.min_version 2.0.0" in status["last_error"]["message"]
    assert status["rollback_floor"] == "2.0.0" and not floor_alerts(sidecar)
    assert floor_unset_gauge(sidecar) == 0
    assert sidecar.authz() == 503  # nothing verified and new enough: fail closed


def test_min_version_lets_a_newer_bundle_in_and_the_persisted_floor_then_rises_above_it(
    start_sidecar, client, repo, signer, tmp_path  # noqa: F811
):
    publish(client, repo, "prod", build(tmp_path, "new", "2.1.0", signer, allow=True))
    sidecar = start_sidecar(repo, state_dir=str(tmp_path / "empty-state"), min_version="2.0.0")
    wait_until(lambda: sidecar.manager.current() is not None, 10, "the bundle to be active")

    assert sidecar.authz() == 200
    assert bundle_status(sidecar)["rollback_floor"] == "2.1.0"
