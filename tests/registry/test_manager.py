"""BundleManager against a real registry: activate, persist, refuse (keeping the last-good), report."""

from __future__ import annotations

import json
import random
import threading
import time

import pytest

from ig_gate.bundles.manager import BundleManager
from ig_gate.bundles.pin import Pin
from ig_gate.bundles.registry import RegistryClient, sha256_digest
from ig_gate.bundles.verify import VerifyOptions
from tests.registry.kit import QUERY, CountingClient, build, publish
from tests.support.procs import free_port, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def counting(registry) -> CountingClient:
    return CountingClient(registry.host, plain_http=True, env={}, timeout_s=5.0)


@pytest.fixture
def events() -> list[tuple[str, str]]:
    return []


@pytest.fixture
def make_manager(counting, repo, trusted_key, tmp_path, clock, events):
    def make(pin: Pin | None = None, **kwargs) -> BundleManager:
        options = VerifyOptions(key=trusted_key, pin=pin or Pin())
        kwargs.setdefault("on_event", lambda kind, detail: events.append((kind, detail)))
        return BundleManager(
            counting,
            repo,
            "prod",
            options,
            tmp_path / "state",
            poll_interval_s=10.0,
            clock=clock,
            rng=random.Random(7),
            **kwargs,
        )

    return make


def decision(manager: BundleManager, user: str = "alice") -> dict:
    return manager.current().evaluate(QUERY, {"user": user})


def test_first_poll_activates_verifies_and_persists_the_bundle(
    make_manager, counting, repo, signer, tmp_path, events
):
    digest = publish(counting, repo, "prod", build(tmp_path, "v1", "1.0.0", signer))
    manager = make_manager()
    assert manager.current() is None
    assert manager.poll_once() == "activated"
    assert decision(manager) == {"rego": "v1", "data": "v1", "user": "alice"}
    status = manager.status()
    assert (status.active.version, status.active.oci_digest, status.active.channel) == (
        "1.0.0",
        digest,
        "prod",
    )
    assert status.active.key_id == "release-2026"
    assert status.activations == 1 and status.last_error is None
    record = json.loads((tmp_path / "state" / "last-good.json").read_text())
    assert record["digest"] == manager.current().digest and record["oci_digest"] == digest
    assert record["has_signature"] is True and record["key_id"] == "release-2026"
    assert [kind for kind, _ in events] == ["activated"]
    json.dumps(status.to_json())


def test_unchanged_tag_digest_downloads_nothing(make_manager, counting, repo, signer, tmp_path):
    publish(counting, repo, "prod", build(tmp_path, "v1", "1.0.0", signer))
    manager = make_manager()
    manager.poll_once()
    fetched, snapshot = counting.fetches, manager.current()
    assert manager.poll_once() == "unchanged"
    assert counting.fetches == fetched and manager.current() is snapshot


def test_newer_bundle_replaces_the_active_one(make_manager, counting, repo, signer, tmp_path):
    publish(counting, repo, "prod", build(tmp_path, "v1", "1.0.0", signer))
    manager = make_manager()
    manager.poll_once()
    publish(counting, repo, "prod", build(tmp_path, "v2", "1.1.0", signer))
    assert manager.poll_once() == "activated"
    assert decision(manager)["rego"] == "v2"
    assert manager.status().activations == 2


REFUSALS = {
    # case: (kind, outcome, how the bad bundle is built)
    "unsigned": ("verify", "refused", dict(signer=None)),
    "unknown key": ("verify", "refused", dict(signer="stranger")),
    "unknown key, no detached signature": ("verify", "refused", dict(signer="stranger", detached=False)),
    "detached signature by an unknown key": ("verify", "refused", dict(detached="stranger")),
    "outside the pin": ("pin", "refused", dict(version="3.0.0")),
    "expired": ("expiry", "refused", dict(expires="2026-01-01")),
    "older version replayed": ("rollback", "refused", dict(version="1.5.0")),
    "policy does not compile": ("compile", "refused", dict(broken=True)),
}


@pytest.mark.parametrize("case", REFUSALS)
def test_bad_bundle_is_refused_and_the_last_good_stays_active(
    case, make_manager, counting, repo, signer, stranger, tmp_path, events
):
    kind, outcome, how = REFUSALS[case]
    publish(counting, repo, "prod", build(tmp_path, "good", "2.0.0", signer))
    manager = make_manager(pin=Pin(">=1.0,<3"))
    manager.poll_once()
    good = manager.current()
    key = {"signer": signer, "stranger": stranger, None: None}[how.get("signer", "signer")]
    detached = stranger if how.get("detached") == "stranger" else how.get("detached", True)
    bad = build(
        tmp_path,
        "bad",
        how.get("version", "2.1.0"),
        key,
        expires=how.get("expires"),
        detached=detached,
        broken=how.get("broken", False),
    )
    publish(counting, repo, "prod", bad)

    assert manager.poll_once() == outcome
    assert manager.current() is good
    assert decision(manager)["rego"] == "good"
    status = manager.status()
    assert status.last_error.kind == kind
    assert status.failures[kind] == 1
    assert events[-1][0] == kind
    fetched = counting.fetches
    assert manager.poll_once() == "refused"  # the same bad digest is not downloaded again
    assert counting.fetches == fetched and manager.status().last_error.since == status.last_error.since


def test_blob_replaced_in_storage_is_a_fetch_failure_and_keeps_the_last_good(
    make_manager, counting, registry, repo, signer, tmp_path
):
    publish(counting, repo, "prod", build(tmp_path, "good", "2.0.0", signer))
    manager = make_manager()
    manager.poll_once()
    newer = build(tmp_path, "evil", "2.1.0", signer)
    publish(counting, repo, "prod", newer)
    other = build(tmp_path, "other", "9.9.9", None)
    blob = registry.blob_path(sha256_digest(newer.archive))
    blob.write_bytes(other.archive)

    assert manager.poll_once() == "failed"
    assert decision(manager)["rego"] == "good"
    error = manager.status().last_error
    assert error.kind == "fetch" and "mismatch" in error.message


def test_older_version_is_accepted_when_the_pin_names_it_exactly(
    make_manager, counting, repo, signer, tmp_path
):
    publish(counting, repo, "prod", build(tmp_path, "new", "2.0.0", signer))
    make_manager().poll_once()
    publish(counting, repo, "prod", build(tmp_path, "old", "1.0.0", signer))
    pinned = make_manager(pin=Pin("==1.0.0"))  # restarted with an explicit pin: the operator's rollback
    assert pinned.load_last_good() is False  # last-good 2.0.0 no longer satisfies the pin: moved aside
    assert pinned.poll_once() == "activated"
    assert decision(pinned)["rego"] == "old"


def test_active_bundle_that_expires_stays_and_raises_one_alert(
    make_manager, counting, repo, signer, tmp_path, clock, events
):
    publish(counting, repo, "prod", build(tmp_path, "v1", "1.0.0", signer, expires="2026-11-06"))
    manager = make_manager()
    manager.poll_once()
    snapshot = manager.current()
    assert not manager.status().alerts
    clock.advance(days=2)
    manager.poll_once()
    manager.poll_once()
    assert manager.current() is snapshot
    assert [kind for kind, _ in events].count("active_expired") == 1
    assert any("expired" in alert for alert in manager.status().alerts)


def test_missing_channel_is_a_fetch_failure_with_no_bundle(make_manager):
    manager = make_manager()
    assert manager.poll_once() == "failed"
    status = manager.status()
    assert (
        status.active is None
        and status.last_error.kind == "fetch"
        and "not found" in status.last_error.message
    )
    assert "no active bundle" in status.alerts[0]


def test_fetch_failures_back_off_exponentially_with_jitter(repo, trusted_key, tmp_path, clock):
    dead = RegistryClient(f"127.0.0.1:{free_port()}", plain_http=True, env={}, timeout_s=1.0)
    manager = BundleManager(
        dead,
        repo,
        "prod",
        VerifyOptions(key=trusted_key),
        tmp_path,
        poll_interval_s=10.0,
        max_backoff_s=35.0,
        jitter=0.1,
        clock=clock,
        rng=random.Random(1),
    )
    assert 9.0 <= manager.next_delay() <= 11.0
    delays = []
    for _ in range(4):
        assert manager.poll_once() == "failed"
        delays.append(manager.next_delay())
    assert 18.0 <= delays[0] <= 22.0  # 2 x 10 s
    assert all(31.5 <= d <= 38.5 for d in delays[1:])  # 40 s, 80 s, ... capped at 35 s (+/- 10 %)
    assert manager.status().failures["fetch"] == 4 and "unreachable" in manager.status().last_error.message


def test_background_thread_polls_and_close_stops_it(make_manager, counting, repo, signer, tmp_path):
    publish(counting, repo, "prod", build(tmp_path, "v1", "1.0.0", signer))
    manager = make_manager()
    manager.start()
    try:
        wait_until(lambda: manager.current() is not None, 10, "first background poll")
    finally:
        manager.close()
    assert not manager._poller.running


def test_rollout_hook_gets_the_candidate_instead_of_activation(
    make_manager, counting, repo, signer, tmp_path
):
    publish(counting, repo, "prod", build(tmp_path, "v1", "1.0.0", signer))
    candidates = []
    manager = make_manager(on_candidate=candidates.append)
    manager.poll_once()
    assert manager.current() is None and manager.status().candidate is not None
    manager.promote(candidates[0])
    assert decision(manager)["rego"] == "v1" and manager.status().candidate is None

    digest = publish(counting, repo, "prod", build(tmp_path, "v2", "1.1.0", signer))
    assert manager.poll_once() == "candidate"
    assert manager.poll_once() == "unchanged"  # pending candidate: not downloaded again
    manager.reject(candidates[1], "deny rate +40%")
    fetched = counting.fetches
    assert manager.poll_once() == "refused"  # a reverted digest is not retried
    assert counting.fetches == fetched and decision(manager)["rego"] == "v1"
    assert manager.status().rejected == (digest,)


def test_status_answers_while_a_poll_is_in_flight(registry, repo, trusted_key, tmp_path, clock):
    entered, release = threading.Event(), threading.Event()

    class SlowClient(RegistryClient):
        def resolve(self, repository, tag):
            entered.set()
            release.wait(10)
            return super().resolve(repository, tag)

    slow = SlowClient(registry.host, plain_http=True, env={})
    manager = BundleManager(slow, repo, "prod", VerifyOptions(key=trusted_key), tmp_path, clock=clock)
    poller = threading.Thread(target=manager.poll_once)
    poller.start()
    try:
        assert entered.wait(10)
        started = time.monotonic()
        assert manager.status().last_poll_at == clock.now
        assert time.monotonic() - started < 1.0
    finally:
        release.set()
        poller.join(10)


def test_unwritable_state_dir_is_a_persist_failure_and_nothing_is_activated(
    counting, repo, trusted_key, signer, tmp_path, clock
):
    publish(counting, repo, "prod", build(tmp_path, "v1", "1.0.0", signer))
    not_a_dir = tmp_path / "state-file"
    not_a_dir.write_text("")
    manager = BundleManager(counting, repo, "prod", VerifyOptions(key=trusted_key), not_a_dir, clock=clock)
    assert manager.poll_once() == "failed"
    assert manager.current() is None and manager.status().last_error.kind == "persist"


def test_development_mode_without_a_key_accepts_signed_and_unsigned_bundles(
    counting, repo, signer, tmp_path, clock
):
    manager = BundleManager(counting, repo, "prod", VerifyOptions(key=None), tmp_path / "state", clock=clock)
    publish(counting, repo, "prod", build(tmp_path, "signed", "1.0.0", signer))
    assert manager.poll_once() == "activated"
    publish(counting, repo, "prod", build(tmp_path, "unsigned", "1.1.0", None))
    assert manager.poll_once() == "activated"
    assert decision(manager)["rego"] == "unsigned"


def test_runbook_pin_to_the_last_good_digest_serves_it_and_refuses_newer_bundles(
    make_manager, counting, repo, signer, tmp_path
):
    publish(counting, repo, "prod", build(tmp_path, "v1", "1.0.0", signer))
    make_manager().poll_once()
    pinned_digest = json.loads((tmp_path / "state" / "last-good.json").read_text())["digest"]
    publish(counting, repo, "prod", build(tmp_path, "v2", "1.1.0", signer))
    pinned = make_manager(pin=Pin(digests=frozenset({pinned_digest})))  # restarted with the pin
    assert pinned.load_last_good() is True and decision(pinned)["rego"] == "v1"
    assert pinned.poll_once() == "refused"
    assert decision(pinned)["rego"] == "v1" and pinned.status().last_error.kind == "pin"


def test_a_damaged_rollback_floor_file_still_refuses_an_older_bundle(
    make_manager, counting, repo, signer, tmp_path
):
    publish(counting, repo, "prod", build(tmp_path, "new", "2.0.0", signer))
    manager = make_manager()
    manager.poll_once()
    (tmp_path / "state" / "rollback-floor.json").write_text("{not json")
    publish(counting, repo, "prod", build(tmp_path, "old", "1.0.0", signer))
    assert manager.poll_once() == "refused"  # the active bundle's version is the floor then
    assert decision(manager)["rego"] == "new" and manager.status().last_error.kind == "rollback"
