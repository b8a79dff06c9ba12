"""One composition root: the same YAML (registry channel + Redis + rollout + SSF) through ZeroTrustMiddleware
under uvicorn and through `ig-gate serve`, each in its own process.

Both poll the real registry (Debian's docker-registry, tests/registry/conftest.py) and enforce v1; a
signed CAEP session-revoked SET received by one is enforced by the other through the real redis-server;
v2 published to the channel is rolled out (shadow, then 100 %) and enforced by both. And constructing the
middleware for that YAML starts no thread and connects to nothing until lifespan startup.
"""

from __future__ import annotations

import itertools
import json
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from ig_gate.bundles.archive import build_bundle
from ig_gate.bundles.detached import sign_blob
from ig_gate.bundles.registry import RegistryClient
from ig_gate.bundles.signing import sign_bundle
from ig_gate.middleware.asgi import ZeroTrustMiddleware
from ig_gate.middleware.compose import build_gate
from ig_gate.middleware.settings import ConfigError, load_settings, settings_from_dict
from tests.middleware.conftest import demo_app
from tests.sidecar.test_ssf import RECEIVER, SECEVENT, TRANSMITTER, make_set, opaque
from tests.support import tokens
from tests.support.keys import KeyPair, make_keypair, write_jwks
from tests.support.procs import free_port, running, wait_until
from tests.support.redis_server import redis_server
from tests.support.sidecar import IG_GATE, write_config

pytestmark = pytest.mark.integration

REVOKED = "https://schemas.openid.net/secevent/caep/event-type/session-revoked"
PROBE = "/probe"  # v1 allows it, v2 denies it: which bundle a server enforces, seen from outside
V1 = '{"allow": true, "reasons": ["v1"]}'
V2 = (
    '{"allow": true, "deny": probe, "reasons": ["v2"]}\n\n'
    'default probe := false\n\nprobe if input.request.path == "/probe"'
)
_sources = itertools.count()


def publish(
    client: RegistryClient, root: Path, signer: KeyPair, repo: str, version: str, decision: str
) -> None:
    """Build, sign (OPA + detached) and push a bundle deciding `decision` to the channel `prod`."""
    src = root / f"src-{next(_sources)}"
    src.mkdir()
    (src / "one.rego").write_text(f"package one\n\ndecision := {decision}\n")
    bundle = sign_bundle(build_bundle(src, version=version), signer.private_pem, key_id=signer.kid)
    client.push(repo, "prod", bundle.archive, sign_blob(bundle.archive, signer.private_pem))


def one_yaml(tmp_path: Path, registry_host: str, repo: str, signer: KeyPair, idp: KeyPair,
             transmitter: KeyPair, redis_url: str) -> Path:
    """The one configuration both servers run."""
    _, bundle_pub = signer.write(tmp_path, "bundle")
    settings = settings_from_dict({
        "bundle": {"path": None, "query": "data.one.decision", "registry": registry_host, "repository": repo,
                   "channel": "prod", "plain_http": True, "state_dir": str(tmp_path / "state"),
                   "verification_key": str(bundle_pub), "poll_interval_s": 0.5},
        "identity": {"jwks": str(write_jwks(tmp_path / "idp.jwks", idp))},
        # fast, and tolerant: the probes polled below are denied by the candidate (no breach in this test)
        "rollout": {"stages": [1.0], "min_samples": 5, "max_deny_rate_delta": 1.0,
                    "max_latency_ratio": 1000.0},
        "risk_store": {"redis_url": redis_url},
        "ssf": {"transmitter_jwks": str(write_jwks(tmp_path / "ssf.jwks", transmitter)),
                "issuer": TRANSMITTER, "audience": RECEIVER},
        "decision_log": {"path": str(tmp_path / "decisions.jsonl")},
        "metrics": {"tenants": ["acme"]},
        "server": {"gc_freeze": False},
    })
    return write_config(settings, tmp_path / "ig-gate.yaml")


class Door:
    """One server in front of the gate: `status(token, path)` asks it about GET `path`."""

    def __init__(
        self, name: str, url: str, ask: Callable[[httpx.Client, str, str], int], admin: str | None = None
    ) -> None:
        self.name = name
        self.admin = admin  # the sidecar's admin listener (/v1/status)
        self.http = httpx.Client(base_url=url, timeout=10)
        self._ask = ask

    def status(self, token: str, path: str) -> int:
        return self._ask(self.http, token, path)

    def revoke(self, transmitter: KeyPair, session: str) -> None:
        """Push a signed CAEP session-revoked SET to this server."""
        token = make_set(transmitter, {REVOKED: {}}, sub_id=opaque(session))
        answer = self.http.post("/ssf/events", content=token, headers=SECEVENT)
        assert answer.status_code == 202, (self.name, answer.status_code, answer.text)


def last_good_version(state_dir: Path) -> str | None:
    """The version a server persisted as its last-good bundle (None before any)."""
    record = state_dir / "last-good.json"
    return json.loads(record.read_text())["version"] if record.exists() else None


def _middleware_status(http: httpx.Client, token: str, path: str) -> int:
    """The app has no route at `path`: 404 means the gate let the request through."""
    return http.get(path, headers={"authorization": f"Bearer {token}"}).status_code


def _sidecar_status(http: httpx.Client, token: str, path: str) -> int:
    headers = {"authorization": f"Bearer {token}", "x-original-uri": path, "x-original-method": "GET"}
    return http.get("/authz", headers=headers).status_code


@pytest.fixture
def doors(tmp_path: Path, registry, client, signer, repo) -> Iterator[tuple[Door, Door, KeyPair, KeyPair]]:
    """(middleware, sidecar, SSF transmitter key, IdP key): two servers on one YAML, v1 published first."""
    idp, transmitter = make_keypair("ES256", "idp"), make_keypair("ES256", "ssf-1")
    publish(client, tmp_path, signer, repo, "1.0.0", V1)
    with ExitStack() as stack:
        redis_url = stack.enter_context(redis_server(tmp_path / "redis"))
        config = one_yaml(tmp_path, registry.host, repo, signer, idp, transmitter, redis_url)
        doors = []
        for name in ("middleware", "sidecar"):
            port, admin = free_port(), free_port()
            env = {"IG_GATE_BUNDLE__STATE_DIR": str(tmp_path / f"state-{name}")}  # the YAML is the same
            if name == "middleware":
                env["IG_GATE_CONFIG"] = str(config)
                argv = [sys.executable, "-m", "uvicorn", "--factory", "tests.support.served_middleware:app",
                        "--host", "127.0.0.1", "--port", str(port), "--lifespan", "on"]
                ask = _middleware_status
            else:
                argv = [str(IG_GATE), "serve", "--config", str(config), "--host", "127.0.0.1", "--port",
                        str(port), "--admin-port", str(admin)]
                ask = _sidecar_status
            stack.enter_context(running(argv, port=port, log=tmp_path / f"{name}.log", env=env))
            doors.append(Door(name, f"http://127.0.0.1:{port}", ask, f"http://127.0.0.1:{admin}"))
            stack.callback(doors[-1].http.close)
        yield doors[0], doors[1], transmitter, idp


def test_one_yaml_through_the_middleware_and_the_sidecar_polls_shares_revocations_and_rolls_out(
    doors, client, tmp_path, signer, repo
):
    middleware, sidecar, transmitter, idp = doors
    both = (middleware, sidecar)
    token = {s: tokens.session_token(idp, sid=s) for s in ("sess-a", "sess-b", "sess-c")}
    allowed = {middleware: 404, sidecar: 200}  # the demo app has no such route / forward-auth says yes

    # both pulled v1 from the registry (no last-good, no bundle file): the probe is let through
    for door in both:
        wait_until(lambda d=door: d.status(token["sess-c"], PROBE) == allowed[d], 20, f"{door.name} on v1")

    # a revocation received by one is enforced by the other (Redis), both ways
    for receiver, other, session in ((middleware, sidecar, "sess-a"), (sidecar, middleware, "sess-b")):
        assert other.status(token[session], "/x") == allowed[other]
        receiver.revoke(transmitter, session)
        wait_until(lambda o=other, s=session: o.status(token[s], "/x") == 401, 10,
                   f"{other.name} to refuse the session revoked at {receiver.name}")
        assert receiver.status(token[session], "/x") == 401
    assert all(door.status(token["sess-c"], "/x") == allowed[door] for door in both)  # others spared

    # v2 on the channel: each server takes it as a candidate, compares it in shadow, enforces it for 100 %
    # of the traffic, then promotes it (persisted as its last-good)
    publish(client, tmp_path, signer, repo, "2.0.0", V2)
    paths = (f"/n/{i}" for i in itertools.count())  # distinct inputs: each one is a compared decision
    for door in both:
        def promoted(d: Door = door) -> bool:
            for _ in range(5):
                assert d.status(token["sess-c"], next(paths)) == allowed[d]  # v1 and v2 agree here
            return last_good_version(tmp_path / f"state-{d.name}") == "2.0.0"
        wait_until(promoted, 60, f"{door.name} to roll v2 out")
        assert door.status(token["sess-c"], PROBE) == 403
    assert all(door.status(token["sess-c"], "/y") == allowed[door] for door in both)
    bundle = httpx.get(f"{sidecar.admin}/v1/status").json()["bundle"]
    assert bundle["active"]["version"] == "2.0.0"
    assert bundle["rollout"]["promotions"] == 1  # v2 after shadow and 100 % (v1, activated at once, is not)
    assert bundle["rollout"]["last_check"]["passed"] is True


def _listener() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.settimeout(0.3)
    return sock


def _connected(listener: socket.socket) -> bool:
    try:
        connection, _ = listener.accept()
    except TimeoutError:
        return False
    connection.close()
    return True


def test_constructing_the_middleware_for_a_registry_config_starts_no_thread_and_connects_nowhere(
    tmp_path, signer
):
    registry, redis = _listener(), _listener()  # stand-ins that only record who connects
    idp, transmitter = make_keypair("ES256", "idp"), make_keypair("ES256", "ssf-1")
    config = one_yaml(tmp_path, f"127.0.0.1:{registry.getsockname()[1]}", "ig/policy", signer, idp,
                      transmitter, f"redis://127.0.0.1:{redis.getsockname()[1]}/0")
    try:
        threads = {t.ident for t in threading.enumerate()}
        middleware = ZeroTrustMiddleware(demo_app(), config=str(config))
        assert {t.ident for t in threading.enumerate()} == threads, [t.name for t in threading.enumerate()]
        assert not _connected(registry) and not _connected(redis)
        assert not middleware.system.started

        with TestClient(middleware):  # lifespan startup: now the gate polls the registry, follows Redis
            assert middleware.system.started
            started = [t.name for t in threading.enumerate() if t.ident not in threads]
            assert any(name.startswith("bundle-poll-") for name in started), started
            assert any(name.startswith("decision-log:") for name in started), started
            wait_until(lambda: _connected(registry), 10, "the first poll of the registry")
            wait_until(lambda: _connected(redis), 10, "the risk-store subscription")
        assert not middleware.system.started
    finally:
        registry.close()
        redis.close()


def test_without_lifespan_the_first_request_starts_the_background_work(tmp_path, signer):
    registry, redis = _listener(), _listener()
    idp, transmitter = make_keypair("ES256", "idp"), make_keypair("ES256", "ssf-1")
    config = one_yaml(tmp_path, f"127.0.0.1:{registry.getsockname()[1]}", "ig/policy", signer, idp,
                      transmitter, f"redis://127.0.0.1:{redis.getsockname()[1]}/0")
    middleware = ZeroTrustMiddleware(demo_app(), config=str(config))
    try:
        http = TestClient(middleware)  # not entered: no lifespan
        assert not middleware.system.started and not _connected(registry)
        token = tokens.session_token(idp, sid="sess-lazy")
        answer = http.get("/x", headers={"authorization": f"Bearer {token}"})
        assert answer.status_code == 503  # nothing pulled yet: fails closed
        assert middleware.system.started
        wait_until(lambda: _connected(registry), 10, "the first poll of the registry")
    finally:
        middleware.system.close()
        registry.close()
        redis.close()


def test_the_gate_alone_refuses_a_registry_channel_it_could_not_start(tmp_path, signer):
    idp, transmitter = make_keypair("ES256", "idp"), make_keypair("ES256", "ssf-1")
    config = one_yaml(tmp_path, "127.0.0.1:9", "ig/policy", signer, idp, transmitter, "redis://127.0.0.1:9/0")
    with pytest.raises(ConfigError, match=r"bundle\.registry: .*compose"):
        build_gate(load_settings(config))  # not a gate that fails closed forever without saying why
