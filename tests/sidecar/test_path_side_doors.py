"""`exclude_paths` is not a side door (issue 9, item 6): `ig-gate serve --upstream` with
`exclude_paths: [/healthz, /public/]` in front of a real nginx (which resolves dot segments, decodes
`%2F` and merges slashes) and of a real Apollo Server (tests/apollo/subgraph.js).

Requests are written with http.client, which sends the request target exactly as given.
"""

from __future__ import annotations

import http.client
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.middleware.conftest import US_IP, World
from tests.support.nginx import running_nginx
from tests.support.procs import free_port, running, wait_until
from tests.support.sidecar import Served, serve_sidecar

APOLLO = Path(__file__).resolve().parents[1] / "apollo"
EXCLUDED = ["/healthz", "/public/", "POST /webhooks/"]

pytestmark = pytest.mark.integration


def nginx_upstream_server(port: int) -> str:
    """nginx answering every request with the path it resolved ($uri) and the target it got."""
    return f"""
        server {{
            listen 127.0.0.1:{port};
            location / {{
                default_type text/plain;
                return 200 "uri=$uri target=$request_uri";
            }}
        }}
    """


def _settings(world: World, workdir: Path, upstream: str) -> Any:
    return world.settings(
        geo={"trusted_proxies": ["127.0.0.1/32"]},
        exclude_paths=EXCLUDED,
        server={"upstream": upstream},
        decision_log={"path": str(workdir / "decisions.jsonl")},
    )


@pytest.fixture(scope="module")
def before_nginx(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """ig-gate serve --upstream <nginx>; yields the served sidecar."""
    tmp = tmp_path_factory.mktemp("nginx-upstream")
    with (
        running_nginx(tmp, nginx_upstream_server) as port,
        serve_sidecar(_settings(world, tmp, f"http://127.0.0.1:{port}"), tmp) as sidecar,
    ):
        yield sidecar


@pytest.fixture(scope="module")
def before_apollo(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """ig-gate serve --upstream <Apollo Server (the federated subgraph, which has a mutation)>."""
    if shutil.which("node") is None or not (APOLLO / "node_modules").is_dir():
        pytest.skip("needs node and tests/apollo/node_modules (`make test` runs npm install there)")
    tmp = tmp_path_factory.mktemp("apollo-upstream")
    port = free_port()
    env = {"SUBGRAPH_PORT": str(port)}
    with (
        running(["node", "subgraph.js"], port=port, log=tmp / "subgraph.log", cwd=APOLLO, env=env),
        serve_sidecar(_settings(world, tmp, f"http://127.0.0.1:{port}"), tmp) as sidecar,
    ):
        yield sidecar


def send(
    served: Served, method: str, target: str, headers: dict[str, str] | None = None, body: bytes | None = None
) -> tuple[int, bytes]:
    """(status, body) for a request whose target goes on the wire exactly as written."""
    conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=10)
    try:
        conn.putrequest(method, target, skip_accept_encoding=True)
        for name, value in {"x-forwarded-for": US_IP, **(headers or {})}.items():
            conn.putheader(name, value)
        if body is not None:
            conn.putheader("content-length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def bearer(world: World) -> dict[str, str]:
    return {"authorization": f"Bearer {world.token(risk='low')}"}


AMBIGUOUS = [
    "/public/../graphql",
    "/public/%2e%2e/graphql",
    "/public/%2E%2e/graphql",
    "/public/.%2e/graphql",
    "/public%2F..%2Fgraphql",
    "/public/..%2fgraphql",
    "/public/..;/graphql",
    "/public/./../graphql",
    "/public\\..\\graphql",
    "/public/%5C../graphql",
    "/public/%5c..%5cgraphql",
    "//public/../graphql",
    "/public//../graphql",
]


@pytest.mark.parametrize("target", AMBIGUOUS)
def test_dot_segments_and_encoded_separators_under_an_excluded_prefix_are_refused_400(before_nginx, target):
    status, body = send(before_nginx, "GET", target)

    assert b"uri=/graphql" not in body  # nginx never resolved it to /graphql unjudged
    assert status == 400, body
    assert json.loads(body)["error"] == "bad_request"


def test_an_ambiguous_path_is_recorded_as_a_decision_with_reason_ambiguous_path(before_nginx):
    send(before_nginx, "GET", "/public/%2e%2e/graphql?probe=recorded")
    log = before_nginx.log.with_name("decisions.jsonl")
    wait_until(lambda: log.exists() and b"ambiguous_path" in log.read_bytes(), 5, "the decision log entry")


@pytest.mark.parametrize("target", ["//graphql", "///graphql", "/./graphql", "/%67raphql"])
def test_repeated_slashes_and_encoded_letters_are_judged_as_the_normalised_path(before_nginx, world, target):
    unauthenticated, _ = send(before_nginx, "GET", target)
    status, body = send(before_nginx, "GET", target, bearer(world))

    if target == "/./graphql":  # a dot segment: refused, whatever the credentials
        assert (unauthenticated, status) == (400, 400)
        return
    assert unauthenticated == 401  # judged: /graphql is not excluded
    assert status == 200, body
    assert body == b"uri=/graphql target=/graphql"  # the upstream got exactly the normalised form


@pytest.mark.parametrize(
    ("target", "forwarded"),
    [("/public//x", "/public/x"), ("/p%75blic/x", "/public/x"), ("/public/a%20b%3f", "/public/a%20b%3F")],
)
def test_an_excluded_path_is_matched_and_forwarded_in_its_normalised_form(before_nginx, target, forwarded):
    status, body = send(before_nginx, "GET", target)  # no token: an excluded GET

    assert status == 200, body
    assert body.endswith(b" target=" + forwarded.encode())


def test_an_excluded_prefix_passes_reads_without_a_token_but_judges_other_methods(before_nginx):
    assert send(before_nginx, "GET", "/public/x")[0] == 200
    assert send(before_nginx, "HEAD", "/public/x")[0] == 200
    assert send(before_nginx, "DELETE", "/public/x")[0] == 401
    assert send(before_nginx, "POST", "/public/x", body=b"{}")[0] == 401


MUTATION = json.dumps({"query": 'mutation { rename(name: "Mallory") { id name } }'}).encode()
JSON = {"content-type": "application/json"}


def test_a_mutation_posted_to_an_excluded_prefix_without_a_token_never_reaches_apollo(before_apollo):
    status, body = send(before_apollo, "POST", "/public/x", JSON, MUTATION)

    assert b"Mallory" not in body
    assert status == 401, body


def test_an_entry_that_names_its_methods_lets_them_through(before_apollo):
    status, body = send(before_apollo, "POST", "/webhooks/x", JSON, MUTATION)  # "POST /webhooks/"

    assert status == 200, body
    assert json.loads(body)["data"]["rename"]["name"] == "Mallory"
    assert send(before_apollo, "PUT", "/webhooks/x", JSON, MUTATION)[0] == 401  # only the named method
