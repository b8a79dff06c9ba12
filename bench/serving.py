"""Serve a bench/targets.py factory with uvicorn (uvloop, httptools, one worker, access log off) as a
subprocess on a free loopback port, optionally pinned to one CPU; stopped by PID."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
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


@contextlib.contextmanager
def serve_target(factory: str, env: dict[str, str], log: Path, cpu: int | None = None) -> Iterator[str]:
    """Run the factory's app until the block ends; yields its base URL."""
    port = free_port()
    with running(uvicorn_argv(factory, port, cpu), port=port, log=log, env=env, cwd=REPO, timeout_s=60):
        yield f"http://127.0.0.1:{port}"
