"""A fixture world for the gate: real keys, JWKS files, a signed example bundle, a test .mmdb, Settings.

Networks in the test database (documentation and shared ranges, so nothing real is implied):
US 203.0.113.0/24 (the TestClient peer 203.0.113.5), 8.8.8.0/24, 11.0.0.0/16 (fresh IPs for benchmarks);
DE 198.51.100.0/24, 2001:db8:de::/48; FR 192.0.2.0/24 (outside tenant acme's fence US+DE);
JP 100.64.1.0/24. 10.0.0.0/8 are trusted proxies.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from mmdb_writer import MMDBWriter
from netaddr import IPSet
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket

from ig_gate.bundles.archive import build_bundle
from ig_gate.bundles.signing import sign_bundle
from ig_gate.middleware.asgi import ZeroTrustMiddleware
from ig_gate.middleware.settings import Settings, settings_from_dict
from tests.support import tokens
from tests.support.keys import KeyPair, make_keypair, write_jwks

REPO = Path(__file__).resolve().parents[2]
PEER = ("203.0.113.5", 40000)  # US
NETWORKS = {
    "US": ["203.0.113.0/24", "8.8.8.0/24", "11.0.0.0/16"],
    "DE": ["198.51.100.0/24", "2001:db8:de::/48"],
    "FR": ["192.0.2.0/24"],
    "JP": ["100.64.1.0/24"],
}
US_IP, DE_IP, FR_IP, JP_IP = "203.0.113.7", "198.51.100.7", "192.0.2.7", "100.64.1.7"
PROXY = "10.0.0.2"


@dataclass(frozen=True)
class World:
    """Keys, files and helpers shared by the gate tests (one per test session)."""

    root: Path
    idp: KeyPair
    mdm: KeyPair
    bundle_key: KeyPair
    idp_jwks: Path
    mdm_jwks: Path
    bundle_path: Path
    bundle_pub: Path
    mmdb: Path

    def settings(self, **overrides: Any) -> Settings:
        """Settings wired to this world; overrides merge per section (`geo={"trusted_proxies": [...]}`)."""
        raw: dict[str, Any] = {
            "bundle": {"path": str(self.bundle_path), "verification_key": str(self.bundle_pub)},
            "identity": {"jwks": str(self.idp_jwks)},
            "device": {"attestation_jwks": str(self.mdm_jwks)},
            "geo": {"database": str(self.mmdb), "trusted_proxies": ["10.0.0.0/8"]},
            "metrics": {"tenants": ["acme", "globex"]},
            "exclude_paths": ["/healthz"],
            "server": {"gc_freeze": False},  # tests share one process: freezing is tested on its own
        }
        for key, value in overrides.items():
            if isinstance(value, dict) and isinstance(raw.get(key), dict):
                raw[key] = {**raw[key], **value}
            else:
                raw[key] = value
        return settings_from_dict(raw)

    def token(self, risk: str = "low", tenant: str = "acme", **claims: Any) -> str:
        """A session token signed by the IdP key."""
        return tokens.session_token(self.idp, risk=risk, tenant=tenant, **claims)

    def attestation(self, posture: str, device_id: str = "dev-1", sub: str = "alice", **claims: Any) -> str:
        """A device attestation signed by the MDM key, bound to user `sub` (token()'s default subject)."""
        return tokens.attestation(self.mdm, posture, device_id, sub=sub, **claims)


def write_mmdb(path: Path) -> Path:
    """A GeoIP2-Country style database with the NETWORKS above."""
    writer = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoIP2-Country")
    for country, networks in NETWORKS.items():
        writer.insert_network(IPSet(networks), {"country": {"iso_code": country}})
    writer.to_db_file(str(path))
    return path


def build_world(root: Path) -> World:
    """Fresh keys, JWKS files, the example bundle signed with a fresh key, and a test .mmdb under root."""
    idp, mdm = make_keypair("ES256", "idp-1"), make_keypair("ES256", "mdm-1")
    bundle_key = make_keypair("ES256", "bundle-1")
    _, bundle_pub = bundle_key.write(root, "bundle")
    signed = sign_bundle(build_bundle(REPO / "policies", version="1.0.0"), bundle_key.private_pem)
    bundle_path = root / "policy.tgz"
    bundle_path.write_bytes(signed.archive)
    return World(
        root,
        idp,
        mdm,
        bundle_key,
        write_jwks(root / "idp-jwks.json", idp),
        write_jwks(root / "mdm-jwks.json", mdm),
        bundle_path,
        bundle_pub,
        write_mmdb(root / "test-country.mmdb"),
    )


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory.mktemp("gate-world"))


async def call_asgi(
    app: Any,
    *,
    method: str = "POST",
    path: str = "/graphql",
    headers: list[tuple[bytes, bytes]] = (),
    body: bytes = b"",
    peer: tuple[str, int] = PEER,
    chunks: int = 1,
) -> tuple[int, dict[bytes, bytes], bytes]:
    """Drive an ASGI app directly with raw header bytes: (status, headers, body) of the response."""
    size = max(1, -(-len(body) // chunks))
    parts = [body[i : i + size] for i in range(0, len(body), size)] or [b""]
    messages = [
        {"type": "http.request", "body": p, "more_body": i < len(parts) - 1} for i, p in enumerate(parts)
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": list(headers),
        "client": peer,
        "server": ("testserver", 80),
    }
    await app(scope, receive, send)
    start = sent[0]
    return start["status"], dict(start["headers"]), b"".join(m.get("body", b"") for m in sent[1:])


async def _graphql(request: Request) -> JSONResponse:
    """Echo what the app sees: the gate's identity and the body (to prove it was replayed unchanged)."""
    identity = getattr(request.state, "ig_gate", None)
    body = await request.body()
    return JSONResponse(
        {
            "identity": None
            if identity is None
            else {
                "subject": identity.subject,
                "tenant": identity.tenant,
                "risk": identity.risk,
                "posture": identity.posture,
                "country": identity.country,
                "decision_id": identity.decision_id,
                "profile": identity.profile,
            },
            "body": body.decode("latin-1"),
        }
    )


async def _healthz(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


async def _ws(websocket: WebSocket) -> None:
    await websocket.accept()
    identity = websocket.state.ig_gate
    await websocket.send_json({"subject": identity.subject, "country": identity.country})
    await websocket.close()


def demo_app() -> Starlette:
    """A small GraphQL-ish app: /graphql (GET, POST), /api/items (POST, REST), /healthz, ws /graphql/ws."""
    return Starlette(
        routes=[
            Route("/graphql", _graphql, methods=["GET", "POST"]),
            Route("/api/items", _graphql, methods=["POST", "PUT"]),
            Route("/healthz", _healthz),
            WebSocketRoute("/graphql/ws", _ws),
        ]
    )


@pytest.fixture
def make_client(world: World, tmp_path: Path) -> Any:
    """make_client(settings=None, peer=PEER, started=True, **overrides) -> TestClient over the middleware.

    A started client serves every request from one event-loop thread (as uvicorn does), so the per-thread
    engine is compiled once; an unstarted one runs each request on a new thread. Clients and gates are
    closed at teardown.
    """
    with contextlib.ExitStack() as stack:

        def make(
            settings: Settings | None = None,
            peer: tuple[str, int] = PEER,
            started: bool = True,
            **overrides: Any,
        ) -> TestClient:
            if settings is None:
                overrides.setdefault("decision_log", {"path": str(tmp_path / "decisions.jsonl")})
                settings = world.settings(**overrides)
            middleware = ZeroTrustMiddleware(demo_app(), config=settings)
            stack.callback(middleware.gate.close)
            client = TestClient(middleware, client=peer)
            if started:
                stack.enter_context(client)
            client.middleware = middleware  # type: ignore[attr-defined]
            return client

        yield make


def query(text: str = "query Me { me { id } }", **extra: Any) -> str:
    """A GraphQL-over-HTTP JSON body."""
    return json.dumps({"query": text, **extra})
