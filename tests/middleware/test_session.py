"""SessionVerifier with real keys and a real JWKS file: claims, risk, step-up, tenant, cache, attacks."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path

import jwt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ig_gate.middleware.jwks import JWKSet
from ig_gate.middleware.risk import InMemoryRiskStore
from ig_gate.middleware.session import (
    Session,
    SessionVerifier,
    TokenError,
    TokenExpired,
    TokenInvalid,
    TokenMissing,
    TokenRevoked,
)
from ig_gate.middleware.settings import IdentitySettings, StepUpSettings
from tests.support.keys import KeyPair, make_keypair, write_jwks
from tests.support.tokens import mint, session_token


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _forge(header: dict, claims: dict, sign=lambda signing_input: b"") -> str:
    """A compact JWS with any header; `sign` gets the signing input and returns signature bytes."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    return f"{signing_input}.{_b64(sign(signing_input.encode()))}"


@pytest.fixture(scope="module")
def idp() -> KeyPair:
    return make_keypair("ES256", kid="idp-1")


@pytest.fixture(scope="module")
def jwks(idp: KeyPair, tmp_path_factory: pytest.TempPathFactory) -> JWKSet:
    return JWKSet.from_file(write_jwks(tmp_path_factory.mktemp("jwks") / "idp.json", idp))


@pytest.fixture
def store() -> InMemoryRiskStore:
    return InMemoryRiskStore()


@pytest.fixture
def now() -> list[float]:
    return [time.time()]


@pytest.fixture
def make(jwks: JWKSet, store: InMemoryRiskStore, now: list[float]):
    def build(**identity) -> SessionVerifier:
        return SessionVerifier(
            jwks, IdentitySettings(**identity), store, clock=lambda: now[0], posture_claim="device_posture"
        )

    return build


@pytest.fixture
def verifier(make) -> SessionVerifier:
    return make()


KINDS = {"missing": TokenMissing, "invalid": TokenInvalid, "expired": TokenExpired, "revoked": TokenRevoked}


def _rejects(verifier: SessionVerifier, token, kind: str, description: str | None = None) -> TokenError:
    """The refusal is the subclass for `kind`, whose stable code (the `token_<code>` reason) is `kind`."""
    with pytest.raises(TokenError) as info:
        verifier.verify(token)
    assert type(info.value) is KINDS[kind] and info.value.code == kind, info.value.description
    if description is not None:
        assert description in info.value.description
    return info.value


def test_valid_token_becomes_a_session(verifier: SessionVerifier, idp: KeyPair) -> None:
    token = session_token(
        idp, risk="low", tenant="acme", acr="mfa", amr=["pwd", "otp"], device_posture="managed"
    )
    session = verifier.verify(token)
    assert isinstance(session, Session)
    assert (session.subject, session.tenant, session.risk, session.acr, session.amr) == (
        "alice",
        "acme",
        "low",
        "mfa",
        ("pwd", "otp"),
    )
    assert session.session_key == "alice" and session.posture_claim == "managed"
    assert session.token_id == hashlib.sha256(token.encode()).hexdigest()[:12]
    assert session.token_id not in token
    assert verifier.verify(token) == session


def test_session_key_is_sid_when_present(verifier: SessionVerifier, idp: KeyPair) -> None:
    assert verifier.verify(session_token(idp, sid="s-42")).session_key == "s-42"


def test_missing_token_is_missing(verifier: SessionVerifier) -> None:
    _rejects(verifier, None, "missing")
    _rejects(verifier, "", "missing")


@pytest.mark.parametrize(
    ("claims", "kind", "description"),
    [
        ({"lifetime_s": -120}, "expired", "expired"),
        ({"nbf": int(time.time()) + 600}, "invalid", "not yet valid"),
        ({"iat": int(time.time()) + 600}, "invalid", "issued in the future"),
        ({"iss": "https://evil.example"}, "invalid", "wrong issuer"),
        ({"aud": "another-api"}, "invalid", "wrong audience"),
        ({"aud": None}, "invalid", "'aud' missing"),
        ({"sub": None}, "invalid", "'sub' missing"),
        ({"iss": None}, "invalid", "'iss' missing"),
        ({"exp": None}, "invalid", "'exp' missing"),
        ({"exp": "tomorrow"}, "invalid", "'exp' is not a number"),
        ({"sub": ""}, "invalid", "'sub' empty"),
        ({"tenant": ["acme", "globex"]}, "invalid", "'tenant' malformed"),
    ],
)
def test_bad_claims_are_rejected(
    verifier: SessionVerifier, idp: KeyPair, claims: dict, kind: str, description: str
) -> None:
    _rejects(verifier, mint(idp, **claims), kind, description)


def test_expiry_and_nbf_allow_the_leeway(verifier: SessionVerifier, idp: KeyPair) -> None:
    verifier.verify(mint(idp, lifetime_s=-10))
    verifier.verify(mint(idp, nbf=int(time.time()) + 10))


def test_cached_token_expires_with_the_clock(
    verifier: SessionVerifier, idp: KeyPair, now: list[float]
) -> None:
    token = mint(idp, lifetime_s=60)
    verifier.verify(token)
    now[0] += 60 + 30 + 1  # past exp + leeway
    _rejects(verifier, token, "expired")


def test_alg_none_is_rejected(verifier: SessionVerifier, idp: KeyPair) -> None:
    claims = jwt.decode(mint(idp), options={"verify_signature": False})
    for alg in ("none", "None", "NONE"):
        _rejects(verifier, _forge({"alg": alg, "kid": idp.kid}, claims), "invalid", "algorithm not allowed")
    _rejects(verifier, _forge({"kid": idp.kid}, claims), "invalid", "algorithm not allowed")


def test_hs256_signed_with_the_public_pem_is_rejected(make, idp: KeyPair) -> None:
    claims = jwt.decode(mint(idp), options={"verify_signature": False})
    token = _forge(
        {"alg": "HS256", "kid": idp.kid, "typ": "JWT"},
        claims,
        lambda data: hmac.new(idp.public_pem, data, hashlib.sha256).digest(),
    )
    _rejects(make(), token, "invalid", "algorithm not allowed")
    # even when HS256 is an allowed algorithm, an EC key never verifies an HMAC
    _rejects(make(algorithms=("ES256", "HS256")), token, "invalid", "does not match the key")


def test_hs256_works_only_with_an_oct_key_when_configured(store: InMemoryRiskStore) -> None:
    secret = b"s" * 32
    oct_jwk = {"kty": "oct", "k": _b64(secret), "kid": "shared", "alg": "HS256"}
    token = jwt.encode(
        {"iss": "https://idp.example.test", "aud": "ig-gateway", "sub": "svc", "exp": int(time.time()) + 60},
        secret,
        algorithm="HS256",
        headers={"kid": "shared"},
    )
    allowed = SessionVerifier(JWKSet.from_keys([oct_jwk]), IdentitySettings(algorithms=("HS256",)), store)
    assert allowed.verify(token).subject == "svc"
    refused = SessionVerifier(JWKSet.from_keys([oct_jwk]), IdentitySettings(), store)
    _rejects(refused, token, "invalid", "algorithm not allowed")


def test_signed_by_another_key_with_the_same_kid_is_rejected(verifier: SessionVerifier) -> None:
    impostor = make_keypair("ES256", kid="idp-1")
    _rejects(verifier, mint(impostor), "invalid", "signature invalid")


def test_unknown_kid_with_a_file_jwks_is_invalid(verifier: SessionVerifier) -> None:
    _rejects(verifier, mint(make_keypair("ES256", kid="rotated")), "invalid", "signing key unknown")


def test_token_without_kid_matches_only_a_single_key_set(
    idp: KeyPair, store: InMemoryRiskStore, tmp_path: Path
) -> None:
    token = jwt.encode(
        {
            "iss": "https://idp.example.test",
            "aud": "ig-gateway",
            "sub": "alice",
            "exp": int(time.time()) + 60,
        },
        idp.private_pem,
        algorithm="ES256",
    )
    single = SessionVerifier(
        JWKSet.from_file(write_jwks(tmp_path / "one.json", idp)), IdentitySettings(), store
    )
    assert single.verify(token).subject == "alice"
    two = JWKSet.from_file(write_jwks(tmp_path / "two.json", idp, make_keypair(kid="idp-2")))
    _rejects(SessionVerifier(two, IdentitySettings(), store), token, "invalid", "signing key unknown")


def test_rs256_and_ps256_keys_verify_their_own_algorithm_only(store: InMemoryRiskStore) -> None:
    rsa = make_keypair("RS256", kid="rsa")
    pss = make_keypair("PS256", kid="pss")
    verifier = SessionVerifier(JWKSet.from_keys([rsa.jwk(), pss.jwk()]), IdentitySettings(), store)
    assert verifier.verify(mint(rsa)).subject == "alice"
    assert verifier.verify(mint(pss)).subject == "alice"
    _rejects(verifier, mint(rsa, headers={"kid": "pss"}), "invalid", "does not match the key")


@pytest.mark.parametrize(
    ("claim", "expected"),
    [
        ("low", "low"),
        ("medium", "medium"),
        ("high", "high"),
        (None, "medium"),
        ("critical", "high"),
        ("HIGH", "high"),
        ("Low", "high"),
        (3, "high"),
        (["low"], "high"),
        ({}, "high"),
    ],
)
def test_risk_claim_maps_to_effective_risk(
    verifier: SessionVerifier, idp: KeyPair, claim, expected: str
) -> None:
    assert verifier.verify(mint(idp, risk=claim)).risk == expected


def test_missing_risk_uses_the_configured_default(make, idp: KeyPair) -> None:
    assert make(default_risk="low").verify(mint(idp)).risk == "low"
    assert make(risk_claim="acme_risk").verify(mint(idp, acme_risk="high", risk="low")).risk == "high"


def test_store_raise_wins_over_a_cached_claim(
    verifier: SessionVerifier, idp: KeyPair, store: InMemoryRiskStore
) -> None:
    token = session_token(idp, risk="low", sid="s-1")
    assert verifier.verify(token).risk == "low"
    store.raise_risk("s-1", "medium", reason="impossible travel")
    assert verifier.verify(token).risk == "medium"
    store.raise_risk("alice", "high", reason="user-level event by sub")
    assert verifier.verify(token).risk == "high"
    other = session_token(idp, risk="high", sub="bob")
    store.raise_risk("bob", "low", reason="never lowers")
    assert verifier.verify(other).risk == "high"


def test_revoked_wins_over_the_cache(
    verifier: SessionVerifier, idp: KeyPair, store: InMemoryRiskStore
) -> None:
    token = session_token(idp, sid="s-9")
    verifier.verify(token)
    store.revoke("s-9", reason="session-revoked")
    _rejects(verifier, token, "revoked")
    other = session_token(idp, sub="carol")
    verifier.verify(other)
    store.revoke("carol", reason="credential-change")
    _rejects(verifier, other, "revoked")


@pytest.mark.parametrize(
    ("claims", "age", "satisfied"),
    [
        ({"acr": "mfa"}, 10, True),
        ({"acr": "pwd", "amr": ["pwd", "hwk"]}, 10, True),
        ({"amr": ["mfa"]}, 299, True),
        ({"acr": "pwd", "amr": ["pwd"]}, 10, False),
        ({"acr": "mfa"}, 301, False),
        ({"acr": "mfa"}, None, False),
        ({"acr": "mfa"}, -3600, False),  # auth_time far in the future: never fresh
        ({"amr": "mfa"}, 10, False),  # amr must be a list
    ],
)
def test_stepup_needs_strong_auth_within_max_age(
    verifier: SessionVerifier, idp: KeyPair, now: list[float], claims: dict, age: int | None, satisfied: bool
) -> None:
    auth_time = None if age is None else int(now[0]) - age
    session = verifier.verify(mint(idp, auth_time=auth_time, **claims))
    assert session.stepup_satisfied is satisfied
    assert session.auth_age_s == (None if age is None else max(age, 0))


def test_stepup_is_evaluated_on_every_call_as_auth_time_ages(make, idp: KeyPair, now: list[float]) -> None:
    verifier = make(stepup=StepUpSettings(acr_values=("urn:acr:strong",), max_age=60))
    token = mint(idp, acr="urn:acr:strong", auth_time=int(now[0]))
    assert verifier.verify(token).stepup_satisfied
    now[0] += 61
    session = verifier.verify(token)
    assert not session.stepup_satisfied and session.auth_age_s == 61


def test_tenant_comes_from_the_claim_else_the_configured_header(make, idp: KeyPair) -> None:
    with_header = make(tenant_header="X-Tenant-ID")
    assert with_header.verify(mint(idp, tenant="acme"), "globex").tenant == "acme"
    no_claim = mint(idp)
    assert with_header.verify(no_claim, "globex").tenant == "globex"
    assert with_header.verify(no_claim, "bad tenant\n").tenant is None
    assert with_header.verify(no_claim, "x" * 129).tenant is None
    assert with_header.verify(no_claim).tenant is None
    assert make().verify(no_claim, "globex").tenant is None  # header not configured: ignored
    assert make(tenant_claim="org").verify(mint(idp, org=42)).tenant == "42"


def test_disabled_cache_still_verifies(make, idp: KeyPair) -> None:
    assert make(token_cache_size=0).verify(mint(idp)).subject == "alice"


def test_the_token_cache_is_bounded_and_forgets_the_least_recently_used(make, idp: KeyPair) -> None:
    verifier = make(token_cache_size=2)
    first, second, third = (mint(idp, sub=f"user-{i}") for i in range(3))
    for token in (first, second, first, third):  # first is used again before third arrives
        verifier.verify(token)
    assert list(verifier._cache) == [first, third]


def _garbage() -> st.SearchStrategy:
    segment = st.text(
        alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=", max_size=80
    )
    json_value = st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
        max_leaves=8,
    )
    header = st.dictionaries(
        st.sampled_from(["alg", "kid", "typ", "crit", "b64", "jku", "x5u"]),
        json_value | st.sampled_from(["ES256", "none", "HS256", "idp-1"]),
        max_size=5,
    )
    forged = st.builds(
        lambda h, c, s: _forge(h, c, lambda _: s),
        header,
        st.dictionaries(st.text(max_size=8), json_value, max_size=5),
        st.binary(max_size=80),
    )
    return (
        st.text(max_size=300)
        | st.builds(".".join, st.lists(segment, min_size=1, max_size=5))
        | forged
        | st.binary(max_size=60)
        | st.integers()
        | st.lists(st.text(max_size=3), max_size=2)
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(token=_garbage())
def test_garbage_raises_only_token_error_and_never_echoes_it(verifier: SessionVerifier, token) -> None:
    with pytest.raises(TokenError) as info:
        verifier.verify(token)
    assert isinstance(info.value, TokenMissing | TokenInvalid)
    if isinstance(token, str) and len(token) >= 8:
        assert token not in info.value.description and token not in str(info.value)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    claims=st.dictionaries(
        st.sampled_from(
            ["exp", "nbf", "iat", "sub", "iss", "aud", "risk", "tenant", "acr", "amr", "auth_time", "sid"]
        ),
        st.none()
        | st.booleans()
        | st.integers(-(2**70), 2**70)
        | st.floats()
        | st.text(max_size=10)
        | st.lists(st.text(max_size=5) | st.integers(), max_size=3)
        | st.dictionaries(st.text(max_size=3), st.integers()),
    )
)
def test_signed_tokens_with_odd_claims_give_a_session_or_token_error(
    verifier: SessionVerifier, idp: KeyPair, claims: dict
) -> None:
    base = {
        "iss": "https://idp.example.test",
        "aud": "ig-gateway",
        "sub": "alice",
        "exp": int(time.time()) + 60,
    }
    payload = json.dumps({**base, **claims}).encode()  # PyJWS: no claim checks on the signing side
    token = jwt.PyJWS().encode(payload, idp.private_pem, algorithm="ES256", headers={"kid": idp.kid})
    try:
        session = verifier.verify(token)
    except TokenError as exc:
        assert isinstance(exc, TokenInvalid | TokenExpired)
        return
    assert session.risk in ("low", "medium", "high") and isinstance(session.subject, str)
