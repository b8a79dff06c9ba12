"""The gate's own parts: GraphQL sniffing, header extraction, the decision memo, verdicts, responses, and a
Gate built from explicit objects with a policy source that changes."""

from __future__ import annotations

import json
from urllib.parse import urlencode

import pytest
from starlette.datastructures import Headers

from ig_gate.bundles.policy import PolicySnapshot, StaticPolicySource
from ig_gate.geo.anomaly import TravelAnomalyDetector
from ig_gate.geo.client_ip import ClientIPResolver
from ig_gate.geo.lookup import GeoReader
from ig_gate.middleware.compose import build_gate
from ig_gate.middleware.decision import (
    DENY,
    STEPUP,
    Decision,
    DecisionIds,
    DecisionMemo,
    PolicyResultError,
    Verdict,
    verdict_from_result,
)
from ig_gate.middleware.device import DevicePosture
from ig_gate.middleware.extract import MalformedRequest, TokenReader, header_map
from ig_gate.middleware.gate import Gate, GateRequest
from ig_gate.middleware.graphql import GraphQLRequestError, request_operation
from ig_gate.middleware.jwks import JWKSet
from ig_gate.middleware.metrics import GateMetrics
from ig_gate.middleware.responses import Responses
from ig_gate.middleware.risk import InMemoryRiskStore
from ig_gate.middleware.session import SessionVerifier
from ig_gate.middleware.settings import StepUpSettings
from tests.middleware.conftest import query

JSON = "application/json"


def post(body: object, content_type: str = JSON) -> str:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return request_operation("POST", b"", raw, content_type, 65_536)


@pytest.mark.parametrize(
    "document, expected",
    [
        ("{ me { id } }", "query"),
        ("query Me { me { id } }", "query"),
        ('mutation { rename(name: "x") { ok } }', "mutation"),
        ("subscription OnEvent { event { id } }", "subscription"),
        ("# a comment with mutation\nquery Q { a }", "query"),
        ('query Q { a(text: "} mutation { x }") }', "query"),
        ('query Q { a(text: """ block } mutation { """) }', "query"),
        ("fragment F on User { id } mutation M($v: In = {a: 1}) @tag { b { ...F } }", "mutation"),
        ("", "unknown"),
    ],
)
def test_operation_type_of_json_bodies(document, expected):
    assert post({"query": document}) == expected


def test_operation_name_picks_the_operation_and_an_unknown_name_is_a_bad_request():
    document = "query A { a } mutation B { b }"
    assert post({"query": document, "operationName": "A"}) == "query"
    assert post({"query": document, "operationName": "B"}) == "mutation"
    with pytest.raises(GraphQLRequestError, match="does not name an operation") as raised:
        post({"query": document, "operationName": "C"})
    assert raised.value.status == 400


def test_batches_report_their_most_sensitive_operation():
    assert post([{"query": "{ a }"}, {"query": "mutation { b }"}]) == "mutation"
    assert post([{"query": "{ a }"}]) == "query"


def test_get_parameters_application_graphql_and_other_bodies():
    qs = urlencode({"query": "subscription S { s }", "operationName": "S"}).encode()
    assert request_operation("GET", qs, None, "", 65_536) == "subscription"
    assert request_operation("GET", b"a=1", None, "", 65_536) == "unknown"
    assert post(b"mutation { x }", "application/graphql; charset=utf-8") == "mutation"
    assert post(b"a,b", "text/csv") == "unknown"
    assert post({"extensions": {"persistedQuery": {"sha256Hash": "abc"}}}) == "unknown"


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"\xff\xfe",
        json.dumps({"query": 42}).encode(),
        json.dumps({"query": "query A { a } mutation B { b }"}).encode(),  # several: operationName needed
        json.dumps({"query": "type Query { a: Int }"}).encode(),  # no operation at all
    ],
)
def test_unreadable_graphql_bodies_raise_a_named_error(body):
    with pytest.raises(GraphQLRequestError):
        post(body)


def test_header_map_merges_repeated_forwarding_headers_and_flags_repeated_authorization():
    raw = [
        (b"x-forwarded-for", b"1.1.1.1"), (b"x-forwarded-for", b"2.2.2.2"), (b"cookie", b"a=1"),
        (b"cookie", b"b=2"), (b"content-type", b"application/json"), (b"content-type", b"text/plain"),
    ]  # fmt: skip
    headers = header_map(raw)
    assert headers[b"x-forwarded-for"] == b"1.1.1.1,2.2.2.2"
    assert headers[b"cookie"] == b"a=1; b=2"
    assert headers[b"content-type"] == b"application/json"  # the first one, as Starlette reads it
    assert header_map({"Authorization": "Bearer abc"})[b"authorization"] == b"Bearer abc"
    starlette_headers = Headers(raw=[(b"authorization", b"Bearer a"), (b"authorization", b"Bearer b")])
    with pytest.raises(MalformedRequest):
        TokenReader(None).token(header_map(starlette_headers))

    repeated = header_map([(b"authorization", b"Bearer a"), (b"authorization", b"Bearer b")])
    with pytest.raises(MalformedRequest, match="more than one Authorization"):
        TokenReader(None).token(repeated)


def test_token_reader_prefers_the_header_and_reads_the_cookie_otherwise():
    reader = TokenReader("sess")
    assert reader.token(header_map({"authorization": "Bearer a.b.c", "cookie": "sess=x.y.z"})) == "a.b.c"
    assert reader.token(header_map({"cookie": "other=1; sess=x.y.z"})) == "x.y.z"
    assert reader.token(header_map({"authorization": "Basic abc"})) is None
    with pytest.raises(MalformedRequest):
        reader.token(header_map({"authorization": "Bearer a b"}))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def verdict(outcome: str = "allow") -> Verdict:
    return Verdict(outcome, (), {outcome: True})


def test_memo_entries_expire_after_the_ttl():
    clock = Clock()
    memo = DecisionMemo(10, 5.0, clock)
    memo.put(("rev-1", "a"), (verdict(), {}))
    assert memo.get(("rev-1", "a"))[0].outcome == "allow"
    assert memo.get(("rev-2", "a")) is None  # another bundle revision never shares an entry
    clock.now += 5.0
    assert memo.get(("rev-1", "a")) is None


def test_memo_is_bounded_and_evicts_the_oldest_entry():
    memo = DecisionMemo(3, 60.0, Clock())
    for i in range(5):
        memo.put(("rev", i), (verdict(), {}))
    assert len(memo) == 3
    assert memo.get(("rev", 0)) is None and memo.get(("rev", 1)) is None and memo.get(("rev", 4)) is not None


def test_verdicts_deny_wins_then_stepup_and_nothing_set_is_deny():
    assert verdict_from_result(
        {"allow": True, "stepup": True, "deny": True, "reasons": ["b", "a"]}
    ) == Verdict(DENY, ("a", "b"), {"allow": True, "stepup": True, "deny": True, "reasons": ["b", "a"]})
    assert verdict_from_result({"allow": True, "stepup": True, "reasons": []}).outcome == STEPUP
    assert verdict_from_result({"reasons": []}).reasons == ("no_rule_allowed",)
    for bad in (None, [], "allow", {"reasons": "x"}):
        with pytest.raises(PolicyResultError):
            verdict_from_result(bad)


def test_decision_ids_are_unique_across_generators():
    first, second = DecisionIds(), DecisionIds()
    ids = {first.next() for _ in range(1000)} | {second.next() for _ in range(1000)}
    assert len(ids) == 2000


def test_responses_sanitize_descriptions_and_shape_bodies():
    responses = Responses(StepUpSettings(acr_values=("mfa", "phr"), max_age=120))
    invalid = Decision("unauthenticated", ("token_invalid",), "d-1", None, False, False, None, "invalid",
                       'bad "quoted" \\ detail\n')  # fmt: skip
    status, headers, body = responses.http(invalid)
    challenge = dict(headers)[b"www-authenticate"].decode()
    assert status == 401
    assert (
        challenge
        == 'Bearer realm="ig-gate", error="invalid_token", error_description="bad ?quoted? ? detail?"'
    )
    assert json.loads(body) == {
        "error": "unauthenticated",
        "reason": 'bad "quoted" \\ detail\n',
        "decision_id": "d-1",
    }
    assert int(dict(headers)[b"content-length"]) == len(body)

    stepup = Decision("stepup", ("geo_anomaly",), "d-2", "r", False, True)
    status, headers, body = responses.http(stepup)
    assert 'acr_values="mfa phr", max_age=120' in dict(headers)[b"www-authenticate"].decode()
    assert json.loads(body)["errors"][0]["extensions"] == {"code": "STEP_UP_REQUIRED", "decision_id": "d-2"}
    assert responses.close_code(stepup) == 4401
    assert responses.status(Decision("error", ("no_bundle",), "d-3", None, False)) == 503


class SwitchingSource:
    """A policy source whose snapshot the test replaces (as the bundle manager does on activation)."""

    def __init__(self, snapshot: PolicySnapshot | None) -> None:
        self.snapshot = snapshot

    def current(self) -> PolicySnapshot | None:
        return self.snapshot


def test_a_gate_from_explicit_objects_follows_its_policy_source(world, tmp_path):
    from ig_gate.bundles.archive import build_bundle
    from ig_gate.bundles.signing import sign_bundle
    from ig_gate.middleware.gate import verify_options
    from tests.middleware.conftest import REPO

    settings = world.settings()
    first = StaticPolicySource(world.bundle_path, verify_options(settings)).current()
    other = tmp_path / "v2.tgz"
    other.write_bytes(
        sign_bundle(build_bundle(REPO / "policies", version="2.0.0"), world.bundle_key.private_pem).archive
    )
    second = StaticPolicySource(other, verify_options(settings)).current()
    source = SwitchingSource(None)
    metrics = GateMetrics(tenants=("acme",))
    store = InMemoryRiskStore()
    gate = Gate(
        settings, source, SessionVerifier(JWKSet.from_file(world.idp_jwks), settings.identity, store),
        DevicePosture(None, settings.device), ClientIPResolver(["10.0.0.0/8"]), GeoReader(world.mmdb),
        TravelAnomalyDetector(), metrics,
    )  # fmt: skip
    headers = {"content-type": JSON, "authorization": f"Bearer {world.token()}"}
    request = GateRequest("POST", "/graphql", b"", headers, "203.0.113.5", query().encode())

    assert gate.decide(request).outcome == "error"
    source.snapshot = first
    assert gate.decide(request).revision == first.revision
    assert gate.decide(request).passes
    source.snapshot = second
    decision = gate.decide(request)
    assert decision.revision == second.revision and decision.passes
    assert metrics.registry.get_sample_value("ig_gate_memo_lookups_total", {"result": "miss"}) == 2
    info = {"revision": second.revision, "digest": second.digest, "version": "2.0.0"}
    assert metrics.registry.get_sample_value("ig_gate_bundle_info", info) == 1
    assert gate.status()["policy"]["revision"] == second.revision


class BrokenSource:
    """A policy source that fails with a message quoting request data (as a buggy plug-in might)."""

    def current(self) -> PolicySnapshot | None:
        raise RuntimeError("boom while handling Bearer eyJhbGciOiJFUzI1NiJ9.secret.part")


@pytest.mark.parametrize("mode, status", [("closed", 503), ("open", 200)])
def test_an_unexpected_error_fails_by_mode_and_is_logged_without_its_message(world, caplog, mode, status):
    from starlette.testclient import TestClient

    from ig_gate.middleware.asgi import ZeroTrustMiddleware
    from tests.middleware.conftest import demo_app

    gate = build_gate(world.settings(failure_mode=mode), policy=BrokenSource())
    try:
        with (
            caplog.at_level("ERROR", logger="ig_gate.gate"),
            TestClient(ZeroTrustMiddleware(demo_app(), gate=gate)) as client,
        ):
            response = client.post(
                "/graphql",
                content=query(),
                headers={"content-type": JSON, "authorization": f"Bearer {world.token()}"},
            )
    finally:
        gate.close()

    assert response.status_code == status
    (line,) = [r.getMessage() for r in caplog.records]
    assert "internal_error" in line and "RuntimeError" in line and "test_gate_units.py" in line
    assert "secret" not in line and "eyJ" not in line
