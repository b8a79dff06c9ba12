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
        steps = "; ".join(f"{step} {share:.1%}" for step, share in profile.steps.items())
        lines += [f"  - by step (exclusive): {steps}"]
    return "\n".join(lines)


def profile_json(profile: Profile, count: int = 25) -> dict:
    return {
        "samples": profile.samples,
        "threads": {k: round(v, 4) for k, v in profile.threads.items()},
        "top_own_functions": {k: round(v, 4) for k, v in profile.top(count)},
        "steps": {k: round(v, 4) for k, v in profile.steps.items()},
    }


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def plot(modes: Mapping[str, Sequence[ConfigSummary]], path: Path, title: str) -> Path:
    """A PNG: throughput bars at saturation, latency percentiles per config for each mode, and the
    server CPU time per request."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [m for m in (SATURATION, FIXED_RATE) if modes.get(m)]
    fig, axes = plt.subplots(1, 2 + len(panels), figsize=(10 + 5 * len(panels), 4.2), squeeze=False)
    saturation = modes.get(SATURATION) or []
    ax = axes[0][0]
    _bars(ax, range(len(saturation)), [s.rps for s in saturation], 0.8, capsize=4)
    _axis(ax, [s.name for s in saturation], "requests/s", "throughput at saturation (median, min-max)")
    for i, mode in enumerate(panels, start=1):
        summaries = modes[mode]
        for j, p in enumerate(PERCENTILES):
            _bars(axes[0][i], _offsets(len(summaries), j, len(PERCENTILES)),
                  [s.latency_ms[p] for s in summaries], 0.8 / len(PERCENTILES), label=p)  # fmt: skip
        _axis(axes[0][i], [s.name for s in summaries], "ms", f"latency, {mode.replace('_', ' ')}")
    cpu = {m: [(s.name, s.cpu_us) for s in modes[m] if s.cpu_us is not None] for m in panels}
    for j, (mode, pairs) in enumerate(cpu.items()):
        _bars(axes[0][-1], _offsets(len(pairs), j, len(cpu)), [spread for _, spread in pairs],
              0.8 / len(cpu), label=mode.replace("_", " "))  # fmt: skip
    names = [name for name, _ in next(iter(cpu.values()), [])]
    _axis(axes[0][-1], names, "µs", "server CPU time per request")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _offsets(count: int, index: int, groups: int) -> list[float]:
    width = 0.8 / groups
    return [i + (index - (groups - 1) / 2) * width for i in range(count)]


def _bars(
    ax: Axes, xs: Sequence[float], spreads: Sequence[Spread], width: float, label: str | None = None,
    capsize: int = 2,
) -> None:  # fmt: skip
    errors = [[s.median - s.low for s in spreads], [s.high - s.median for s in spreads]]
    ax.bar(xs, [s.median for s in spreads], width, yerr=errors, capsize=capsize, label=label)


def _axis(ax: Axes, names: Sequence[str], unit: str, title: str) -> None:
    ax.set_xticks(range(len(names)), names, rotation=20)
    ax.set_ylabel(unit)
    ax.set_title(title)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
