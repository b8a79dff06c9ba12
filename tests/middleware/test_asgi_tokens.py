"""Bad tokens get RFC 6750 401s, malformed headers and bodies get clear 400/401 — never a 500."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest

from tests.middleware.conftest import PROXY, call_asgi, query
from tests.support.keys import make_keypair
from tests.support.tokens import mint

JSON = {"content-type": "application/json"}


def post(client, authorization: str | None, **headers: str):
    if authorization is not None:
        headers["authorization"] = authorization
    return client.post("/graphql", content=query(), headers={**JSON, **headers})


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256_with_public_key(world) -> str:
    """The classic key-confusion attack: HS256 keyed with the IdP's public PEM."""
    now = int(time.time())
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": world.idp.kid}).encode())
    claims = {
        "iss": "https://idp.example.test",
        "aud": "ig-gateway",
        "sub": "mallory",
        "tenant": "acme",
        "risk": "low",
        "iat": now,
        "exp": now + 600,
    }
    signing_input = f"{header}.{_b64(json.dumps(claims).encode())}"
    signature = hmac.new(world.idp.public_pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


BAD_TOKENS = {
    "expired": lambda w: mint(w.idp, lifetime_s=-3600, tenant="acme", risk="low"),
    "not_yet_valid": lambda w: mint(w.idp, nbf=int(time.time()) + 3600, tenant="acme", risk="low"),
    "wrong_issuer": lambda w: mint(w.idp, iss="https://evil.example", tenant="acme", risk="low"),
    "wrong_audience": lambda w: mint(w.idp, aud="someone-else", tenant="acme", risk="low"),
    "alg_none": lambda w: jwt.encode(
        {
            "sub": "mallory",
            "iss": "https://idp.example.test",
            "aud": "ig-gateway",
            "exp": int(time.time()) + 600,
        },
        None,
        algorithm="none",
        headers={"kid": w.idp.kid},
    ),
    "hs_with_public_key": hs256_with_public_key,
    "unknown_kid": lambda w: mint(make_keypair("ES256", "not-in-jwks"), tenant="acme", risk="low"),
    "right_kid_wrong_key": lambda w: mint(make_keypair("ES256", w.idp.kid), tenant="acme", risk="low"),
    "garbage": lambda w: "abc.def.ghi",
}


@pytest.mark.parametrize("kind", sorted(BAD_TOKENS))
def test_bad_tokens_get_401_invalid_token(world, make_client, kind):
    response = post(make_client(), f"Bearer {BAD_TOKENS[kind](world)}")

    assert response.status_code == 401
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith('Bearer realm="ig-gate", error="invalid_token"')
    error = response.json()["errors"][0]
    assert error["extensions"]["code"] == "UNAUTHENTICATED"


def test_no_token_gets_a_bare_bearer_challenge(world, make_client):
    response = post(make_client(), None)

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="ig-gate"'
    assert response.headers["cache-control"] == "no-store"


def test_another_authorization_scheme_counts_as_no_bearer_token(world, make_client):
    response = post(make_client(), "Basic YWxpY2U6c2VjcmV0")

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="ig-gate"'


def test_a_revoked_session_wins_over_the_token_cache(world, make_client):
    client = make_client()
    token = world.token(sid="session-7")
    assert post(client, f"Bearer {token}").status_code == 200

    client.middleware.gate.risk_store.revoke("session-7", reason="caep session-revoked")
    response = post(client, f"Bearer {token}")

    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


def test_raised_session_risk_applies_to_a_cached_token(world, make_client):
    client = make_client()
    token = world.token(sid="session-8")
    assert post(client, f"Bearer {token}").status_code == 200

    client.middleware.gate.risk_store.raise_risk("session-8", "high", reason="idp risk event")

    assert post(client, f"Bearer {token}").status_code == 403


def test_token_from_the_configured_cookie(world, make_client):
    client = make_client(identity={"cookie": "ig_session"})
    token = world.token()

    assert post(client, None, cookie=f"theme=dark; ig_session={token}").status_code == 200
    assert post(client, None, cookie=f'ig_session="{token}"').status_code == 200
    assert post(client, None, cookie="theme=dark").status_code == 401
    bad = post(client, None, cookie="ig_session=not a token")
    assert bad.status_code == 400
    assert 'error="invalid_request"' in bad.headers["www-authenticate"]


MALFORMED_AUTHORIZATION = {
    "bearer_without_token": b"Bearer",
    "bearer_with_two_words": b"Bearer abc def",
    "non_ascii_bytes": b"Bearer eyJ\xff\xfe.abc.def",
    "control_characters": b"Bearer abc\x00def",
    "huge": b"Bearer " + b"a" * 20_000,
}


@pytest.mark.parametrize("kind", sorted(MALFORMED_AUTHORIZATION))
def test_malformed_bearer_credentials_get_400_invalid_request(make_client, kind):
    middleware = make_client().middleware
    headers = [(b"content-type", b"application/json"), (b"authorization", MALFORMED_AUTHORIZATION[kind])]

    status, response_headers, body = asyncio.run(
        call_asgi(middleware, headers=headers, body=query().encode())
    )

    assert status == 400
    assert b'error="invalid_request"' in response_headers[b"www-authenticate"]
    assert json.loads(body)["errors"][0]["extensions"]["code"] == "BAD_REQUEST"


def test_two_authorization_headers_are_malformed(world, make_client):
    token = world.token().encode()
    headers = [(b"authorization", b"Bearer " + token), (b"authorization", b"Bearer " + token)]

    status, _, _ = asyncio.run(call_asgi(make_client().middleware, method="GET", headers=headers))

    assert status == 400


def test_bad_json_body_is_a_400_not_a_500(world, make_client):
    headers = [
        (b"content-type", b"application/json"),
        (b"authorization", b"Bearer " + world.token().encode()),
    ]
    for body in (b"{not json", b"\xff\xfe", b'{"query": 42}'):
        status, _, payload = asyncio.run(call_asgi(make_client().middleware, headers=headers, body=body))
        assert status == 400, body
        assert "JSON" in payload.decode() or "string" in payload.decode()


def test_rest_paths_get_plain_json_error_bodies(make_client):
    response = make_client().post("/api/items", json={"name": "x"})

    assert response.status_code == 401
    body = response.json()
    assert (
        body["error"] == "unauthenticated"
        and body["reason"] == "bearer token missing"
        and body["decision_id"]
    )


@pytest.mark.parametrize(
    "header",
    [
        b"not-an-ip",
        b"1.2.3.4.5",
        b"\xff\xfe",
        b"[::1",
        b"1.2.3.4:http",
        b", , ,",
        b"9" * 10_000,
    ],
)
def test_malformed_forwarded_for_from_a_trusted_proxy_is_ignored_and_counted(world, make_client, header):
    middleware = make_client().middleware
    headers = [
        (b"content-type", b"application/json"),
        (b"authorization", b"Bearer " + world.token().encode()),
        (b"x-forwarded-for", header),
    ]

    status, _, _ = asyncio.run(call_asgi(middleware, headers=headers, body=query().encode(), peer=(PROXY, 1)))

    assert status in (400, 403)  # never a 500; with no usable address the fence fails closed
    malformed = middleware.gate.metrics.registry.get_sample_value("ig_gate_forwarded_header_malformed_total")
    assert header == b", , ," or malformed == 1


@pytest.mark.parametrize(
    "name, value",
    [
        (b"x-device-attestation", b"\xff" * 10),
        (b"x-device-attestation", b"a" * 20_000),
        (b"x-device-attestation", b"not.a.jwt"),
        (b"cookie", b"\xff\xfe=\x00;;;="),
        (b"content-type", b"text/plain"),
        (b"x-forwarded-for", b"\xff"),
    ],
)
def test_odd_secondary_headers_never_break_a_good_request(world, make_client, name, value):
    headers = [
        (b"content-type", b"application/json"),
        (b"authorization", b"Bearer " + world.token().encode()),
        (name, value),
    ]

    status, _, _ = asyncio.run(call_asgi(make_client().middleware, headers=headers, body=query().encode()))

    assert status == 200


def test_malformed_purpose_header_is_a_400(world, make_client):
    response = post(make_client(), f"Bearer {world.token()}", **{"x-purpose": "drop table;"})

    assert response.status_code == 400
    assert "X-Purpose" in response.json()["errors"][0]["message"]


def test_an_unreadable_content_type_is_not_sniffed_and_a_post_counts_as_a_write(world, make_client):
    headers = [(b"content-type", b"\xff/\xfe"), (b"authorization", b"Bearer " + world.token().encode())]

    status, _, body = asyncio.run(call_asgi(make_client().middleware, headers=headers, body=query().encode()))

    assert status == 401
    assert b"device_unmanaged_write" in body
