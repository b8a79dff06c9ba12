"""Medians over rounds with min-max spread, and ratios against the bare app paired round by round."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bench.wrkrun import WrkResult

BASELINE = "bare"
PERCENTILES = ("p50", "p95", "p99")


@dataclass(frozen=True, slots=True)
class Spread:
    """A median with the smallest and largest value it was taken over."""

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        if not values:
            raise ValueError("Spread.of: no values")
        return cls(statistics.median(values), min(values), max(values))

    def to_json(self) -> dict[str, float]:
        return {"median": round(self.median, 4), "min": round(self.low, 4), "max": round(self.high, 4)}


@dataclass(frozen=True, slots=True)
class ConfigSummary:
    """One config in one mode: absolute figures, and (except for the baseline) figures against it."""

    name: str
    rps: Spread
    latency_ms: Mapping[str, Spread]
    throughput_ratio: Spread | None
    added_ms: Mapping[str, Spread]
    statuses: Mapping[int, int]
    socket_errors: int
    cpu_us: Spread | None = None  # server CPU time per request
    added_cpu_us: Spread | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "rps": self.rps.to_json(),
            "latency_ms": {k: v.to_json() for k, v in self.latency_ms.items()},
            "throughput_ratio": self.throughput_ratio.to_json() if self.throughput_ratio else None,
            "added_ms": {k: v.to_json() for k, v in self.added_ms.items()},
            "cpu_us_per_request": self.cpu_us.to_json() if self.cpu_us else None,
            "added_cpu_us_per_request": self.added_cpu_us.to_json() if self.added_cpu_us else None,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "socket_errors": self.socket_errors,
        }


def _paired(
    runs: Sequence[WrkResult], baseline: Sequence[WrkResult], value: Callable[[WrkResult, WrkResult], float]
) -> Spread:
    return Spread.of([value(run, base) for run, base in zip(runs, baseline, strict=True)])


def summarize(rounds: Mapping[str, Sequence[WrkResult]], baseline: str = BASELINE) -> list[ConfigSummary]:
    """Per config, in the order given: medians over rounds; ratios and added latency against `baseline`
    computed within each round (interleaved runs share the machine's state) and then summarized."""
    base = rounds.get(baseline)
    summaries = []
    for name, runs in rounds.items():
        compare = base is not None and name != baseline
        statuses: dict[int, int] = {}
        for run in runs:
            for status, count in run.statuses.items():
                statuses[status] = statuses.get(status, 0) + count
        summaries.append(
            ConfigSummary(
                name=name,
                rps=Spread.of([r.rps for r in runs]),
                latency_ms={p: Spread.of([r.latency_ms(p) for r in runs]) for p in PERCENTILES},
                throughput_ratio=_paired(runs, base, lambda r, b: r.rps / b.rps) if compare else None,
                added_ms={
                    p: _paired(runs, base, lambda r, b, p=p: r.latency_ms(p) - b.latency_ms(p))
                    for p in PERCENTILES
                }
                if compare
                else {},
                statuses=statuses,
                socket_errors=sum(r.socket_errors for r in runs),
                cpu_us=_cpu(runs),
                added_cpu_us=_added_cpu(runs, base) if compare else None,
            )
        )
    return summaries


def _cpu(runs: Sequence[WrkResult]) -> Spread | None:
    values = [v for r in runs if (v := r.cpu_us_per_request) is not None]
    return Spread.of(values) if values and len(values) == len(runs) else None


def _added_cpu(runs: Sequence[WrkResult], base: Sequence[WrkResult] | None) -> Spread | None:
    pairs = [(r.cpu_us_per_request, b.cpu_us_per_request) for r, b in zip(runs, base or (), strict=False)]
    added = [r - b for r, b in pairs if r is not None and b is not None]
    return Spread.of(added) if base and len(added) == len(runs) else None


def unexpected_statuses(summary: ConfigSummary, expected: set[int]) -> dict[int, int]:
    """Statuses seen that no request of the config's pool expects (e.g. 500, or 401 on the allow path)."""
    return {status: n for status, n in summary.statuses.items() if status not in expected}
