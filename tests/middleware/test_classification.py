"""Request classification is policy input: GraphQL is read only on `graphql.paths`, the way servers read it.

Each attack runs behind ZeroTrustMiddleware in a plain Starlette app with the example policy, where a write
from an unmanaged (here: unattested) device needs step-up (401 device_unmanaged_write) and a read passes.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from ig_gate.middleware.compose import build_gate
from ig_gate.middleware.gate import GateRequest
from ig_gate.middleware.graphql import GraphQLRequestError, payload_operation, request_operation
from tests.middleware.conftest import World

LIMIT = 65_536


@pytest.fixture
def client(make_client: Any) -> Any:
    return make_client()


def auth(world: World, **more: str) -> dict[str, str]:
    return {"authorization": f"Bearer {world.token()}", **more}


def stepped_up_as_write(response: Any) -> bool:
    return response.status_code == 401 and "device_unmanaged_write" in response.text


# -- the attacks, behind the middleware ---------------------------------------------------------------


def test_a_rest_write_with_a_query_member_is_a_write(world, client):
    body = {"amount": 1000, "query": "{ x }"}
    response = client.post("/api/items", json=body, headers=auth(world))
    assert stepped_up_as_write(response)


def test_a_rest_put_with_a_query_member_is_a_write(world, client):
    response = client.put("/api/items", json={"query": "{ x }"}, headers=auth(world))
    assert response.status_code != 200 and "device_unmanaged_write" in response.text


def test_a_rest_batch_of_queries_is_a_write(world, client):
    response = client.post("/api/items", json=[{"query": "{ a }"}, {"query": "{ b }"}], headers=auth(world))
    assert stepped_up_as_write(response)


def test_a_percent_encoded_query_parameter_name_is_decoded_and_a_mutation_over_get_is_405(world, client):
    response = client.get("/graphql?%71uery=mutation%7Bx%7D", headers=auth(world))
    assert response.status_code == 405 and response.headers["allow"] == "POST"
    assert response.json()["errors"][0]["extensions"]["code"] == "METHOD_NOT_ALLOWED"


def test_plus_is_a_space_in_get_parameters(world, client):
    response = client.get("/graphql?query=mutation+M+%7Bx%7D", headers=auth(world))
    assert response.status_code == 405


def test_head_with_a_mutation_parameter_is_405(world, client):
    assert client.head("/graphql?query=mutation%7Bx%7D", headers=auth(world)).status_code == 405


@pytest.mark.parametrize(
    "query_string",
    [
        "query=%7Ba%7D&query=mutation%7Bb%7D",
        "query=%7Ba%7D&%71uery=mutation%7Bb%7D",
        "query=%7Ba%7D&operationName=A&operationName=B",
    ],
)
def test_a_repeated_query_or_operation_name_parameter_is_400(world, client, query_string):
    response = client.get(f"/graphql?{query_string}", headers=auth(world))
    assert response.status_code == 400 and "repeated" in response.text


@pytest.mark.parametrize("query_string", ["query=mutation%7Bx%7D", "operationName=B"])
def test_graphql_parameters_in_both_the_url_and_a_post_body_are_400(world, client, query_string):
    # some servers take the URL's parameters over the body's: a query body cannot hide a URL mutation
    body = {"query": "query A { a } mutation B { b }", "operationName": "A"}
    response = client.post(f"/graphql?{query_string}", json=body, headers=auth(world))
    assert response.status_code == 400 and "both the URL and the body" in response.text


def test_url_parameters_of_a_post_with_another_body_type_are_read(world, client):
    headers = auth(world, **{"content-type": "application/x-www-form-urlencoded"})
    response = client.post("/graphql?query=mutation%7Bx%7D", content=b"a=1", headers=headers)
    assert stepped_up_as_write(response)


def test_a_graphql_batch_is_decided_by_its_most_sensitive_operation(world, client):
    batch = [{"query": "{ a }"}, {"query": "mutation { b }"}]
    assert stepped_up_as_write(client.post("/graphql", json=batch, headers=auth(world)))
    reads = [{"query": "{ a }"}, {"query": "query Q { b }", "operationName": "Q"}]
    assert client.post("/graphql", json=reads, headers=auth(world)).status_code == 200


def test_several_operations_without_operation_name_are_400_and_the_named_one_is_classified(world, client):
    document = "query A { a } mutation B { b }"
    response = client.post("/graphql", json={"query": document}, headers=auth(world))
    assert response.status_code == 400 and "operationName is required" in response.text
    read = client.post("/graphql", json={"query": document, "operationName": "A"}, headers=auth(world))
    assert read.status_code == 200 and read.json()["identity"]["profile"] == "read"
    write = client.post("/graphql", json={"query": document, "operationName": "B"}, headers=auth(world))
    assert stepped_up_as_write(write)
    unknown = client.post("/graphql", json={"query": document, "operationName": "C"}, headers=auth(world))
    assert unknown.status_code == 400


def test_a_document_beyond_max_document_bytes_is_413(world, client):
    document = "{ a }" + " " * LIMIT
    response = client.post("/graphql", json={"query": document}, headers=auth(world))
    assert response.status_code == 413
    assert response.json()["errors"][0]["extensions"]["code"] == "PAYLOAD_TOO_LARGE"


def test_a_json_body_that_repeats_query_is_400(world, client):
    body = b'{"query": "{ a }", "query": "mutation { b }"}'
    response = client.post(
        "/graphql", content=body, headers=auth(world, **{"content-type": "application/json"})
    )
    assert response.status_code == 400 and "repeats a key" in response.text


def test_graphql_paths_are_configurable_and_exact(world, make_client):
    configured = make_client(graphql={"paths": ["/api/items"]})
    # /api/items is now a GraphQL endpoint: a query there is a read
    read = configured.post("/api/items", json={"query": "{ a }"}, headers=auth(world))
    assert read.status_code == 200 and read.json()["identity"]["profile"] == "read"
    # /graphql no longer is: a POST there is a write whatever its body says
    assert stepped_up_as_write(configured.post("/graphql", json={"query": "{ a }"}, headers=auth(world)))


def test_the_profile_off_graphql_paths_comes_from_the_method(world, client):
    read = client.get("/graphql", headers=auth(world))
    assert read.status_code == 200 and read.json()["identity"]["profile"] == "read"
    assert stepped_up_as_write(client.post("/api/items", json={"a": 1}, headers=auth(world)))


# -- the classifier on its own ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload, expected",
    [
        ({"query": "{ a }"}, "query"),
        ({"query": "mutation M { a }"}, "mutation"),
        ({"query": "subscription S { a }", "operationName": "S"}, "subscription"),
        ({"query": "query A { a } mutation B { b }", "operationName": "B"}, "mutation"),
        ({"query": 'query Q { a(t: """x \\""" mutation { """) }'}, "query"),
    ],
)
def test_payload_operation_reads_one_payload(payload, expected):
    assert payload_operation(payload, LIMIT) == expected


@pytest.mark.parametrize(
    "payload, status",
    [
        ({}, 400),
        ({"query": ""}, 400),
        ({"query": 7}, 400),
        ({"query": "{ a }", "operationName": 7}, 400),
        ({"query": "query A { a } mutation B { b }"}, 400),
        ({"query": "query A { a }", "operationName": "B"}, 400),
        ({"query": "fragment F on T { a }"}, 400),
        ({"query": '{ a(x: "open) }'}, 400),
        ({"query": "{ a "}, 400),
        ({"query": "{ a } }"}, 400),
        ({"query": "{ a }" + " " * LIMIT}, 413),
        ({"query": "{ a }" + "é" * (LIMIT // 2)}, 413),  # the bound is in UTF-8 bytes, not characters
    ],
)
def test_payload_operation_refuses_what_it_cannot_read(payload, status):
    with pytest.raises(GraphQLRequestError) as raised:
        payload_operation(payload, LIMIT)
    assert raised.value.status == status


ADVERSARIAL = {
    "open braces": "{" * LIMIT,
    "escaped quotes on one line": '"\\' * (LIMIT // 2),
    "empty strings": '"' * LIMIT,
    "unterminated block strings": '"""' + '\\"""' * (LIMIT // 4 - 1),
    "names": "a " * (LIMIT // 2),
    "comments": "#\n" * (LIMIT // 2),
}


@pytest.mark.parametrize("name", ADVERSARIAL)
def test_the_scan_of_a_crafted_document_at_the_bound_is_fast(name):
    # the regex tokenizer this replaced took ~25 s on the escaped quotes; the scan is one forward pass
    document = ADVERSARIAL[name][:LIMIT]
    started = time.thread_time()
    with pytest.raises(GraphQLRequestError):
        payload_operation({"query": document}, LIMIT)
    assert time.thread_time() - started < 0.5


def test_the_scan_grows_linearly_with_the_document():
    """16x the input costs well under 16x16 the time (a quadratic scan would cost ~256x)."""

    def cost(size: int) -> float:
        document = '"\\' * (size // 2)
        started = time.thread_time()
        for _ in range(5):
            with pytest.raises(GraphQLRequestError):
                payload_operation({"query": document}, size)
        return time.thread_time() - started

    assert cost(1 << 20) < 64 * max(cost(1 << 16), 1e-4)


def test_request_operation_decodes_get_parameters_as_a_server_does():
    assert request_operation("GET", b"%71uery=%7B+a+%7D", None, "", LIMIT) == "query"
    assert request_operation("GET", b"query=subscription+S%7Bs%7D", None, "", LIMIT) == "subscription"
    assert request_operation("GET", b"variables=%7B%7D", None, "", LIMIT) == "unknown"
    with pytest.raises(GraphQLRequestError) as raised:
        request_operation("GET", "query=mutation%7Bx%7D", None, "", LIMIT)
    assert raised.value.status == 405


def test_gate_classifies_only_configured_paths(world):
    gate = build_gate(world.settings())
    try:
        body = json.dumps({"query": "{ a }"}).encode()
        headers = {"authorization": f"Bearer {world.token()}", "content-type": "application/json"}
        rest = gate.decide(GateRequest("POST", "/graphql2", b"", headers, "203.0.113.5", body))
        graphql = gate.decide(GateRequest("POST", "/graphql", b"", headers, "203.0.113.5", body))
        assert (rest.outcome, rest.graphql) == ("stepup", False)
        assert (graphql.outcome, graphql.graphql) == ("allow", True)
    finally:
        gate.close()
