"""Real processes on loopback for integration tests: free ports, readiness polling, stop by PID."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate: Callable[[], bool], timeout_s: float = 15.0, what: str = "condition") -> None:
    """Poll predicate until it is true or the deadline passes (then raise TimeoutError)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise TimeoutError(f"timed out after {timeout_s}s waiting for {what}")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """True when something accepts TCP connections on host:port."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
        return True
    return False


@contextlib.contextmanager
def running(
    argv: Sequence[str], *, port: int, log: Path, env: dict | None = None, cwd: Path | None = None,
    timeout_s: float = 20.0,
) -> Iterator[subprocess.Popen]:
    """Start argv, wait until it listens on port, yield it, then stop it by PID (TERM, then KILL)."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            list(argv), stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
            cwd=cwd, start_new_session=True,
        )
    try:
        def ready() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"{argv[0]} exited with {proc.returncode}: {log.read_text()[-2000:]}")
            return port_open(port)

        wait_until(ready, timeout_s, f"{argv[0]} on port {port}")
        yield proc
    finally:
        stop(proc)


def stop(proc: subprocess.Popen, timeout_s: float = 5.0) -> None:
    """Stop a process group started by running(): SIGTERM, wait, then SIGKILL."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
