"""A middleware that serves a file bundle loads none of the clients it does not use (OCI registry, Redis,
remote PDP, Sigstore, the proxy's websockets): checked in a fresh interpreter, after a decided request."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.middleware.conftest import World, query
from tests.support.sidecar import write_config

UNUSED_CLIENTS = ("oras", "requests", "urllib3", "redis", "opa_client", "aiohttp", "sigstore", "websockets")

CHILD = """
import asyncio, json, sys
from ig_gate.middleware import ZeroTrustMiddleware

async def app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})

async def one_request(middleware, headers, body):
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    sent = []
    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}
    async def send(message):
        sent.append(message)
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": "/graphql", "raw_path": b"/graphql", "query_string": b"",
             "headers": headers, "client": ("203.0.113.5", 40000), "server": ("testserver", 80)}
    await middleware(scope, receive, send)
    return sent[0]["status"]

config, token, body = sys.argv[1], sys.argv[2], sys.argv[3].encode()
middleware = ZeroTrustMiddleware(app, config=config)
headers = [(b"authorization", b"Bearer " + token.encode()), (b"content-type", b"application/json")]
status = asyncio.run(one_request(middleware, headers, body))
middleware.gate.close()
print(json.dumps({"status": status, "modules": sorted({name.split(".")[0] for name in sys.modules})}))
"""


def test_a_file_bundle_middleware_loads_no_registry_redis_pdp_or_sigstore_client(
    world: World, tmp_path: Path
) -> None:
    config = write_config(world.settings(), tmp_path / "ig-gate.yaml")
    token = world.token()
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(config), token, query()],
        capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["status"] == 200  # the request was decided (allowed), not refused before the policy
    loaded = sorted(set(UNUSED_CLIENTS) & set(report["modules"]))
    assert loaded == [], f"a file-bundle middleware imported {loaded}"
