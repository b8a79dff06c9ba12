"""An upstream of fixed capacity for the tenant-caps load test: every request holds one of SLOTS slots for
SERVICE_MS milliseconds (a backend with a bounded worker pool, e.g. a database pool), then answers 200 `{}`.
Waiting costs no CPU (the slot is held across an `asyncio.sleep`), so on a shared 2-core machine the harm
of excess load shows up as queueing at this backend, as in production, not as CPU contention.

Run: `python -m uvicorn --factory tests.sidecar.capacity_upstream:app` with SLOTS and SERVICE_MS set.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.support.procs import free_port, running

REPO = Path(__file__).resolve().parents[2]


def app() -> Any:
    """The ASGI app (uvicorn `--factory`)."""
    slots = asyncio.Semaphore(int(os.environ["SLOTS"]))
    service_s = float(os.environ["SERVICE_MS"]) / 1000

    async def serve(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        async with slots:
            await asyncio.sleep(service_s)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"{}"})

    return serve


@contextlib.contextmanager
def capacity_upstream(workdir: Path, slots: int, service_ms: float, cpus: str | None = None) -> Iterator[str]:
    """This upstream on a free port (pinned to `cpus` when given and taskset exists), stopped by PID; yields
    its URL."""
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", "--factory", "tests.sidecar.capacity_upstream:app", "--host",
            "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log"]
    taskset = shutil.which("taskset")
    if cpus is not None and taskset is not None:
        argv = [taskset, "-c", cpus, *argv]
    env = {"SLOTS": str(slots), "SERVICE_MS": str(service_ms)}
    with running(argv, port=port, log=workdir / "upstream.log", env=env, cwd=REPO):
        yield f"http://127.0.0.1:{port}"
