"""Render benchmark summaries: Markdown tables and a matplotlib PNG (throughput bars, latency percentiles)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from bench.profiling import Profile
from bench.summary import PERCENTILES, ConfigSummary, Spread

SATURATION = "saturation"
FIXED_RATE = "fixed_rate"
CPU_HEAD = ("server CPU µs/req", "added CPU µs/req")

if TYPE_CHECKING:
    from matplotlib.axes import Axes


def _cell(spread: Spread | None, digits: int = 2, signed: bool = False) -> str:
    if spread is None:
        return "—"
    fmt = f"{{:{'+' if signed else ''}.{digits}f}}"
    return f"{fmt.format(spread.median)} ({fmt.format(spread.low)} … {fmt.format(spread.high)})"


def saturation_table(summaries: Sequence[ConfigSummary]) -> str:
    """Closed-loop saturation: req/s and latency, with throughput ratio and added latency vs bare."""
    head = ["config", "req/s", "ratio vs bare", *(f"{p} ms" for p in PERCENTILES)]
    head += [f"added {p} ms" for p in PERCENTILES] + list(CPU_HEAD)
    rows = [
        [
            s.name,
            _cell(s.rps, 0),
            _cell(s.throughput_ratio, 3),
            *(_cell(s.latency_ms[p]) for p in PERCENTILES),
            *(_cell(s.added_ms.get(p), 2, signed=True) for p in PERCENTILES),
            *_cpu_cells(s),
        ]
        for s in summaries
    ]
    return _table(head, rows)


def fixed_rate_table(summaries: Sequence[ConfigSummary], rate: float) -> str:
    """Fixed request rate ("overhead at normal load"): latency and latency added to the bare app."""
    head = ["config", "target req/s", "achieved req/s", *(f"{p} ms" for p in PERCENTILES)]
    head += [f"added {p} ms" for p in PERCENTILES] + list(CPU_HEAD)
    rows = [
        [
            s.name,
            f"{rate:.0f}",
            _cell(s.rps, 0),
            *(_cell(s.latency_ms[p]) for p in PERCENTILES),
            *(_cell(s.added_ms.get(p), 3, signed=True) for p in PERCENTILES),
            *_cpu_cells(s),
        ]
        for s in summaries
    ]
    return _table(head, rows)


def _cpu_cells(summary: ConfigSummary) -> list[str]:
    return [_cell(summary.cpu_us, 0), _cell(summary.added_cpu_us, 0, signed=True)]


def profile_table(profiles: Mapping[str, Profile], count: int = 12) -> str:
    """Per profiled config: sample shares per thread and the ig-gate functions with the largest
    inclusive share (py-spy, one saturation run)."""
    lines = ["Profile (py-spy, one extra saturation run per config; share of samples, inclusive):", ""]
    for name, profile in profiles.items():
        threads = ", ".join(f"{thread} {share:.0%}" for thread, share in profile.threads.items())
        lines += [f"- **{name}** ({profile.samples} samples; threads: {threads})"]
        lines += [f"  - {share:5.1%} `{function}`" for function, share in profile.top(count)]
    return "\n".join(lines)


def profile_json(profile: Profile, count: int = 25) -> dict:
    return {
        "samples": profile.samples,
        "threads": {k: round(v, 4) for k, v in profile.threads.items()},
        "top_own_functions": {k: round(v, 4) for k, v in profile.top(count)},
    }


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def plot(modes: Mapping[str, Sequence[ConfigSummary]], path: Path, title: str) -> Path:
    """A PNG: throughput bars at saturation, then latency percentiles per config for each mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [m for m in (SATURATION, FIXED_RATE) if modes.get(m)]
    fig, axes = plt.subplots(1, 1 + len(panels), figsize=(5 + 5 * len(panels), 4.2), squeeze=False)
    saturation = modes.get(SATURATION) or []
    ax = axes[0][0]
    names = [s.name for s in saturation]
    medians = [s.rps.median for s in saturation]
    errors = [[s.rps.median - s.rps.low for s in saturation], [s.rps.high - s.rps.median for s in saturation]]
    ax.bar(names, medians, yerr=errors, capsize=4, color="#4c72b0")
    ax.set_title("throughput at saturation (median, min-max)")
    ax.set_ylabel("requests/s")
    ax.tick_params(axis="x", rotation=20)
    for i, mode in enumerate(panels, start=1):
        _latency_panel(axes[0][i], modes[mode], f"latency, {mode.replace('_', ' ')}")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _latency_panel(ax: Axes, summaries: Sequence[ConfigSummary], title: str) -> None:
    width = 0.8 / len(PERCENTILES)
    for j, p in enumerate(PERCENTILES):
        xs = [i + (j - (len(PERCENTILES) - 1) / 2) * width for i in range(len(summaries))]
        values = [s.latency_ms[p].median for s in summaries]
        spread = [
            [s.latency_ms[p].median - s.latency_ms[p].low for s in summaries],
            [s.latency_ms[p].high - s.latency_ms[p].median for s in summaries],
        ]
        ax.bar(xs, values, width, yerr=spread, capsize=2, label=p)
    ax.set_xticks(range(len(summaries)), [s.name for s in summaries], rotation=20)
    ax.set_ylabel("ms")
    ax.set_title(title)
    ax.legend()
