"""`make demo` serves the OpenID provider next to the protected app, and the gate trusts it: a token from
the provider's code flow (PKCE) is accepted, its `risk` decides, and the page at /ui is wired to it."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import sys
import urllib.parse
from pathlib import Path

import httpx
import pytest

from ig_gate.sidecar.oidc_provider import DEMO_USERS
from tests.support.procs import free_port, port_open, running, wait_until

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


def code_flow(idp: str, app: str, user: str) -> str:
    """Sign in as user with the authorization code flow + PKCE, as the page does; the access token."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    redirect = f"{app}/ui"
    with httpx.Client(base_url=idp, timeout=10) as client:
        query = {"response_type": "code", "client_id": "ig-gate-demo", "redirect_uri": redirect,
                 "scope": "openid", "state": "s", "code_challenge": challenge,
                 "code_challenge_method": "S256"}
        login = client.get("/authorize", params=query).headers["location"]
        target = urllib.parse.parse_qs(urllib.parse.urlsplit(login).query)["next"][0]
        client.post("/login", data={"username": user, "password": DEMO_USERS[user].password, "next": target})
        back = client.get("/authorize", params=query).headers["location"]
        assert back.startswith(redirect + "?")
        code = urllib.parse.parse_qs(urllib.parse.urlsplit(back).query)["code"][0]
        tokens = client.post("/token", data={"grant_type": "authorization_code", "code": code,
                                             "redirect_uri": redirect, "client_id": "ig-gate-demo",
                                             "code_verifier": verifier})
        return tokens.json()["access_token"]


def test_make_demo_serves_a_provider_whose_tokens_the_gate_accepts_and_a_page_wired_to_it(tmp_path):
    port, idp_port = free_port(), free_port()
    argv = [sys.executable, "-m", "ig_gate.sidecar.demo", "--port", str(port), "--idp-port", str(idp_port),
            "--workdir", str(tmp_path / "demo"), "--policies", str(REPO / "policies")]
    app, idp = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{idp_port}"
    with running(argv, port=port, log=tmp_path / "demo.log", timeout_s=60):
        wait_until(lambda: port_open(idp_port), 10, "the demo OpenID provider")
        assert httpx.get(f"{idp}/.well-known/openid-configuration").json()["issuer"] == idp
        page = httpx.get(f"{app}/ui").text
        assert json.dumps(idp) in page

        def me(user: str) -> httpx.Response:
            return httpx.post(f"{app}/graphql", json={"query": "query Me { me { subject risk } }"},
                              headers={"Authorization": f"Bearer {code_flow(idp, app, user)}",
                                       "X-Forwarded-For": "8.8.8.8"}, timeout=10)

        alice = me("alice")
        assert alice.status_code == 200, alice.text
        assert alice.json()["data"]["me"] | {"subject": "alice", "risk": "low"} == alice.json()["data"]["me"]
        assert me("mallory").status_code == 403  # the provider's risk claim decides
