"""Restarts and damage: last-good served with the registry down, re-verified, moved aside when bad.

This module stops and restarts its own registry, so it does not share one with other modules.
"""

from __future__ import annotations

import json
import random

import pytest

from ig_gate.bundles.archive import read_bundle
from ig_gate.bundles.laststate import LastGoodStore
from ig_gate.bundles.manager import BundleManager
from ig_gate.bundles.signing import VerificationKey
from ig_gate.bundles.verify import VerifyOptions
from tests.registry.kit import QUERY, build, publish

pytestmark = pytest.mark.integration

REPO = "policies/restart"


@pytest.fixture
def state_dir(tmp_path):
    return tmp_path / "state"


@pytest.fixture
def manager_for(client, trusted_key, state_dir, clock):
    def make(key: VerificationKey = trusted_key) -> BundleManager:
        return BundleManager(
            client,
            REPO,
            "prod",
            VerifyOptions(key=key),
            state_dir,
            poll_interval_s=5.0,
            clock=clock,
            rng=random.Random(3),
        )

    return make


def label(manager: BundleManager) -> str:
    return manager.current().evaluate(QUERY, {"user": "bob"})["rego"]


def test_restart_with_registry_down_serves_last_good_then_picks_up_a_newer_bundle(
    registry, client, manager_for, signer, tmp_path
):
    publish(client, REPO, "prod", build(tmp_path, "v1", "1.0.0", signer))
    first = manager_for()
    assert first.poll_once() == "activated"

    registry.stop()
    try:
        restarted = manager_for()
        assert restarted.load_last_good() is True  # before any fetch
        assert label(restarted) == "v1"
        assert restarted.poll_once() == "failed"
        assert label(restarted) == "v1"
        status = restarted.status()
        assert status.last_error.kind == "fetch" and "unreachable" in status.last_error.message
        assert status.active.version == "1.0.0" and status.active.source.endswith(
            first.status().active.oci_digest
        )
    finally:
        registry.start()

    publish(client, REPO, "prod", build(tmp_path, "v2", "1.1.0", signer))
    assert restarted.poll_once() == "activated"
    assert label(restarted) == "v2"
    assert restarted.status().last_error is None


def test_corrupted_last_good_archive_is_detected_moved_aside_and_not_used(
    client, manager_for, signer, state_dir, tmp_path
):
    publish(client, REPO, "prod", build(tmp_path, "v1", "3.0.0", signer))
    manager_for().poll_once()
    archive = next((state_dir / "last-good").glob("*.tar.gz"))
    archive.write_bytes(archive.read_bytes()[:-10] + b"0123456789")

    restarted = manager_for()
    assert restarted.load_last_good() is False
    assert restarted.current() is None
    status = restarted.status()
    assert status.last_error.kind == "last_good" and "hashes to" in status.last_error.message
    assert not (state_dir / "last-good.json").exists()
    assert list(state_dir.glob("last-good.json.rejected-*"))
    assert list((state_dir / "last-good").glob("*.tar.gz.rejected-*"))


def test_last_good_rewritten_consistently_but_unsigned_fails_reverification(
    client, manager_for, signer, state_dir, tmp_path
):
    publish(client, REPO, "prod", build(tmp_path, "v1", "4.0.0", signer))
    manager_for().poll_once()
    store = LastGoodStore(state_dir)
    stored = store.load()
    forged = build(tmp_path, "forged", "4.0.0", None)
    record = json.loads(store.record_path.read_text())
    record.update(digest=read_bundle(forged.archive).digest, has_signature=False)
    store.save(forged.archive, None, type(stored.record)(**record))

    restarted = manager_for()
    assert restarted.load_last_good() is False
    assert restarted.current() is None
    assert "signatures" in restarted.status().last_error.message
    assert store.load() is None


def test_last_good_signed_by_a_key_no_longer_trusted_is_not_used(
    client, manager_for, signer, stranger, tmp_path
):
    publish(client, REPO, "prod", build(tmp_path, "v1", "5.0.0", signer))
    manager_for().poll_once()
    rotated = manager_for(VerificationKey(stranger.public_pem, "ES256"))
    assert rotated.load_last_good() is False and rotated.current() is None
    assert rotated.status().failures["last_good"] == 1
