"""RiskView, the local view a shared risk store's request path reads: what it proves while in sync, what it
answers out of sync (known keys keep their state, unknown keys raise RiskStoreError), its size bound, loads
racing own writes, and the metrics that export its staleness."""

from __future__ import annotations

import pytest

from ig_gate.middleware.metrics import GateMetrics
from ig_gate.middleware.risk import RiskOverride, RiskStoreError
from ig_gate.middleware.risk_view import DEVICES, SESSIONS, RiskView

REVOKED = RiskOverride(None, True, "session-revoked", 0.0)


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def loaded_view(clock: Clock, **options: float) -> RiskView:
    """A view that has loaded an empty store and heard from it just now."""
    view = RiskView(stale_after_s=2.0, clock=clock, **options)  # type: ignore[arg-type]
    view.begin_load()
    view.finish_load({})
    view.heard(clock.now)
    return view


def test_a_view_never_loaded_proves_nothing():
    view = RiskView(clock=Clock())
    with pytest.raises(RiskStoreError, match="out of sync \\(not loaded\\)"):
        view.session("sid")
    with pytest.raises(RiskStoreError, match="device"):
        view.posture("dev")
    assert not view.synced()


def test_in_sync_an_unknown_key_is_clear_and_a_known_key_answers_its_entry():
    clock = Clock()
    view = loaded_view(clock)
    assert view.session("sid") is None
    view.apply(SESSIONS, "sid", REVOKED, 60)
    view.apply(DEVICES, "dev", "jailbroken", 60)
    assert view.session("sid") is REVOKED
    assert view.posture("dev") == "jailbroken"
    assert view.session("dev") is None  # sessions and devices are separate key spaces


def test_past_the_staleness_bound_known_keys_keep_their_state_and_unknown_keys_raise():
    clock = Clock()
    view = loaded_view(clock)
    view.apply(SESSIONS, "revoked", REVOKED, 600)
    assert view.session("warm") is None  # proved clear while in sync
    clock.now += 2.0
    assert view.synced() and view.posture("warm-device") is None  # at the bound: still in sync
    clock.now += 0.01
    assert not view.synced()
    assert view.session("revoked") is REVOKED
    assert view.session("warm") is None and view.posture("warm-device") is None
    with pytest.raises(RiskStoreError, match=r"last heard from the store 2\.0s ago"):
        view.session("never-seen")
    with pytest.raises(RiskStoreError):
        view.posture("warm")  # devices are their own key space
    view.heard(clock.now)  # the store answered again
    assert view.session("never-seen") is None


def test_a_warm_key_that_got_an_entry_which_lapsed_out_of_sync_is_unknown():
    clock = Clock()
    view = loaded_view(clock)
    assert view.session("sid") is None
    view.apply(SESSIONS, "sid", REVOKED, 3.0)
    clock.now += 3.0  # out of sync, and the entry lapsed: a change may have been missed
    with pytest.raises(RiskStoreError):
        view.session("sid")


def test_the_warm_keys_remembered_are_bounded():
    clock = Clock()
    view = loaded_view(clock, max_entries=2)
    for key in ("a", "b", "c"):
        assert view.session(key) is None
    clock.now += 3.0
    with pytest.raises(RiskStoreError):
        view.session("a")  # the oldest was forgotten
    assert view.session("b") is None and view.session("c") is None


def test_entries_expire_with_their_ttl_and_are_purged():
    clock = Clock()
    view = loaded_view(clock)
    view.apply(SESSIONS, "short", REVOKED, 1.0)
    clock.now += 1.0
    view.heard(clock.now)
    assert view.session("short") is None
    assert view.purge() == 1 and len(view) == 0


def test_a_full_view_drops_new_keys_counts_them_and_is_out_of_sync_until_a_load_fits():
    clock = Clock()
    view = loaded_view(clock, max_entries=2)
    view.apply(SESSIONS, "a", REVOKED, 60)
    view.apply(SESSIONS, "b", REVOKED, 60)
    view.apply(SESSIONS, "a", REVOKED, 120)  # a known key is replaced, not counted
    assert view.dropped == 0
    view.apply(SESSIONS, "c", REVOKED, 60)
    assert view.dropped == 1 and not view.synced()
    with pytest.raises(RiskStoreError, match="incomplete"):
        view.session("c")  # dropped: the view cannot say it is clear
    assert view.session("a") is REVOKED  # known keys still answer
    view.begin_load()
    view.finish_load({SESSIONS: {"a": (REVOKED, 60)}})
    assert view.synced() and view.session("c") is None


def test_a_change_applied_during_a_load_is_kept_over_the_loaded_state():
    clock = Clock()
    view = loaded_view(clock)
    view.begin_load()
    view.apply(SESSIONS, "written-meanwhile", REVOKED, 60)  # an own write while the SCAN runs
    view.finish_load({SESSIONS: {"written-meanwhile": (None, 0.0), "other": (REVOKED, 60)}})
    assert view.session("written-meanwhile") is REVOKED
    assert view.session("other") is REVOKED


def test_metrics_export_the_views_age_sync_and_drops():
    clock = Clock()
    view = loaded_view(clock, max_entries=1)

    class Store:
        pass

    store = Store()
    store.view = view  # type: ignore[attr-defined]
    metrics = GateMetrics()
    metrics.watch_risk_store(store)
    metrics.watch_risk_store(store)  # once per registry
    sample = metrics.registry.get_sample_value
    clock.now += 0.5
    assert sample("ig_gate_risk_view_age_seconds") == pytest.approx(0.5)
    assert sample("ig_gate_risk_view_synced") == 1
    clock.now += 2.0
    view.apply(SESSIONS, "a", REVOKED, 60)
    view.apply(SESSIONS, "b", REVOKED, 60)
    view.tick()  # the feeding thread's heartbeat also refreshes them (multiprocess mode)
    assert sample("ig_gate_risk_view_synced") == 0
    assert sample("ig_gate_risk_view_dropped_total") == 1
    GateMetrics().watch_risk_store(object())  # an in-memory store has no view: nothing exported
