"""The Apollo Router coprocessor: Apollo's reference payloads (tokens substituted) -> documented responses."""

from __future__ import annotations

import copy
import json
import time
from typing import Any

import pytest

from ig_gate.sidecar.coprocessor import IDENTITY_KEY, POLICIES_KEY
from tests.middleware.conftest import DE_IP, FR_IP, US_IP

# From Apollo's "Coprocessor reference", example requests by stage (sdl omitted; both carry these headers).
EXAMPLE_HEADERS = {
    "cookie": ["tasty_cookie=strawberry"],
    "content-type": ["application/json"],
    "host": ["127.0.0.1:4000"],
    "apollo-federation-include-trace": ["ftv1"],
    "apollographql-client-name": ["manual"],
    "accept": ["*/*"],
    "user-agent": ["curl/7.79.1"],
    "content-length": ["46"],
}
ROUTER_REQUEST: dict[str, Any] = {
    "version": 1,
    "stage": "RouterRequest",
    "control": "continue",
    "id": "1b19c05fdafc521016df33148ad63c1b",
    "headers": EXAMPLE_HEADERS,
    "body": '{\n    "query": "query GetActiveUser {\\n  me {\\n  name\\n}\\n}"\n  }',
    "context": {"entries": {"accepts-json": False, "accepts-wildcard": True, "accepts-multipart": False}},
    "path": "/",
    "method": "POST",
}
SUPERGRAPH_REQUEST: dict[str, Any] = {
    "version": 1,
    "stage": "SupergraphRequest",
    "control": "continue",
    "headers": EXAMPLE_HEADERS,
    "body": {"query": "query Long {\n  me {\n  name\n}\n}", "operationName": "MyQuery", "variables": {}},
    "context": {
        "entries": {
            "accepts-json": False,
            "accepts-wildcard": True,
            "accepts-multipart": False,
            "this-is-a-test-context": 42,
        }
    },
    "serviceName": "service name shouldn't change",
    "uri": "http://thisurihaschanged",
}


def with_caller(payload: dict[str, Any], token: str | None, ip: str | None = US_IP, **headers: str) -> dict:
    """A copy of an example payload carrying the client's bearer token, forwarded-for and extra headers."""
    payload = copy.deepcopy(payload)
    if token is not None:
        payload["headers"]["authorization"] = [f"Bearer {token}"]
    if ip is not None:
        payload["headers"]["x-forwarded-for"] = [ip]
    for name, value in headers.items():
        payload["headers"][name.replace("_", "-")] = [value]
    return payload


@pytest.fixture
def post(make_sidecar: Any) -> Any:
    # one load balancer in front of the Router appends the client address (the default trusts none:
    # tests/sidecar/test_coprocessor_trust.py)
    client = make_sidecar(server={"coprocessor_trusted_hops": 1})

    def call(payload: Any, **kwargs: Any) -> Any:
        if isinstance(payload, dict | list):
            return client.post("/apollo/coprocessor", json=payload, **kwargs)
        return client.post("/apollo/coprocessor", content=payload, **kwargs)

    return call


def test_router_request_allowed_continues_with_identity_in_context_and_echoes_control_fields(
    post: Any, world: Any
) -> None:
    payload = with_caller(
        ROUTER_REQUEST,
        world.token(sub="copro-allow"),
        x_device_attestation=world.attestation("managed", sub="copro-allow"),
    )
    response = post(payload)
    assert response.status_code == 200
    answer = response.json()
    assert answer["control"] == "continue"
    assert (answer["version"], answer["stage"], answer["id"]) == (1, "RouterRequest", ROUTER_REQUEST["id"])
    entries = answer["context"]["entries"]
    assert entries["accepts-wildcard"] is True  # the Router's own entries are kept
    identity = entries[IDENTITY_KEY]
    assert identity["subject"] == "copro-allow"
    assert (identity["tenant"], identity["risk"], identity["country"]) == ("acme", "low", "US")
    assert identity["posture"] == "managed"
    assert "body" not in answer and "headers" not in answer  # unchanged: the Router keeps its values


def test_router_request_medium_risk_mutation_breaks_401_with_rfc9470_challenge_and_string_body(
    post: Any, world: Any
) -> None:
    payload = with_caller(ROUTER_REQUEST, world.token(risk="medium", sub="copro-medium"))
    payload["body"] = json.dumps({"query": "mutation Rename { rename(name: \"x\") { id } }"})
    answer = post(payload).json()
    assert answer["control"] == {"break": 401}
    assert answer["id"] == ROUTER_REQUEST["id"] and answer["stage"] == "RouterRequest"
    challenge = answer["headers"]["www-authenticate"][0]
    assert 'error="insufficient_user_authentication"' in challenge and 'acr_values="mfa"' in challenge
    assert isinstance(answer["body"], str)  # Router stages take the body as a JSON string
    error = json.loads(answer["body"])["errors"][0]
    assert error["extensions"]["code"] == "STEP_UP_REQUIRED"
    assert "content-length" not in answer["headers"]


def test_router_request_high_risk_breaks_403(post: Any, world: Any) -> None:
    answer = post(with_caller(ROUTER_REQUEST, world.token(risk="high", sub="copro-high"))).json()
    assert answer["control"] == {"break": 403}
    assert json.loads(answer["body"])["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert "www-authenticate" not in answer["headers"]


def test_router_request_without_token_breaks_401_with_bare_bearer_challenge(post: Any) -> None:
    answer = post(with_caller(ROUTER_REQUEST, None)).json()
    assert answer["control"] == {"break": 401}
    assert answer["headers"]["www-authenticate"] == ['Bearer realm="ig-gate"']


def test_client_ip_is_the_entry_the_trusted_router_hop_wrote_not_a_client_forged_one(
    post: Any, world: Any
) -> None:
    # One trusted hop: the rightmost X-Forwarded-For entry; the client-written US entry left of it is ignored.
    forged = with_caller(ROUTER_REQUEST, world.token(sub="copro-forged"), ip=f"{US_IP}, {FR_IP}")
    answer = post(forged).json()
    assert answer["control"] == {"break": 403}
    assert "geo_fenced" in json.loads(answer["body"])["errors"][0]["message"]
    via_de = with_caller(ROUTER_REQUEST, world.token(sub="copro-de"), ip=f"{FR_IP}, {DE_IP}")
    assert post(via_de).json()["context"]["entries"][IDENTITY_KEY]["country"] == "DE"


def test_forwarded_header_is_read_when_there_is_no_x_forwarded_for(post: Any, world: Any) -> None:
    payload = with_caller(ROUTER_REQUEST, world.token(sub="copro-fwd"), ip=None, forwarded=f"for={DE_IP}")
    assert post(payload).json()["context"]["entries"][IDENTITY_KEY]["country"] == "DE"


def test_no_forwarding_header_means_geo_unknown_and_a_deny(post: Any, world: Any) -> None:
    answer = post(with_caller(ROUTER_REQUEST, world.token(sub="copro-noip"), ip=None)).json()
    assert answer["control"] == {"break": 403}
    assert "geo_unknown" in json.loads(answer["body"])["errors"][0]["message"]


def test_supergraph_request_sets_each_required_policy_from_rego(post: Any, world: Any) -> None:
    payload = with_caller(
        SUPERGRAPH_REQUEST, world.token(sub="alice"), x_device_attestation=world.attestation("managed")
    )
    payload["context"]["entries"][POLICIES_KEY] = {
        "read_profile": None, "admin": None, "billing": None, "no_such_policy": None
    }
    payload["body"]["operationName"] = "Long"  # the example names an operation its document lacks
    answer = post(payload).json()
    assert answer["control"] == "continue" and answer["stage"] == "SupergraphRequest"
    assert "id" not in answer  # the example has no id: nothing invented
    entries = answer["context"]["entries"]
    # alice is an acme admin, but admin needs step-up; billing needs the billing purpose.
    assert entries[POLICIES_KEY] == {
        "read_profile": True, "admin": False, "billing": False, "no_such_policy": False
    }
    assert entries["this-is-a-test-context"] == 42
    assert entries[IDENTITY_KEY]["subject"] == "alice"


def test_supergraph_policies_follow_the_input_purpose_and_step_up(post: Any, world: Any) -> None:
    payload = with_caller(
        SUPERGRAPH_REQUEST,
        world.token(sub="alice", acr="mfa", amr=["mfa"], auth_time=int(time.time())),
        x_device_attestation=world.attestation("managed"),
        x_purpose="billing",
    )
    payload["context"]["entries"][POLICIES_KEY] = {"admin": None, "billing": None}
    payload["body"]["operationName"] = "Long"  # the example names an operation its document lacks
    entries = post(payload).json()["context"]["entries"]
    assert entries[POLICIES_KEY] == {"admin": True, "billing": True}


def test_supergraph_request_refused_breaks_with_an_object_body(post: Any, world: Any) -> None:
    payload = with_caller(SUPERGRAPH_REQUEST, world.token(risk="high", sub="copro-sg-high"))
    payload["context"]["entries"][POLICIES_KEY] = {"read_profile": None}
    payload["body"]["operationName"] = "Long"
    answer = post(payload).json()
    assert answer["control"] == {"break": 403}
    assert answer["body"]["errors"][0]["extensions"]["code"] == "FORBIDDEN"  # an object, not a string


@pytest.mark.parametrize("stage", ["ExecutionRequest", "SubgraphRequest", "SomethingNew"])
def test_unknown_or_other_stages_pass_through_unchanged(post: Any, stage: str) -> None:
    payload = {"version": 1, "stage": stage, "control": "continue", "id": "x1", "subgraphRequestId": "s1",
               "headers": {"a": ["b"]}, "body": {"data": {}}, "context": {"entries": {"k": 1}}}
    assert post(payload).json() == {
        "version": 1, "stage": stage, "id": "x1", "subgraphRequestId": "s1", "control": "continue"
    }


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[1, 2]", b'"text"', b"{}", b'{"version": 2, "stage": "RouterRequest"}',
     b'{"version": 1}', b'{"version": 1, "stage": 7}', b"[" * 100_000],
)
def test_malformed_envelopes_get_http_400_json_never_500(post: Any, body: bytes) -> None:
    response = post(body, headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_coprocessor_payload"


@pytest.mark.parametrize(
    "change",
    [
        {"headers": ["authorization", "Bearer x"]},
        {"headers": {"authorization": [1]}},
        {"headers": {"authorization": {"nested": True}}},
        {"body": 12},
        {"body": {"query": "{ me }"}},  # Router stages carry a string body
        {"method": ["POST"]},
        {"context": "not an object"},
    ],
)
def test_malformed_fields_break_400_with_a_graphql_error_the_router_forwards(
    post: Any, world: Any, change: dict
) -> None:
    payload = {**with_caller(ROUTER_REQUEST, world.token(sub="copro-bad")), **change}
    response = post(payload)
    assert response.status_code == 200
    answer = response.json()
    if change.get("context"):  # a bad context alone does not stop the request; it is replaced
        assert answer["control"] == "continue"
        return
    assert answer["control"] == {"break": 400}
    assert answer["id"] == ROUTER_REQUEST["id"]
    assert json.loads(answer["body"])["errors"][0]["extensions"]["code"] == "BAD_REQUEST"


def test_oversized_payload_is_refused_with_413_json(make_sidecar: Any) -> None:
    client = make_sidecar(server={"max_body_bytes": 1024})
    response = client.post("/apollo/coprocessor", content=b"{" + b" " * 2048 + b"}")
    assert response.status_code == 413
    assert response.json()["error"] == "invalid_coprocessor_payload"
