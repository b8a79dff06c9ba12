"""Serve a bench/targets.py factory with uvicorn (uvloop, httptools, one worker, access log off) as a
subprocess on a free loopback port, optionally pinned to one CPU; stopped by PID."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.wrkrun import pin_prefix
from tests.support.procs import free_port, running

REPO = Path(__file__).resolve().parent.parent


def uvicorn_argv(factory: str, port: int, cpu: int | None = None) -> list[str]:
    """The command line serving `bench.targets:<factory>` on 127.0.0.1:port."""
    return [
        *(pin_prefix(cpu) if cpu is not None else []),
        sys.executable, "-m", "uvicorn", "--factory", f"bench.targets:{factory}",
        "--app-dir", str(REPO), "--host", "127.0.0.1", "--port", str(port),
        "--loop", "uvloop", "--http", "httptools", "--workers", "1",
        "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip


@dataclass(frozen=True, slots=True)
class Target:
    """A served app: its base URL and the PID of its (single) server process."""

    url: str
    pid: int

    def cpu_seconds(self) -> float:
        """User + system CPU time the server has used so far: its process (all threads) and its live child
        processes (the decision-log writer process), so that work moved out of the server still counts."""
        return sum(_process_cpu_s(pid) for pid in (self.pid, *_children(self.pid)))


def _process_cpu_s(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:  # a child that has just exited
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def _children(pid: int) -> list[int]:
    """The PIDs of pid's live descendants (via /proc/PID/task/*/children)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            direct = [int(child) for child in task.read_text().split()]
        except FileNotFoundError:
            continue
        for child in direct:
            found += [child, *_children(child)]
    return found


@contextlib.contextmanager
def serve_target(factory: str, env: dict[str, str], log: Path, cpu: int | None = None) -> Iterator[Target]:
    """Run the factory's app until the block ends (taskset execs uvicorn: the PID is the server's)."""
    port = free_port()
    argv = uvicorn_argv(factory, port, cpu)
    with running(argv, port=port, log=log, env=env, cwd=REPO, timeout_s=60) as process:
        yield Target(f"http://127.0.0.1:{port}", process.pid)
