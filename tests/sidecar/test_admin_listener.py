"""Issue 9 item 5: the admin surface (Data API, /v1/status, /metrics, bundle health) is served on the
admin listener only, never on the client port, and the admin listener's bearer check (token file, IdP
JWTs by scope) holds; a non-loopback admin listener without auth refuses to start."""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import yaml
from opa_client import OpaClient

from ig_gate.sidecar.cli import main
from tests.middleware.conftest import REPO, US_IP, World
from tests.sidecar.conftest import ADMIN
from tests.support.echo_upstream import argv as echo_upstream
from tests.support.procs import free_port, running
from tests.support.sidecar import IG_GATE, Served, serve_sidecar, write_config

LOOPBACK_IS_A_PROXY = {"trusted_proxies": ["127.0.0.1/32"]}  # the test client stands in for a proxy
FORGED = {"input": {"tenant": "acme", "session": {"subject": "mallory", "acr": "mfa", "auth_age_s": 1},
                    "stepup": True, "request": {"purpose": "admin"}}}
READ_TOKEN, WRITE_TOKEN = "read-token-0123456789abcdef", "admin-token-0123456789abcdef"


def client_headers(world: World, sub: str) -> dict[str, str]:
    """A client the gate allows (low risk, managed device, US) so its requests reach the upstream."""
    return {
        "authorization": f"Bearer {world.token(sub=sub)}",
        "x-device-attestation": world.attestation("managed", sub=sub),
        "x-forwarded-for": US_IP,
    }


@pytest.fixture(scope="module")
def proxy_mode(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """`ig-gate serve --upstream <echo upstream>` (the echo answers with the headers it received)."""
    tmp = tmp_path_factory.mktemp("admin-proxy")
    upstream_port = free_port()
    echo = running(echo_upstream(upstream_port), port=upstream_port, log=tmp / "echo.log", cwd=REPO)
    settings = world.settings(geo=LOOPBACK_IS_A_PROXY)
    with echo, serve_sidecar(settings, tmp, "--upstream", f"http://127.0.0.1:{upstream_port}") as served:
        yield served


# (method, path, httpx options): what the issue saw the client port answer in proxy mode
ADMIN_REQUESTS: list[tuple[str, str, dict[str, Any]]] = [
    ("GET", "/v1/data", {}),
    ("POST", "/v1/data/ig/policies/admin", {"json": FORGED}),
    ("GET", "/v1/status", {}),
    ("GET", "/metrics", {}),
    ("GET", "/health?bundles", {}),
]


def test_client_port_in_proxy_mode_never_answers_the_data_api_status_or_metrics(
    proxy_mode: Served, world: World
) -> None:
    for method, path, options in ADMIN_REQUESTS:
        headers = client_headers(world, "admin-probe")
        response = httpx.request(method, proxy_mode.url + path, headers=headers, timeout=10, **options)
        # the request went to the upstream like any other path: the echo shows the gate's identity headers
        assert response.status_code == 200, (path, response.text)
        echoed = response.json()
        assert echoed.get("x-auth-subject") == "admin-probe", (path, echoed)
        assert "result" not in echoed and "decision_id" not in echoed and "ig_gate_" not in response.text


def test_admin_port_answers_the_data_api_status_and_metrics(proxy_mode: Served, world: World) -> None:
    admin = proxy_mode.admin_url
    assert httpx.get(f"{admin}/v1/data/tenants/acme").json()["result"]["allowed_countries"] == ["US", "DE"]
    forged = httpx.post(f"{admin}/v1/data/ig/policies/admin", json=FORGED).json()
    assert "decision_id" in forged  # the Data API evaluated it (what it must never do for a client)
    assert httpx.get(f"{admin}/v1/status").json()["upstream"].startswith("http://127.0.0.1:")
    assert "ig_gate_decisions_total" in httpx.get(f"{admin}/metrics").text
    assert httpx.get(f"{admin}/health?bundles").status_code == 200


def test_client_port_without_upstream_serves_forward_auth_and_coprocessor_but_not_the_admin_surface(
    served: Served,
) -> None:
    for path in ("/v1/data", "/v1/status", "/metrics", "/health"):
        assert httpx.get(served.url + path, timeout=10).status_code == 404, path
    assert httpx.post(f"{served.url}/v1/data/ig/policies/admin", json=FORGED).status_code == 404
    assert httpx.get(f"{served.url}/authz", timeout=10).status_code == 401  # no token: refused, but served
    assert httpx.post(f"{served.url}/apollo/coprocessor", content=b"{}").status_code == 400


def test_client_readyz_reveals_nothing_the_admin_readyz_says_why(
    make_sidecar: Any, world: World
) -> None:
    client = make_sidecar(bundle={"path": str(world.root / "missing-policy.tgz")})
    client_answer = client.get("/readyz")
    assert client_answer.status_code == 503 and client_answer.json() == {"ready": False}
    admin_answer = client.get(f"{ADMIN}/readyz")
    assert admin_answer.status_code == 503 and "missing-policy.tgz" in admin_answer.json()["reason"]


@pytest.fixture(scope="module")
def token_guarded(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """`ig-gate serve` with a token file, its admin listener on 0.0.0.0 (allowed: auth is configured)."""
    tmp = tmp_path_factory.mktemp("admin-token")
    tokens = tmp / "admin-tokens"
    tokens.write_text(f"# who may see what\n{READ_TOKEN} ig-gate:read\n{WRITE_TOKEN} ig-gate:admin\n")
    settings = world.settings(server={"admin_auth": "token", "admin_token_file": str(tokens)})
    with serve_sidecar(settings, tmp, "--admin-host", "0.0.0.0") as served:
        yield served


@pytest.mark.parametrize("authorization", [None, "Bearer", "Bearer wrong-token-0123456789abcdef",
                                           f"Basic {READ_TOKEN}", f"Bearer {READ_TOKEN}x"])
def test_token_file_admin_refuses_missing_or_invalid_tokens_with_401(
    token_guarded: Served, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"authorization": authorization}
    for path in ("/v1/data", "/metrics", "/v1/status", "/health"):
        response = httpx.get(token_guarded.admin_url + path, headers=headers, timeout=10)
        assert response.status_code == 401, path
        assert response.json()["code"] == "unauthorized"
        assert response.headers["www-authenticate"].startswith("Bearer")


def test_read_token_can_get_but_not_post_or_evaluate_its_own_input(token_guarded: Served) -> None:
    reader = OpaClient(host="127.0.0.1", port=token_guarded.admin_port, token=READ_TOKEN)
    try:
        assert reader.get_data("tenants/acme")["result"]["allowed_countries"] == ["US", "DE"]
        with pytest.raises(requests.HTTPError) as refused:
            reader.query_rule(input_data=FORGED["input"], package_path="ig.policies", rule_name="admin")
        assert refused.value.response.status_code == 403
        assert 'error="insufficient_scope"' in refused.value.response.headers["www-authenticate"]
    finally:
        reader.close_connection()
    headers = {"authorization": f"Bearer {READ_TOKEN}"}
    base = f"{token_guarded.admin_url}/v1/data/ig/policies/admin"
    for name in ("input", "%69nput"):  # the name as a server decodes it, percent-encoded or not
        forged = httpx.get(f"{base}?{name}={json.dumps(FORGED['input'])}", headers=headers, timeout=10)
        assert forged.status_code == 403, name
    assert httpx.get(f"{token_guarded.admin_url}/metrics", headers=headers).status_code == 200


def test_write_token_can_evaluate_with_input(token_guarded: Served) -> None:
    writer = OpaClient(host="127.0.0.1", port=token_guarded.admin_port, token=WRITE_TOKEN)
    try:
        answer = writer.query_rule(input_data={"tenant": "acme"}, package_path="ig.zt", rule_name="decision")
        assert answer["decision_id"] and "result" in answer
        assert writer.check_health(query={"bundles": True}) is True
    finally:
        writer.close_connection()


def test_token_file_tokens_never_reach_the_log(token_guarded: Served) -> None:
    httpx.get(f"{token_guarded.admin_url}/v1/data", headers={"authorization": f"Bearer {READ_TOKEN}"})
    httpx.get(f"{token_guarded.admin_url}/v1/data", headers={"authorization": "Bearer nope-nope-nope-nope"})
    text = token_guarded.log.read_text()
    assert READ_TOKEN not in text and WRITE_TOKEN not in text


@pytest.mark.parametrize(
    ("scope", "get_status", "post_status"),
    [("ig-gate:read", 200, 403), ("ig-gate:admin", 200, 200), ("openid profile", 403, 403)],
)
def test_idp_jwts_grant_read_or_write_by_scope(
    make_sidecar: Any, world: World, scope: str, get_status: int, post_status: int
) -> None:
    client = make_sidecar(server={"admin_auth": "jwt"})
    headers = {"authorization": f"Bearer {world.token(sub='ops-user', scope=scope)}"}
    assert client.get(f"{ADMIN}/v1/status", headers=headers).status_code == get_status
    posted = client.post(f"{ADMIN}/v1/data/ig/zt/decision", json={"input": {}}, headers=headers)
    assert posted.status_code == post_status


def test_idp_jwt_roles_claim_and_scp_list_grant_scopes(make_sidecar: Any, world: World) -> None:
    client = make_sidecar(server={"admin_auth": "jwt"})
    for claims in ({"roles": ["ig-gate:admin"]}, {"scp": ["ig-gate:admin"]}):
        headers = {"authorization": f"Bearer {world.token(sub='ops-role', **claims)}"}
        assert client.post(f"{ADMIN}/v1/data", json={"input": {}}, headers=headers).status_code == 200


def test_idp_jwts_that_do_not_verify_are_401(make_sidecar: Any, world: World) -> None:
    client = make_sidecar(server={"admin_auth": "jwt"})
    expired = world.token(sub="ops-old", scope="ig-gate:admin", exp=1, iat=0)
    other_audience = world.token(sub="ops-aud", scope="ig-gate:admin", aud="someone-else")
    for token in (expired, other_audience, world.attestation("managed")):  # the MDM key is not the IdP's
        response = client.get(f"{ADMIN}/metrics", headers={"authorization": f"Bearer {token}"})
        assert response.status_code == 401


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "::", "admin.internal"])
def test_non_loopback_admin_listener_without_auth_refuses_to_start_with_one_line(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str], host: str
) -> None:
    config = write_config(world.settings(), tmp_path / "ig-gate.yaml")
    assert main(["serve", "--config", str(config), "--admin-host", host]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "server.admin_host" in err and "server.admin_auth" in err


@pytest.mark.parametrize(
    ("server", "key"),
    [
        ({"admin_auth": "token"}, "server.admin_token_file"),
        ({"admin_auth": "basic"}, "server.admin_auth"),
        ({"admin_port": 8181}, "server.admin_port"),
        ({"admin_port": 0}, "server.admin_port"),
    ],
)
def test_admin_settings_errors_are_one_line_naming_the_key(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str], server: dict[str, Any], key: str
) -> None:
    config = write_config(world.settings(), tmp_path / "ig-gate.yaml")
    raw = yaml.safe_load(config.read_text())
    raw["server"].update(server)
    config.write_text(yaml.safe_dump(raw))
    assert main(["serve", "--config", str(config), "--port", "8181"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and key in err


@pytest.mark.parametrize(
    ("lines", "problem"),
    [("short ig-gate:read\n", "at least 16"), (f"{READ_TOKEN}\n", "scopes"),
     (f"{READ_TOKEN} ig-gate:everything\n", "scopes"), ("# nothing\n", "no tokens")],
)
def test_bad_token_files_are_one_line_errors_that_never_show_the_token(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str], lines: str, problem: str
) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(lines)
    settings = world.settings(server={"admin_auth": "token", "admin_token_file": str(tokens)})
    config = write_config(settings, tmp_path / "ig-gate.yaml")
    assert main(["serve", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "server.admin_token_file" in err and problem in err
    assert READ_TOKEN not in err


def test_serve_help_describes_both_listeners_and_the_admin_auth_keys(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["serve", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for words in ("Client listener", "Admin listener", "127.0.0.1:8182", "/v1/data", "/metrics",
                  "server.admin_auth", "server.admin_token_file", "--admin-port", "refuses to start"):
        assert words in text


def test_an_admin_port_that_cannot_be_bound_exits_3_before_serving(world: World, tmp_path: Path) -> None:
    config = write_config(world.settings(), tmp_path / "ig-gate.yaml")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        argv = [str(IG_GATE), "serve", "--config", str(config), "--port", str(free_port()),
                "--admin-port", str(busy)]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 3 and "Address already in use" in done.stderr
