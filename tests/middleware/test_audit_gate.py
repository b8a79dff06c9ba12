"""Audit of issue 3 through the real middleware and build_gate: the documented YAML keys, an https
JWKS, trusted-proxy parsing, tenant isolation of the memo and caches, engine panics, the decision log CLI.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import regorus
from starlette.testclient import TestClient

from ig_gate.bundles.policy import PolicySnapshot, StaticPolicySource
from ig_gate.middleware import Gate, ZeroTrustMiddleware
from ig_gate.middleware.compose import build_gate
from ig_gate.middleware.gate import GateRequest, verify_options
from ig_gate.sidecar.cli import main as ig_gate_cli
from tests.middleware.conftest import DE_IP, FR_IP, PROXY, US_IP, demo_app, query
from tests.middleware.test_jwks import JWKSServer, _self_signed, _serving
from tests.support.keys import make_keypair
from tests.support.procs import free_port, wait_until
from tests.support.tokens import mint

JSON = "application/json"


def post(client: TestClient, token: str | None, path: str = "/graphql", **headers: str):
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    return client.post(path, content=query(), headers={"content-type": JSON, **headers})


def graphql_message(response) -> str:
    return response.json()["errors"][0]["message"]


@pytest.fixture
def serve(world, tmp_path) -> Iterator:
    """serve(middleware or settings, peer) -> a started TestClient; gates closed at teardown."""
    with contextlib.ExitStack() as stack:

        def make(target, peer=("203.0.113.5", 1)) -> TestClient:
            middleware = (
                target
                if isinstance(target, ZeroTrustMiddleware)
                else ZeroTrustMiddleware(demo_app(), config=target)
            )
            stack.callback(middleware.gate.close)
            return stack.enter_context(TestClient(middleware, client=peer))

        yield make


# -- the public interface -------------------------------------------------------------------------


def test_audit_every_documented_yaml_key_changes_what_it_says(world, tmp_path, serve):
    config = tmp_path / "ig-gate.yaml"
    config.write_text(
        f"bundle:\n  path: {world.bundle_path}\n  verification_key: {world.bundle_pub}\n  key_id: null\n"
        "  query: data.ig.zt.decision\n"
        f"identity:\n  issuer: https://idp.example.test\n  audience: ig-gateway\n  jwks: {world.idp_jwks}\n"
        "  tenant_claim: org\n  risk_claim: idp_risk\n  stepup: {acr_values: [urn:strong], max_age: 60}\n"
        f"device:\n  attestation_jwks: {world.mdm_jwks}\n  header: X-MDM-Attestation\n"
        f"geo:\n  database: {world.mmdb}\n  trusted_proxies: [203.0.113.0/24]\n"
        "failure_mode: closed\nexclude_paths: [/live]\n"
    )  # fmt: skip
    client = serve(ZeroTrustMiddleware(demo_app(), config=str(config)), peer=("203.0.113.5", 1))
    now, subjects = int(time.time()), iter(range(100))

    def token(**claims) -> str:  # a new subject each time: no travel anomaly between the requests
        return mint(
            world.idp, **{"org": "acme", "idp_risk": "low", "sub": f"user-{next(subjects)}", **claims}
        )

    assert post(client, token()).json()["identity"]["tenant"] == "acme"
    assert post(client, token(), **{"x-forwarded-for": FR_IP}).status_code == 403  # the peer is a proxy
    assert "unknown_tenant" in graphql_message(post(client, token(org=None, tenant="acme")))  # tenant_claim
    assert post(client, token(idp_risk="high", risk="low")).status_code == 403  # risk_claim, not "risk"
    assert post(client, token(idp_risk="low", risk="high")).status_code == 200
    # stepup: the configured acr set and max_age, in the policy's view and in the RFC 9470 challenge
    assert post(client, token(idp_risk="medium", acr="urn:strong", auth_time=now)).status_code == 200
    assert post(client, token(idp_risk="medium", acr="urn:strong", auth_time=now - 120)).status_code == 401
    refused = post(client, token(idp_risk="medium", acr="mfa", auth_time=now))
    assert refused.headers["www-authenticate"].endswith('acr_values="urn:strong", max_age=60')
    # device.header: the posture is read from the configured header only
    jailbroken = world.attestation("jailbroken", sub="dev-user")  # bound to its user's session
    assert post(client, token(sub="dev-user"), **{"x-mdm-attestation": jailbroken}).status_code == 403
    assert post(client, token(sub="dev-user"), **{"x-device-attestation": jailbroken}).status_code == 200
    # exclude_paths replaces the default /healthz
    assert client.get("/live").status_code == 404  # passed to the app unauthenticated (no such route)
    assert client.get("/healthz").status_code == 401


# -- identity key sets over https ------------------------------------------------------------------


@pytest.fixture
def idp_https(tmp_path: Path) -> Iterator[JWKSServer]:
    with _serving(_self_signed(tmp_path)) as server:
        yield server


def _decide(gate: Gate, token: str) -> str:
    headers = {"content-type": JSON, "authorization": f"Bearer {token}"}
    return gate.decide(GateRequest("POST", "/graphql", b"", headers, "203.0.113.5", query().encode())).outcome


def test_audit_https_jwks_from_settings_loads_and_an_unknown_kid_triggers_one_refresh(
    world, idp_https, monkeypatch
):
    monkeypatch.setenv(
        "SSL_CERT_FILE", str(idp_https.cafile)
    )  # trust the IdP's certificate without the setting
    idp_https.serve(world.idp)
    settings = world.settings(identity={"jwks": idp_https.url, "jwks_min_refresh_interval_s": 0.5})
    gate = build_gate(settings)
    gate.start()  # the key-set refresher: construction starts no thread
    try:
        key_set = gate.key_sets["identity"]
        assert key_set.wait_ready(10)
        assert _decide(gate, world.token()) == "allow"
        rotated = make_keypair("ES256", "idp-2")
        idp_https.serve(world.idp, rotated)
        fresh = mint(rotated, tenant="acme", risk="low")
        assert [_decide(gate, fresh) for _ in range(20)] == ["unauthenticated"] * 20  # never waits
        wait_until(lambda: key_set.status()["refresh_ok"] == 2, 10, "the refresh an unknown kid asked for")
        assert _decide(gate, fresh) == "allow"
        assert idp_https.hits == 2  # 20 unknown-kid lookups, one refresh
        assert gate.metrics.registry.get_sample_value("ig_gate_jwks_refresh_total", {"result": "ok"}) == 2
    finally:
        gate.close()


def test_audit_jwks_ca_file_is_trusted_for_an_https_jwks_url(world, idp_https):
    idp_https.serve(world.idp)
    settings = world.settings(identity={"jwks": idp_https.url, "jwks_ca_file": str(idp_https.cafile)})
    gate = build_gate(settings)
    gate.start()  # the key-set refresher: construction starts no thread
    try:
        status = gate.key_sets["identity"].status
        wait_until(lambda: status()["refresh_ok"] + status()["refresh_failed"] > 0, 10, "the first fetch")
        assert status()["refresh_ok"] == 1, status()["last_error"]
    finally:
        gate.close()


def test_audit_identity_keys_not_loaded_yet_fail_by_failure_mode_not_as_bad_tokens(world):
    gate = build_gate(world.settings(identity={"jwks": f"https://127.0.0.1:{free_port()}/jwks.json"}))
    try:
        assert _decide(gate, world.token()) == "error"  # 503 (fail closed), not "your token is invalid"
        assert gate.status()["ready"] is False
    finally:
        gate.close()


# -- client address --------------------------------------------------------------------------------


def test_audit_rightmost_untrusted_entry_wins_over_client_written_ones(world, serve):
    client = serve(world.settings(), peer=(PROXY, 1))
    forged = post(client, world.token(sub="ivy"), **{"x-forwarded-for": f"{US_IP}, {FR_IP}, 10.0.0.9"})
    assert forged.status_code == 403 and "geo_fenced" in graphql_message(forged)
    assert post(client, world.token(sub="jay"), **{"x-forwarded-for": f"{FR_IP}, {US_IP}"}).status_code == 200


def test_audit_ipv4_mapped_peers_are_located_and_matched_against_ipv4_proxies(world, serve):
    settings = world.settings()
    direct = post(serve(settings, peer=(f"::ffff:{DE_IP}", 1)), world.token(sub="jo"))
    assert direct.status_code == 200 and direct.json()["identity"]["country"] == "DE"
    via_proxy = serve(settings, peer=(f"::ffff:{PROXY}", 1))
    assert post(via_proxy, world.token(sub="kim"), **{"x-forwarded-for": FR_IP}).status_code == 403


def test_audit_forwarded_source_setting_stops_a_client_forged_x_forwarded_for(world, serve):
    client = serve(world.settings(geo={"forwarded_source": "forwarded"}), peer=(PROXY, 1))
    # the proxy writes Forwarded (the client is in FR, fenced for acme); the client forged X-Forwarded-For
    forged = post(client, world.token(sub="lee"), forwarded=f"for={FR_IP}", **{"x-forwarded-for": US_IP})
    assert forged.status_code == 403


def test_audit_trusted_hops_setting_locates_clients_when_there_is_no_peer_address(world):
    gate = build_gate(world.settings(geo={"trusted_hops": 1}))
    try:
        headers = {
            "content-type": JSON,
            "authorization": f"Bearer {world.token(sub='uma')}",
            "x-forwarded-for": DE_IP,
        }
        decision = gate.decide(GateRequest("POST", "/graphql", b"", headers, None, query().encode()))
        assert decision.passes and decision.identity.country == "DE"
    finally:
        gate.close()


# -- tenant isolation ------------------------------------------------------------------------------


def test_audit_inputs_that_differ_only_in_tenant_never_share_a_memo_entry(world, serve):
    client = serve(world.settings(), peer=(FR_IP, 1))  # FR: fenced for acme, allowed for globex
    managed = {"x-device-attestation": world.attestation("managed", sub="max")}
    outcomes = [
        post(client, world.token(tenant=tenant, sub="max"), **managed).status_code
        for tenant in ("acme", "globex", "acme", "globex")
    ]
    assert outcomes == [403, 200, 403, 200]
    gate = client.app.gate
    assert gate.status()["memo_entries"] == 2
    assert gate.metrics.registry.get_sample_value("ig_gate_memo_lookups_total", {"result": "hit"}) == 2


def test_audit_a_token_reused_under_another_tenant_header_is_never_served_the_first_tenants_session(
    world, serve
):
    client = serve(world.settings(identity={"tenant_header": "X-Tenant-ID"}), peer=(FR_IP, 1))
    token = world.token(tenant=None, sub="nia")
    managed = {"x-device-attestation": world.attestation("managed", sub="nia")}
    seen = []
    for tenant in ("globex", "acme", "globex"):
        response = post(client, token, **managed, **{"x-tenant-id": tenant})
        seen.append((response.status_code, tenant == "globex" and response.json()["identity"]["tenant"]))
    assert seen == [(200, "globex"), (403, False), (200, "globex")]
    # two tenants' tokens for the same subject: each keeps its own claims
    acme, globex = world.token(tenant="acme", sub="oz"), world.token(tenant="globex", sub="oz")
    managed = {"x-device-attestation": world.attestation("managed", sub="oz")}
    assert post(client, acme, **managed).status_code == 403
    assert post(client, globex, **managed).json()["identity"]["tenant"] == "globex"
    assert post(client, acme, **managed).status_code == 403


# -- engine panics ---------------------------------------------------------------------------------


class _ForeignEngine:
    """A raw regorus engine owned by a helper thread: using it here raises pyo3's PanicException."""

    def __init__(self) -> None:
        self.engine: regorus.Engine | None = None
        self._built, self._done = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._own)
        self._thread.start()
        self._built.wait(10)

    def _own(self) -> None:
        self.engine = regorus.Engine()
        self._built.set()
        self._done.wait(30)
        self.engine = None  # dropped on its own thread

    def close(self) -> None:
        self._done.set()
        self._thread.join(10)


class _PanickingSnapshot:
    """A snapshot of the real bundle whose evaluation panics inside the engine."""

    def __init__(self, real: PolicySnapshot, foreign: _ForeignEngine) -> None:
        self.verified, self.revision, self.digest = real.verified, real.revision, real.digest
        self.cacheable = False
        self._foreign = foreign

    def evaluate(self, query: str, input: dict) -> object:
        assert self._foreign.engine is not None
        return self._foreign.engine.eval_rule(query)


class _Switch:
    def __init__(self, snapshot: object) -> None:
        self.snapshot = snapshot

    def current(self) -> object:
        return self.snapshot


def test_audit_an_engine_panic_fails_closed_and_the_gate_keeps_serving(world, serve):
    settings = world.settings()
    real = StaticPolicySource(world.bundle_path, verify_options(settings)).current()
    foreign = _ForeignEngine()
    try:
        source = _Switch(_PanickingSnapshot(real, foreign))
        client = serve(ZeroTrustMiddleware(demo_app(), gate=build_gate(settings, policy=source)))
        assert post(client, world.token()).status_code == 503
        assert post(client, world.token()).status_code == 503
        source.snapshot = real
        assert post(client, world.token()).status_code == 200
        metrics = client.app.gate.metrics.registry
        assert (
            metrics.get_sample_value("ig_gate_failure_mode_total", {"kind": "engine_error", "mode": "closed"})
            == 2
        )
    finally:
        foreign.close()


# -- the decision log and its CLI ------------------------------------------------------------------


def test_audit_the_middlewares_log_verifies_and_an_edited_line_is_named_by_the_cli(
    world, tmp_path, serve, capsys
):
    log_path = tmp_path / "audit-decisions.jsonl"
    client = serve(world.settings(decision_log={"path": str(log_path)}))
    token = world.token()
    for response in (post(client, token), post(client, token), post(client, None)):
        assert response.status_code in (200, 401)
    client.app.gate.close()
    assert ig_gate_cli(["decisions", "verify", str(log_path)]) == 0
    assert token.split(".")[1] not in log_path.read_text()

    lines = log_path.read_text().splitlines(keepends=True)
    lines[1] = lines[1].replace('"allow"', '"deny"', 1)
    log_path.write_text("".join(lines))
    capsys.readouterr()
    assert ig_gate_cli(["decisions", "verify", str(log_path)]) == 1
    assert capsys.readouterr().err.startswith(f"{log_path}:2: edited line")


def test_audit_a_token_in_the_request_path_is_not_written_to_the_decision_log(world, tmp_path, serve):
    log_path = tmp_path / "audit-decisions.jsonl"
    client = serve(world.settings(decision_log={"path": str(log_path)}))
    magic_link = world.token(sub="magic")
    client.get(f"/login/{magic_link}", headers={"authorization": f"Bearer {world.token()}"})
    client.get(f"/login/{magic_link}")
    client.app.gate.close()
    text = log_path.read_text()
    assert len(text.splitlines()) == 2
    assert magic_link.split(".")[2] not in text


# -- malformed bodies ------------------------------------------------------------------------------


def test_audit_a_deeply_nested_json_body_is_a_400_not_a_failure_mode_event(world, serve):
    client = serve(world.settings())
    nested = b"[" * 100_000 + b"]" * 100_000
    headers = {"content-type": JSON, "authorization": f"Bearer {world.token()}"}  # parsed once authenticated
    response = client.post("/graphql", content=nested, headers=headers)
    assert response.status_code == 400
    assert (
        client.app.gate.metrics.registry.get_sample_value(
            "ig_gate_failure_mode_total", {"kind": "internal_error", "mode": "closed"}
        )
        is None
    )
