"""Long-lived connections follow their session: a bounded registry of the open WebSockets of one gate.

Each open connection registers a `Live` (its event loop, its session keys and a `recheck` callback) and
unregisters when it ends. The registry asks for a re-decision of the connections concerned when:
- the risk store reports a change (`RiskStore.subscribe`): the sessions named by the key (a token's `sid`
  or `sub`), or every connection for a device's status or a resync after a lost subscription;
- the active policy snapshot changes: one watcher thread per gate compares `policy.current()` with the
  snapshot it saw last, every `POLICY_CHECK_S` while connections are open (no cost per request).
Token expiry is not the registry's business: each connection arms one timer on its own loop.
Rechecks run on the connection's own event loop (`call_soon_threadsafe`): notifications come from other
threads (the SSF receiver's thread pool, the Redis subscriber, the watcher).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from ig_gate.bundles.policy import PolicySource
from ig_gate.middleware.risk import SESSION, RiskStore

log = logging.getLogger(__name__)

MAX_LIVE = 100_000  # open connections followed per process; beyond it new sockets are refused (4503)
POLICY_CHECK_S = 0.25  # how often the watcher looks for a new active bundle while connections are open


@dataclass(eq=False, slots=True)
class Live:
    """One open connection: where it runs, whose session it carries, how to re-decide it."""

    loop: asyncio.AbstractEventLoop
    session_key: str
    subject: str
    recheck: Callable[[], None]  # re-decide on `loop`; closes the connection when it no longer passes


class LiveConnections:
    """The open connections of one gate (bounded); re-decides them on risk events and bundle swaps."""

    def __init__(self, policy: PolicySource, risk_store: RiskStore | None, limit: int = MAX_LIVE) -> None:
        self._policy = policy
        self._risk_store = risk_store
        self._limit = limit
        self._open: set[Live] = set()
        self._lock = threading.Lock()
        self._started = False
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._watcher: threading.Thread | None = None

    def __len__(self) -> int:
        return len(self._open)

    def start(self) -> None:
        """Subscribe to the risk store and start the policy watcher (once; no I/O on the calling thread)."""
        with self._lock:
            if self._started:
                return
            self._started = True
        if self._risk_store is not None:
            self._risk_store.subscribe(self.risk_changed)
        self._watcher = threading.Thread(target=self._watch, name="ig-gate-live-policy", daemon=True)
        self._watcher.start()

    def register(self, live: Live) -> bool:
        """Follow `live`; False when the registry is full (the caller refuses the connection)."""
        self.start()
        with self._lock:
            if len(self._open) >= self._limit:
                return False
            self._open.add(live)
        self._wake.set()
        return True

    def unregister(self, live: Live) -> None:
        """Stop following `live` (its connection ended)."""
        with self._lock:
            self._open.discard(live)

    def risk_changed(self, kind: str, key: str) -> None:
        """A risk-store notification (any thread): re-decide the connections it may concern."""
        with self._lock:
            if kind == SESSION:
                chosen = [live for live in self._open if key in (live.session_key, live.subject)]
            else:  # a device's status (its connections are not indexed) or a resync: all of them
                chosen = list(self._open)
        self._recheck(chosen)

    def recheck_all(self) -> None:
        """Re-decide every open connection (any thread)."""
        with self._lock:
            chosen = list(self._open)
        self._recheck(chosen)

    def close(self) -> None:
        """Stop the watcher (the risk store's subscription ends with the store)."""
        self._stop.set()
        self._wake.set()
        if self._watcher is not None:
            self._watcher.join(2)

    @staticmethod
    def _recheck(chosen: list[Live]) -> None:
        for live in chosen:
            with contextlib.suppress(RuntimeError):  # its loop is closed: the connection is gone
                live.loop.call_soon_threadsafe(live.recheck)

    def _watch(self) -> None:
        seen = self._current()
        while not self._stop.is_set():
            if not self._open:  # nothing to follow: sleep until a connection registers
                self._wake.wait()
                self._wake.clear()
                continue
            self._stop.wait(POLICY_CHECK_S)
            current = self._current()
            if current is not seen:
                seen = current
                log.info("policy snapshot changed: re-deciding %d open connections", len(self._open))
                self.recheck_all()

    def _current(self) -> object:
        """The active snapshot; a source that fails is reported as no snapshot (the watcher goes on, and the
        connections' own decisions fail by failure_mode)."""
        try:
            return self._policy.current()
        except Exception:
            return None
