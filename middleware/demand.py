"""The workload-profile exporter: demand by route, tenant and profile, measured where every request passes.

Per request the gate calls `DemandMeter.hit(path, tenant, profile)` once, for each request it admits
(after the tenant caps): two dict lookups (the route label of the path, the tenant label) and one dict
increment, no lock and no prometheus call. Everything else happens in `tick()`, run by a background
thread every `autoscale.tick_s`:

- the counts since the last tick are added to `ig_gate_profile_requests_total{route,tenant,profile}`;
- `ig_gate_profile_rate{route,tenant,profile}` is an EWMA of requests/s (half-life
  `autoscale.ewma_half_life_s`); for `subscription` it is the EWMA of *open subscriptions* (fan-out):
  `opened()` / `closed()` are called by the WebSocket guard for each decided `subscribe` (graphql-ws
  `start`) frame and its end, so a socket carrying 20 subscriptions counts 20 and a bare connect 0
  (a WebSocket on a non-GraphQL path is one subscription while open);
- `ig_gate_subscriptions_open{route,tenant}` is the open count now;
- `demand()` is the per-profile total the recommenders read (middleware/workload.py sets
  `ig_gate_profile_dominant{component,profile}` from their recommendations).

Labels are bounded: routes are `graphql.paths` and `autoscale.routes` templates ('/users/{id}', one
path segment per `{name}`), everything else `other`; tenants are `metrics.tenants`, else `other`.
A thread other than the one that ticks may lose an increment that races the swap of the count table
(the loop thread that runs the gate never does: the GIL switches between bytecodes, not inside a
dict store); the error is at most one request per racing thread per tick.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from ig_gate.middleware.metrics import OTHER, PREFIX, PROFILES, label_table

SUBSCRIPTION = "subscription"
_ROUTE_CACHE = 4096  # distinct paths whose route label is remembered; beyond, it is computed each time
Key = tuple[str, str, str]  # (route, tenant, profile) label values


class RouteLabels:
    """Path -> bounded route label: an exact GraphQL path, a matching template, else `other`."""

    def __init__(self, exact: Iterable[str], templates: Iterable[str]) -> None:
        self._templates = [(t, re.compile(_template_regex(t))) for t in templates]
        self._cache: dict[str, str] = {path: path for path in exact}

    def __call__(self, path: str) -> str:
        try:
            return self._cache[path]
        except KeyError:
            route = next((t for t, rx in self._templates if rx.fullmatch(path)), OTHER)
            if len(self._cache) < _ROUTE_CACHE:
                self._cache[path] = route
            return route


def _template_regex(template: str) -> str:
    parts = re.split(r"(\{[^}/]+\})", template)
    return "".join("[^/]+" if p.startswith("{") and p.endswith("}") else re.escape(p) for p in parts)


class DemandMeter:
    """Counts admitted requests and open subscriptions; `tick()` turns them into metrics and demand."""

    def __init__(
        self,
        registry: CollectorRegistry,
        routes: RouteLabels,
        tenants: Iterable[str],
        half_life_s: float,
    ) -> None:
        self.routes = routes
        self._tenants = label_table(tenants)
        self._half_life = half_life_s
        self._counts: dict[Key, int] = {}
        self._open: dict[tuple[str, str], int] = {}
        self._ewma: dict[Key, float] = {}
        self._last: float | None = None
        self._requests = Counter(PREFIX + "profile_requests", "Requests admitted by the gate, by route, "
                                 "tenant and workload profile.", ("route", "tenant", "profile"),
                                 registry=registry)
        self._rate = Gauge(PREFIX + "profile_rate", "EWMA of requests/s by route, tenant and profile; for "
                           "subscription: of open subscriptions.", ("route", "tenant", "profile"),
                           registry=registry, multiprocess_mode="livesum")
        self._open_gauge = Gauge(PREFIX + "subscriptions_open", "Open subscriptions (decided subscribe "
                                 "frames not yet completed).", ("route", "tenant"), registry=registry,
                                 multiprocess_mode="livesum")

    # -- the request path -------------------------------------------------------------------------

    def hit(self, path: str, tenant: str | None, profile: str) -> None:
        """Count one admitted request (~0.2 µs)."""
        key = (self.routes(path), self._tenants.get(tenant, OTHER), profile)
        counts = self._counts
        counts[key] = counts.get(key, 0) + 1

    def opened(self, path: str, tenant: str | None) -> None:
        """One subscription more is open (a decided subscribe frame, or a non-GraphQL WebSocket)."""
        key = (self.routes(path), self._tenants.get(tenant, OTHER))
        self._open[key] = self._open.get(key, 0) + 1

    def closed(self, path: str, tenant: str | None) -> None:
        """One subscription ended (completed by either side, or its socket closed)."""
        key = (self.routes(path), self._tenants.get(tenant, OTHER))
        self._open[key] = max(0, self._open.get(key, 0) - 1)

    def tracker(self, path: str, tenant: str | None) -> SubscriptionTracker:
        """The open subscriptions of one WebSocket connection."""
        return SubscriptionTracker(self, path, tenant)

    # -- the background tick ----------------------------------------------------------------------

    def tick(self, now: float) -> dict[str, float]:
        """Fold the counts since the last tick into the metrics and the EWMAs; the demand per profile."""
        counts, self._counts = self._counts, {}
        for key, n in counts.items():
            self._requests.labels(*key).inc(n)
        elapsed = None if self._last is None or now <= self._last else now - self._last
        self._last = now
        samples: dict[Key, float] = {k: 0.0 for k in self._ewma}
        if elapsed:
            for key, n in counts.items():
                samples[key] = n / elapsed
        for (route, tenant), n in list(self._open.items()):
            samples[(route, tenant, SUBSCRIPTION)] = float(n)
            self._open_gauge.labels(route, tenant).set(n)
        weight = 1.0 if not elapsed else 1 - 0.5 ** (elapsed / self._half_life)
        for key, sample in samples.items():
            if key[2] != SUBSCRIPTION and elapsed is None:
                continue  # the first tick has no interval to rate over
            old = self._ewma.get(key)
            value = sample if old is None else old + weight * (sample - old)
            self._ewma[key] = value
            self._rate.labels(*key).set(value)
        return self.demand()

    def demand(self) -> dict[str, float]:
        """EWMA demand per profile, summed over routes and tenants (req/s; open subscriptions)."""
        total = dict.fromkeys(PROFILES, 0.0)
        for (_, _, profile), value in self._ewma.items():
            total[profile] = total.get(profile, 0.0) + value
        return total

    def snapshot(self) -> dict[str, Any]:
        """Current EWMA per (route, tenant, profile) and open subscriptions, for the admin endpoint."""
        return {
            "rate": [
                {"route": r, "tenant": t, "profile": p, "value": v} for (r, t, p), v in self._ewma.items()
            ],
            "subscriptions_open": [{"route": r, "tenant": t, "open": n} for (r, t), n in self._open.items()],
        }


_ENDS = frozenset({"complete", "stop"})  # graphql-transport-ws `complete` (either side), graphql-ws `stop`


class SubscriptionTracker:
    """One WebSocket's open subscriptions (middleware/websocket.py): a decided `subscribe`/`start` frame with
    a subscription opens one; a `complete` from either side or a client `stop` for its id, or the socket's
    end, closes it. A WebSocket on a non-GraphQL path is one subscription while open (`whole_socket()`)."""

    __slots__ = ("_ids", "_meter", "_path", "_tenant", "_whole")

    def __init__(self, meter: DemandMeter, path: str, tenant: str | None) -> None:
        self._meter, self._path, self._tenant = meter, path, tenant
        self._ids: set[str] = set()
        self._whole = False

    def whole_socket(self) -> None:
        self._whole = True
        self._meter.opened(self._path, self._tenant)

    def started(self, op_id: str) -> None:
        if op_id not in self._ids:
            self._ids.add(op_id)
            self._meter.opened(self._path, self._tenant)

    def client_frame(self, kind: object, op_id: object) -> None:
        if kind in _ENDS and op_id in self._ids:
            self._end(op_id)  # type: ignore[arg-type]

    def server_message(self, message: dict[str, Any]) -> None:
        """Look at a frame the app sends only while a subscription is open, and only at a `complete`."""
        if not self._ids:
            return
        text = message.get("text")
        if text is None or '"complete"' not in text:
            return
        try:
            frame = json.loads(text)
        except ValueError:
            return
        if isinstance(frame, dict) and frame.get("type") == "complete" and frame.get("id") in self._ids:
            self._end(frame["id"])

    def _end(self, op_id: str) -> None:
        self._ids.discard(op_id)
        self._meter.closed(self._path, self._tenant)

    def close_all(self) -> None:
        for op_id in list(self._ids):
            self._end(op_id)
        if self._whole:
            self._whole = False
            self._meter.closed(self._path, self._tenant)
