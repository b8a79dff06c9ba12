"""verify_compact agrees with pyjwt (the reference) on every token: valid, tampered, and generated garbage.

The reference is `jwt.decode` with the options JWKSet used before verify_compact existed, and its
exceptions mapped to JWTRejected descriptions the same way. Agreement means: the same claims, or the
same rejection description.
"""

from __future__ import annotations

import base64
import json
import string
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ig_gate.middleware.jwks import MAX_TOKEN_CHARS, JWKSet
from ig_gate.middleware.jwks import _check_times as check_times
from ig_gate.middleware.jwks import _header as lenient_header
from ig_gate.middleware.jws import JWTRejected, VerifyingKey, loads, verify_compact

ISSUER, AUDIENCE = "https://idp.example.test", "ig-gateway"
REQUIRE = ("exp", "iss", "sub")


def _jwk(private_key: Any, alg: str, kid: str) -> tuple[jwt.PyJWK, Any]:
    algorithm = jwt.get_algorithm_by_name(alg)
    public = json.loads(algorithm.to_jwk(private_key.public_key()))
    return jwt.PyJWK({**public, "kid": kid, "alg": alg}), private_key


def _oct(secret: bytes, kid: str) -> tuple[jwt.PyJWK, Any]:
    k = base64.urlsafe_b64encode(secret).rstrip(b"=").decode()
    return jwt.PyJWK({"kty": "oct", "k": k, "kid": kid, "alg": "HS256"}), secret


KEYS = {
    "ES256": _jwk(ec.generate_private_key(ec.SECP256R1()), "ES256", "es"),
    "ES384": _jwk(ec.generate_private_key(ec.SECP384R1()), "ES384", "es384"),
    "RS256": _jwk(rsa.generate_private_key(65537, 2048), "RS256", "rs"),
    "PS256": _jwk(rsa.generate_private_key(65537, 2048), "PS256", "ps"),
    "EdDSA": _jwk(ed25519.Ed25519PrivateKey.generate(), "EdDSA", "ed"),
    "HS256": _oct(b"k" * 32, "hs"),
    "HS256-short": _oct(b"short", "hs-short"),  # too short: pyjwt refuses every token for it
}
VERIFYING = {name: VerifyingKey.from_jwk(jwk) for name, (jwk, _) in KEYS.items()}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign(name: str, header: dict[str, Any] | bytes, payload: dict[str, Any] | bytes) -> str:
    """A compact JWS over arbitrary header and payload bytes, signed with KEYS[name]."""
    jwk, private = KEYS[name]
    parts = [p if isinstance(p, bytes) else json.dumps(p).encode() for p in (header, payload)]
    signing_input = f"{b64(parts[0])}.{b64(parts[1])}"
    signature = jwk.Algorithm.sign(signing_input.encode(), private)
    return f"{signing_input}.{b64(signature)}"


def claims(**overrides: Any) -> dict[str, Any]:
    return {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "exp": 4_000_000_000, **overrides}


def reference(token: Any, key: VerifyingKey) -> Any:
    """pyjwt's answer, mapped as JWKSet.decode mapped it: the claims or ("rejected", description)."""
    options = {
        "verify_exp": False, "verify_nbf": False, "verify_iat": False, "verify_iss": True,
        "verify_aud": True, "require": list(REQUIRE), "enforce_minimum_key_length": True,
    }
    try:
        return jwt.decode(
            token, key.jwk, algorithms=[key.algorithm_name], options=options, issuer=ISSUER, audience=AUDIENCE
        )
    except jwt.MissingRequiredClaimError as exc:
        return "rejected", f"claim {exc.claim!r} missing"
    except jwt.InvalidIssuerError:
        return "rejected", "wrong issuer"
    except jwt.InvalidAudienceError:
        return "rejected", "wrong audience"
    except jwt.InvalidSignatureError:
        return "rejected", "signature invalid"
    except Exception:
        return "rejected", "token invalid"


def ours(token: Any, key: VerifyingKey) -> Any:
    """verify_compact's answer, with JWKSet.decode's catch-all for errors of the crypto layer."""
    try:
        return verify_compact(token, key, issuer=ISSUER, audience=AUDIENCE, require=REQUIRE)
    except JWTRejected as exc:
        return "rejected", exc.description
    except Exception:
        return "rejected", "token invalid"


def agree(token: Any, name: str) -> Any:
    key = VERIFYING[name]
    expected = reference(token, key)
    assert ours(token, key) == expected, token
    return expected


# -- hand-made cases: each names a rule -------------------------------------------------------------


@pytest.mark.parametrize("name", ["ES256", "ES384", "RS256", "PS256", "EdDSA", "HS256"])
def test_a_valid_token_gives_the_same_claims(name):
    header = {"alg": VERIFYING[name].algorithm_name, "kid": KEYS[name][0].key_id, "typ": "JWT"}
    assert agree(sign(name, header, claims(jti="j-1")), name) == claims(jti="j-1")


def es(header: dict[str, Any] | None = None, payload: Any = None) -> str:
    return sign("ES256", {"alg": "ES256", **(header or {})}, claims() if payload is None else payload)


def flip_last(text: str) -> str:
    return text[:-1] + ("A" if text[-1] != "A" else "B")


def tamper_signature(token: str) -> str:
    """The same token with the first character of its signature changed (still canonical base64url)."""
    signing_input, signature = token.rsplit(".", 1)
    return f"{signing_input}.{'B' if signature[0] == 'A' else 'A'}{signature[1:]}"


CASES = {
    "signature tampered": tamper_signature(es()),
    "signature's last character changed": flip_last(es()),
    "payload swapped": ".".join([es().split(".")[0], es(payload=claims(sub="mallory")).split(".")[1],
                                 es().split(".")[2]]),
    "signature empty": es().rsplit(".", 1)[0] + ".",
    "two segments": es().rsplit(".", 1)[0],
    "four segments": es() + ".AAAA",
    "header padded": es().replace(".", "==.", 1),
    "three padding characters": es() + "===",
    "stray character": es().replace(".", "!.", 1),
    "non-canonical trailing bits": es().split(".")[0] + "." + flip_last(es().split(".")[1]) + "."
    + es().split(".")[2],
    "header not an object": sign("ES256", b'["ES256"]', json.dumps(claims()).encode()),
    "header not json": sign("ES256", b"{alg: ES256}", json.dumps(claims()).encode()),
    "payload not an object": es(payload=[1, 2]),
    "payload not json": sign("ES256", {"alg": "ES256"}, b"{'sub': 'a'}"),
    "payload utf-16": sign("ES256", {"alg": "ES256"}, json.dumps(claims()).encode("utf-16-le")),
    "payload with a bom": sign("ES256", {"alg": "ES256"}, b"\xef\xbb\xbf" + json.dumps(claims()).encode()),
    "huge integer claim": es(payload=claims(tenant=2**80)),
    "nan claim": sign("ES256", {"alg": "ES256"}, json.dumps(claims(score=float("nan"))).encode()),
    "kid not a string": es({"kid": 7}),
    "kid null": es({"kid": None}),
    "crit b64 with b64 true": es({"crit": ["b64"], "b64": True}),
    "crit b64 missing from header": es({"crit": ["b64"]}),
    "crit unknown": es({"crit": ["exp"], "exp": 1}),
    "crit empty": es({"crit": []}),
    "crit not a list": es({"crit": "b64"}),
    "b64 false": es({"b64": False, "crit": ["b64"]}),
    "alg none": sign("ES256", {"alg": "none"}, claims()),
    "alg other": sign("ES256", {"alg": "RS256"}, claims()),
    "alg missing": sign("ES256", {"typ": "JWT"}, claims()),
    "missing sub": es(payload={k: v for k, v in claims().items() if k != "sub"}),
    "null exp": es(payload=claims(exp=None)),
    "missing iss": es(payload={k: v for k, v in claims().items() if k != "iss"}),
    "wrong iss": es(payload=claims(iss="https://evil.test")),
    "iss not a string": es(payload=claims(iss=["https://idp.example.test"])),
    "missing aud": es(payload={k: v for k, v in claims().items() if k != "aud"}),
    "empty aud": es(payload=claims(aud="")),
    "aud list with ours": es(payload=claims(aud=["x", AUDIENCE])),
    "aud list without ours": es(payload=claims(aud=["x"])),
    "aud list with a number": es(payload=claims(aud=[AUDIENCE, 1])),
    "aud object": es(payload=claims(aud={"a": AUDIENCE})),
    "sub not a string": es(payload=claims(sub=42)),
    "jti not a string": es(payload=claims(jti=1)),
    "bad signature and missing claim": tamper_signature(es(payload=claims(sub=None))),
    "not ascii": es() + "é",
    "lone surrogate": es() + "\ud800",
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_hand_made_tokens_get_the_same_answer(case):
    agree(CASES[case], "ES256")


def test_a_too_short_hmac_key_refuses_every_token_as_pyjwt_does():
    token = sign("HS256-short", {"alg": "HS256"}, claims())
    assert agree(token, "HS256-short") == ("rejected", "token invalid")


def test_a_token_for_another_key_of_the_same_algorithm_is_a_bad_signature():
    other = VerifyingKey.from_jwk(_jwk(ec.generate_private_key(ec.SECP256R1()), "ES256", "es")[0])
    assert ours(es(), other) == reference(es(), other) == ("rejected", "signature invalid")


# -- generated tokens -------------------------------------------------------------------------------

JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
HEADERS = st.fixed_dictionaries(
    {"alg": st.sampled_from(["ES256", "ES256", "RS256", "none", "HS256", ""])},
    optional={
        "kid": st.sampled_from(["es", "rs", None, 3, ["es"]]),
        "crit": st.sampled_from([["b64"], [], "b64", ["zip"], [1]]),
        "b64": st.sampled_from([True, False, "false", 0]),
        "typ": st.sampled_from(["JWT", "at+jwt", 1]),
    },
)
CLAIM_VALUES = {
    "iss": st.sampled_from([ISSUER, "https://evil.test", None, 1, [ISSUER]]),
    "aud": st.sampled_from([AUDIENCE, [AUDIENCE], ["x", AUDIENCE], ["x"], "", [], [1], None, {"a": 1}]),
    "sub": st.sampled_from(["alice", "", None, 5, ["a"]]),
    "exp": st.sampled_from([4_000_000_000, None, "soon", 1.5, True]),
    "jti": st.sampled_from(["j", 1, None]),
    "other": JSONISH,
}
PAYLOADS = st.fixed_dictionaries({}, optional=CLAIM_VALUES) | JSONISH
B64_CHARS = string.ascii_letters + string.digits + "-_=.!+/ "


def mangle(token: str, data: st.DataObject) -> str:
    """A small corruption of a well-formed token (or none)."""
    kind = data.draw(st.sampled_from(["none", "insert", "delete", "replace", "pad", "truncate"]))
    if kind == "none" or not token:
        return token
    at = data.draw(st.integers(0, len(token) - 1))
    char = data.draw(st.sampled_from(B64_CHARS))
    return {
        "insert": token[:at] + char + token[at:],
        "delete": token[:at] + token[at + 1:],
        "replace": token[:at] + char + token[at + 1:],
        "pad": token.replace(".", "=" * data.draw(st.integers(1, 3)) + ".", 1),
        "truncate": token[:at],
    }[kind]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(header=HEADERS, payload=PAYLOADS, data=st.data())
def test_generated_tokens_get_the_same_answer_as_pyjwt(header, payload, data):
    raw_payload = json.dumps(payload).encode() if not isinstance(payload, bytes) else payload
    agree(mangle(sign("ES256", header, raw_payload), data), "ES256")


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(B64_CHARS + "é\0"), max_size=120) | st.text(max_size=60))
def test_generated_garbage_gets_the_same_answer_as_pyjwt(text):
    for name in ("ES256", "RS256", "HS256"):
        agree(text, name)


@settings(max_examples=100, deadline=None)
@given(header=HEADERS, payload=PAYLOADS, data=st.data())
def test_generated_tokens_for_hmac_and_rsa_keys_agree(header, payload, data):
    name = data.draw(st.sampled_from(["HS256", "RS256", "PS256", "EdDSA"]))
    alg = data.draw(st.sampled_from([VERIFYING[name].algorithm_name, "ES256"]))
    token = sign(name, {**header, "alg": alg}, json.dumps(payload).encode())
    agree(mangle(token, data), name)


# -- through JWKSet.decode --------------------------------------------------------------------------


def test_jwkset_decode_accepts_a_valid_token_and_reports_each_rejection_by_name():
    key_set = JWKSet.from_keys([KEYS["ES256"][0]._jwk_data])
    decode = lambda token: key_set.decode(  # noqa: E731
        token, algorithms=["ES256"], now=1_000, issuer=ISSUER, audience=AUDIENCE, require=REQUIRE
    )
    assert decode(es({"kid": "es"}))["sub"] == "alice"
    for token, description in [
        (tamper_signature(es({"kid": "es"})), "signature invalid"),
        (es({"kid": "es"}, claims(iss="x")), "wrong issuer"),
        (es({"kid": "es"}, claims(aud="x")), "wrong audience"),
        (es({"kid": "es"}, claims(sub=None)), "claim 'sub' missing"),
        (es({"kid": "es", "crit": ["zip"]}), "token invalid"),
        (es({"kid": "nope"}), "signing key unknown"),
    ]:
        with pytest.raises(JWTRejected) as caught:
            decode(token)
        assert caught.value.description == description


# -- loads: json.loads' answer, faster --------------------------------------------------------------


def json_answer(parse: Any, data: bytes) -> Any:
    try:
        value = parse(data)
    except (ValueError, RecursionError):
        return "refused"
    return json.dumps(value, sort_keys=True), repr(value)  # repr: int and float stay apart, -0.0 too


@settings(max_examples=400, deadline=None)
@given(
    JSONISH | st.floats() | st.integers(-(2**80), 2**80), st.sampled_from(["utf-8", "utf-8-sig", "utf-16"])
)
def test_loads_gives_what_json_loads_gives(value, encoding):
    data = json.dumps(value).encode(encoding)
    assert json_answer(loads, data) == json_answer(json.loads, data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40) | st.text(alphabet='{}[]",:-+.eE0123456789 \\u\tnultrfalsNIiy', max_size=40)
       .map(str.encode))
def test_loads_refuses_what_json_loads_refuses(data):
    assert json_answer(loads, data) == json_answer(json.loads, data)


# -- JWKSet.decode against the decode it replaced (lenient header pre-check, then pyjwt) ---------------

KEY_SETS = {  # one key: it also answers tokens without kid; two: a kid must name one
    "one": JWKSet.from_keys([KEYS["ES256"][0]._jwk_data]),
    "two": JWKSet.from_keys([KEYS["ES256"][0]._jwk_data, KEYS["RS256"][0]._jwk_data]),
}
ALGORITHMS = ("ES256", "RS256")


def reference_decode(token: str, key_set: JWKSet) -> Any:
    """JWKSet.decode as it was with pyjwt: the claims or ("rejected", kind, description)."""
    try:
        if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS:
            raise JWTRejected("token malformed")
        header = lenient_header(token)
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in ALGORITHMS or alg.lower() == "none":
            raise JWTRejected("signing algorithm not allowed")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise JWTRejected("token malformed (kid)")
        key = key_set.key(kid)
        if key is None:
            raise JWTRejected("signing key unknown")
        if key.algorithm_name != alg:
            raise JWTRejected("signing algorithm does not match the key")
        answer = reference(token, VerifyingKey.from_jwk(key))
        if isinstance(answer, tuple):
            raise JWTRejected(answer[1])
        check_times(answer, 1_000, 30)
        return answer
    except JWTRejected as exc:
        return "rejected", exc.code, exc.description


def decoded(token: str, key_set: JWKSet) -> Any:
    try:
        return key_set.decode(
            token, algorithms=ALGORITHMS, now=1_000, leeway=30, issuer=ISSUER, audience=AUDIENCE,
            require=REQUIRE,
        )
    except JWTRejected as exc:
        return "rejected", exc.code, exc.description


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(header=HEADERS, payload=PAYLOADS, data=st.data())
def test_jwkset_decode_answers_as_the_pyjwt_decode_it_replaced(header, payload, data):
    name = data.draw(st.sampled_from(["ES256", "RS256"]))
    times = data.draw(st.fixed_dictionaries({}, optional={"nbf": st.sampled_from([0, 2_000, "x"]),
                                                         "iat": st.sampled_from([0, 2_000])}))
    body = {**payload, **times} if isinstance(payload, dict) else payload
    token = mangle(sign(name, header, json.dumps(body).encode()), data)
    key_set = KEY_SETS[data.draw(st.sampled_from(sorted(KEY_SETS)))]
    assert decoded(token, key_set) == reference_decode(token, key_set)


@pytest.mark.parametrize("case", sorted(CASES))
def test_jwkset_decode_answers_hand_made_tokens_as_before(case):
    for key_set in KEY_SETS.values():
        assert decoded(CASES[case], key_set) == reference_decode(CASES[case], key_set)
