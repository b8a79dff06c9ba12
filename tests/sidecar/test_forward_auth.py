"""Forward-auth /authz as nginx auth_request, Traefik forwardAuth and Envoy ext_authz (HTTP) ask it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ig_gate.sidecar.forward_auth import header_value
from tests.middleware.conftest import FR_IP, PEER, US_IP

QUERY_URI = "/graphql?query=%7Bme%7Bid%7D%7D"  # GET /graphql?query={me{id}}


@pytest.fixture
def authz(make_sidecar: Any) -> Any:
    return make_sidecar()


def caller(world: Any, sub: str, risk: str = "low", posture: str | None = "managed", **extra: str) -> dict:
    headers = {"authorization": f"Bearer {world.token(risk=risk, sub=sub)}", "x-forwarded-for": US_IP}
    if posture is not None:
        headers["x-device-attestation"] = world.attestation(posture, sub=sub)
    return {**headers, **extra}


def test_nginx_allowed_request_gets_200_with_identity_headers(authz: Any, world: Any) -> None:
    headers = caller(world, "fa-nginx", x_original_uri=QUERY_URI, x_original_method="GET")
    response = authz.get("/authz", headers={k.replace("_", "-"): v for k, v in headers.items()})
    assert response.status_code == 200
    assert response.headers["x-auth-subject"] == "fa-nginx"
    assert response.headers["x-auth-tenant"] == "acme"
    assert response.headers["x-auth-risk"] == "low"
    assert response.headers["x-auth-decision-id"]
    assert response.content == b""


def test_nginx_original_method_and_uri_are_what_the_policy_sees(authz: Any, world: Any) -> None:
    # unmanaged device: a GraphQL query read is allowed; a mutation in the original URI of a GET is
    # refused 405 (GraphQL over HTTP), and a POST to the GraphQL path without its body is a write
    base = caller(world, "fa-method", posture="unmanaged")
    read = authz.get("/authz", headers={**base, "x-original-uri": QUERY_URI, "x-original-method": "GET"})
    assert read.status_code == 200
    mutation = "/graphql?query=mutation%7Brename%7Bid%7D%7D"
    write = authz.get("/authz", headers={**base, "x-original-uri": mutation, "x-original-method": "GET"})
    assert write.status_code == 405 and write.headers["allow"] == "POST"
    post = authz.get("/authz", headers={**base, "x-original-uri": "/graphql", "x-original-method": "POST"})
    assert post.status_code == 401
    assert 'error="insufficient_user_authentication"' in post.headers["www-authenticate"]


def test_traefik_forwarded_method_and_uri(authz: Any, world: Any) -> None:
    headers = {**caller(world, "fa-traefik", posture="unmanaged"), "x-forwarded-method": "DELETE",
               "x-forwarded-uri": "/api/items/1", "x-forwarded-host": "app.example.test"}
    response = authz.get("/authz", headers=headers)
    assert response.status_code == 401  # a DELETE from an unmanaged device is a write: step-up
    headers["x-forwarded-method"] = "GET"
    assert authz.get("/authz", headers=headers).status_code == 200


def test_envoy_path_prefixed_request_with_forwarded_body(authz: Any, world: Any) -> None:
    headers = {**caller(world, "fa-envoy", posture="unmanaged"), "content-type": "application/json"}
    query = authz.post("/authz/graphql", headers=headers, content=json.dumps({"query": "{ me { id } }"}))
    assert query.status_code == 200 and query.headers["x-auth-subject"] == "fa-envoy"
    mutation = json.dumps({"query": "mutation { rename { id } }"})
    assert authz.post("/authz/graphql", headers=headers, content=mutation).status_code == 401


def test_stepped_up_401_carries_rfc9470_challenge(authz: Any, world: Any) -> None:
    headers = {**caller(world, "fa-medium", risk="medium"), "x-original-uri": QUERY_URI}
    response = authz.get("/authz", headers=headers)
    assert response.status_code == 401
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith('Bearer realm="ig-gate"') and 'acr_values="mfa"' in challenge
    assert "x-auth-subject" not in response.headers


def test_missing_token_401_and_high_risk_403(authz: Any, world: Any) -> None:
    missing = authz.get("/authz", headers={"x-original-uri": QUERY_URI})
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == 'Bearer realm="ig-gate"'
    high = authz.get("/authz", headers={**caller(world, "fa-high", risk="high"), "x-original-uri": QUERY_URI})
    assert high.status_code == 403
    assert "risk_high" in high.text


def test_forwarded_for_from_a_trusted_proxy_decides_geo(authz: Any, world: Any) -> None:
    headers = {**caller(world, "fa-geo"), "x-forwarded-for": FR_IP, "x-original-uri": QUERY_URI}
    response = authz.get("/authz", headers=headers)
    assert response.status_code == 403 and "geo_fenced" in response.text


def test_forwarded_for_from_an_untrusted_peer_is_ignored(make_sidecar: Any, world: Any) -> None:
    direct = make_sidecar(peer=PEER)  # 203.0.113.5 (US) is not a trusted proxy
    headers = {**caller(world, "fa-spoof"), "x-forwarded-for": FR_IP, "x-original-uri": QUERY_URI}
    response = direct.get("/authz", headers=headers)
    assert response.status_code == 200  # decided on the peer's own (US) address, the FR claim ignored


def test_head_request_gets_status_without_body(authz: Any, world: Any) -> None:
    response = authz.head("/authz", headers={"x-original-uri": QUERY_URI})
    assert response.status_code == 401 and response.content == b""


def test_forwarded_body_over_the_limit_is_413(make_sidecar: Any, world: Any) -> None:
    client = make_sidecar(server={"max_body_bytes": 64})
    headers = {**caller(world, "fa-big"), "content-type": "application/json"}
    body = json.dumps({"query": "{ me " * 40 + "}"})
    response = client.post("/authz/graphql", headers=headers, content=body)
    assert response.status_code == 413


@pytest.mark.parametrize(
    "headers",
    [
        {"authorization": "Bearer not a token"},
        {"authorization": "Bearer " + "a" * 9000},
        {"x-original-uri": b"\xff\xfe"},
        {"x-original-method": ""},
        {"x-purpose": "no spaces allowed"},
        {"content-type": "application/json"},
    ],
)
def test_malformed_requests_are_refused_never_500(authz: Any, world: Any, headers: dict) -> None:
    response = authz.post("/authz/graphql", headers=headers, content=b"{not json")
    assert response.status_code in (400, 401)


def test_identity_header_values_cannot_inject_headers() -> None:
    assert header_value("alice\r\nx-admin: 1") == b"alice%0D%0Ax-admin: 1"
    assert header_value("j\u00f6rg") == b"j%C3%B6rg"


MUTATION_URI = "/graphql?query=mutation%7Brename%7Bid%7D%7D"


@pytest.mark.parametrize(
    "spoofed",
    [
        # behind Traefik (it sets X-Forwarded-*), the client adds nginx's headers naming a harmless read
        {"x-forwarded-method": "GET", "x-forwarded-uri": MUTATION_URI, "x-original-uri": QUERY_URI},
        {"x-forwarded-method": "DELETE", "x-forwarded-uri": "/api/items/1", "x-original-method": "GET"},
        # behind nginx (it sets X-Original-*), the client adds Traefik's
        {"x-original-method": "POST", "x-original-uri": "/graphql", "x-forwarded-method": "GET"},
    ],
)
def test_nginx_and_traefik_headers_that_disagree_are_refused_not_resolved(
    authz: Any, world: Any, spoofed: dict
) -> None:
    response = authz.get("/authz", headers={**caller(world, "fa-spoof-uri", posture="unmanaged"), **spoofed})
    assert response.status_code == 400
    assert "x-auth-subject" not in response.headers


def test_the_same_request_named_by_both_header_families_is_fine(authz: Any, world: Any) -> None:
    both = {"x-original-uri": QUERY_URI, "x-forwarded-uri": QUERY_URI, "x-original-method": "GET",
            "x-forwarded-method": "get"}
    assert authz.get("/authz", headers={**caller(world, "fa-both"), **both}).status_code == 200


def test_envoy_path_prefixed_requests_ignore_original_request_headers(authz: Any, world: Any) -> None:
    # Envoy forwards client headers it is told to allow: none of them may rename the original request
    headers = {**caller(world, "fa-envoy-spoof", posture="unmanaged"), "x-original-method": "GET",
               "x-original-uri": QUERY_URI, "x-forwarded-method": "GET", "x-forwarded-uri": QUERY_URI}
    assert authz.delete("/authz/api/items/1", headers=headers).status_code == 401  # a write: step-up
    assert authz.get("/authz/graphql", headers=headers, params={"query": "{me{id}}"}).status_code == 200
