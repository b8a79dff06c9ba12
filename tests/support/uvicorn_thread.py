"""Serve an ASGI app with a real uvicorn server on a loopback port, in a thread of the test process (so a
test can reach into the app it serves: its gate, its policy source, its risk store)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import uvicorn

from tests.support.procs import free_port, wait_until


@contextlib.contextmanager
def serve_in_thread(app: Any, timeout_s: float = 10.0) -> Iterator[str]:
    """Run `app` (lifespan on) on 127.0.0.1:<free port>; yields "127.0.0.1:<port>"; stopped at exit."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="on", log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started or not thread.is_alive(), timeout_s, f"uvicorn on port {port}")
        if not thread.is_alive():
            raise RuntimeError(f"uvicorn on port {port} exited during startup")
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout_s)
