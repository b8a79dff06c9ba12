"""InMemoryRiskStore: risk only goes up, revocation sticks, TTL on a monotonic clock, bounded, thread-safe."""

from __future__ import annotations

import threading
import time

import pytest

from ig_gate.middleware.risk import InMemoryRiskStore, RiskOverride, RiskStore


@pytest.fixture
def now() -> list[float]:
    return [1000.0]


@pytest.fixture
def store(now: list[float]) -> InMemoryRiskStore:
    return InMemoryRiskStore(ttl_s=60, max_entries=100, clock=lambda: now[0])


def test_in_memory_store_implements_the_protocol(store: InMemoryRiskStore) -> None:
    typed: RiskStore = store
    assert typed.get("nobody") is None and typed.get_posture("no-device") is None


def test_raise_risk_never_lowers(store: InMemoryRiskStore) -> None:
    store.raise_risk("alice", "high", reason="idp: credential leaked")
    store.raise_risk("alice", "low", reason="idp: all clear")
    override = store.get("alice")
    assert override is not None
    assert (override.risk, override.revoked, override.reason) == ("high", False, "idp: credential leaked")
    store.raise_risk("bob", "medium", reason="r1")
    store.raise_risk("bob", "high", reason="r2")
    assert store.get("bob") == RiskOverride("high", False, "r2", store.get("bob").until)


def test_revocation_sticks_and_keeps_the_raised_risk(store: InMemoryRiskStore) -> None:
    store.raise_risk("alice", "medium", reason="impossible travel")
    store.revoke("alice", reason="session-revoked")
    store.raise_risk("alice", "high", reason="later event")
    override = store.get("alice")
    assert override is not None and override.revoked and override.risk == "high"
    store.revoke("carol", reason="session-revoked")
    assert store.get("carol") == RiskOverride(None, True, "session-revoked", store.get("carol").until)


def test_entries_lapse_after_their_ttl_on_the_monotonic_clock(
    store: InMemoryRiskStore, now: list[float]
) -> None:
    store.raise_risk("alice", "high", reason="r", ttl_s=10)
    now[0] += 9.9
    assert store.get("alice") is not None
    now[0] += 0.2
    assert store.get("alice") is None
    assert len(store) == 0


def test_a_shorter_ttl_never_shortens_a_live_entry(store: InMemoryRiskStore, now: list[float]) -> None:
    store.revoke("alice", reason="r", ttl_s=100)
    store.raise_risk("alice", "high", reason="r2", ttl_s=1)
    now[0] += 50
    override = store.get("alice")
    assert override is not None and override.revoked


def test_until_is_wall_clock_epoch(store: InMemoryRiskStore) -> None:
    store.raise_risk("alice", "high", reason="r", ttl_s=30)
    override = store.get("alice")
    assert override is not None
    assert time.time() + 25 < override.until < time.time() + 35


def test_store_is_bounded_dropping_expired_then_oldest(now: list[float]) -> None:
    store = InMemoryRiskStore(ttl_s=60, max_entries=3, clock=lambda: now[0])
    store.raise_risk("short", "high", reason="r", ttl_s=1)
    store.raise_risk("old", "high", reason="r")
    store.raise_risk("mid", "high", reason="r")
    now[0] += 2
    store.raise_risk("new", "high", reason="r")
    assert [k for k in ("short", "old", "mid", "new") if store.get(k)] == ["old", "mid", "new"]
    store.raise_risk("newest", "high", reason="r")
    assert [k for k in ("old", "mid", "new", "newest") if store.get(k)] == ["mid", "new", "newest"]
    assert len(store) == 3


def test_device_status_is_the_latest_report(store: InMemoryRiskStore) -> None:
    store.set_posture("dev-1", "not-compliant", reason="caep device-compliance-change")
    assert store.get_posture("dev-1") == "not-compliant"
    store.set_posture("dev-1", "compliant", reason="caep device-compliance-change")
    assert store.get_posture("dev-1") == "compliant"
    assert store.get("dev-1") is None  # sessions and devices are separate key spaces


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s: s.raise_risk("a", "critical", reason="r"), "risk must be one of"),
        (lambda s: s.raise_risk("a", "high", reason="r", ttl_s=0), "ttl_s must be > 0"),
        (lambda s: s.revoke("a", reason="r", ttl_s=-1), "ttl_s must be > 0"),
        (lambda s: s.set_posture("d", "fine", reason="r"), "device status must be one of"),
    ],
)
def test_bad_arguments_are_named_errors(store: InMemoryRiskStore, call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call(store)


def test_bad_construction_is_refused() -> None:
    with pytest.raises(ValueError, match="max_entries"):
        InMemoryRiskStore(max_entries=0)
    with pytest.raises(ValueError, match="ttl_s"):
        InMemoryRiskStore(ttl_s=0)


def test_concurrent_raises_end_at_the_highest_risk_and_stay_bounded() -> None:
    store = InMemoryRiskStore(max_entries=500)
    levels = ("low", "medium", "high")
    barrier = threading.Barrier(6)

    def worker(n: int) -> None:
        barrier.wait()
        for i in range(800):
            store.raise_risk("shared", levels[(i + n) % 3], reason=f"w{n}")
            store.raise_risk(f"k{n}-{i}", "low", reason="fill")
            store.get("shared")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(store) <= 500
    # each update moves "shared" to the young end, so it outlives the eviction of fill entries
    shared = store.get("shared")
    assert shared is not None and shared.risk == "high"


def test_readers_never_miss_a_revocation_while_it_is_updated() -> None:
    store = InMemoryRiskStore()
    store.revoke("alice", reason="session-revoked")
    done = threading.Event()
    misses = 0

    def reader() -> None:
        nonlocal misses
        while not done.is_set():
            override = store.get("alice")
            if override is None or not override.revoked:
                misses += 1

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(20_000):
            store.raise_risk("alice", ("low", "medium", "high")[i % 3], reason="event")
    finally:
        done.set()
        thread.join()
    assert misses == 0
