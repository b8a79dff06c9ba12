"""Writes the shipped autoscaling traces (deploy/traces/*.csv), deterministic (seeded).

Each trace is per minute, per tenant and profile (`minute,tenant,profile,requests`), for the `gateway`
component of deploy/traces/autoscale.yaml (600 reads/s, 200 writes/s per pod):
- swing.csv: 8 h, demand swings ±20 % around 15 pods' worth (4 h period) with ±0.5 % minute noise;
- spike.csv: 4 h at ~10 pods' worth with a sudden 3x spike for 15 minutes at minute 120;
- scheduled-event.csv: 5 h at ~8 pods' worth; the calendar event of autoscale.yaml (2.5x) runs from
  minute 180 to 240 (replay with --start 2026-12-24T15:00:00Z);
- noisy-tenant.csv: 4 h at ~10 pods' worth; tenant `noisy` sends 3000 reads/s from minute 60 to 180,
  far over its cap of 200/s.

Run: python bench/autoscale_traces.py [OUT_DIR]
"""

from __future__ import annotations

import csv
import math
import random
import sys
from pathlib import Path

TENANTS = {"acme": 0.6, "globex": 0.4}  # share of the base demand


def rows(minutes: int, level, seed: int, noise: float = 0.02):  # level(minute) -> (reads/s, writes/s)
    """`minute,tenant,profile,requests` rows: each tenant's share of `level`, with Gaussian minute noise."""
    rng = random.Random(seed)
    for m in range(minutes):
        reads, writes = level(m)
        for tenant, share in TENANTS.items():
            for profile, rate in (("read", reads), ("write", writes)):
                value = rate * share * 60 * (1 + rng.gauss(0, noise))
                yield m, tenant, profile, round(max(value, 0))


def swing(m: int) -> tuple[float, float]:
    """±20 % around 15 pods' worth (6000 reads/s, 1000 writes/s), a 4 h period."""
    return tuple(x * (1 + 0.2 * math.sin(2 * math.pi * m / 240)) for x in (6000, 1000))


def spike(m: int) -> tuple[float, float]:
    """~10 pods' worth, 3x for 15 minutes from minute 120."""
    return tuple(x * (3 if 120 <= m < 135 else 1) for x in (4200, 600))


def event(m: int) -> tuple[float, float]:
    """~8 pods' worth, 2.5x from minute 180 to 240."""
    return tuple(x * (2.5 if 180 <= m < 240 else 1) for x in (3000, 700))


def write(path: Path, trace_rows) -> None:
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["minute", "tenant", "profile", "requests"])
        out.writerows(trace_rows)


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write(out / "swing.csv", rows(480, swing, 1, noise=0.005))
    write(out / "spike.csv", rows(240, spike, 2))
    write(out / "scheduled-event.csv", rows(300, event, 3))
    flat = list(rows(240, lambda m: (4200, 600), 4))
    flat += [(m, "noisy", "read", 3000 * 60) for m in range(60, 180)]
    write(out / "noisy-tenant.csv", sorted(flat))


if __name__ == "__main__":
    default = Path(__file__).resolve().parents[1] / "deploy" / "traces"
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else default)
