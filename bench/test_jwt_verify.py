"""Session signal costs: ES256 verify uncached versus a cache hit (target ≤ 2 µs), device posture hit.

The uncached verify runs jws.verify_compact (pyjwt's rules, keys prepared once); beside it the same token
through pyjwt's jwt.decode (the reference it replaced) and the bare ECDSA verify (the floor).

Cache-hit benchmarks run 1000 calls per round, so the timer's own overhead is not counted as their cost.
"""

from __future__ import annotations

import jwt
import pytest

from ig_gate.middleware.device import DevicePosture
from ig_gate.middleware.jwks import JWKSet
from ig_gate.middleware.jws import VerifyingKey
from ig_gate.middleware.risk import InMemoryRiskStore
from ig_gate.middleware.session import SessionVerifier
from ig_gate.middleware.settings import DeviceSettings, IdentitySettings
from tests.support.keys import KeyPair, make_keypair
from tests.support.tokens import attestation, session_token


@pytest.fixture(scope="module")
def idp() -> KeyPair:
    return make_keypair("ES256", kid="idp-1")


def _verifier(idp: KeyPair, store: InMemoryRiskStore, cache_size: int) -> SessionVerifier:
    return SessionVerifier(
        JWKSet.from_keys([idp.jwk()]), IdentitySettings(token_cache_size=cache_size), store
    )


def test_es256_verify_uncached(benchmark, idp: KeyPair):
    verifier = _verifier(idp, InMemoryRiskStore(), cache_size=0)
    token = session_token(idp, acr="mfa")
    session = benchmark(verifier.verify, token)
    assert session.subject == "alice"


def test_es256_verify_pyjwt_reference(benchmark, idp: KeyPair):
    key = jwt.PyJWK(idp.jwk())
    token = session_token(idp, acr="mfa")
    options = {
        "verify_exp": False, "verify_nbf": False, "verify_iat": False, "require": ["exp", "iss", "sub"]
    }
    claims = benchmark(
        jwt.decode, token, key, algorithms=["ES256"], options=options,
        issuer="https://idp.example.test", audience="ig-gateway",
    )
    assert claims["sub"] == "alice"


def test_es256_signature_check_alone(benchmark, idp: KeyPair):
    key = VerifyingKey.from_jwk(jwt.PyJWK(idp.jwk()))
    signing_input, _, signature = session_token(idp).rpartition(".")
    raw = jwt.utils.base64url_decode(signature)
    assert benchmark(key.algorithm.verify, signing_input.encode(), key.key, raw)


def test_verify_cache_hit(benchmark, idp: KeyPair):
    verifier = _verifier(idp, InMemoryRiskStore(), cache_size=10_000)
    token = session_token(idp, acr="mfa")
    verifier.verify(token)
    benchmark.pedantic(verifier.verify, (token,), iterations=1000, rounds=200, warmup_rounds=1)


def test_verify_cache_hit_with_sid_and_a_raised_risk(benchmark, idp: KeyPair):
    store = InMemoryRiskStore()
    store.raise_risk("s-1", "medium", reason="bench")
    verifier = _verifier(idp, store, cache_size=10_000)
    token = session_token(idp, sid="s-1", acr="mfa")
    assert verifier.verify(token).risk == "medium"
    benchmark.pedantic(verifier.verify, (token,), iterations=1000, rounds=200, warmup_rounds=1)


def test_device_attestation_cache_hit(benchmark):
    mdm = make_keypair("ES256", kid="mdm-1")
    devices = DevicePosture(JWKSet.from_keys([mdm.jwk()]), DeviceSettings(), risk_store=InMemoryRiskStore())
    header = attestation(mdm, "managed")
    idp = make_keypair("ES256", kid="idp-1")
    alice = _verifier(idp, InMemoryRiskStore(), cache_size=10).verify(session_token(idp))  # the attested user
    assert devices.posture(header, alice) == "managed"
    benchmark.pedantic(devices.posture, (header, alice), iterations=1000, rounds=200, warmup_rounds=1)
