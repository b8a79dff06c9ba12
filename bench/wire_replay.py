"""The served benchmark's exact request pool, replayed in process: where the served gate's CPU goes.

Builds the demo config and the wire pool of bench/overhead.py (40 requests, 4 users, device attestations,
X-Forwarded-For), turns each request into the ASGI scope uvicorn would build for it (lower-cased header
names, Host and Content-Length as wrk sends them, a loopback peer) and drives the bench/targets.py apps
with them on one uvloop event loop, with no server and no sockets. Interleaved blocks of BLOCK requests per
app, REPEATS times; prints per app the serving thread's CPU per request (`time.thread_time`) and the whole
process's (`time.process_time`: background threads included), min and median over the blocks, the garbage
collections per 1000 requests, and the load average.

    python bench/wire_replay.py --repeats 20   # every app below
    python bench/wire_replay.py --apps middleware_nolog --profile /tmp/replay.prof   # cProfile one block

Apps: the factories of bench/targets.py, plus `gate_noop` (middleware_nolog in front of a no-op app: the
gate's own share), `noop` (the no-op app alone), and a control for how costs add up: `stdlib_noop` and
`stdlib` run targets.stdlib_work() (unrelated pure-Python stdlib calls, about the gate's own cost) before
the no-op app and the demo app. Measured 2026-12-03 (quiet, medians): gate_noop - noop +27 µs,
middleware_nolog - bare +42; stdlib_noop - noop +30, stdlib - bare +44. The ~15 µs more that either costs
in front of the real app is the interpreter's and the CPU's (a larger working set per request), not a step
of the gate; served (bench/overhead.py --configs bare,middleware-nolog,stdlib-control) both add ~45.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import gc
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python bench/wire_replay.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import uvloop
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from bench import targets
from bench.targets import after_stdlib_work
from bench.traffic import Mix, WireRequest, client_pool, wire_pool
from ig_gate.middleware.asgi import freeze_heap
from ig_gate.sidecar.demo import prepare

REPO = Path(__file__).resolve().parent.parent
PORT = 8000


def asgi_scope(request: WireRequest) -> tuple[dict[str, Any], bytes]:
    """The scope uvicorn (httptools) builds for `request` as wrk sends it, and its body."""
    body = request.body.encode()
    headers = [(b"host", f"127.0.0.1:{PORT}".encode())]
    headers += [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in request.headers]
    headers.append((b"content-length", str(len(body)).encode()))
    scope = {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"}, "http_version": "1.1",
        "server": ("127.0.0.1", PORT), "client": ("127.0.0.1", 40000), "scheme": "http",
        "method": request.method, "root_path": "", "path": request.path, "raw_path": request.path.encode(),
        "query_string": b"", "headers": headers, "state": {},
    }  # fmt: skip
    return scope, body


async def noop_app(scope: Any, receive: Any, send: Any) -> None:
    await receive()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


def build(name: str) -> Any:
    """The app `name` (see the module docstring), started as lifespan startup would, behind uvicorn's
    ProxyHeadersMiddleware as uvicorn serves it (X-Forwarded-For from 127.0.0.1 becomes the client)."""
    if name == "noop":
        return ProxyHeadersMiddleware(noop_app)
    if name in ("stdlib", "stdlib_noop"):
        return ProxyHeadersMiddleware(after_stdlib_work(targets.bare() if name == "stdlib" else noop_app))
    if name == "gate_noop":
        app = targets.middleware_nolog()
        app.app = noop_app
    else:
        app = getattr(targets, name)()
    system = getattr(app, "system", None)
    if system is not None:
        system.start()
    return ProxyHeadersMiddleware(app)


def _receiver(message: dict[str, Any]) -> Any:
    async def receive() -> dict[str, Any]:
        return message

    return receive


async def replay(app: Any, pool: list[tuple[dict[str, Any], bytes]], count: int, statuses: dict) -> None:
    """`count` requests of `pool` in turn through `app`, one after the other."""

    async def send(sent: dict[str, Any]) -> None:
        if sent["type"] == "http.response.start":
            statuses[sent["status"]] = statuses.get(sent["status"], 0) + 1

    for i in range(count):
        template, body = pool[i % len(pool)]
        # fresh bytes objects, as the server parses them for every request (no hash cached on them)
        headers = [(bytes(bytearray(name)), bytes(bytearray(value))) for name, value in template["headers"]]
        scope = {**template, "headers": headers, "state": {}}
        await app(
            scope,
            _receiver({"type": "http.request", "body": bytes(bytearray(body)), "more_body": False}),
            send,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--apps", default="bare,middleware_nolog,gate_noop,noop,stdlib,stdlib_noop")
    parser.add_argument("--block", type=int, default=2000, help="requests per timed block")
    parser.add_argument("--repeats", type=int, default=15, help="blocks per app (interleaved)")
    parser.add_argument(
        "--profile", type=Path, help="cProfile one more block of the first app into this file"
    )
    parser.add_argument("--no-freeze", action="store_true", help="do not freeze the heap after the warm-up")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ig-replay-") as tmp:
        with contextlib.redirect_stdout(io.StringIO()):  # ig-policy prints JSON for every step
            idp = prepare(Path(tmp) / "demo", REPO / "policies")
        os.environ[targets.CONFIG_ENV] = str(Path(tmp) / "demo" / "ig-gate.yaml")
        pool = [asgi_scope(r) for r in wire_pool(client_pool(idp, Mix()), "direct")]
        loop = uvloop.new_event_loop()
        apps = {name: build(name) for name in args.apps.split(",")}
        statuses: dict[str, dict[int, int]] = {name: {} for name in apps}
        for name, app in apps.items():  # warm: every token, attestation and memo entry seen once
            loop.run_until_complete(replay(app, pool, 4 * len(pool), statuses[name]))
        if not args.no_freeze:
            freeze_heap()
        collections: dict[str, int] = dict.fromkeys(apps, 0)
        current: list[str] = [""]

        def count_gc(phase: str, info: dict[str, Any]) -> None:
            if phase == "start":
                collections[current[0]] = collections.get(current[0], 0) + 1

        gc.callbacks.append(count_gc)
        cpu: dict[str, list[tuple[float, float]]] = {name: [] for name in apps}
        print(f"loadavg at start: {Path('/proc/loadavg').read_text().strip()}")
        for repeat in range(args.repeats):
            order = list(apps.items()) if repeat % 2 == 0 else list(apps.items())[::-1]
            for name, app in order:
                current[0] = name
                thread, process = time.thread_time(), time.process_time()
                loop.run_until_complete(replay(app, pool, args.block, statuses[name]))
                cpu[name].append(
                    (
                        (time.thread_time() - thread) / args.block * 1e6,
                        (time.process_time() - process) / args.block * 1e6,
                    )
                )
        gc.callbacks.remove(count_gc)
        print(f"loadavg at end: {Path('/proc/loadavg').read_text().strip()}")
        for name, rows in cpu.items():
            thread = [t for t, _ in rows]
            process = [p for _, p in rows]
            per_k = collections[name] / (args.repeats * args.block) * 1000
            print(
                f"{name:17s} thread µs/req min {min(thread):6.1f} median {statistics.median(thread):6.1f}"
                f" | process min {min(process):6.1f} median {statistics.median(process):6.1f}"
                f" | gc {per_k:.2f}/1000 req | statuses {dict(sorted(statuses[name].items()))}"
            )
        if args.profile:
            name = next(iter(apps))
            with cProfile.Profile() as profiler:
                loop.run_until_complete(replay(apps[name], pool, args.block, statuses[name]))
            profiler.dump_stats(args.profile)
            print(f"profile of {name}: {args.profile}")
        for app in apps.values():
            if hasattr(app.app, "system"):  # ZeroTrustMiddleware
                app.app.system.close()
        loop.close()


if __name__ == "__main__":
    main()
