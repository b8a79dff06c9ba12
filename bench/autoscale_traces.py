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


def _rows(minutes: int, level, seed: int, noise: float = 0.02):  # level(minute) -> (reads/s, writes/s)
    rng = random.Random(seed)
    for m in range(minutes):
        reads, writes = level(m)
        for tenant, share in TENANTS.items():
            for profile, rate in (("read", reads), ("write", writes)):
                value = rate * share * 60 * (1 + rng.gauss(0, noise))
                yield m, tenant, profile, round(max(value, 0))


def _write(path: Path, rows) -> None:
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["minute", "tenant", "profile", "requests"])
        out.writerows(rows)


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    swing = lambda m: tuple(x * (1 + 0.2 * math.sin(2 * math.pi * m / 240)) for x in (6000, 1000))  # noqa: E731
    _write(out / "swing.csv", _rows(480, swing, 1, noise=0.005))
    spike = lambda m: (4200 * (3 if 120 <= m < 135 else 1), 600 * (3 if 120 <= m < 135 else 1))  # noqa: E731
    _write(out / "spike.csv", _rows(240, spike, 2))
    event = lambda m: (3000 * (2.5 if 180 <= m < 240 else 1), 700 * (2.5 if 180 <= m < 240 else 1))  # noqa: E731
    _write(out / "scheduled-event.csv", _rows(300, event, 3))
    flat = lambda m: (4200, 600)  # noqa: E731
    rows = list(_rows(240, flat, 4))
    rows += [(m, "noisy", "read", 3000 * 60) for m in range(60, 180)]
    _write(out / "noisy-tenant.csv", sorted(rows))


if __name__ == "__main__":
    default = Path(__file__).resolve().parents[1] / "deploy" / "traces"
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else default)
