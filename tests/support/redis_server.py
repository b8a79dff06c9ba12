"""A real `redis-server` (Debian) on a free loopback port, with its own throwaway config; stopped by PID."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

from tests.support.procs import free_port, running


@contextlib.contextmanager
def redis_server(workdir: Path) -> Iterator[str]:
    """Run redis-server (no persistence, loopback only) in workdir; yields its redis:// URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (Debian package redis-server; `make test` has it)")
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    argv = [
        binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
        "--dir", str(workdir), "--protected-mode", "yes", "--daemonize", "no",
    ]
    with running(argv, port=port, log=workdir / "redis.log"):
        yield f"redis://127.0.0.1:{port}/0"
