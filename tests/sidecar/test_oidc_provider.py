"""The demo's OpenID provider (Authlib) keeps the protocol's promises: PKCE is required and checked,
redirect URIs are registered, `acr_values=mfa` forces the TOTP step, `max_age` forces a new login, and the
access token is one ig-gate accepts (its JWKS, `acr`/`amr`/`auth_time`/`risk`)."""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
import urllib.parse
from typing import Any

import jwt
import pytest
from flask.testing import FlaskClient

from ig_gate.sidecar.devidp import DevKey
from ig_gate.sidecar.oidc_provider import DEMO_USERS, Provider

ISSUER, REDIRECT = "http://127.0.0.1:9000", "http://127.0.0.1:8080/ui"


@pytest.fixture(scope="module")
def provider() -> Provider:
    return Provider(ISSUER, DevKey.generate("idp-1"), DevKey.generate("mdm-1"), (REDIRECT,))


@pytest.fixture
def client(provider: Provider) -> FlaskClient:
    return provider.app.test_client()


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def authorize(client: FlaskClient, challenge: str | None, **extra: str) -> Any:
    params = {"response_type": "code", "client_id": "ig-gate-demo", "redirect_uri": REDIRECT,
              "scope": "openid profile", "state": "st", **extra}
    if challenge:
        params |= {"code_challenge": challenge, "code_challenge_method": "S256"}
    return client.get("/authorize?" + urllib.parse.urlencode(params))


def location(response: Any) -> tuple[str, dict[str, str]]:
    parts = urllib.parse.urlsplit(response.headers["Location"])
    return parts.path if not parts.netloc else f"{parts.scheme}://{parts.netloc}{parts.path}", dict(
        urllib.parse.parse_qsl(parts.query)
    )


def follow_to_code(client: FlaskClient, response: Any, user: str) -> str:
    """Log in (and pass the TOTP step when asked) until the provider redirects back with a code."""
    for _ in range(4):
        path, query = location(response)
        if path == REDIRECT:
            assert query["state"] == "st"
            return query["code"]
        if path == "/login":
            form = {"username": user, "password": DEMO_USERS[user].password, "next": query["next"]}
            response = client.post("/login", data=form)
        elif path == "/mfa":
            form = {"code": DEMO_USERS[user].totp().now(), "next": query["next"]}
            response = client.post("/mfa", data=form)
        else:
            response = client.get(response.headers["Location"])
    raise AssertionError("no code after four redirects")


def exchange(client: FlaskClient, code: str, verifier: str) -> Any:
    return client.post("/token", data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
        "client_id": "ig-gate-demo", "code_verifier": verifier,
    })


def claims(provider: Provider, token: str) -> dict[str, Any]:
    key = jwt.PyJWK(provider.session_key.jwks()["keys"][0])
    return jwt.decode(token, key.key, algorithms=["ES256"], audience="ig-gateway", issuer=ISSUER)


def test_discovery_names_the_endpoints_pkce_and_the_keys_ig_gate_trusts(client, provider):
    meta = client.get("/.well-known/openid-configuration").get_json()
    assert meta["issuer"] == ISSUER and meta["code_challenge_methods_supported"] == ["S256"]
    assert meta["authorization_endpoint"] == ISSUER + "/authorize"
    assert client.get("/jwks").get_json() == provider.session_key.jwks()


def test_password_sign_in_gives_an_access_token_with_acr_pwd_and_the_users_risk(client, provider):
    verifier, challenge = pkce()
    code = follow_to_code(client, authorize(client, challenge), "bob")
    body = exchange(client, code, verifier).get_json()
    access = claims(provider, body["access_token"])
    assert (access["sub"], access["acr"], access["amr"], access["risk"], access["tenant"]) == (
        "bob", "pwd", ["pwd"], "medium", "acme"
    )
    assert abs(access["auth_time"] - time.time()) < 30 and access["sid"]
    assert jwt.decode(body["id_token"], options={"verify_signature": False})["aud"] == ["ig-gate-demo"]


def test_acr_values_mfa_forces_the_totp_step_and_the_token_says_mfa(client, provider):
    verifier, challenge = pkce()
    follow_to_code(client, authorize(client, challenge), "bob")  # a password session exists
    verifier, challenge = pkce()
    response = authorize(client, challenge, acr_values="mfa", max_age="300")
    assert location(response)[0] == "/mfa"  # not the password again: the session is fresh enough
    access = claims(provider, exchange(client, follow_to_code(client, response, "bob"), verifier)
                    .get_json()["access_token"])
    assert (access["acr"], access["amr"]) == ("mfa", ["pwd", "otp", "mfa"])


def test_max_age_older_than_the_login_sends_the_user_to_the_login_page_again(client):
    _, challenge = pkce()
    follow_to_code(client, authorize(client, challenge), "alice")
    with client.session_transaction() as session:  # the login happened ten minutes ago
        session["login"] = {**session["login"], "auth_time": int(time.time()) - 600}
    assert location(authorize(client, challenge, max_age="300"))[0] == "/login"
    assert location(authorize(client, challenge, max_age="3600"))[0] == REDIRECT


def test_a_wrong_totp_code_is_refused(client):
    _, challenge = pkce()
    follow_to_code(client, authorize(client, challenge), "bob")
    path, query = location(authorize(client, challenge, acr_values="mfa"))
    assert path == "/mfa"
    wrong = "000000" if DEMO_USERS["bob"].totp().now() != "000000" else "111111"
    assert client.post("/mfa", data={"code": wrong, "next": query["next"]}).status_code == 401


def test_authorization_without_pkce_s256_is_refused(client):
    follow_to_code(client, authorize(client, pkce()[1]), "alice")
    assert location(authorize(client, None))[1]["error"] == "invalid_request"
    plain = authorize(client, None, code_challenge="x" * 43, code_challenge_method="plain")
    assert location(plain)[1]["error"] == "invalid_request"


def test_a_code_is_refused_with_the_wrong_verifier_and_works_only_once(client):
    _, challenge = pkce()
    code = follow_to_code(client, authorize(client, challenge), "alice")
    assert exchange(client, code, pkce()[0]).get_json()["error"] == "invalid_grant"
    verifier2, challenge2 = pkce()
    code = follow_to_code(client, authorize(client, challenge2), "alice")
    assert exchange(client, code, verifier2).status_code == 200
    assert exchange(client, code, verifier2).get_json()["error"] == "invalid_grant"


def test_an_unregistered_redirect_uri_is_refused_without_redirecting(client):
    response = client.get("/authorize?" + urllib.parse.urlencode({
        "response_type": "code", "client_id": "ig-gate-demo", "redirect_uri": "https://evil.example/cb",
        "scope": "openid", "code_challenge": pkce()[1], "code_challenge_method": "S256",
    }))
    assert response.status_code == 400 and "Location" not in response.headers


def test_login_redirects_only_to_provider_paths(client):
    response = client.post("/login", data={"username": "alice", "password": "alice",
                                           "next": "https://evil.example/x"})
    assert response.headers["Location"].removesuffix("?") == "/authorize"


def test_the_mdm_attests_only_for_the_user_of_a_valid_token(client, provider):
    verifier, challenge = pkce()
    token = exchange(client, follow_to_code(client, authorize(client, challenge), "alice"), verifier) \
        .get_json()["access_token"]
    answer = client.post("/mdm/attestation", json={"posture": "jailbroken"},
                         headers={"Authorization": f"Bearer {token}"}).get_json()
    attestation = jwt.decode(answer["attestation"], options={"verify_signature": False})
    assert (attestation["sub"], attestation["posture"]) == ("alice", "jailbroken")
    forged = provider.device_key.sign({"sub": "alice"})  # signed, but not by the session key
    assert client.post("/mdm/attestation", json={"posture": "managed"},
                       headers={"Authorization": f"Bearer {forged}"}).status_code == 401
