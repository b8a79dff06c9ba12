"""The local view of a shared risk store: what the request path reads instead of the network.

A full mirror of the live risk entries (session overrides, device statuses), each with its monotonic
deadline, kept current by one background thread (middleware/risk_redis.py) and by the store's own writes.
Reads take no lock and do no I/O.

Staleness bound. The view knows the instant `heard` up to which every change is applied: the feeding
thread sets it to the send time of each heartbeat answered on a subscription that was complete when the
heartbeat was sent (messages on one connection arrive in order). Its age is `now - heard`. While the view
is **synced** (a full load applied, nothing dropped, age <= `stale_after_s`) a key it does not hold has
no live entry, and every change written more than the age ago is applied. Once it is not synced, a key
keeps its known state:
- a key it holds answers its entry (risk only goes up, so that is a lower bound of the truth);
- a key a lookup proved clear while in sync (a warm session; the last `max_entries` are remembered)
  stays clear, as it was when the view last heard from the store;
- any other key cannot be proved clear: the lookup raises RiskStoreError (the gate's failure_mode).

Bound on size: at most `max_entries` per kind; a new key beyond it is dropped and counted (`dropped`),
and the view is then incomplete (not synced) until a load that fits.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from ig_gate.middleware.risk import RiskOverride, RiskStoreError

log = logging.getLogger(__name__)

SESSIONS, DEVICES = "s", "d"  # the two kinds of entries (and their key prefixes in Redis)
_Entries = dict[str, tuple[Any, float]]  # key -> (RiskOverride or posture, monotonic deadline)


class RiskView:
    """Session overrides and device statuses mirrored from a shared store; see the module docstring."""

    def __init__(
        self,
        *,
        stale_after_s: float = 2.0,
        max_entries: int = 100_000,
        where: str = "risk store",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if stale_after_s <= 0:
            raise ValueError(f"risk view: stale_after_s must be > 0, got {stale_after_s}")
        if max_entries < 1:
            raise ValueError(f"risk view: max_entries must be >= 1, got {max_entries}")
        self.stale_after_s = stale_after_s
        self.max_entries = max_entries
        self.where = where
        self._clock = clock
        self._entries: dict[str, _Entries] = {SESSIONS: {}, DEVICES: {}}
        # keys a lookup proved clear while in sync: their known state once out of sync (bounded)
        self._clear: dict[str, dict[str, None]] = {SESSIONS: {}, DEVICES: {}}
        self._heard = float("-inf")  # every change published before this monotonic instant is applied
        self._complete = False  # a full load is applied and nothing was dropped since
        self._fresh_until = float("-inf")  # in sync until then: heard + stale_after_s while complete
        self._lock = threading.Lock()
        self._loading: dict[tuple[str, str], tuple[Any, float] | None] | None = None
        self.dropped = 0  # new keys refused because the view was full
        self._watchers: list[Callable[[RiskView], None]] = []

    # -- reads (request path: no lock, no I/O) ------------------------------------------------------

    def session(self, key: str) -> RiskOverride | None:
        """The live override for a session key; None only when the view proves there is none."""
        return self._read(SESSIONS, key)  # type: ignore[no-any-return]

    def posture(self, key: str) -> str | None:
        """The live status for a device key; None only when the view proves there is none."""
        return self._read(DEVICES, key)  # type: ignore[no-any-return]

    def _read(self, kind: str, key: str) -> Any:
        entry = self._entries[kind].get(key)
        now = self._clock()
        if entry is not None and entry[1] > now:
            return entry[0]
        clear = self._clear[kind]
        if now <= self._fresh_until:  # in sync: no live entry means none
            if key not in clear:
                self._remember(clear, key)
            return None
        if entry is None and key in clear:  # proved clear while in sync, no change heard since
            return None
        what = "session" if kind == SESSIONS else "device"
        raise RiskStoreError(
            f"{self.where}: local view out of sync ({self._why(now)}); cannot tell whether {what} "
            "has a risk event"
        )

    def _remember(self, clear: dict[str, None], key: str) -> None:
        """Remember key as proved clear (the oldest is forgotten beyond max_entries); any thread."""
        if len(clear) >= self.max_entries:
            with contextlib.suppress(RuntimeError, StopIteration, KeyError):  # raced with another reader
                del clear[next(iter(clear))]
        clear[key] = None

    def _why(self, now: float) -> str:
        if not self._complete:
            return "not loaded" if self._heard == float("-inf") else "incomplete: entries dropped"
        return f"last heard from the store {now - self._heard:.1f}s ago"

    def age(self) -> float:
        """Seconds since the view last heard from the store (inf before the first load)."""
        return self._clock() - self._heard

    def synced(self) -> bool:
        """Whether an unknown key is proved clear (loaded, complete, heard within stale_after_s)."""
        return self._clock() <= self._fresh_until

    def __len__(self) -> int:
        return sum(len(entries) for entries in self._entries.values())

    def watch(self, watcher: Callable[[RiskView], None]) -> None:
        """Call watcher(view) on every tick() (the feeding thread ticks every heartbeat; metrics)."""
        self._watchers.append(watcher)

    def tick(self) -> None:
        """Tell the watchers (from the feeding thread)."""
        for watcher in self._watchers:
            watcher(self)

    # -- writes (background threads) ----------------------------------------------------------------

    def apply(self, kind: str, key: str, value: Any, ttl_s: float) -> None:
        """Set key's state as the store has it (value None or ttl_s <= 0: no live entry)."""
        entry = (value, self._clock() + ttl_s) if value is not None and ttl_s > 0 else None
        with self._lock:
            if self._loading is not None:  # a load is under way: it must not undo this change
                self._loading[(kind, key)] = entry
            self._put(self._entries[kind], kind, key, entry)

    def heard(self, at: float) -> None:
        """Every change published before monotonic instant `at` has been applied."""
        with self._lock:
            if at > self._heard:
                self._heard = at
                self._refresh()

    def begin_load(self) -> None:
        """A full load starts: changes applied from now on are kept over what the load brings."""
        with self._lock:
            self._loading = {}

    def finish_load(self, loaded: Mapping[str, Mapping[str, tuple[Any, float]]]) -> None:
        """Replace the entries by a full load ({kind: {key: (value, ttl_s)}}), keeping changes applied
        since begin_load(); the view is complete again when everything fits."""
        now = self._clock()
        fresh: dict[str, _Entries] = {SESSIONS: {}, DEVICES: {}}
        with self._lock:
            self._complete = True  # _put clears it when something does not fit
            for kind, entries in loaded.items():
                for key, (value, ttl_s) in entries.items():
                    live = value is not None and ttl_s > 0
                    self._put(fresh[kind], kind, key, (value, now + ttl_s) if live else None)
            for (kind, key), entry in (self._loading or {}).items():
                self._put(fresh[kind], kind, key, entry)
            self._loading = None
            self._entries = fresh
            self._refresh()

    def abort_load(self) -> None:
        """The load failed: keep the current entries."""
        with self._lock:
            self._loading = None

    def purge(self) -> int:
        """Drop expired entries; returns how many."""
        now = self._clock()
        purged = 0
        with self._lock:
            for entries in self._entries.values():
                for key in [k for k, (_, deadline) in entries.items() if deadline <= now]:
                    del entries[key]
                    purged += 1
        return purged

    def _refresh(self) -> None:
        """Under the lock: the instant until which the view is in sync."""
        self._fresh_until = self._heard + self.stale_after_s if self._complete else float("-inf")

    def _put(self, entries: _Entries, kind: str, key: str, entry: tuple[Any, float] | None) -> None:
        """Under the lock: set or remove one entry, within max_entries (else dropped and counted)."""
        if entry is None:
            entries.pop(key, None)
            return
        if key not in entries and len(entries) >= self.max_entries:
            now = self._clock()
            for stale in [k for k, (_, deadline) in entries.items() if deadline <= now]:
                del entries[stale]
            if len(entries) >= self.max_entries:
                self.dropped += 1
                if self._complete:
                    log.warning(
                        "%s: local view full (%d %s entries): dropping new entries; unknown keys now fail "
                        "by failure_mode until a load fits (raise risk_store.max_entries)",
                        self.where, self.max_entries, "session" if kind == SESSIONS else "device",
                    )
                self._complete = False
                self._refresh()
                return
        entries[key] = entry
