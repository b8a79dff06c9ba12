"""Forward-auth and the coprocessor classify as the middleware does (the same Gate entry): GraphQL is read
only on `graphql.paths` (forward-auth: the original path; the coprocessor: always GraphQL), and a bad token
is refused before a forwarded body is read."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.middleware.conftest import US_IP
from tests.sidecar.test_coprocessor import ROUTER_REQUEST, with_caller
from tests.sidecar.test_forward_auth import caller

JSON = {"content-type": "application/json"}


@pytest.fixture
def authz(make_sidecar: Any) -> Any:
    return make_sidecar(server={"max_body_bytes": 65_536})


@pytest.fixture
def copro(make_sidecar: Any) -> Any:
    client = make_sidecar(server={"coprocessor_trusted_hops": 1})

    def call(payload: dict[str, Any]) -> dict[str, Any]:
        return client.post("/apollo/coprocessor", json=payload).json()

    return call


def test_envoy_rest_write_with_a_query_member_is_a_write(authz, world):
    headers = {**caller(world, "fa-rest", posture="unmanaged"), **JSON}
    body = json.dumps({"amount": 1000, "query": "{ x }"})
    response = authz.post("/authz/api/transfer", content=body, headers=headers)
    assert response.status_code == 401 and "device_unmanaged_write" in response.text


def test_envoy_graphql_query_is_a_read_and_a_mutation_a_write(authz, world):
    headers = {**caller(world, "fa-gql", posture="unmanaged"), **JSON}
    read = authz.post("/authz/graphql", content=json.dumps({"query": "{ me { id } }"}), headers=headers)
    assert read.status_code == 200
    write = authz.post("/authz/graphql", content=json.dumps({"query": "mutation { x }"}), headers=headers)
    assert write.status_code == 401 and "device_unmanaged_write" in write.text


def test_percent_encoded_query_parameter_in_the_original_uri_is_405(authz, world):
    headers = caller(
        world, "fa-enc", x_original_uri="/graphql?%71uery=mutation%7Bx%7D", x_original_method="GET"
    )
    response = authz.get("/authz", headers={k.replace("_", "-"): v for k, v in headers.items()})
    assert response.status_code == 405 and response.headers["allow"] == "POST"


def test_a_bad_token_is_refused_before_a_forwarded_body_is_read(authz):
    # the body is over server.max_body_bytes: reading it first would answer 413
    headers = {"authorization": "Bearer not-a-token", "x-forwarded-for": US_IP, **JSON}
    response = authz.post("/authz/graphql", content=b"{" * 200_000, headers=headers)
    assert response.status_code == 401


def test_the_coprocessor_reads_graphql_whatever_the_routers_path(copro, world):
    def router_request(body: dict[str, Any], path: str) -> dict[str, Any]:
        payload = with_caller(ROUTER_REQUEST, world.token(sub="copro-cls"), x_device_attestation="")
        payload.update(path=path, body=json.dumps(body))
        return payload

    assert copro(router_request({"query": "{ me { id } }"}, "/api"))["control"] == "continue"
    write = copro(router_request({"query": "mutation { x }"}, "/api"))
    assert write["control"] == {"break": 401} and "device_unmanaged_write" in write["body"]
    several = copro(router_request({"query": "query A { a } mutation B { b }"}, "/"))
    assert several["control"] == {"break": 400} and "operationName" in several["body"]
