"""The bounded maps behind the gate's caches and stores (middleware/bounded.py): size bound, eviction order,
deadlines, and lock-free reads that race writers without ever failing other than as a miss."""

from __future__ import annotations

import sys
import threading

import pytest

from ig_gate.middleware.bounded import FIFO, LRU, Deadlines


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("make", [FIFO, LRU, Deadlines])
def test_a_bounded_map_refuses_a_size_below_one(make):
    with pytest.raises(ValueError, match="at least one entry"):
        make(0)


def test_fifo_evicts_the_oldest_inserted_and_reads_do_not_reorder():
    fifo: FIFO[str, int] = FIFO(3)
    for i, key in enumerate("abc"):
        fifo[key] = i
    assert fifo["a"] == 0  # read: no change of order
    fifo["d"] = 3
    assert list(fifo) == ["b", "c", "d"]
    fifo["b"] = 9  # set again: the newest
    fifo["e"] = 4
    assert list(fifo) == ["d", "b", "e"]
    with pytest.raises(KeyError):
        fifo["a"]


def test_a_fifo_whose_reader_moves_hits_to_the_end_evicts_the_least_recently_used():
    tokens: FIFO[str, int] = FIFO(2)  # the verified-token cache's LRU at C speed (middleware/session.py)
    tokens["a"], tokens["b"] = 1, 2
    assert tokens["a"] == 1
    tokens.move_to_end("a")
    tokens["c"] = 3
    assert list(tokens) == ["a", "c"]


def test_lru_evicts_the_least_recently_read_and_a_miss_is_a_key_error():
    lru: LRU[str, int] = LRU(3)
    for i, key in enumerate("abc"):
        lru[key] = i
    assert lru["a"] == 0  # read: "a" is now the newest
    lru["d"] = 3
    assert list(lru) == ["c", "a", "d"]
    with pytest.raises(KeyError):
        lru["b"]
    assert list(lru) == ["c", "a", "d"]  # a miss changes nothing


def test_deadlines_entries_lapse_at_their_own_deadline():
    clock = Clock()
    entries: Deadlines[str, str] = Deadlines(10, clock)
    entries.update("short", 5.0, lambda old, left: "s")
    entries.update("long", 50.0, lambda old, left: "l")
    clock.now += 5.0
    assert (entries.get("short"), entries.get("long")) == (None, "l")
    assert len(entries) == 1  # the lapsed entry read was dropped


def test_deadlines_update_merges_the_live_value_and_never_shortens_its_deadline():
    clock = Clock()
    entries: Deadlines[str, tuple[str | None, float]] = Deadlines(10, clock)
    entries.update("k", 100.0, lambda old, left: ("first", left))
    clock.now += 10.0
    entries.update("k", 5.0, lambda old, left: (old[0] if old else None, left))
    assert entries.get("k") == ("first", 90.0)  # merged with the live value, 90 s left (not 5)
    clock.now += 90.0
    entries.update("k", 5.0, lambda old, left: (old[0] if old else None, left))
    assert entries.get("k") == (None, 5.0)  # the old value had lapsed: merged with None


def test_deadlines_add_is_a_claim_that_holds_until_it_lapses_or_is_popped():
    clock = Clock()
    claims: Deadlines[str, bool] = Deadlines(10, clock)
    assert claims.add("jti", True, 60.0) is True
    assert claims.add("jti", True, 60.0) is False
    clock.now += 60.0
    assert claims.add("jti", True, 60.0) is True  # lapsed: claimed again
    claims.pop("jti")
    assert claims.add("jti", True, 60.0) is True


def test_deadlines_when_full_drop_lapsed_entries_first_then_the_oldest_written():
    clock = Clock()
    entries: Deadlines[str, int] = Deadlines(3, clock)
    entries.update("old-live", 100.0, lambda old, left: 1)
    entries.update("lapsing", 1.0, lambda old, left: 2)
    entries.update("new-live", 100.0, lambda old, left: 3)
    clock.now += 1.0
    assert entries.update("fourth", 100.0, lambda old, left: 4) == 0  # the lapsed one made room
    assert [entries.get(k) for k in ("old-live", "new-live", "fourth")] == [1, 3, 4]
    assert entries.update("fifth", 100.0, lambda old, left: 5) == 1  # a live one had to go: the oldest
    assert entries.get("old-live") is None and entries.get("fifth") == 5


@pytest.mark.parametrize("make", [FIFO, LRU])
def test_lock_free_reads_racing_writers_only_ever_miss(make):
    """With a thread switch every microsecond (an unlocked cachetools LRUCache fails this at once)."""
    cache = make(64)
    errors: list[BaseException] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            for key in range(256):
                try:
                    cache[key]
                except KeyError:
                    pass
                except BaseException as exc:  # anything but a miss fails the test
                    errors.append(exc)
                    return

    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    readers = [threading.Thread(target=read) for _ in range(3)]
    for reader in readers:
        reader.start()
    try:
        for round_ in range(200):
            for key in range(256):
                cache[key] = round_
    finally:
        stop.set()
        for reader in readers:
            reader.join()
        sys.setswitchinterval(switch)
    assert errors == []
    assert len(cache) == 64
