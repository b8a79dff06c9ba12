"""A daemon thread that does one step, waits, and again, until stopped: the bundle manager's registry poll
and the bundle file's watch."""

from __future__ import annotations

import threading
from collections.abc import Callable


class Ticker:
    """Runs `step()` at once, then every `delay()` seconds (read after each step), on a daemon thread."""

    def __init__(self, name: str, step: Callable[[], object], delay: Callable[[], float]) -> None:
        self.name = name
        self._step = step
        self._delay = delay
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        """Start the thread (a no-op while it runs)."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop after the step in progress (waits up to timeout_s for it)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            self._step()
            self._stop.wait(self._delay())
