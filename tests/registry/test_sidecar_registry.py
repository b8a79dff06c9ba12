"""The sidecar on a registry channel: refusals in /v1/status and /metrics, restarts with the registry down.

Everything goes through the sidecar's own wiring (`create_app` -> `wire`): the BundleManager's events must
reach the gate's metrics registry, its status must reach /v1/status, and a restart must serve the
persisted last-good before the registry answers. This module stops and restarts its own registry.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from ig_gate.bundles.manager import BundleManager
from ig_gate.bundles.registry import RegistryClient, sha256_digest
from ig_gate.middleware.settings import ServerSettings, settings_from_dict
from ig_gate.sidecar.app import create_app
from tests.registry.conftest import LocalRegistry
from tests.registry.kit import Built, build, publish
from tests.support import tokens
from tests.support.keys import KeyPair, make_keypair, write_jwks
from tests.support.procs import wait_until

pytestmark = pytest.mark.integration
ADMIN = f"http://testserver:{ServerSettings().admin_port}"  # the admin listener: /v1/status, /metrics

class Sidecar:
    """A started sidecar app (lifespan run) on one registry channel, with its bundle manager."""

    def __init__(self, http: TestClient, token: str) -> None:
        self.http = http
        self.token = token
        self.manager: BundleManager = http.app.state.sidecar.policy.source
        self.running = True

    def stop(self) -> None:
        """Shut the app down (lifespan): the manager stops polling; a restart is a new Sidecar."""
        if self.running:
            self.running = False
            self.http.__exit__(None, None, None)

    def authz(self) -> int:
        headers = {"authorization": f"Bearer {self.token}", "x-original-uri": "/graphql?query=%7Bme%7D"}
        return self.http.get("/authz", headers=headers).status_code

    def bundle(self) -> dict[str, Any]:
        return self.http.get(f"{ADMIN}/v1/status").json()["bundle"]

    def events(self, kind: str) -> float:
        """ig_gate_bundle_events_total{kind} as /metrics shows it (0 when the series does not exist)."""
        pattern = rf'^ig_gate_bundle_events_total{{kind="{kind}"}} (\S+)$'
        found = re.search(pattern, self.http.get(f"{ADMIN}/metrics").text, re.MULTILINE)
        return float(found.group(1)) if found else 0.0


@pytest.fixture
def start_sidecar(
    tmp_path: Path, registry: LocalRegistry, signer: KeyPair
) -> Iterator[Callable[..., Sidecar]]:
    """start_sidecar(repo, **bundle settings) -> a Sidecar; every one is stopped (lifespan) at the end."""
    idp = make_keypair("ES256", kid="idp")
    jwks = write_jwks(tmp_path / "idp.jwks", idp)
    _, public = signer.write(tmp_path, "bundle")
    started: list[Sidecar] = []

    def start(repo: str, **bundle: Any) -> Sidecar:
        settings = settings_from_dict({
            "bundle": {"path": None, "query": "data.test.swap.decision", "registry": registry.host,
                       "repository": repo, "plain_http": True, "state_dir": str(tmp_path / "state"),
                       "verification_key": str(public), "poll_interval_s": 3600, **bundle},
            "identity": {"jwks": str(jwks)},
        })
        http = TestClient(create_app(settings), client=("203.0.113.5", 40000))
        http.__enter__()  # lifespan: the manager loads the last-good and starts polling
        started.append(Sidecar(http, tokens.session_token(idp, tenant="acme")))
        return started[-1]

    yield start
    for sidecar in started:
        sidecar.stop()


def bad_bundle(case: str, root: Path, client: RegistryClient, registry: LocalRegistry, repo: str,
               signer: KeyPair, stranger: KeyPair) -> Built:
    """Publish the bad bundle of one refusal case on the channel (all deny, should one ever decide)."""
    def bad(version: str = "2.1.0", key: KeyPair | None = signer, **how: Any) -> Built:
        return build(root, "bad", version, key, allow=False, **how)

    if case.startswith("blob replaced"):  # a signed 2.1.0 is pushed, then its blob swapped in storage
        pushed = bad()
        publish(client, repo, "prod", pushed)
        other = bad("9.9.9", stranger if "differently signed" in case else None)
        registry.blob_path(sha256_digest(pushed.archive)).write_bytes(other.archive)
        return pushed
    built = {
        "unsigned": lambda: bad(key=None, detached=False),
        "signed by an unknown key": lambda: bad(key=stranger),
        "outside the pin": lambda: bad("3.0.0"),
        "expired": lambda: bad(expires="2026-01-01"),
        "older version replayed": lambda: bad("1.5.0"),
    }[case]()
    publish(client, repo, "prod", built)
    return built


REFUSALS = {
    "blob replaced by a differently signed one": "fetch",
    "blob replaced by an unsigned one": "fetch",
    "unsigned": "verify",
    "signed by an unknown key": "verify",
    "outside the pin": "pin",
    "expired": "expiry",
    "older version replayed": "rollback",
}


@pytest.mark.parametrize("case", REFUSALS)
def test_each_refusal_keeps_the_last_good_and_shows_in_status_and_metrics(
    case, start_sidecar, client, registry, repo, signer, stranger, tmp_path
):
    kind = REFUSALS[case]
    publish(client, repo, "prod", build(tmp_path, "good", "2.0.0", signer, allow=True))
    sidecar = start_sidecar(repo, require_version=">=1.0,<3")
    wait_until(lambda: sidecar.manager.current() is not None, 10, "the first bundle to be active")
    assert sidecar.authz() == 200 and sidecar.events(kind) == 0

    bad_bundle(case, tmp_path, client, registry, repo, signer, stranger)
    assert sidecar.manager.poll_once() in ("refused", "failed")

    assert sidecar.authz() == 200  # the good bundle still decides (every bad one denies)
    bundle = sidecar.bundle()
    assert bundle["active"]["version"] == "2.0.0" and bundle["candidate"] is None
    assert bundle["last_error"]["kind"] == kind and bundle["last_error"]["since"]
    assert bundle["failures"][kind] == 1
    assert sidecar.events(kind) == 1
    assert sidecar.http.get("/readyz").status_code == 200


def test_restart_with_the_registry_down_serves_the_last_good_at_once_then_picks_up_a_newer_bundle(
    start_sidecar, client, registry, repo, signer, tmp_path
):
    publish(client, repo, "prod", build(tmp_path, "v1", "1.0.0", signer, allow=True))
    first = start_sidecar(repo)
    wait_until(lambda: first.manager.current() is not None, 10, "the first bundle to be active")
    first.stop()  # the gate stops ...

    registry.stop()  # ... and comes back while the registry is down
    try:
        restarted = start_sidecar(repo, poll_interval_s=0.2)
        assert restarted.authz() == 200  # the first request: last-good, re-verified at start
        assert restarted.bundle()["active"]["version"] == "1.0.0"
        wait_until(lambda: restarted.events("fetch") >= 1, 10, "a counted fetch failure")
        status = restarted.bundle()
        assert status["last_error"]["kind"] == "fetch" and "unreachable" in status["last_error"]["message"]
        assert restarted.authz() == 200
    finally:
        registry.start()

    publish(client, repo, "prod", build(tmp_path, "v2", "1.1.0", signer, allow=False))
    wait_until(lambda: restarted.bundle()["candidate"] is not None, 20, "v2 fetched with the registry back")
    assert restarted.bundle()["rollout"]["state"] == "shadow"  # a candidate now, decided by the rollout
    assert restarted.authz() == 200


def test_a_corrupted_last_good_is_not_used_at_restart(
    start_sidecar, client, registry, repo, signer, tmp_path
):
    publish(client, repo, "prod", build(tmp_path, "v1", "1.0.0", signer, allow=True))
    first = start_sidecar(repo)
    wait_until(lambda: first.manager.current() is not None, 10, "the first bundle to be active")
    first.stop()
    archive = next((tmp_path / "state" / "last-good").glob("*.tar.gz"))
    archive.write_bytes(archive.read_bytes()[:-8] + b"tampered")

    registry.stop()
    try:
        restarted = start_sidecar(repo)
        assert restarted.authz() == 503  # nothing verified to decide with: fail closed
        status = restarted.bundle()
        assert status["active"] is None and status["failures"]["last_good"] == 1
        assert "no active bundle" in status["alerts"][0] and restarted.events("last_good") == 1
        assert list((tmp_path / "state").glob("last-good.json.rejected-*"))
        assert restarted.http.get("/readyz").status_code == 503
    finally:
        registry.start()
