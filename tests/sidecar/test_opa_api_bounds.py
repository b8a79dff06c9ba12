"""Issue 9 item 11, the Data API's part, against a real `ig-gate serve` (its admin listener): an input
nested beyond the depth bound is a 400 (was a RecursionError -> 500), and a POST without `input`
answers with OPA's `api_usage_warning`, as opa-python-client sees it."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from opa_client import OpaClient

from ig_gate.sidecar.opa_api import MAX_INPUT_DEPTH, nested_deeper
from tests.support.sidecar import Served

WARNING = {"code": "api_usage_warning", "message": "'input' key missing from the request"}


def nested(depth: int) -> str:
    """An input document of `depth` nested arrays and objects, as JSON text."""
    opening = "".join('{"a":' if level % 2 else "[" for level in range(depth))
    closing = "".join("}" if level % 2 else "]" for level in reversed(range(depth)))
    return opening + "0" + closing


@pytest.fixture(scope="module")
def opa(served: Served) -> Iterator[OpaClient]:
    client = OpaClient(host="127.0.0.1", port=served.admin_port)
    yield client
    client.close_connection()


@pytest.mark.parametrize("depth", [MAX_INPUT_DEPTH + 1, 200, 900])
def test_input_nested_beyond_the_bound_is_an_opa_shaped_400_not_a_500(served: Served, depth: int) -> None:
    url = f"{served.admin_url}/v1/data/ig/zt/decision"
    posted = httpx.post(url, content=f'{{"input": {nested(depth)}}}', timeout=10)
    got = httpx.get(url, params={"input": nested(depth)}, timeout=10)
    for response in (posted, got):
        assert response.status_code == 400
        assert response.json()["code"] == "invalid_parameter"
        assert "nested deeper than" in response.json()["message"] or "not valid JSON" in response.json()[
            "message"]


def test_input_at_the_bound_is_evaluated(served: Served) -> None:
    response = httpx.post(
        f"{served.admin_url}/v1/data/ig/zt/decision", content=f'{{"input": {nested(MAX_INPUT_DEPTH)}}}'
    )
    assert response.status_code == 200 and "result" in response.json()


def test_the_depth_check_counts_arrays_and_objects_and_needs_no_recursion() -> None:
    assert not nested_deeper(json.loads(nested(MAX_INPUT_DEPTH)), MAX_INPUT_DEPTH)
    assert nested_deeper(json.loads(nested(MAX_INPUT_DEPTH + 1)), MAX_INPUT_DEPTH)
    deep: list = []
    for _ in range(100_000):  # far beyond the interpreter's recursion limit
        deep = [deep]
    assert nested_deeper(deep, MAX_INPUT_DEPTH)
    assert not nested_deeper({"a": 1, "b": "x" * 10}, 1) and not nested_deeper(None, 1)


def test_opa_client_query_without_input_gets_opas_api_usage_warning(opa: OpaClient) -> None:
    answer = opa.query_rule(input_data=None, package_path="ig.zt", rule_name="decision")  # {"input": null}
    assert answer["warning"] == WARNING and answer["result"]["allow"] is False and answer["decision_id"]
    with_input = opa.query_rule(input_data={"tenant": "acme"}, package_path="ig.zt", rule_name="decision")
    assert "warning" not in with_input


@pytest.mark.parametrize("body", [b"", b"{}", b'{"inputs": {"tenant": "acme"}}'])
def test_post_bodies_without_an_input_key_get_the_warning(served: Served, body: bytes) -> None:
    response = httpx.post(f"{served.admin_url}/v1/data/tenants/acme", content=body, timeout=10)
    assert response.status_code == 200
    assert response.json()["warning"] == WARNING
    assert response.json()["result"]["allowed_countries"] == ["US", "DE"]
