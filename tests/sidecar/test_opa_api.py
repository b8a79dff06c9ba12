"""The OPA-compatible Data API, queried by opa-python-client against a real `ig-gate serve` (its admin
listener), and the remote PDP policy source asking that server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from opa_client import OpaClient
from opa_client.errors import PolicyNotFoundError

from ig_gate.middleware.compose import build_gate, policy_wiring
from ig_gate.middleware.decision import verdict_from_result
from ig_gate.middleware.gate import Gate, GateRequest
from ig_gate.middleware.remote_pdp import RemotePolicySource
from tests.middleware.conftest import DE_IP, FR_IP, US_IP, World
from tests.sidecar.conftest import ADMIN
from tests.support.procs import free_port
from tests.support.sidecar import Served


def requests_for(world: World) -> list[tuple[str, GateRequest]]:
    """(expected outcome, request) across allow / step-up / deny."""
    managed = world.attestation("managed", sub="opa-a")
    query = json.dumps({"query": "query Me { me { id } }"}).encode()
    mutation = json.dumps({"query": "mutation M { rename { id } }"}).encode()

    def request(token: str, peer: str, body: bytes, **headers: str) -> GateRequest:
        sent = {"authorization": f"Bearer {token}", "content-type": "application/json", **headers}
        return GateRequest("POST", "/graphql", b"", sent, peer, body)

    return [
        ("allow", request(world.token(sub="opa-a"), US_IP, query, **{"x-device-attestation": managed})),
        ("stepup", request(world.token(risk="medium", sub="opa-b"), US_IP, mutation)),
        ("stepup", request(world.token(sub="opa-c"), DE_IP, mutation)),  # unmanaged write
        ("deny", request(world.token(risk="high", sub="opa-d"), US_IP, query)),
        ("deny", request(world.token(sub="opa-e"), FR_IP, query)),
        ("deny", request(world.token(tenant="globex", sub="opa-f"), DE_IP, query)),
    ]


@pytest.fixture(scope="module")
def opa(served: Served) -> Iterator[OpaClient]:
    client = OpaClient(host="127.0.0.1", port=served.admin_port)
    yield client
    client.close_connection()


@pytest.fixture
def local_gate(world: World) -> Iterator[Gate]:
    gate = build_gate(world.settings())
    yield gate
    gate.close()


def test_opa_client_gets_the_same_decision_as_the_middleware_for_the_same_input(
    opa: OpaClient, local_gate: Gate, world: World
) -> None:
    for expected, request in requests_for(world):
        decision = local_gate.decide(request)
        assert decision.outcome == expected and decision.input is not None
        answer = opa.query_rule(input_data=dict(decision.input), package_path="ig.zt", rule_name="decision")
        assert answer["decision_id"]
        verdict = verdict_from_result(answer["result"])
        assert (verdict.outcome, verdict.reasons) == (decision.outcome, decision.reasons)


def test_get_data_reads_documents_and_undefined_has_no_result(opa: OpaClient, served: Served) -> None:
    assert opa.get_data("tenants/acme")["result"]["allowed_countries"] == ["US", "DE"]
    with pytest.raises(PolicyNotFoundError):
        opa.get_data("no/such/document")
    undefined = httpx.post(f"{served.admin_url}/v1/data/no/such/document", json={"input": {}})
    assert undefined.status_code == 200 and "result" not in undefined.json()


def test_health_with_bundles_is_200_when_a_bundle_is_active(opa: OpaClient) -> None:
    assert opa.check_health() is True
    assert opa.check_health(query={"bundles": True}) is True


def test_get_with_input_query_parameter(served: Served) -> None:
    document = {"tenant": "acme", "request": {"purpose": "support", "operation_type": "query"}}
    url = f"{served.admin_url}/v1/data/ig/purpose/decision"
    response = httpx.get(url, params={"input": json.dumps(document)})
    assert response.json()["result"] == {"allow": True, "reasons": []}


@pytest.mark.parametrize(
    ("body", "message"),
    [(b"{not json", "not valid JSON"), (b"[1]", "JSON object"), (b"{" * 50_000, "not valid JSON")],
)
def test_bad_request_bodies_get_opa_shaped_400(served: Served, body: bytes, message: str) -> None:
    response = httpx.post(f"{served.admin_url}/v1/data/ig/zt/decision", content=body)
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_parameter" and message in response.json()["message"]


def test_bad_input_query_parameter_gets_opa_shaped_400(served: Served) -> None:
    response = httpx.get(f"{served.admin_url}/v1/data/ig/zt/decision", params={"input": "{nope"})
    assert response.status_code == 400 and response.json()["code"] == "invalid_parameter"


def test_without_an_active_bundle_health_is_500_and_data_is_503_not_ready(make_sidecar: Any) -> None:
    client = make_sidecar(bundle={"path": "/nonexistent/policy.tgz"})
    assert client.get(f"{ADMIN}/health").status_code == 200
    for query in ("bundles", "bundles=true", "plugins"):
        unhealthy = client.get(f"{ADMIN}/health?{query}")
        assert unhealthy.status_code == 500
        assert unhealthy.json()["code"] == "internal_error" and unhealthy.json()["error"]  # OPA's shape
    response = client.post(f"{ADMIN}/v1/data/ig/zt/decision", json={"input": {}})
    assert response.status_code == 503 and "not ready" in response.json()["message"]


def test_remote_pdp_source_decides_like_the_local_bundle(
    served: Served, local_gate: Gate, world: World
) -> None:
    remote = RemotePolicySource(served.admin_url)
    remote_gate = build_gate(world.settings(), policy=remote)
    try:
        for expected, request in requests_for(world):
            local, asked = local_gate.decide(request), remote_gate.decide(request)
            assert (asked.outcome, asked.reasons) == (local.outcome, local.reasons)
            assert asked.outcome == expected
            assert asked.revision == f"remote:{served.admin_url}"
        assert remote.status()["evaluations"] == len(requests_for(world))
        assert remote.status()["failures"] == 0
        assert remote.ready() is None
    finally:
        remote_gate.close()
        remote.close()


def test_remote_pdp_that_is_down_fails_closed_and_says_why(world: World) -> None:
    remote = RemotePolicySource(f"http://127.0.0.1:{free_port()}", timeout_s=0.5)
    gate = build_gate(world.settings(), policy=remote)
    try:
        _, request = requests_for(world)[0]
        decision = gate.decide(request)
        assert decision.outcome == "error" and not decision.passes
        assert remote.status()["failures"] == 1 and "ConnectionError" in remote.status()["last_error"]
        assert "not healthy" in (remote.ready() or "")
    finally:
        gate.close()
        remote.close()


def test_settings_remote_opa_url_selects_the_remote_source(served: Served, world: World) -> None:
    wiring = policy_wiring(world.settings(bundle={"remote_opa_url": served.admin_url}))
    assert wiring.kind == "remote" and isinstance(wiring.source, RemotePolicySource)
    assert wiring.status()["url"] == served.admin_url
    wiring.close()


@pytest.mark.parametrize("url", ["ftp://x", "http://", "http://opa:8181/v1/data", "not a url"])
def test_remote_opa_url_must_be_scheme_host_port(url: str) -> None:
    with pytest.raises(ValueError, match=r"bundle\.remote_opa_url"):
        RemotePolicySource(url)
