"""Real nginx (Debian, auth_request) in front of a small upstream, asking a real `ig-gate serve` at /authz."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.middleware.conftest import FR_IP, REPO, US_IP, World
from tests.support.echo_upstream import argv as echo_upstream
from tests.support.nginx import running_nginx
from tests.support.procs import free_port, running
from tests.support.sidecar import serve_sidecar

pytestmark = pytest.mark.integration


def nginx_server(port: int, sidecar_port: int, upstream_port: int) -> str:
    """The server block: auth_request to ig-gate serve at /authz, then the echo upstream."""
    return f"""
            server {{
                listen 127.0.0.1:{port};
                location = /_authz {{
                    internal;
                    proxy_pass http://127.0.0.1:{sidecar_port}/authz;
                    proxy_pass_request_body off;
                    proxy_set_header Content-Length "";
                    proxy_set_header X-Original-URI $request_uri;
                    proxy_set_header X-Original-Method $request_method;
                    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
                }}
                location / {{
                    auth_request /_authz;
                    auth_request_set $auth_subject $upstream_http_x_auth_subject;
                    auth_request_set $auth_tenant $upstream_http_x_auth_tenant;
                    auth_request_set $auth_risk $upstream_http_x_auth_risk;
                    auth_request_set $auth_decision $upstream_http_x_auth_decision_id;
                    proxy_set_header X-Auth-Subject $auth_subject;
                    proxy_set_header X-Auth-Tenant $auth_tenant;
                    proxy_set_header X-Auth-Risk $auth_risk;
                    proxy_set_header X-Auth-Decision-Id $auth_decision;
                    proxy_pass http://127.0.0.1:{upstream_port};
                }}
            }}
    """


@pytest.fixture(scope="module")
def nginx(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """nginx -> (auth_request) ig-gate serve, -> echo upstream; yields nginx's base URL."""
    tmp = tmp_path_factory.mktemp("nginx")
    # nginx on 127.0.0.1 is the trusted proxy that writes X-Forwarded-For
    settings = world.settings(geo={"trusted_proxies": ["127.0.0.1/32"]})
    upstream_port = free_port()
    with (
        serve_sidecar(settings, tmp) as sidecar,
        running(echo_upstream(upstream_port), port=upstream_port, log=tmp / "echo.log", cwd=REPO),
        running_nginx(tmp, lambda port: nginx_server(port, sidecar.port, upstream_port)) as port,
    ):
        yield f"http://127.0.0.1:{port}"


def get(
    base: str, world: World, sub: str, *, risk: str = "low", client_ip: str = US_IP, **headers: str
) -> Any:
    """GET /graphql?query={me{id}} through nginx as a client at client_ip (written into X-Forwarded-For)."""
    sent = {
        "authorization": f"Bearer {world.token(risk=risk, sub=sub)}",
        "x-device-attestation": world.attestation("managed", sub=sub),
        "x-forwarded-for": client_ip,
        **headers,
    }
    return httpx.get(f"{base}/graphql", params={"query": "{ me { id } }"}, headers=sent, timeout=10)


def test_allowed_request_reaches_upstream_with_identity_headers(nginx: str, world: World) -> None:
    response = get(nginx, world, "ngx-allowed", x_auth_subject="spoofed")
    assert response.status_code == 200
    seen = response.json()
    assert seen["x-auth-subject"] == "ngx-allowed"  # the client's spoofed value was replaced
    assert (seen["x-auth-tenant"], seen["x-auth-risk"]) == ("acme", "low")
    assert seen["x-auth-decision-id"]


def test_stepped_up_request_gets_401_with_www_authenticate(nginx: str, world: World) -> None:
    response = get(nginx, world, "ngx-medium", risk="medium")
    assert response.status_code == 401
    challenge = response.headers["www-authenticate"]
    assert 'error="insufficient_user_authentication"' in challenge and 'acr_values="mfa"' in challenge


def test_denied_request_gets_403(nginx: str, world: World) -> None:
    assert get(nginx, world, "ngx-high", risk="high").status_code == 403


def test_geo_fenced_client_behind_trusted_nginx_gets_403(nginx: str, world: World) -> None:
    assert get(nginx, world, "ngx-fr", client_ip=FR_IP).status_code == 403


def test_request_without_token_gets_401_with_bearer_challenge(nginx: str) -> None:
    response = httpx.get(f"{nginx}/graphql", params={"query": "{ me { id } }"}, timeout=10)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="ig-gate"'
