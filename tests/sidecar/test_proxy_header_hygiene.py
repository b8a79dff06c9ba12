"""Header hygiene in proxy mode (issue 9, item 8): a client cannot smuggle identity or forwarding headers
to the upstream under another spelling (`X_Auth_Subject`, which CGI/WSGI-style upstreams read as
`X-Auth-Subject`); headers with `_` in their names are dropped unless `server.allow_underscore_headers`.

A real `ig-gate serve --upstream` in front of the echo upstream (tests/support/echo_upstream.py), which
answers with the headers it received (names lower-cased).
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.middleware.conftest import US_IP, World
from tests.support.echo_upstream import echo_running
from tests.support.sidecar import serve_sidecar

pytestmark = pytest.mark.integration

SPOOFED = [
    ("X_Auth_Subject", "mallory"),
    ("X-Auth-Subject", "mallory"),
    ("x_auth_tenant", "globex"),
    ("X_AUTH_RISK", "low"),
    ("X_Forwarded_For", "8.8.8.8"),
    ("X_Forwarded_Host", "evil.example"),
    ("Proxy_Authorization", "Basic c2VjcmV0"),
    ("X_Custom", "1"),
]


@pytest.fixture(scope="module")
def echo_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    with echo_running(tmp_path_factory.mktemp("echo-headers")) as port:
        yield port


def seen_by_upstream(world: World, port: int) -> dict[str, Any]:
    """The headers the echo upstream got for a GET carrying SPOOFED (sent as written)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest("GET", "/echo")
        conn.putheader("authorization", f"Bearer {world.token(risk='low')}")
        conn.putheader("x-forwarded-for", US_IP)
        for name, value in SPOOFED:
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        assert response.status == 200
        return json.loads(response.read())
    finally:
        conn.close()


def _sidecar(world: World, tmp: Any, echo_port: int, **server: Any) -> Any:
    upstream = {"upstream": f"http://127.0.0.1:{echo_port}", **server}
    settings = world.settings(geo={"trusted_proxies": ["127.0.0.1/32"]}, server=upstream)
    return serve_sidecar(settings, tmp)


def test_identity_headers_spelled_with_underscores_never_reach_the_upstream(world, tmp_path, echo_port):
    with _sidecar(world, tmp_path, echo_port) as served:
        seen = seen_by_upstream(world, served.port)

    assert not [name for name in seen if "_" in name]  # dropped by default, as nginx does
    assert seen["x-auth-subject"] == "alice"  # the gate's identity, never the client's
    assert seen["x-auth-tenant"] == "acme"
    assert seen["x-forwarded-for"] == f"{US_IP}, 127.0.0.1"
    assert "mallory" not in json.dumps(seen) and "globex" not in json.dumps(seen)


def test_allowed_underscore_headers_pass_but_never_under_a_reserved_name(world, tmp_path, echo_port):
    with _sidecar(world, tmp_path, echo_port, allow_underscore_headers=True) as served:
        seen = seen_by_upstream(world, served.port)

    assert seen["x_custom"] == "1"
    for reserved in ("x_auth_subject", "x_auth_tenant", "x_auth_risk", "x_forwarded_for", "x_forwarded_host"):
        assert reserved not in seen
    assert "proxy_authorization" not in seen
    assert seen["x-auth-subject"] == "alice"
    assert seen["x-forwarded-for"] == f"{US_IP}, 127.0.0.1"
