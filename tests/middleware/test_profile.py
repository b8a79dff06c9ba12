"""workload_profile: read / write / subscription / ingest labels."""

from __future__ import annotations

import pytest

from ig_gate.middleware.profile import workload_profile


@pytest.mark.parametrize(
    ("method", "path", "operation_type", "content_type", "expected"),
    [
        ("POST", "/graphql", "query", "application/json", "read"),
        ("GET", "/graphql", "query", None, "read"),
        ("POST", "/graphql", "mutation", "application/json; charset=utf-8", "write"),
        ("POST", "/graphql", "subscription", "application/json", "subscription"),
        ("POST", "/graphql", "mutation", "multipart/form-data; boundary=x", "ingest"),
        ("POST", "/events", "unknown", "application/x-ndjson", "ingest"),
        ("PUT", "/upload", "unknown", "Application/Octet-Stream", "ingest"),
        ("POST", "/import", "unknown", "text/csv", "ingest"),
        ("GET", "/export", "unknown", "text/csv", "read"),
        ("GET", "/items", "unknown", None, "read"),
        ("head", "/items", "unknown", None, "read"),
        ("OPTIONS", "/items", "unknown", None, "read"),
        ("POST", "/items", "unknown", "application/json", "write"),
        ("DELETE", "/items/1", "unknown", None, "write"),
        ("PATCH", "/items/1", "unknown", "", "write"),
    ],
)
def test_profile_from_operation_method_and_content_type(method, path, operation_type, content_type, expected):
    assert workload_profile(method, path, operation_type, content_type) == expected


def test_websocket_is_a_subscription_whatever_the_method():
    assert workload_profile("GET", "/graphql", "unknown", None, websocket=True) == "subscription"


def test_configured_ingest_prefixes_win_over_the_graphql_operation():
    prefixes = ("/bulk/", "/ingest")
    assert workload_profile("POST", "/bulk/orders", "mutation", "application/json",
                            ingest_prefixes=prefixes) == "ingest"
    assert workload_profile("POST", "/graphql", "mutation", "application/json",
                            ingest_prefixes=prefixes) == "write"
