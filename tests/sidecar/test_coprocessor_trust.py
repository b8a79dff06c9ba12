"""Issue 9 item 9 (coprocessor geo is trusted only by configuration) and item 11 (response stages are
answered without rewriting the response status), against the sidecar app."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ig_gate.middleware.settings import ServerSettings
from ig_gate.sidecar.coprocessor import IDENTITY_KEY, PATH
from tests.middleware.conftest import DE_IP, FR_IP, US_IP, World
from tests.sidecar.test_coprocessor import ROUTER_REQUEST, with_caller

RESPONSE_STAGES = ["RouterResponse", "SupergraphResponse", "ExecutionResponse", "SubgraphResponse"]


def refusal_message(answer: dict[str, Any]) -> str:
    return json.loads(answer["body"])["errors"][0]["message"]


def test_trusted_hops_default_to_zero() -> None:
    assert ServerSettings().coprocessor_trusted_hops == 0


@pytest.mark.parametrize(
    "headers",
    [
        {"ip": US_IP},  # a client in France claims an allowed country
        {"ip": f"{FR_IP}, {US_IP}"},  # ... or appends it after its real address
        {"ip": None, "forwarded": f"for={US_IP}"},
    ],
)
def test_router_request_geo_is_not_decided_by_client_sent_forwarding_headers_by_default(
    make_sidecar: Any, world: World, headers: dict[str, Any]
) -> None:
    client = make_sidecar()
    payload = with_caller(ROUTER_REQUEST, world.token(sub="copro-claims-us"), **headers)
    answer = client.post(PATH, json=payload).json()
    assert answer["control"] == {"break": 403}
    assert "geo_unknown" in refusal_message(answer)


def test_one_trusted_hop_reads_the_entry_the_load_balancer_appended(make_sidecar: Any, world: World) -> None:
    client = make_sidecar(server={"coprocessor_trusted_hops": 1})
    forged = with_caller(ROUTER_REQUEST, world.token(sub="copro-lb"), ip=f"{US_IP}, {FR_IP}")
    answer = client.post(PATH, json=forged).json()
    assert answer["control"] == {"break": 403} and "geo_fenced" in refusal_message(answer)  # FR, not US


def test_trusted_proxies_right_of_the_client_are_skipped_once_a_hop_is_trusted(
    make_sidecar: Any, world: World
) -> None:
    # client -> load balancer (appends the client) -> internal proxy 10.0.0.9 (appends the LB) -> Router
    client = make_sidecar(server={"coprocessor_trusted_hops": 1})  # geo.trusted_proxies: 10.0.0.0/8
    managed = world.attestation("managed", sub="copro-tier")  # allowed whether the POST reads or writes
    payload = with_caller(ROUTER_REQUEST, world.token(sub="copro-tier"), ip=f"{FR_IP}, {DE_IP}, 10.0.0.9",
                          x_device_attestation=managed)
    answer = client.post(PATH, json=payload).json()
    assert answer["control"] == "continue"
    assert answer["context"]["entries"][IDENTITY_KEY]["country"] == "DE"


@pytest.mark.parametrize("stage", RESPONSE_STAGES)
def test_response_stages_are_echoed_without_control_so_the_router_keeps_the_status(
    make_sidecar: Any, stage: str
) -> None:
    client = make_sidecar()
    payload = {
        "version": 1, "stage": stage, "control": "continue", "id": "x1", "subgraphRequestId": "s1",
        "statusCode": 401, "headers": {"www-authenticate": ["Bearer"]},
        "body": '{"errors": [{"message": "unauthenticated"}]}', "context": {"entries": {"k": 1}},
    }
    answer = client.post(PATH, json=payload).json()
    # the Router sets the response status from `control` when present; body, headers and context left
    # out are kept as they were
    assert answer == {"version": 1, "stage": stage, "id": "x1", "subgraphRequestId": "s1"}


REQUEST_STAGES = ["RouterRequest", "SupergraphRequest", "ExecutionRequest", "SubgraphRequest"]


@pytest.mark.parametrize("stage", REQUEST_STAGES)
def test_request_stages_always_carry_control(make_sidecar: Any, world: World, stage: str) -> None:
    client = make_sidecar(server={"coprocessor_trusted_hops": 1})
    payload = with_caller(ROUTER_REQUEST, world.token(sub="copro-ctl"))
    payload["stage"] = stage
    if stage != "RouterRequest":
        payload["body"] = json.loads(payload["body"])
    assert "control" in client.post(PATH, json=payload).json()  # the Router refuses a request stage without
