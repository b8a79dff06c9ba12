"""The example bundle in policies/: its Rego unit tests, the decisions it makes, and how it is served."""

from __future__ import annotations

import itertools
import random
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from ig_gate.bundles.archive import Bundle, build_bundle, replace_files
from ig_gate.bundles.engine import Engine, run_rego_tests
from ig_gate.bundles.errors import BundleError, PolicyCompileError, SignatureError
from ig_gate.bundles.policy import PolicySnapshot, StaticPolicySource
from ig_gate.bundles.signing import VerificationKey, sign_bundle
from ig_gate.bundles.verify import VerifyOptions, verify_bundle
from tests.support.keys import make_keypair

POLICIES = Path(__file__).resolve().parents[2] / "policies"
DECISION = "data.ig.zt.decision"
ALLOW = {"allow": True, "stepup": False, "deny": False, "reasons": []}


def stepup(*reasons: str) -> dict[str, Any]:
    return {"allow": False, "stepup": True, "deny": False, "reasons": list(reasons)}


def deny(*reasons: str) -> dict[str, Any]:
    return {"allow": False, "stepup": False, "deny": True, "reasons": list(reasons)}


def policy_input(
    risk: str = "low",
    *,
    stepup_done: bool = False,
    posture: str = "managed",
    country: str | None = "US",
    tenant: str = "acme",
    anomaly: bool = False,
    operation_type: str = "query",
    purpose: str | None = None,
) -> dict[str, Any]:
    """The input document the gate builds (issue 3's shape)."""
    request = {"method": "POST", "path": "/graphql", "operation_type": operation_type}
    if purpose is not None:
        request["purpose"] = purpose
    return {
        "tenant": tenant,
        "session": {
            "risk": risk,
            "acr": "mfa" if stepup_done else "pwd",
            "auth_age_s": 30,
            "subject": "alice",
        },
        "stepup": stepup_done,
        "device": {"posture": posture},
        "geo": {"country": country, "anomaly": anomaly},
        "request": request,
    }


@pytest.fixture(scope="module")
def example() -> Bundle:
    return build_bundle(POLICIES, version="1.0.0")


@pytest.fixture(scope="module")
def signed_source(example: Bundle, tmp_path_factory: pytest.TempPathFactory) -> StaticPolicySource:
    pair = make_keypair("ES256", "policy-test")
    path = tmp_path_factory.mktemp("bundle") / "policy.tgz"
    path.write_bytes(sign_bundle(example, pair.private_pem, key_id=pair.kid).archive)
    return StaticPolicySource(path, VerifyOptions(key=VerificationKey(pair.public_pem, key_id=pair.kid)))


def _rego_test_results() -> list[Any]:
    bundle = build_bundle(POLICIES)
    return run_rego_tests(bundle.modules, bundle.data)


REGO_TESTS = _rego_test_results()


def test_example_bundle_has_rego_unit_tests_for_every_package() -> None:
    files = {result.file for result in REGO_TESTS}
    assert files == {"ig/zt_test.rego", "ig/purpose_test.rego", "ig/policies_test.rego"}
    assert len(REGO_TESTS) >= 25


@pytest.mark.parametrize("result", REGO_TESTS, ids=[result.name for result in REGO_TESTS])
def test_rego_unit_test_passes(result: Any) -> None:
    assert result.passed, f"{result.file}: {result.name}: {result.error}"


def test_example_policies_run_on_the_compiled_program(example: Bundle) -> None:
    engine = Engine.from_bundle(example)
    assert engine.compiled, engine.compiled_reason
    assert {DECISION, "data.ig.purpose.decision", "data.ig.policies.admin"} <= engine.entry_points


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        (policy_input("low"), ALLOW),
        (policy_input("medium"), stepup("stepup_required")),
        (policy_input("medium", stepup_done=True), ALLOW),
        (policy_input("high"), deny("risk_high")),
        (policy_input("high", stepup_done=True), deny("risk_high")),
        (policy_input("low", posture="jailbroken"), deny("device_jailbroken")),
        (policy_input("low", posture="untrusted"), deny("device_untrusted")),
        (policy_input("low", country="FR"), deny("geo_fenced")),
        (policy_input("low", tenant="globex", country="FR"), ALLOW),
        (policy_input("low", tenant="nobody"), deny("unknown_tenant")),
        (policy_input("low", anomaly=True), stepup("geo_anomaly")),
        (policy_input("low", posture="unknown", operation_type="mutation"), stepup("device_unmanaged_write")),
    ],
    ids=[
        "low-allow",
        "medium-stepup",
        "medium-stepped-up-allow",
        "high-deny",
        "high-stepped-up-deny",
        "jailbroken-deny",
        "untrusted-deny",
        "fenced-country-deny",
        "globex-FR-allow",
        "unknown-tenant-deny",
        "geo-anomaly-stepup",
        "unknown-device-write-stepup",
    ],
)
def test_decision_for_acme_from_us(
    signed_source: StaticPolicySource, case: dict[str, Any], expected: dict[str, Any]
) -> None:
    snapshot = signed_source.current()
    assert snapshot.evaluate(DECISION, case) == expected


def test_compiled_and_interpreted_decisions_agree(example: Bundle) -> None:
    compiled, interpreted = Engine.from_bundle(example), Engine(example.modules, example.data, use_vm=False)
    queries = [
        DECISION,
        "data.ig.purpose.decision",
        *(f'data.ig.policies["{n}"]' for n in ("admin", "billing")),
    ]
    grid = list(
        itertools.product(
            ["acme", "globex", "initech", "nobody"],
            ["low", "medium", "high", "bogus"],
            [False, True],
            ["managed", "unmanaged", "untrusted", "jailbroken", "unknown"],
            ["US", "DE", "FR", None],
            [False, True],
            ["query", "mutation"],
            [None, "billing", "support", "bogus"],
        )
    )
    sample = random.Random(20261126).sample(grid, 800)
    checked = 0
    for tenant, risk, done, posture, country, anomaly, op, purpose in sample:
        case = policy_input(
            risk,
            stepup_done=done,
            posture=posture,
            country=country,
            tenant=tenant,
            anomaly=anomaly,
            operation_type=op,
            purpose=purpose,
        )
        for query in queries:
            assert compiled.evaluate(query, case) == interpreted.evaluate(query, case), (query, case)
            checked += 1
        decision = compiled.evaluate(DECISION, case)
        assert [decision["allow"], decision["stepup"], decision["deny"]].count(True) == 1, case
        assert decision["reasons"] == sorted(decision["reasons"]) and (
            decision["allow"] or decision["reasons"]
        )
    assert checked == len(sample) * len(queries)


def test_named_policies_for_apollo_policy_directive(signed_source: StaticPolicySource) -> None:
    snapshot = signed_source.current()
    admin = policy_input("low", stepup_done=True)
    assert snapshot.evaluate('data.ig.policies["admin"]', admin) is True
    assert snapshot.evaluate('data.ig.policies["admin"]', policy_input("low")) is False
    assert snapshot.evaluate("data.ig.policies.read_profile", policy_input("high")) is False
    assert snapshot.evaluate('data.ig.policies["no_such_policy"]', admin) is None


def test_purpose_of_use_decision(signed_source: StaticPolicySource) -> None:
    snapshot = signed_source.current()
    query = "data.ig.purpose.decision"
    assert (
        snapshot.evaluate(query, policy_input(purpose="billing", operation_type="mutation"))["allow"] is True
    )
    refused = snapshot.evaluate(query, policy_input(purpose="support", operation_type="mutation"))
    assert refused == {"allow": False, "reasons": ["purpose_operation_forbidden"]}


def test_snapshot_carries_bundle_identity(signed_source: StaticPolicySource, example: Bundle) -> None:
    snapshot = signed_source.current()
    assert snapshot.revision == example.manifest.revision and snapshot.revision.startswith("1.0.0+")
    assert snapshot.digest.startswith("sha256:") and snapshot.cacheable is True
    assert snapshot.verified.signature is not None and snapshot.verified.signature.key_id == "policy-test"


def test_snapshot_serves_threads_other_than_the_one_that_built_it(signed_source: StaticPolicySource) -> None:
    snapshot = signed_source.current()
    cases = [(policy_input(risk), risk) for risk in ("low", "medium", "high")] * 20

    def decide(case: tuple[dict[str, Any], str]) -> tuple[str, str]:
        result = snapshot.evaluate(DECISION, case[0])
        outcome = next(key for key in ("allow", "stepup", "deny") if result[key])
        return case[1], f"{outcome}@{threading.get_ident() != main}"

    main = threading.get_ident()
    with ThreadPoolExecutor(max_workers=3) as pool:
        seen = set(pool.map(decide, cases))
    assert seen == {("low", "allow@True"), ("medium", "stepup@True"), ("high", "deny@True")}


def test_snapshot_fails_early_on_a_compile_error(tmp_path: Path) -> None:
    source = tmp_path / "src"
    shutil.copytree(POLICIES, source)
    (source / "ig" / "extra.rego").write_text("package ig.extra\n\nr := count(\n")
    verified = verify_bundle(build_bundle(source).archive, VerifyOptions(key=None))
    with pytest.raises(PolicyCompileError, match=r"ig/extra\.rego:\d+:\d+"):
        PolicySnapshot.from_verified(verified)


def test_static_source_rejects_a_tampered_bundle(tmp_path: Path, example: Bundle) -> None:
    pair = make_keypair("ES256", "k")
    signed = sign_bundle(example, pair.private_pem)
    tampered = replace_files(signed, {"overrides/data.json": b'{"open": true}'})
    path = tmp_path / "policy.tgz"
    path.write_bytes(tampered.archive)
    with pytest.raises(SignatureError):
        StaticPolicySource(path, VerifyOptions(key=VerificationKey(pair.public_pem)))


def test_static_source_names_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=r"missing\.tgz: cannot read"):
        StaticPolicySource(tmp_path / "missing.tgz", VerifyOptions(key=None))
