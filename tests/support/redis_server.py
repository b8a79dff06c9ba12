"""A real `redis-server` (Debian) on a free loopback port, with its own throwaway config; stopped by PID."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

from tests.support.procs import free_port, running


@contextlib.contextmanager
def redis_server(workdir: Path) -> Iterator[str]:
    """Run redis-server (no persistence, loopback only) in workdir; yields its redis:// URL."""
    with redis_server_process(workdir) as (url, _):
        yield url


@contextlib.contextmanager
def redis_server_process(workdir: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """redis_server() that also yields the process (a test may pause it with SIGSTOP / SIGCONT)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (Debian package redis-server; `make test` has it)")
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    argv = [
        binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
        "--dir", str(workdir), "--protected-mode", "yes", "--daemonize", "no",
    ]
    with running(argv, port=port, log=workdir / "redis.log") as process:
        yield f"redis://127.0.0.1:{port}/0", process
