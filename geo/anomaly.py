"""Country-level "impossible travel": one subject seen from two countries within a short window.

Travel between two different countries plausibly takes longer than `window_s`, so a subject
whose requests come from country A and then from country B less than `window_s` apart is
flagged. The flag then sticks for `window_s` after that change, so that retrying from the new
country does not clear it; the policy decides what a flag costs (the example steps up, and a
freshly satisfied step-up lets the request through).

Per subject only the last country, when it was last seen, and the flag's end are kept, in an
LRU bounded by `max_subjects` (the least recently seen subject is forgotten first). A request
without a country (unknown IP, private address) is no evidence either way: it reports the
current flag and changes nothing but the subject's recency. `now` is the caller's clock in
seconds (`time.time()`).

Thread safety: one lock around each observation, so the serving event-loop thread and any
other thread (a sidecar worker, a test) may call `observe` concurrently. The LRU is kept by hand (an
OrderedDict under that lock) rather than with middleware/bounded.py's `LRU`: geo lies below middleware
and imports nothing of it (tests/packaging/test_import_graph.py).
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from ig_gate.geo.errors import GeoConfigError


class _Seen:
    """What is remembered about one subject (mutable: updated in place on the hot path)."""

    __slots__ = ("at", "country", "flagged_until")

    def __init__(self, country: str, at: float) -> None:
        self.country = country
        self.at = at
        self.flagged_until = 0.0


class TravelAnomalyDetector:
    """Flags subjects that change country faster than plausible travel allows."""

    def __init__(self, window_s: float = 3600.0, max_subjects: int = 100_000) -> None:
        if not window_s > 0:
            raise GeoConfigError(f"geo.anomaly_window_s: must be > 0 seconds, got {window_s!r}")
        if max_subjects < 1:
            raise GeoConfigError(f"geo anomaly max_subjects: must be >= 1, got {max_subjects!r}")
        self.window_s = float(window_s)
        self.max_subjects = max_subjects
        self._seen: OrderedDict[str, _Seen] = OrderedDict()
        self._lock = threading.Lock()

    def observe(self, subject: str, country: str | None, now: float) -> bool:
        """Record that `subject` made a request from `country` at `now`; True if it is anomalous."""
        with self._lock:
            seen = self._seen.get(subject)
            if seen is None:
                if country is not None:
                    self._seen[subject] = _Seen(country, now)
                    if len(self._seen) > self.max_subjects:
                        self._seen.popitem(last=False)
                return False
            self._seen.move_to_end(subject)
            if country is not None:
                if country != seen.country:
                    if now - seen.at < self.window_s:
                        seen.flagged_until = now + self.window_s
                    seen.country = country
                seen.at = now
            return now < seen.flagged_until

    def __len__(self) -> int:
        """Number of subjects remembered."""
        return len(self._seen)
