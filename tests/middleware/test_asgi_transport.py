"""The middleware as ASGI: WebSocket connect, lifespan, excluded paths, body buffering and limits, failure
modes, threads, the decision log and the metrics it keeps."""

from __future__ import annotations

import asyncio
import gc
import json
import shutil
import threading

import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from ig_gate.bundles.archive import build_bundle
from ig_gate.bundles.signing import sign_bundle
from ig_gate.middleware import Gate, Settings, ZeroTrustMiddleware, load_settings
from ig_gate.middleware.decision_log import verify_chain
from tests.middleware.conftest import FR_IP, REPO, call_asgi, demo_app, query

JSON = {"content-type": "application/json"}


def bearer(token: str) -> dict[str, str]:
    return {**JSON, "authorization": f"Bearer {token}"}


def sample(client, name: str, **labels: str) -> float | None:
    return client.middleware.gate.metrics.registry.get_sample_value(name, labels)


def test_public_interface_imports():
    assert ZeroTrustMiddleware.__name__ == "ZeroTrustMiddleware" and Gate.__name__ == "Gate"
    assert isinstance(load_settings(None, env={}), Settings)


def test_the_documented_config_file_works_with_paths_relative_to_it(world, tmp_path):
    for source, name in ((world.bundle_path, "dist/policy.tgz"), (world.bundle_pub, "keys/dev.pub"),
                         (world.idp_jwks, "keys/idp-jwks.json"), (world.mdm_jwks, "keys/mdm-jwks.json")):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        shutil.copy(source, tmp_path / name)
    config = tmp_path / "ig-gate.yaml"
    config.write_text(
        "bundle:\n  path: dist/policy.tgz\n  verification_key: keys/dev.pub\n  key_id: null\n"
        "  query: data.ig.zt.decision\n"
        "identity:\n  issuer: https://idp.example.test\n  audience: ig-gateway\n  jwks: keys/idp-jwks.json\n"
        "  tenant_claim: tenant\n  risk_claim: risk\n  stepup: {acr_values: [mfa], max_age: 300}\n"
        "device:\n  attestation_jwks: keys/mdm-jwks.json\n  header: X-Device-Attestation\n"
        "geo:\n  database: null\n  trusted_proxies: [127.0.0.1/32]\n"
        "failure_mode: closed\nexclude_paths: [/healthz]\n"
    )  # fmt: skip
    middleware = ZeroTrustMiddleware(demo_app(), config=str(config))
    try:
        assert middleware.gate.status()["ready"] is True
        with TestClient(middleware, client=("8.8.8.8", 1)) as client:
            response = client.post("/graphql", content=query(), headers=bearer(world.token()))
        assert response.status_code == 200 and response.json()["identity"]["country"] == "US"
    finally:
        middleware.gate.close()


def test_websocket_connect_allowed_passes_identity_to_the_app(world, make_client):
    client = make_client()
    with client.websocket_connect("/graphql/ws", headers={"authorization": f"Bearer {world.token()}"}) as ws:
        assert ws.receive_json() == {"subject": "alice", "country": "US"}


@pytest.mark.parametrize(
    "headers, code",
    [
        ({}, 4401),
        ({"authorization": "Bearer abc.def.ghi"}, 4401),
        ({"authorization": "Bearer {high}"}, 4403),
        ({"authorization": "Bearer {medium}"}, 4401),
    ],
)
def test_websocket_connect_refused_with_close_code_and_no_app_message(world, make_client, headers, code):
    tokens = {"high": world.token(risk="high"), "medium": world.token(risk="medium")}
    headers = {k: v.format(**tokens) for k, v in headers.items()}

    # accepted by the gate only to deliver the close code (browsers see 1006 for a refused handshake);
    # the first thing the client receives is the close: the app never got the connection
    with make_client().websocket_connect("/graphql/ws", headers=headers) as ws, pytest.raises(
        WebSocketDisconnect
    ) as refused:
        ws.receive_text()

    assert refused.value.code == code


def test_websocket_fails_closed_with_4503_when_no_bundle(world, make_client, tmp_path):
    client = make_client(bundle={"path": str(tmp_path / "missing.tgz")})
    headers = {"authorization": f"Bearer {world.token()}"}
    with client.websocket_connect("/graphql/ws", headers=headers) as ws, pytest.raises(
        WebSocketDisconnect
    ) as refused:
        ws.receive_text()
    assert refused.value.code == 4503


def test_excluded_path_passes_without_a_token(make_client):
    client = make_client()
    assert client.get("/healthz").text == "ok"
    assert client.get("/healthz/deep").status_code == 401  # exact match only


def test_lifespan_passes_through_and_shutdown_flushes_the_decision_log(world, make_client, tmp_path):
    client = make_client(started=False)
    with client:  # runs lifespan startup and shutdown
        assert client.post("/graphql", content=query(), headers=bearer(world.token())).status_code == 200
    log_path = tmp_path / "decisions.jsonl"
    assert len(log_path.read_text().splitlines()) == 1


def test_startup_complete_freezes_the_heap_when_configured(world, make_client):
    gc.unfreeze()
    try:
        with make_client(world.settings(server={"gc_freeze": True}), started=False):
            assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
    with make_client(started=False):  # gc_freeze: false
        assert gc.get_freeze_count() == 0


def test_state_is_created_when_the_scope_has_none(world, make_client):
    seen = {}

    async def app(scope, receive, send):
        seen.update(scope["state"])
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    middleware = ZeroTrustMiddleware(app, gate=make_client().middleware.gate)
    headers = [(b"authorization", f"Bearer {world.token()}".encode())]

    status, _, _ = asyncio.run(call_asgi(middleware, method="GET", headers=headers))

    assert status == 204
    assert seen["ig_gate"].subject == "alice" and seen["ig_gate"].tenant == "acme"


def test_a_chunked_body_is_buffered_and_replayed_whole(world, make_client):
    body = query("query Big { a }", variables={"blob": "x" * 5000}).encode()
    headers = [(b"content-type", b"application/json"), (b"authorization", f"Bearer {world.token()}".encode())]

    status, _, payload = asyncio.run(
        call_asgi(make_client().middleware, headers=headers, body=body, chunks=7)
    )

    assert status == 200
    assert json.loads(payload)["body"].encode("latin-1") == body


def test_body_over_the_limit_gets_413_by_content_length_and_by_stream(world, make_client):
    middleware = make_client(server={"max_body_bytes": 1000}).middleware
    body = query(variables={"blob": "x" * 2000}).encode()
    auth = (b"authorization", f"Bearer {world.token()}".encode())
    declared = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), auth]
    undeclared = [(b"content-type", b"application/json"), auth]

    for headers in (declared, undeclared):
        status, _, payload = asyncio.run(call_asgi(middleware, headers=headers, body=body, chunks=4))
        assert status == 413
        assert json.loads(payload)["errors"][0]["extensions"]["code"] == "PAYLOAD_TOO_LARGE"


def test_non_graphql_bodies_stream_through_unbuffered(world, make_client):
    client = make_client()
    response = client.post(
        "/api/items",
        content=b"a,b\n1,2\n",
        headers={
            "content-type": "text/csv",
            "authorization": f"Bearer {world.token()}",
            "x-device-attestation": world.attestation("managed"),
        },
    )

    assert response.status_code == 200
    assert response.json()["body"] == "a,b\n1,2\n" and response.json()["identity"]["profile"] == "ingest"


def test_get_query_parameter_is_sniffed_and_a_mutation_over_get_is_405(world, make_client):
    client = make_client()
    read = client.get("/graphql", params={"query": "{ me { id } }"}, headers=bearer(world.token()))
    write = client.get("/graphql", params={"query": "mutation { x }"}, headers=bearer(world.token()))

    assert read.status_code == 200 and read.json()["identity"]["profile"] == "read"
    assert write.status_code == 405 and write.headers["allow"] == "POST"


def test_head_refusal_has_no_body(make_client):
    response = make_client().head("/graphql")
    assert response.status_code == 401 and response.content == b""


def test_no_bundle_fails_closed_with_503_and_status_says_why(world, make_client, tmp_path, caplog):
    with caplog.at_level("ERROR", logger="ig_gate.gate"):
        client = make_client(bundle={"path": str(tmp_path / "missing.tgz")})
    response = client.post("/graphql", content=query(), headers=bearer(world.token()))

    assert response.status_code == 503
    assert response.json()["errors"][0]["extensions"]["code"] == "POLICY_UNAVAILABLE"
    status = client.middleware.gate.status()
    assert status["ready"] is False and "missing.tgz" in status["policy_problem"]
    assert any("missing.tgz" in r.getMessage() for r in caplog.records)
    assert sample(client, "ig_gate_failure_mode_total", kind="no_bundle", mode="closed") == 1


def test_a_bundle_signed_by_another_key_is_not_used(world, make_client, tmp_path):
    from tests.support.keys import make_keypair

    forged = tmp_path / "forged.tgz"
    forged.write_bytes(sign_bundle(build_bundle(REPO / "policies"), make_keypair().private_pem).archive)
    client = make_client(bundle={"path": str(forged)})

    assert client.post("/graphql", content=query(), headers=bearer(world.token())).status_code == 503
    problem = client.middleware.gate.status()["policy_problem"]
    assert problem.startswith(f"bundle.path: {forged}: ") and "signature does not verify" in problem


def test_failure_mode_open_passes_and_counts(world, make_client, tmp_path):
    client = make_client(bundle={"path": str(tmp_path / "missing.tgz")}, failure_mode="open")
    response = client.post("/graphql", content=query(), headers=bearer(world.token()))

    assert response.status_code == 200
    assert response.json()["identity"]["subject"] == "alice"
    assert sample(client, "ig_gate_failure_mode_total", kind="no_bundle", mode="open") == 1
    assert client.post("/graphql", content=query()).status_code == 401  # open never skips authentication
    malformed = client.post("/graphql", content=b"{bad", headers=bearer(world.token()))
    assert malformed.status_code == 400


def test_a_policy_query_that_yields_no_decision_fails_closed(world, make_client):
    client = make_client(bundle={"query": "data.ig.zt.no_such_rule"})
    response = client.post("/graphql", content=query(), headers=bearer(world.token()))

    assert response.status_code == 503
    assert sample(client, "ig_gate_failure_mode_total", kind="engine_error", mode="closed") == 1


def test_decisions_are_memoized_unless_the_bundle_opts_out(world, make_client, tmp_path):
    client = make_client()
    for _ in range(3):
        client.post("/graphql", content=query(), headers=bearer(world.token()))
    assert sample(client, "ig_gate_memo_lookups_total", result="hit") == 2

    source = tmp_path / "policies"
    shutil.copytree(REPO / "policies", source)
    manifest = json.loads((source / ".manifest").read_text())
    (source / ".manifest").write_text(json.dumps({**manifest, "cacheable": False}))
    uncacheable = tmp_path / "uncacheable.tgz"
    uncacheable.write_bytes(sign_bundle(build_bundle(source), world.bundle_key.private_pem).archive)
    client = make_client(bundle={"path": str(uncacheable)})
    for _ in range(3):
        assert client.post("/graphql", content=query(), headers=bearer(world.token())).status_code == 200
    assert sample(client, "ig_gate_memo_lookups_total", result="hit") is None
    assert client.middleware.gate.status()["memo_entries"] == 0


def test_constructed_on_one_thread_and_served_concurrently_on_others(world, make_client):
    middleware = make_client().middleware
    token = world.token()
    results: list[int] = []

    def serve() -> None:
        with TestClient(middleware, client=("203.0.113.9", 1)) as client:
            results.extend(
                client.post("/graphql", content=query(), headers=bearer(token)).status_code for _ in range(20)
            )

    threads = [threading.Thread(target=serve) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert results == [200] * 60


def test_every_decision_is_logged_redacted_and_chained(world, make_client, tmp_path):
    client = make_client(peer=(FR_IP, 1))
    token = world.token()
    client.post("/graphql", content=query(), headers=bearer(token))  # deny: geo_fenced
    client.post("/graphql", content=query())  # unauthenticated
    client.post("/graphql", content=b"{bad", headers=bearer(token))  # bad request
    client.middleware.gate.close()

    log_path = tmp_path / "decisions.jsonl"
    text = log_path.read_text()
    entries = [json.loads(line) for line in text.splitlines()]
    assert [e["outcome"] for e in entries] == ["deny", "unauthenticated", "bad_request"]
    assert token not in text and token.split(".")[2] not in text
    first = entries[0]
    assert first["path"] == "ig/zt/decision"
    assert first["input"]["geo"]["country"] == "FR" and first["input"]["session"]["subject"] == "alice"
    assert first["result"]["deny"] is True and "geo_fenced" in first["result"]["reasons"]
    assert first["bundles"]["ig"]["revision"].startswith("1.0.0+")
    assert len({e["decision_id"] for e in entries}) == 3
    assert verify_chain(log_path).ok and verify_chain(log_path).entries == 3

    lines = text.splitlines(keepends=True)
    lines[1] = lines[1].replace('"unauthenticated"', '"allow"')
    log_path.write_text("".join(lines))
    report = verify_chain(log_path)
    assert not report.ok and report.first_bad_line == 2


def test_decisions_are_counted_by_outcome_reason_tenant_and_profile(world, make_client):
    client = make_client()
    client.post("/graphql", content=query(), headers=bearer(world.token()))
    client.post("/graphql", content=query(), headers=bearer(world.token(risk="high")))
    client.post("/graphql", content=query(), headers=JSON)

    assert (
        sample(client, "ig_gate_decisions_total", outcome="allow", reason="ok", tenant="acme", profile="read")
        == 1
    )
    assert (
        sample(
            client,
            "ig_gate_decisions_total",
            outcome="deny",
            reason="risk_high",
            tenant="acme",
            profile="read",
        )
        == 1
    )
    assert (
        sample(
            client,
            "ig_gate_decisions_total",
            outcome="unauthenticated",
            reason="token_missing",
            tenant="none",
            profile="write",  # refused unread: without the body, a POST counts as a write
        )
        == 1
    )
    assert sample(client, "ig_gate_decision_seconds_count") == 3
    info = client.middleware.gate.metrics.registry.get_sample_value
    revision = client.middleware.gate.status()["policy"]["revision"]
    digest = client.middleware.gate.status()["policy"]["digest"]
    assert info("ig_gate_bundle_info", {"revision": revision, "digest": digest, "version": "1.0.0"}) == 1


def test_a_request_without_credentials_is_refused_without_reading_its_body(make_client):
    received = []

    async def receive():
        received.append(1)
        return {"type": "http.request", "body": query().encode(), "more_body": False}

    async def send(message):
        sent.append(message)

    sent: list[dict] = []
    headers = [(b"content-type", b"application/json")]
    scope = {"type": "http", "method": "POST", "path": "/graphql", "query_string": b"", "headers": headers}
    asyncio.run(make_client().middleware(scope, receive, send))

    assert sent[0]["status"] == 401 and received == []


def test_refusals_before_the_policy_log_the_request_asked_for(world, make_client, tmp_path):
    client = make_client()
    client.post("/api/items", content=b"x", headers={"content-type": "text/plain"})
    client.middleware.gate.close()

    (entry,) = [json.loads(line) for line in (tmp_path / "decisions.jsonl").read_text().splitlines()]
    assert entry["input"] == {"request": {"method": "POST", "path": "/api/items"}}
    assert entry["outcome"] == "unauthenticated" and entry["result"] == {"reasons": ["token_missing"]}
