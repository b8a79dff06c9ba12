"""Forward-auth judges the original request's path in its normalised form and refuses ambiguous ones
(issue 9, item 6), as nginx (X-Original-URI), Traefik (X-Forwarded-Uri) and Envoy (/authz<path>) ask.

A real `ig-gate serve`; requests are written with http.client, which sends targets exactly as given.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.middleware.conftest import US_IP, World
from tests.support.procs import wait_until
from tests.support.sidecar import Served, serve_sidecar

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def authz(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("authz-paths")
    settings = world.settings(
        geo={"trusted_proxies": ["127.0.0.1/32"]}, decision_log={"path": str(tmp / "decisions.jsonl")}
    )
    with serve_sidecar(settings, tmp) as served:
        yield served


def ask(served: Served, target: str, headers: dict[str, str]) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=10)
    try:
        conn.putrequest("GET", target, skip_accept_encoding=True)
        for name, value in {"x-forwarded-for": US_IP, **headers}.items():
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def credentials(world: World) -> dict[str, str]:
    return {
        "authorization": f"Bearer {world.token(risk='low')}",
        "x-device-attestation": world.attestation("managed"),
    }


AMBIGUOUS = ["/public/../graphql", "/public/%2e%2e/graphql", "/a%2Fb", "/a\\b", "/a/%5c/b", "/x/..;/graphql"]


@pytest.mark.parametrize("header", ["x-original-uri", "x-forwarded-uri"])
@pytest.mark.parametrize("uri", AMBIGUOUS)
def test_an_ambiguous_original_uri_is_refused_400_even_with_valid_credentials(authz, world, header, uri):
    status, body = ask(authz, "/authz", {header: uri + "?query=%7Bme%7Bid%7D%7D", **credentials(world)})

    assert status == 400, body
    assert json.loads(body)["error"] == "bad_request"


@pytest.mark.parametrize("path", ["/public/../graphql", "/public/%2E%2E/graphql", "/a%2Fb", "//x/./y"])
def test_an_ambiguous_envoy_path_is_refused_400(authz, world, path):
    status, body = ask(authz, "/authz" + path, credentials(world))

    assert status == 400, body


def _logged_paths(log: Path) -> list[str]:
    lines = log.read_text().splitlines() if log.exists() else []
    return [json.loads(line)["input"].get("request", {}).get("path") for line in lines]


def test_the_gate_judges_the_normalised_original_path(authz, world):
    uri = "//gr%61phql//?query=%7Bme%7Bid%7D%7D&probe=normalised"
    status, body = ask(authz, "/authz", {"x-original-uri": uri, **credentials(world)})

    assert status == 200, body
    log = authz.log.with_name("decisions.jsonl")
    wait_until(lambda: "/graphql/" in _logged_paths(log), 5, "the decision for /graphql/ in the log")
    assert not any(p and "gr%61phql" in p for p in _logged_paths(log))  # never judged as received


def test_an_ambiguous_original_uri_is_recorded_with_reason_ambiguous_path(authz):
    ask(authz, "/authz", {"x-original-uri": "/public/%2e%2e/graphql?probe=recorded"})
    log = authz.log.with_name("decisions.jsonl")
    wait_until(lambda: log.exists() and "ambiguous_path" in log.read_text(), 5, "the decision log entry")
