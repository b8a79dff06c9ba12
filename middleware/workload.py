"""The gate's workload side: tenant caps and demand on the request path, recommendations in the background.

`Workload.admit(tenant, profile, path)` is the one call the gate makes per request, once the tenant and
the profile are known: the tenant's bucket (middleware/caps.py) and, when admitted, the demand count
(middleware/demand.py). A daemon thread (`start()`/`close()`) runs `tick()` every `autoscale.tick_s`:
EWMAs, the recommenders (middleware/autoscale.py) and their gauges, and the Redis sync of the caps
every `caps.SYNC_S`. The recommenders see demand that passed the caps, so a tenant over its cap adds
at most its cap to the fleet.

KEDA asks one process behind a Service, but demand is spread over every process of every replica: with
`risk_store.redis_url` set each tick publishes this process's demand (hash `ig-gate:demand`, one field
per process, with its time) and recommends from the sum of every fresh entry (younger than
`3 * tick_s`), so any process answers for the fleet. Without Redis a process recommends from its own
demand: right for one process only (documented in docs/autoscaling.md).

Metrics (beside the exporter's): `ig_gate_autoscale_desired_replicas{component}`,
`ig_gate_autoscale_raw_replicas{component}`, `ig_gate_autoscale_demand{component,profile}`,
`ig_gate_autoscale_forecast{component,profile}`, `ig_gate_autoscale_scale_events_total{component,
direction}`, `ig_gate_autoscale_thrash_total{component}`, `ig_gate_autoscale_held_total{component,
reason}`, `ig_gate_profile_dominant{component,profile}`, `ig_gate_tenant_over_cap_total{tenant,profile}`,
`ig_gate_tenant_cap_qps{tenant,profile}`, `ig_gate_caps_redis_synced`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from ig_gate.middleware.autoscale import Recommendation, Recommender, recommenders
from ig_gate.middleware.caps import SYNC_S, TenantCaps
from ig_gate.middleware.demand import DemandMeter, RouteLabels
from ig_gate.middleware.metrics import OTHER, PREFIX, label_table
from ig_gate.middleware.settings import Settings

log = logging.getLogger("ig_gate.workload")
DEMAND_KEY = "ig-gate:demand"  # one field per process: its demand and when it was published


class Workload:
    """Caps, demand and recommendations of one gate (one process)."""

    def __init__(self, settings: Settings, registry: CollectorRegistry, redis: Any = None) -> None:
        auto = settings.autoscale
        self.tick_s = auto.tick_s
        tenants = settings.metrics.tenants
        self.caps = TenantCaps(settings.tenants, redis)
        self._redis = redis
        self._process = self.caps.process_id
        self.meter = DemandMeter(
            registry, RouteLabels(settings.graphql.paths, auto.routes), tenants, auto.ewma_half_life_s
        )
        self.recommenders: dict[str, Recommender] = recommenders(auto)
        self._tenant_label = label_table(tenants)
        self._metrics(registry)
        self._seen_refused: dict[tuple[str, str], int] = dict.fromkeys(self.caps.refused, 0)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # tick() from the thread and from tests/admin
        self._demand_shared = True

    def _metrics(self, reg: CollectorRegistry) -> None:
        def gauge(name: str, doc: str, labels: Iterable[str] = ()) -> Gauge:
            return Gauge(PREFIX + name, doc, tuple(labels), registry=reg, multiprocess_mode="livemax")

        self._desired = gauge("autoscale_desired_replicas", "Replicas recommended (what KEDA reads).",
                              ("component",))
        self._raw = gauge("autoscale_raw_replicas", "Replicas from planned demand alone, before "
                          "hysteresis, cooldowns and step limits.", ("component",))
        self._demand = gauge("autoscale_demand", "Demand the recommender used (req/s; open "
                             "subscriptions), tenants capped.", ("component", "profile"))
        self._forecast = gauge("autoscale_forecast", "Planned demand: max(demand, Holt forecast, "
                               "scheduled event).", ("component", "profile"))
        self._dominant = gauge("profile_dominant", "1 for the profile taking the largest share of the "
                               "component's pods, else 0.", ("component", "profile"))
        self._events = Counter(PREFIX + "autoscale_scale_events", "Changes of the recommendation.",
                               ("component", "direction"), registry=reg)
        self._thrash = Counter(PREFIX + "autoscale_thrash", "Recommendation direction changes inside the "
                               "cooldown.", ("component",), registry=reg)
        self._held = Counter(PREFIX + "autoscale_held", "Raw recommendations not applied, by reason.",
                             ("component", "reason"), registry=reg)
        self._over_cap = Counter(PREFIX + "tenant_over_cap", "Requests refused 429 over the tenant's cap.",
                                 ("tenant", "profile"), registry=reg)
        cap_gauge = gauge("tenant_cap_qps", "Configured tenant cap (requests/s).", ("tenant", "profile"))
        for (tenant, profile), cap in self.caps.caps.items():
            cap_gauge.labels(self._tenant_label.get(tenant, OTHER), profile).set(cap)
        self._synced = gauge("caps_redis_synced", "1 while the Redis sync of tenant caps works, else 0.")

    # -- the request path -------------------------------------------------------------------------

    def admit(self, tenant: str | None, profile: str, path: str) -> bool:
        """False when the tenant is over its cap for this profile; else the request is counted."""
        if not self.caps.take(tenant, profile):
            return False
        self.meter.hit(path, tenant, profile)
        return True

    # -- the background tick ----------------------------------------------------------------------

    def tick(self, now: float | None = None) -> dict[str, Recommendation]:
        """Fold demand, recommend for every component, update the gauges (the thread calls this)."""
        with self._lock:
            now = time.time() if now is None else now
            demand = self._fleet_demand(now, self.meter.tick(now))
            out = {}
            for name, recommender in self.recommenders.items():
                previous = recommender.replicas
                rec = out[name] = recommender.update(now, demand)
                self._export(rec, previous)
            for key, count in self.caps.refused.items():
                if count > self._seen_refused[key]:
                    tenant, profile = key
                    self._over_cap.labels(self._tenant_label.get(tenant, OTHER), profile).inc(
                        count - self._seen_refused[key]
                    )
                    self._seen_refused[key] = count
            return out

    def _fleet_demand(self, now: float, own: dict[str, float]) -> dict[str, float]:
        """The sum of every process's fresh demand through Redis (own demand alone without Redis, or when
        Redis fails: logged once per failure streak)."""
        if self._redis is None:
            return own
        try:
            self._redis.hset(DEMAND_KEY, self._process, json.dumps({"at": now, "demand": own}))
            self._redis.expire(DEMAND_KEY, max(60, int(10 * self.tick_s)))
            entries = self._redis.hgetall(DEMAND_KEY)
        except Exception as exc:  # redis.RedisError, OSError
            if self._demand_shared:
                log.warning("ig-gate autoscale: Redis unreachable, recommending from this process's demand "
                            "(%s)", type(exc).__name__)
            self._demand_shared = False
            return own
        self._demand_shared = True
        total = dict.fromkeys(own, 0.0)
        stale = []
        for process, raw in entries.items():
            entry = json.loads(raw)
            if now - entry["at"] > 3 * self.tick_s:
                stale.append(process)
                continue
            for profile, value in entry["demand"].items():
                total[profile] = total.get(profile, 0.0) + value
        if stale:
            self._redis.hdel(DEMAND_KEY, *stale)
        return total

    def _export(self, rec: Recommendation, previous: int) -> None:
        c = rec.component
        self._desired.labels(c).set(rec.replicas)
        self._raw.labels(c).set(rec.raw_replicas)
        for profile, value in rec.demand.items():
            self._demand.labels(c, profile).set(value)
            self._forecast.labels(c, profile).set(rec.planned[profile])
            self._dominant.labels(c, profile).set(1 if profile == rec.dominant else 0)
        if previous and rec.replicas != previous:
            self._events.labels(c, "up" if rec.replicas > previous else "down").inc()
        if rec.thrash:
            self._thrash.labels(c).inc()
        if rec.held is not None:
            self._held.labels(c, rec.held).inc()

    def recommendation(self, component: str) -> Recommendation | None:
        """The latest recommendation for a component (None before the first tick); KeyError if unknown."""
        return self.recommenders[component].last

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the tick thread (idempotent)."""
        if self._thread is not None:
            return
        self.tick()  # a recommendation exists from the start
        self._thread = threading.Thread(target=self._run, name="ig-gate-workload", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        next_tick = time.monotonic() + self.tick_s
        while not self._stop.wait(SYNC_S):
            self.caps.sync()
            if self.caps.synced is not None:
                self._synced.set(1 if self.caps.synced else 0)
            if time.monotonic() >= next_tick:
                next_tick += self.tick_s
                try:
                    self.tick()
                except Exception:  # never end the thread: the gauges keep their last values
                    log.exception("ig-gate autoscale: tick failed")

    def close(self) -> None:
        """Stop the tick thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
