"""Run wrk with bench/wrk/mix.lua (pinned to a CPU when possible); parse the JSON line its done() prints."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).resolve().parent / "wrk" / "mix.lua"
MARKER = "IGBENCH "


class WrkError(RuntimeError):
    """wrk is missing, failed, or printed no result line."""


@dataclass(frozen=True, slots=True)
class WrkResult:
    """One wrk run: completed requests, duration, latency percentiles (µs), status counts, socket errors."""

    requests: int
    duration_s: float
    latency_us: Mapping[str, float]
    statuses: Mapping[int, int]
    errors: Mapping[str, int] = field(default_factory=dict)
    server_cpu_s: float | None = None  # CPU time the server process used during the run, when measured

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    def latency_ms(self, percentile: str) -> float:
        return self.latency_us[percentile] / 1000.0

    @property
    def cpu_us_per_request(self) -> float | None:
        if self.server_cpu_s is None or not self.requests:
            return None
        return self.server_cpu_s * 1e6 / self.requests

    @property
    def socket_errors(self) -> int:
        return sum(v for k, v in self.errors.items() if k != "status")

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "duration_s": round(self.duration_s, 3),
            "rps": round(self.rps, 1),
            "latency_us": dict(self.latency_us),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "errors": dict(self.errors),
            "server_cpu_s": self.server_cpu_s,
        }


def parse(output: str) -> WrkResult:
    """The result from wrk's stdout (the line starting with MARKER)."""
    for line in output.splitlines():
        if line.startswith(MARKER):
            raw = json.loads(line[len(MARKER) :])
            return WrkResult(
                requests=int(raw["requests"]),
                duration_s=raw["duration_us"] / 1e6,
                latency_us={k: float(v) for k, v in raw["latency_us"].items()},
                statuses={int(k): int(v) for k, v in raw["statuses"].items()},
                errors={k: int(v) for k, v in raw["errors"].items()},
            )
    raise WrkError(f"wrk printed no {MARKER.strip()} line; output was:\n{output[-1500:]}")


def pin_prefix(cpu: int) -> list[str]:
    """`taskset -c CPU` when taskset exists and the CPU is ours to use; else nothing (unpinned)."""
    if shutil.which("taskset") and cpu in os.sched_getaffinity(0):
        return ["taskset", "-c", str(cpu)]
    return []


def run_wrk(
    url: str,
    pool: Path,
    *,
    duration_s: float,
    connections: int,
    threads: int = 1,
    rate: float | None = None,
    cpu: int | None = 1,
    timeout_s: float = 5.0,
) -> WrkResult:
    """One wrk run against `url` cycling through the Lua request pool `pool`; `rate` is the target
    total requests/s (closed-loop pacing, see mix.lua) or None for saturation."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise WrkError("wrk is not installed (Debian: apt-get install wrk; `make bench` does it)")
    argv = [
        *(pin_prefix(cpu) if cpu is not None else []),
        wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration_s))}s",
        f"--timeout={timeout_s:g}s",
        "-s",
        str(SCRIPT),
        url,
    ]
    env = {**os.environ, "IG_BENCH_POOL": str(pool)}
    if rate is not None:
        env["IG_BENCH_RATE"] = f"{rate / threads:.3f}"
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=duration_s + 60)
    if done.returncode != 0:
        raise WrkError(f"wrk exited with {done.returncode}: {done.stderr.strip()[-1000:]}")
    return parse(done.stdout)
