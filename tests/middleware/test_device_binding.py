"""A device attestation counts only for the session it belongs to (issue 9 item 4).

Binding rules: the attestation's subject claim equals the session's subject; its device id equals the IdP
token's device claim when the token carries one; iss/aud are checked when configured; a `cnf.jkt` in the
attestation must equal the token's `cnf.jkt`. Anything else is posture "unknown" with a reason.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time

import jwt
import pytest

from ig_gate.middleware.device import DEVICE_ATTESTATION_INVALID, DEVICE_BINDING_MISMATCH, DevicePosture
from ig_gate.middleware.jwks import JWKSet
from ig_gate.middleware.risk import InMemoryRiskStore
from ig_gate.middleware.session import Session, SessionVerifier
from ig_gate.middleware.settings import DeviceSettings, IdentitySettings
from tests.support.keys import KeyPair, make_keypair
from tests.support.tokens import attestation, session_token

MDM_ISSUER = "https://mdm.example.test"


@pytest.fixture(scope="module")
def mdm() -> KeyPair:
    return make_keypair("ES256", kid="mdm-1")


@pytest.fixture(scope="module")
def idp() -> KeyPair:
    return make_keypair("ES256", kid="idp-1")


@pytest.fixture(scope="module")
def devices(mdm: KeyPair) -> DevicePosture:
    return DevicePosture(JWKSet.from_keys([mdm.jwk()]), DeviceSettings(), risk_store=InMemoryRiskStore())


def session(idp: KeyPair, sub: str, identity: IdentitySettings | None = None, **claims: object) -> Session:
    """A real Session verified from an IdP token for `sub` with extra claims (device_id, cnf, ...)."""
    verifier = SessionVerifier(
        JWKSet.from_keys([idp.jwk()]), identity or IdentitySettings(), InMemoryRiskStore()
    )
    return verifier.verify(session_token(idp, sub=sub, **claims))


def jkt(seed: str) -> str:
    """A JWK SHA-256 thumbprint shaped value (RFC 7638): base64url of 32 bytes."""
    return base64.urlsafe_b64encode(hashlib.sha256(seed.encode()).digest()).rstrip(b"=").decode()


def test_bob_cannot_use_an_attestation_minted_for_alice(
    devices: DevicePosture, mdm: KeyPair, idp: KeyPair
) -> None:
    alices_laptop = attestation(mdm, "managed", device_id="alice-laptop", sub="alice")
    assert devices.assess(alices_laptop, session(idp, "alice")) == ("managed", None)
    assert devices.assess(alices_laptop, session(idp, "bob")) == ("unknown", DEVICE_BINDING_MISMATCH)
    assert devices.posture(alices_laptop, session(idp, "bob")) == "unknown"


def test_an_attestation_without_a_subject_is_bound_to_nobody(
    devices: DevicePosture, mdm: KeyPair, idp: KeyPair
) -> None:
    unbound = attestation(mdm, "managed", sub=None)
    assert devices.assess(unbound, session(idp, "alice")) == ("unknown", DEVICE_BINDING_MISMATCH)
    assert devices.assess(attestation(mdm, "managed"), None) == ("unknown", DEVICE_BINDING_MISMATCH)


def test_the_subject_claim_is_configurable(mdm: KeyPair, idp: KeyPair) -> None:
    settings = DeviceSettings(subject_claim="user")
    devices = DevicePosture(JWKSet.from_keys([mdm.jwk()]), settings)
    by_user = attestation(mdm, "managed", sub=None, user="alice")
    assert devices.assess(by_user, session(idp, "alice")) == ("managed", None)
    assert devices.assess(by_user, session(idp, "bob")) == ("unknown", DEVICE_BINDING_MISMATCH)
    assert (
        devices.assess(attestation(mdm, "managed", sub="alice"), session(idp, "alice")).posture == "unknown"
    )


def test_device_id_must_match_the_idp_tokens_device_claim_when_it_has_one(
    devices: DevicePosture, mdm: KeyPair, idp: KeyPair
) -> None:
    laptop = attestation(mdm, "managed", device_id="alice-laptop")
    assert devices.assess(laptop, session(idp, "alice", device_id="alice-laptop")) == ("managed", None)
    assert devices.assess(laptop, session(idp, "alice", device_id="alice-phone")) == (
        "unknown",
        DEVICE_BINDING_MISMATCH,
    )
    assert devices.assess(laptop, session(idp, "alice")) == ("managed", None)  # the IdP names no device
    no_id = attestation(mdm, "managed", device_id=None)
    assert (
        devices.assess(no_id, session(idp, "alice", device_id="alice-laptop")).reason
        == DEVICE_BINDING_MISMATCH
    )


def test_device_claim_names_are_configurable(mdm: KeyPair, idp: KeyPair) -> None:
    devices = DevicePosture(JWKSet.from_keys([mdm.jwk()]), DeviceSettings(device_id_claim="did"))
    identity = IdentitySettings(device_claim="device")
    token_session = session(idp, "alice", identity, device="d-1")
    assert devices.assess(attestation(mdm, "managed", did="d-1"), token_session) == ("managed", None)
    assert (
        devices.assess(attestation(mdm, "managed", did="d-2"), token_session).reason
        == DEVICE_BINDING_MISMATCH
    )


def test_issuer_and_audience_are_checked_when_configured(mdm: KeyPair, idp: KeyPair) -> None:
    settings = DeviceSettings(issuer=MDM_ISSUER, audience="ig-gateway")
    devices = DevicePosture(JWKSet.from_keys([mdm.jwk()]), settings)
    alice = session(idp, "alice")
    good = attestation(mdm, "managed", iss=MDM_ISSUER, aud="ig-gateway")
    assert devices.assess(good, alice) == ("managed", None)
    for wrong in (
        attestation(mdm, "managed", iss="https://other-mdm.test", aud="ig-gateway"),
        attestation(mdm, "managed", aud="ig-gateway"),
        attestation(mdm, "managed", iss=MDM_ISSUER, aud="another-gateway"),
        attestation(mdm, "managed", iss=MDM_ISSUER),
    ):
        assert devices.assess(wrong, alice) == ("unknown", DEVICE_ATTESTATION_INVALID)


def test_an_attestation_confirmed_to_a_key_needs_a_token_confirmed_to_the_same_key(
    devices: DevicePosture, mdm: KeyPair, idp: KeyPair
) -> None:
    bound = attestation(mdm, "managed", cnf={"jkt": jkt("device-key")})
    assert devices.assess(bound, session(idp, "alice", cnf={"jkt": jkt("device-key")})) == ("managed", None)
    assert devices.assess(bound, session(idp, "alice", cnf={"jkt": jkt("other-key")})).reason == (
        DEVICE_BINDING_MISMATCH
    )
    assert devices.assess(bound, session(idp, "alice")).reason == DEVICE_BINDING_MISMATCH  # token not bound
    # a token bound to a key accepts an attestation that names no key (the binding is optional)
    assert devices.assess(attestation(mdm, "managed"), session(idp, "alice", cnf={"jkt": jkt("k")})) == (
        "managed",
        None,
    )


@pytest.mark.parametrize("cnf", [{"jwk": {"kty": "EC"}}, {"jkt": 7}, "jkt", []])
def test_a_confirmation_ig_gate_cannot_compare_is_invalid(
    devices: DevicePosture, mdm: KeyPair, idp: KeyPair, cnf: object
) -> None:
    assert devices.assess(attestation(mdm, "managed", cnf=cnf), session(idp, "alice")) == (
        "unknown",
        DEVICE_ATTESTATION_INVALID,
    )


def test_forged_expired_and_garbage_attestations_are_invalid(
    devices: DevicePosture, mdm: KeyPair, idp: KeyPair
) -> None:
    alice = session(idp, "alice")
    forged = attestation(make_keypair(kid="mdm-1"), "managed")
    claims = {"posture": "managed", "sub": "alice", "exp": int(time.time()) + 60}
    unsigned = jwt.encode(claims, None, algorithm="none")
    tampered_body = (
        base64.urlsafe_b64encode(json.dumps({**claims, "sub": "bob"}).encode()).rstrip(b"=").decode()
    )
    header, _, signature = attestation(mdm, "managed").split(".")
    for bad in (
        forged,
        unsigned,
        attestation(mdm, "managed", lifetime_s=-5),
        "x.y.z",
        f"{header}.{tampered_body}.{signature}",
    ):
        assert devices.assess(bad, alice) == ("unknown", DEVICE_ATTESTATION_INVALID)


def test_no_attestation_has_no_reason(devices: DevicePosture, idp: KeyPair) -> None:
    assert devices.assess(None, session(idp, "alice")) == ("unknown", None)


def test_a_mismatched_attestation_does_not_apply_its_device_status(mdm: KeyPair, idp: KeyPair) -> None:
    store = InMemoryRiskStore()
    devices = DevicePosture(JWKSet.from_keys([mdm.jwk()]), DeviceSettings(), risk_store=store)
    store.set_posture("alice-laptop", "jailbroken", reason="caep")
    alices = attestation(mdm, "managed", device_id="alice-laptop")
    assert devices.assess(alices, session(idp, "alice")).posture == "jailbroken"
    assert devices.assess(alices, session(idp, "bob")) == ("unknown", DEVICE_BINDING_MISMATCH)


def test_a_cached_attestation_is_still_checked_against_each_session(
    devices: DevicePosture, mdm: KeyPair, idp: KeyPair
) -> None:
    header = attestation(mdm, "managed", device_id="cache-dev")
    alice, bob = session(idp, "alice"), session(idp, "bob")
    for _ in range(3):
        assert devices.assess(header, alice) == ("managed", None)
        assert devices.assess(header, bob) == ("unknown", DEVICE_BINDING_MISMATCH)
