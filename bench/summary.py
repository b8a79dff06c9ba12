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

    def to_json(self) -> dict[str, Any]:
        return {
            "rps": self.rps.to_json(),
            "latency_ms": {k: v.to_json() for k, v in self.latency_ms.items()},
            "throughput_ratio": self.throughput_ratio.to_json() if self.throughput_ratio else None,
            "added_ms": {k: v.to_json() for k, v in self.added_ms.items()},
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
            )
        )
    return summaries


def unexpected_statuses(summary: ConfigSummary, expected: set[int]) -> dict[int, int]:
    """Statuses seen that no request of the config's pool expects (e.g. 500, or 401 on the allow path)."""
    return {status: n for status, n in summary.statuses.items() if status not in expected}
