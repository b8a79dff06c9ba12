"""DevicePosture: signed attestations only (MDM key set), claim fallback, cache until exp, store overrides.

Attestations are checked with the session they are bound to (alice's); binding itself: test_device_binding.
"""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest

from ig_gate.middleware.device import DevicePosture
from ig_gate.middleware.jwks import JWKSet
from ig_gate.middleware.risk import InMemoryRiskStore
from ig_gate.middleware.session import Session, SessionVerifier
from ig_gate.middleware.settings import DeviceSettings, IdentitySettings
from tests.support.keys import KeyPair, make_keypair
from tests.support.tokens import attestation, session_token


@pytest.fixture(scope="module")
def mdm() -> KeyPair:
    return make_keypair("ES256", kid="mdm-1")


@pytest.fixture(scope="module")
def mdm_jwks(mdm: KeyPair) -> JWKSet:
    return JWKSet.from_keys([mdm.jwk()])


@pytest.fixture
def now() -> list[float]:
    return [time.time()]


@pytest.fixture
def store() -> InMemoryRiskStore:
    return InMemoryRiskStore()


@pytest.fixture
def devices(mdm_jwks: JWKSet, store: InMemoryRiskStore, now: list[float]) -> DevicePosture:
    return DevicePosture(mdm_jwks, DeviceSettings(), clock=lambda: now[0], risk_store=store)


@pytest.fixture(scope="module")
def alice() -> Session:
    """Alice's session: the subject `attestation()` binds attestations to by default."""
    return _session()


def _session(posture: str | None = None, sub: str = "alice") -> Session:
    """A real Session verified from a token that carries `device_posture` when given."""
    idp = make_keypair(kid="idp")
    verifier = SessionVerifier(
        JWKSet.from_keys([idp.jwk()]), IdentitySettings(), InMemoryRiskStore(), posture_claim="device_posture"
    )
    return verifier.verify(session_token(idp, sub=sub, device_posture=posture))


@pytest.mark.parametrize("posture", ["managed", "unmanaged", "untrusted", "jailbroken"])
def test_signed_attestation_gives_its_posture(
    alice: Session, devices: DevicePosture, mdm: KeyPair, posture: str
) -> None:
    assert devices.posture(attestation(mdm, posture), alice) == posture


@pytest.mark.parametrize("posture", ["rooted", "MANAGED", "", "unknown-ish"])
def test_unrecognised_posture_is_unknown(
    alice: Session, devices: DevicePosture, mdm: KeyPair, posture: str
) -> None:
    assert devices.posture(attestation(mdm, posture), alice) == "unknown"


def test_missing_attestation_and_no_session_is_unknown(devices: DevicePosture) -> None:
    assert devices.posture(None, None) == "unknown"
    assert devices.posture("", None) == "unknown"


def test_unsigned_attestation_is_never_trusted(alice: Session, devices: DevicePosture, mdm: KeyPair) -> None:
    claims = {"posture": "managed", "device_id": "dev-1", "exp": int(time.time()) + 600}
    for alg in ("none", "None"):
        header = base64.urlsafe_b64encode(json.dumps({"alg": alg, "kid": mdm.kid}).encode()).rstrip(b"=")
        body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=")
        assert devices.posture(f"{header.decode()}.{body.decode()}.", alice) == "unknown"
    assert devices.posture(jwt.encode(claims, None, algorithm="none"), alice) == "unknown"


def test_attestation_signed_by_another_key_is_unknown(alice: Session, devices: DevicePosture) -> None:
    assert devices.posture(attestation(make_keypair(kid="mdm-1"), "managed"), alice) == "unknown"
    assert devices.posture(attestation(make_keypair(kid="someone-else"), "managed"), alice) == "unknown"


def test_attestation_needs_exp_and_must_not_be_expired(
    alice: Session, devices: DevicePosture, mdm: KeyPair
) -> None:
    assert devices.posture(attestation(mdm, "managed", lifetime_s=-5), alice) == "unknown"
    no_exp = jwt.encode({"posture": "managed"}, mdm.private_pem, algorithm="ES256", headers={"kid": mdm.kid})
    assert devices.posture(no_exp, alice) == "unknown"


def test_cached_attestation_lapses_at_exp(
    alice: Session, devices: DevicePosture, mdm: KeyPair, now: list[float]
) -> None:
    header = attestation(mdm, "managed", lifetime_s=60)
    assert devices.posture(header, alice) == "managed"
    now[0] += 61
    assert devices.posture(header, alice) == "unknown"


def test_attestation_with_a_disallowed_algorithm_is_unknown(
    alice: Session, mdm_jwks: JWKSet, mdm: KeyPair
) -> None:
    rs_only = DevicePosture(mdm_jwks, DeviceSettings(algorithms=("RS256",)))
    assert rs_only.posture(attestation(mdm, "managed"), alice) == "unknown"


@pytest.mark.parametrize(
    "garbage", ["x", "a.b.c", "...", "eyJhbGciOiJFUzI1NiJ9.e30.", "é" * 50, "a" * 20_000]
)
def test_garbage_attestation_is_unknown(alice: Session, devices: DevicePosture, garbage: str) -> None:
    assert devices.posture(garbage, alice) == "unknown"


def test_without_an_mdm_key_set_attestations_are_ignored(alice: Session, mdm: KeyPair) -> None:
    devices = DevicePosture(None, DeviceSettings())
    assert devices.posture(attestation(mdm, "managed"), alice) == "unknown"
    assert devices.posture(attestation(mdm, "managed"), _session("unmanaged")) == "unmanaged"


def test_session_claim_is_the_fallback(devices: DevicePosture) -> None:
    assert devices.posture(None, _session("managed")) == "managed"
    assert devices.posture(None, _session("bogus")) == "unknown"
    assert devices.posture(None, _session(None)) == "unknown"


def test_an_invalid_attestation_does_not_fall_back_to_the_claim(devices: DevicePosture) -> None:
    assert devices.posture("not-a-jwt", _session("managed")) == "unknown"


def test_non_compliant_device_in_the_store_is_untrusted(
    alice: Session, devices: DevicePosture, mdm: KeyPair, store: InMemoryRiskStore
) -> None:
    header = attestation(mdm, "managed", device_id="dev-7")
    assert devices.posture(header, alice) == "managed"
    store.set_posture("dev-7", "not-compliant", reason="caep device-compliance-change")
    assert devices.posture(header, alice) == "untrusted"  # overrides the cached attestation
    store.set_posture("dev-7", "compliant", reason="caep device-compliance-change")
    assert devices.posture(header, alice) == "managed"


def test_store_never_improves_a_posture(
    alice: Session, devices: DevicePosture, mdm: KeyPair, store: InMemoryRiskStore
) -> None:
    store.set_posture("dev-8", "managed", reason="r")
    assert devices.posture(attestation(mdm, "jailbroken", device_id="dev-8"), alice) == "jailbroken"
    store.set_posture("dev-8", "jailbroken", reason="r")
    assert devices.posture(attestation(mdm, "untrusted", device_id="dev-8"), alice) == "jailbroken"


def test_store_status_by_session_key_applies_to_claim_posture(
    devices: DevicePosture, store: InMemoryRiskStore
) -> None:
    session = _session("managed", sub="dora")
    store.set_posture("dora", "not-compliant", reason="caep device-compliance-change for the user")
    assert devices.posture(None, session) == "untrusted"
