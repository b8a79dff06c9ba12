"""Hot swap under load: readers evaluate continuously while the manager swaps bundles several times,
first on the snapshots themselves, then through the real middleware with HTTP requests from threads."""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from ig_gate.bundles.archive import build_bundle
from ig_gate.bundles.manager import BundleManager
from ig_gate.bundles.signing import sign_bundle
from ig_gate.bundles.verify import VerifyOptions
from ig_gate.middleware.asgi import ZeroTrustMiddleware
from ig_gate.middleware.compose import build_gate
from ig_gate.middleware.settings import settings_from_dict
from tests.registry.kit import QUERY, build, publish
from tests.support import tokens
from tests.support.keys import make_keypair, write_jwks
from tests.support.procs import wait_until

pytestmark = pytest.mark.integration

READERS = 4
VERSIONS = [f"1.{minor}.0" for minor in range(6)]


def test_swaps_under_concurrent_readers_never_fail_or_mix_bundles(
    client, trusted_key, signer, tmp_path, clock
):
    manager = BundleManager(
        client,
        "policies/hot-swap",
        "prod",
        VerifyOptions(key=trusted_key),
        tmp_path / "state",
        clock=clock,
        rng=random.Random(5),
    )
    built = [build(tmp_path, f"b{i}", version, signer) for i, version in enumerate(VERSIONS)]
    labels = {b.label for b in built}
    publish(client, "policies/hot-swap", "prod", built[0])
    assert manager.poll_once() == "activated"

    stop = threading.Event()
    errors: list[str] = []
    seen = [Counter() for _ in range(READERS)]

    def reader(index: int) -> None:
        user = f"user-{index}"
        while not stop.is_set():
            try:
                result = manager.current().evaluate(QUERY, {"user": user})
            except Exception as exc:  # any failure at all is what this test looks for
                errors.append(f"reader {index}: {type(exc).__name__}: {exc}")
                return
            if result["rego"] != result["data"] or result["rego"] not in labels or result["user"] != user:
                errors.append(f"reader {index}: mixed or foreign result {result}")
                return
            seen[index][result["rego"]] += 1
            time.sleep(0)  # yield the GIL, as a server thread does between requests

    threads = [threading.Thread(target=reader, args=(i,), daemon=True) for i in range(READERS)]
    for thread in threads:
        thread.start()
    try:
        for bundle in built[1:]:
            publish(client, "policies/hot-swap", "prod", bundle)
            assert manager.poll_once() == "activated"
            wait_until(
                lambda label=bundle.label: errors or all(s[label] for s in seen),
                10,
                f"every reader to see {bundle.label}",
            )
    finally:
        stop.set()
        for thread in threads:
            thread.join(5)

    assert errors == []
    assert manager.status().activations == len(VERSIONS)
    assert all(set(s) == labels for s in seen)  # every reader evaluated under every bundle


def gate_policy(root: Path, index: int) -> tuple[Path, tuple[int, str]]:
    """Bundle `index`: even ones allow, odd ones deny; both name their label in Rego and in data.json.

    Returns the source and the response a request must get under it: (200, "") or (403, "b<i>, b<i>").
    A bundle mixed from two sources would give neither (deny with two different labels).
    """
    label = f"b{index}"
    src = root / f"gate-src-{index}"
    src.mkdir()
    allow = f'"allow": data.labels.current == "{label}"' if index % 2 == 0 else '"deny": true'
    (src / "rt.rego").write_text(
        f'package rt\n\ndecision := {{{allow}, "reasons": ["{label}", data.labels.current]}}\n'
    )
    (src / "data.json").write_text(json.dumps({"labels": {"current": label}}))
    return src, (200, "") if index % 2 == 0 else (403, f"{label}, {label}")


async def echo(request: Request) -> JSONResponse:
    return JSONResponse({"echo": (await request.body()).decode()})


def test_swaps_under_concurrent_http_requests_never_fail_and_each_answer_is_the_old_or_new_bundle(
    client, trusted_key, signer, tmp_path, clock
):
    """The real middleware in front of an app, several TestClient threads; the manager swaps bundles."""
    repo = "policies/hot-swap-http"
    idp = make_keypair("ES256", kid="idp")
    settings = settings_from_dict({
        "bundle": {"path": None, "query": "data.rt.decision"},
        "identity": {"jwks": str(write_jwks(tmp_path / "idp.jwks", idp))},
    })
    manager = BundleManager(client, repo, "prod", VerifyOptions(key=trusted_key), tmp_path / "state",
                            clock=clock)
    gate = build_gate(settings, policy=manager)
    app = ZeroTrustMiddleware(Starlette(routes=[Route("/graphql", echo, methods=["POST"])]), gate=gate)
    expected, archives = [], []
    for index in range(len(VERSIONS)):
        src, answer = gate_policy(tmp_path, index)
        unsigned = build_bundle(src, version=VERSIONS[index])
        bundle = sign_bundle(unsigned, signer.private_pem, key_id=signer.kid)
        archives.append(bundle.archive)
        expected.append(answer)
    index_of = {version: i for i, version in enumerate(VERSIONS)}

    def active() -> int:
        return index_of[manager.current().verified.version]

    client.push(repo, "prod", archives[0])
    assert manager.poll_once() == "activated"

    stop = threading.Event()
    errors: list[str] = []
    seen = [Counter() for _ in range(READERS)]

    def send(http: TestClient, index: int, body: str, headers: dict[str, str]) -> str | None:
        """One request; None when its answer is bundle `before`'s or `after`'s, else what was wrong."""
        before = active()
        response = http.post("/graphql", content=body, headers=headers)
        after = active()
        if response.status_code == 200:
            answer = (200, "") if response.json() == {"echo": body} else (200, response.text)
        else:
            answer = (response.status_code, response.json()["errors"][0]["message"].partition(": ")[2])
        allowed = {expected[i]: i for i in range(before, after + 1)}
        if after - before > 1 or answer not in allowed:
            return f"{answer} under bundles {before}..{after}"
        seen[index][allowed[answer]] += 1
        return None

    def sender(index: int) -> None:
        token = tokens.session_token(idp, tenant="acme", sub=f"user-{index}")
        headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
        body = f'{{"query": "{{ me {{ id }} }}", "sender": {index}}}'
        with TestClient(app, client=("203.0.113.5", 40000 + index)) as http:
            while not stop.is_set():
                try:
                    problem = send(http, index, body, headers)
                except Exception as exc:  # a failed request is what this test looks for
                    problem = f"{type(exc).__name__}: {exc}"
                if problem:
                    errors.append(f"sender {index}: {problem}")
                    return

    threads = [threading.Thread(target=sender, args=(i,), daemon=True) for i in range(READERS)]
    for thread in threads:
        thread.start()
    try:
        for index in range(1, len(VERSIONS)):
            client.push(repo, "prod", archives[index])
            assert manager.poll_once() == "activated"
            wait_until(lambda i=index: errors or all(s[i] for s in seen), 20, f"every sender to see b{index}")
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
        gate.close()

    assert errors == []
    assert all(set(s) == set(range(len(VERSIONS))) for s in seen)  # every sender under every bundle
    assert sum(sum(s.values()) for s in seen) > 10 * len(VERSIONS)
