"""A real Apollo Gateway (Node, @apollo/gateway) with one subgraph, behind `ig-gate serve --upstream`.

The client reaches the sidecar from 127.0.0.1 (a trusted proxy in these settings) and names a US address
in X-Forwarded-For. The subgraph's `headers` field returns the x-auth-* / x-forwarded-* headers it got.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.middleware.conftest import US_IP, World
from tests.support.procs import free_port, running
from tests.support.sidecar import serve_sidecar

APOLLO = Path(__file__).resolve().parents[1] / "apollo"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        shutil.which("node") is None or not (APOLLO / "node_modules").is_dir(),
        reason="needs node and tests/apollo/node_modules (`make test` runs npm install there)",
    ),
]


@pytest.fixture(scope="module")
def gateway_url(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """subgraph -> Apollo Gateway -> ig-gate serve --upstream gateway; yields the sidecar's URL."""
    workdir = tmp_path_factory.mktemp("apollo")
    subgraph_port, gateway_port = free_port(), free_port()
    settings = world.settings(
        geo={"trusted_proxies": ["127.0.0.1/32"]},
        decision_log={"path": str(workdir / "decisions.jsonl")},
        graphql={"paths": ["/"]},  # Apollo Gateway's standalone server answers GraphQL at /
    )
    with (
        running(
            ["node", "subgraph.js"],
            port=subgraph_port,
            log=workdir / "subgraph.log",
            cwd=APOLLO,
            env={"SUBGRAPH_PORT": str(subgraph_port)},
        ),
        running(
            ["node", "gateway.js"],
            port=gateway_port,
            log=workdir / "gateway.log",
            cwd=APOLLO,
            env={"SUBGRAPH_URL": f"http://127.0.0.1:{subgraph_port}/", "GATEWAY_PORT": str(gateway_port)},
        ),
        serve_sidecar(settings, workdir, "--upstream", f"http://127.0.0.1:{gateway_port}/") as sidecar,
    ):
        yield sidecar.url


def graphql(url: str, token: str | None, query: str, **headers: str) -> httpx.Response:
    sent = {"content-type": "application/json", "x-forwarded-for": US_IP, **headers}
    if token is not None:
        sent["authorization"] = f"Bearer {token}"
    return httpx.post(url + "/", content=json.dumps({"query": query}), headers=sent, timeout=10)


def test_a_low_risk_query_is_allowed_and_the_subgraph_sees_the_verified_identity(world, gateway_url):
    response = graphql(gateway_url, world.token(risk="low"), "query Me { me { id name } headers }")

    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert data["me"] == {"id": "1", "name": "Alice"}
    assert "x-auth-subject=alice" in data["headers"]
    assert "x-auth-tenant=acme" in data["headers"]
    assert "x-auth-risk=low" in data["headers"]


def test_a_mutation_by_a_medium_risk_session_gets_401_with_the_rfc9470_challenge(world, gateway_url):
    response = graphql(
        gateway_url, world.token(risk="medium"), 'mutation { rename(name: "Bob") { id name } }'
    )

    assert response.status_code == 401
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("Bearer ")
    assert 'error="insufficient_user_authentication"' in challenge
    assert "acr_values=" in challenge


def test_a_high_risk_session_gets_403(world, gateway_url):
    response = graphql(gateway_url, world.token(risk="high"), "query { me { id } }")
    assert response.status_code == 403


def test_a_spoofed_identity_header_never_reaches_the_subgraph(world, gateway_url):
    response = graphql(
        gateway_url,
        world.token(risk="low"),
        "query { headers }",
        **{"x-auth-subject": "mallory", "x-auth-tenant": "globex", "x-auth-risk": "low"},
    )
    assert response.status_code == 200, response.text
    seen = response.json()["data"]["headers"]
    assert "x-auth-subject=alice" in seen
    assert "x-auth-tenant=acme" in seen
    assert not any("mallory" in h or "globex" in h for h in seen)


def test_a_request_without_a_token_gets_401(gateway_url):
    response = graphql(gateway_url, None, "query { me { id } }")
    assert response.status_code == 401


def test_the_subgraph_sees_the_client_then_the_sidecar_peer_in_x_forwarded_for(world, gateway_url):
    response = graphql(gateway_url, world.token(risk="low"), "query { headers }")
    assert f"x-forwarded-for={US_IP}, 127.0.0.1" in response.json()["data"]["headers"]
