"""IdP risk events: signed SETs pushed to `POST /ssf/events` change what the gate decides next.

In-process tests drive the full sidecar app (forward-auth asks the gate); the Redis test runs two real
`ig-gate serve` processes sharing one real redis-server.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import redis
from starlette.testclient import TestClient

from ig_gate.middleware.settings import ConfigError, Settings
from ig_gate.middleware.ssf import CAEP, SETRejected, SubjectKeys, subject_keys
from ig_gate.sidecar.app import build_app
from tests.middleware.conftest import US_IP, World
from tests.sidecar.conftest import ADMIN, PROXY_PEER
from tests.support.keys import KeyPair, make_keypair, write_jwks
from tests.support.procs import wait_until
from tests.support.redis_server import redis_server
from tests.support.sidecar import serve_sidecar

TRANSMITTER = "https://idp.example.test/ssf"
RECEIVER = "https://gate.example.test/ssf"
SECEVENT = {"content-type": "application/secevent+jwt"}


@pytest.fixture(scope="module")
def transmitter() -> KeyPair:
    return make_keypair("ES256", "ssf-1")


def ssf_settings(world: World, transmitter: KeyPair, tmp_path: Path, **overrides: Any) -> Settings:
    jwks = write_jwks(tmp_path / "ssf-jwks.json", transmitter)
    ssf = {"transmitter_jwks": str(jwks), "issuer": TRANSMITTER, "audience": RECEIVER}
    return world.settings(ssf=ssf, decision_log={"path": str(tmp_path / "decisions.jsonl")}, **overrides)


@pytest.fixture
def sidecar(world: World, transmitter: KeyPair, tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(build_app(ssf_settings(world, transmitter, tmp_path)), client=PROXY_PEER) as client:
        yield client


def make_set(
    pair: KeyPair,
    events: dict[str, Any],
    *,
    sub_id: dict | None = None,
    typ: str | None = "secevent+jwt",
    **claims: Any,
) -> str:
    """A signed Security Event Token (RFC 8417)."""
    body = {
        "iss": TRANSMITTER,
        "aud": RECEIVER,
        "iat": int(time.time()),
        "jti": uuid.uuid4().hex,
        "events": events,
        **claims,
    }
    if sub_id is not None:
        body["sub_id"] = sub_id
    headers = {"kid": pair.kid, "typ": typ}  # typ None: no typ header at all
    return jwt.encode(
        {k: v for k, v in body.items() if v is not None},
        pair.private_pem,
        algorithm=pair.alg,
        headers=headers,
    )


def opaque(value: str) -> dict[str, str]:
    return {"format": "opaque", "id": value}


def user(sub: str) -> dict[str, str]:
    return {"format": "iss_sub", "iss": "https://idp.example.test", "sub": sub}


def forward_auth(client: Any, token: str, **headers: str) -> Any:
    """Forward-auth: the gate's answer for a GraphQL GET by this token (client in the US)."""
    return client.get(
        "/authz",
        headers={
            "authorization": f"Bearer {token}",
            "x-forwarded-for": US_IP,
            "x-original-uri": "/graphql?query=%7Bme%7Bid%7D%7D",
            "x-original-method": "GET",
            **headers,
        },
    )


def ask(client: Any, token: str, **headers: str) -> int:
    """The status of forward_auth()."""
    return forward_auth(client, token, **headers).status_code


def push(client: Any, token: str) -> Any:
    return client.post("/ssf/events", content=token, headers=SECEVENT)


def test_session_revoked_makes_the_next_request_of_that_session_401_and_spares_others(
    world, transmitter, sidecar
):
    revoked, other = world.token(sid="sess-1"), world.token(sid="sess-2")
    assert ask(sidecar, revoked) == 200

    accepted = push(sidecar, make_set(transmitter, {CAEP + "session-revoked": {}}, sub_id=opaque("sess-1")))

    assert (accepted.status_code, accepted.content) == (202, b"")
    refused = forward_auth(sidecar, revoked)
    assert refused.status_code == 401
    assert 'error="invalid_token"' in refused.headers["www-authenticate"]
    assert ask(sidecar, other) == 200


def test_risk_level_change_to_high_makes_the_user_403(world, transmitter, sidecar):
    token = world.token(sub="bob", sid="sess-b")
    assert ask(sidecar, token) == 200
    event = {
        CAEP + "risk-level-change": {
            "current_level": "HIGH",
            "previous_level": "LOW",
            "principal": "USER",
            "risk_reason": "PASSWORD_FOUND_IN_DATA_BREACH",
        }
    }
    assert push(sidecar, make_set(transmitter, event, sub_id=user("bob"))).status_code == 202
    assert ask(sidecar, token) == 403


def test_a_replayed_jti_is_refused(world, transmitter, sidecar):
    token = make_set(transmitter, {CAEP + "session-revoked": {}}, sub_id=opaque("sess-r"))
    assert push(sidecar, token).status_code == 202
    replay = push(sidecar, token)
    assert replay.status_code == 400
    assert replay.json() == {"err": "invalid_request", "description": "SET already received (jti replayed)"}


def test_assurance_decrease_asks_for_step_up_and_an_increase_changes_nothing(world, transmitter, sidecar):
    token = world.token(sub="carol")
    up = {
        "namespace": "NIST-AAL",
        "current_level": "nist-aal2",
        "previous_level": "nist-aal1",
        "change_direction": "increase",
    }
    down = {**up, "current_level": "nist-aal1", "previous_level": "nist-aal2", "change_direction": "decrease"}
    for change, expected in ((up, 200), (down, 401)):
        event = {CAEP + "assurance-level-change": change}
        assert push(sidecar, make_set(transmitter, event, sub_id=user("carol"))).status_code == 202
        assert ask(sidecar, token) == expected


def test_device_not_compliant_makes_its_attested_requests_403(world, transmitter, sidecar):
    token, attested = world.token(sub="dave"), world.attestation("managed", device_id="dev-77", sub="dave")
    assert ask(sidecar, token, **{"x-device-attestation": attested}) == 200
    sub_id = {"format": "complex", "device": opaque("dev-77"), "tenant": opaque("acme")}
    event = {
        CAEP + "device-compliance-change": {"current_status": "not-compliant", "previous_status": "compliant"}
    }
    assert push(sidecar, make_set(transmitter, event, sub_id=sub_id)).status_code == 202
    assert ask(sidecar, token, **{"x-device-attestation": attested}) == 403


def test_token_claims_change_of_the_risk_claim_raises_risk_and_other_claims_change_nothing(
    world, transmitter, sidecar
):
    token = world.token(sub="erin")
    role = {CAEP + "token-claims-change": {"claims": {"role": "ro-admin"}}}
    assert push(sidecar, make_set(transmitter, role, sub_id=user("erin"))).status_code == 202
    assert ask(sidecar, token) == 200
    risky = {CAEP + "token-claims-change": {"claims": {"risk": "high"}}}
    assert (
        push(sidecar, make_set(transmitter, risky, sub_id={"format": "email", "email": "erin"})).status_code
        == 202
    )
    assert ask(sidecar, token) == 403


def test_the_older_caep_subject_inside_the_event_is_understood(world, transmitter, sidecar):
    token = world.token(sid="sess-old")
    event = {
        CAEP + "session-revoked": {
            "subject": {"format": "complex", "session": opaque("sess-old"), "user": user("alice")}
        }
    }
    assert push(sidecar, make_set(transmitter, event)).status_code == 202
    assert ask(sidecar, token) == 401
    assert (
        ask(sidecar, world.token(sid="sess-other")) == 200
    )  # the session was named: the user is not revoked


def test_unknown_event_types_are_accepted_and_ignored(world, transmitter, sidecar):
    event = {"https://schemas.openid.net/secevent/caep/event-type/session-presented": {"ext_id": "1"}}
    assert push(sidecar, make_set(transmitter, event, sub_id=opaque("sess-x"))).status_code == 202
    assert ask(sidecar, world.token(sid="sess-x")) == 200


REVOKE = {CAEP + "session-revoked": {}}


@pytest.mark.parametrize(
    ("make", "err", "words"),
    [
        (lambda t, o: make_set(o, REVOKE, sub_id=opaque("s")), "authentication_failed", "signature"),
        (
            lambda t, o: make_set(make_keypair("ES256", "ssf-9"), REVOKE, sub_id=opaque("s")),
            "invalid_key",
            "key",
        ),
        (
            lambda t, o: jwt.encode(
                {"iss": TRANSMITTER},
                "k" * 32,
                algorithm="HS256",
                headers={"kid": "ssf-1", "typ": "secevent+jwt"},
            ),
            "invalid_key",
            "algorithm",
        ),
        (
            lambda t, o: make_set(t, REVOKE, sub_id=opaque("s"), iss="https://evil.example"),
            "invalid_issuer",
            "issuer",
        ),
        (
            lambda t, o: make_set(t, REVOKE, sub_id=opaque("s"), aud="https://other.example"),
            "invalid_audience",
            "audience",
        ),
        (lambda t, o: make_set(t, REVOKE, sub_id=opaque("s"), typ="JWT"), "invalid_request", "typ"),
        (lambda t, o: make_set(t, REVOKE, sub_id=opaque("s"), jti=None), "invalid_request", "jti"),
        (
            lambda t, o: make_set(t, REVOKE, sub_id=opaque("s"), iat=int(time.time()) - 2 * 86_400),
            "invalid_request",
            "iat",
        ),
        (lambda t, o: make_set(t, {}, sub_id=opaque("s")), "invalid_request", "no events"),
        (lambda t, o: make_set(t, REVOKE), "invalid_request", "no subject"),
        (lambda t, o: make_set(t, REVOKE, sub_id={"format": "opaque"}), "invalid_request", "'id'"),
        (
            lambda t, o: make_set(
                t, {CAEP + "risk-level-change": {"current_level": "SEVERE"}}, sub_id=opaque("s")
            ),
            "invalid_request",
            "current_level",
        ),
        (lambda t, o: "not-a-jws", "invalid_request", "compact JWS"),
    ],
    ids=[
        "bad-signature",
        "unknown-kid",
        "alg-not-accepted",
        "wrong-iss",
        "wrong-aud",
        "typ-jwt",
        "no-jti",
        "too-old",
        "no-events",
        "no-subject",
        "malformed-subject",
        "bad-risk-level",
        "garbage",
    ],
)
def test_bad_sets_get_rfc8935_errors(world, transmitter, sidecar, make, err, words):
    impostor = make_keypair("ES256", "ssf-1")  # same kid, another key: the signature cannot verify
    response = push(sidecar, make(transmitter, impostor))
    assert response.status_code == 400
    body = response.json()
    assert body["err"] == err
    assert words in body["description"]


def test_a_set_without_typ_is_accepted(world, transmitter, sidecar):
    token = make_set(transmitter, REVOKE, sub_id=opaque("sess-t"), typ=None)
    assert push(sidecar, token).status_code == 202


def test_the_wrong_content_type_or_method_is_refused(world, transmitter, sidecar):
    token = make_set(transmitter, REVOKE, sub_id=opaque("sess-c"))
    wrong = sidecar.post("/ssf/events", content=token, headers={"content-type": "application/jwt"})
    assert (wrong.status_code, wrong.json()["err"]) == (400, "invalid_request")
    assert sidecar.get("/ssf/events").status_code == 405
    assert push(sidecar, token).status_code == 202  # the refused attempt did not burn the jti


def test_subject_identifier_formats():
    assert subject_keys(opaque("x")) == SubjectKeys(principals=("x",))
    assert subject_keys(user("u")) == SubjectKeys(principals=("u",))
    assert subject_keys({"format": "email", "email": "a@b"}).principals == ("a@b",)
    assert subject_keys({"format": "aliases", "identifiers": [opaque("1"), user("2")]}).principals == (
        "1",
        "2",
    )
    both = subject_keys(
        {"format": "complex", "session": opaque("s"), "user": user("u"), "device": opaque("d")}
    )
    assert (both.sessions, both.principals, both.devices, both.targets) == (("s",), ("u",), ("d",), ("s",))
    assert subject_keys({"format": "jwt_id", "iss": "i", "jti": "j"}) == SubjectKeys()
    for bad in (None, "x", {"id": "x"}, {"format": "aliases", "identifiers": []}, {"format": "email"}):
        with pytest.raises(SETRejected):
            subject_keys(bad)


def test_an_ssf_receiver_without_issuer_or_audience_is_a_config_error(world, transmitter, tmp_path):
    settings = ssf_settings(world, transmitter, tmp_path)
    broken = world.settings(ssf={"transmitter_jwks": settings.ssf.transmitter_jwks, "issuer": TRANSMITTER})
    with pytest.raises(ConfigError, match=r"^ssf\.audience: required"):
        build_app(broken)


def metric(client: Any, sample: str) -> float:
    """The value of one sample line of /metrics (0 when absent)."""
    for line in client.get(f"{ADMIN}/metrics").text.splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    return 0.0


def test_sets_are_counted_by_outcome_and_their_events_by_type(world, transmitter, sidecar):
    token = make_set(transmitter, {**REVOKE, CAEP + "session-presented": {}}, sub_id=opaque("sess-m"))
    assert push(sidecar, token).status_code == 202
    assert push(sidecar, token).status_code == 400  # replayed
    impostor = make_keypair("ES256", "ssf-1")
    assert push(sidecar, make_set(impostor, REVOKE, sub_id=opaque("sess-m"))).status_code == 400
    assert metric(sidecar, 'ig_gate_ssf_sets_total{outcome="accepted"}') == 1
    assert metric(sidecar, 'ig_gate_ssf_sets_total{outcome="replayed"}') == 1
    assert metric(sidecar, 'ig_gate_ssf_sets_total{outcome="authentication_failed"}') == 1
    assert metric(sidecar, 'ig_gate_ssf_events_total{type="session-revoked"}') == 1
    assert metric(sidecar, 'ig_gate_ssf_events_total{type="other"}') == 1


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_server(tmp_path_factory.mktemp("ssf-redis")) as url:
        yield url


@pytest.mark.integration
def test_a_set_the_risk_store_could_not_apply_is_accepted_when_sent_again(
    world, transmitter, tmp_path, redis_url
):
    raw = redis.Redis.from_url(redis_url)
    raw.set("ig-gate:s:sess-wrongtype", "not a hash")  # the store's write for this session fails
    settings = ssf_settings(world, transmitter, tmp_path, risk_store={"redis_url": redis_url})
    token = make_set(transmitter, REVOKE, sub_id=opaque("sess-wrongtype"))
    with TestClient(build_app(settings), client=PROXY_PEER) as client:
        failed = push(client, token)
        assert (failed.status_code, failed.json()["err"]) == (503, "temporarily_unavailable")
        assert metric(client, 'ig_gate_ssf_sets_total{outcome="unavailable"}') == 1
        raw.delete("ig-gate:s:sess-wrongtype")
        assert push(client, token).status_code == 202  # the jti was released: the retry is applied
        assert ask(client, world.token(sid="sess-wrongtype")) == 401
        assert push(client, token).status_code == 400  # and now it is remembered
    claim = next(raw.scan_iter("ig-gate:once:ssf-jti:*"))
    assert raw.pttl(claim) > 86_000_000  # the replay window, not the short pending claim
    raw.close()


@pytest.mark.integration
def test_the_redis_risk_store_is_closed_at_shutdown(world, transmitter, tmp_path, redis_url):
    raw = redis.Redis.from_url(redis_url)

    def connections() -> int:  # the sidecar's, named by its URL
        return sum(1 for client in raw.client_list() if client["name"] == "ig-close-test")

    url = redis_url + "?client_name=ig-close-test"
    settings = ssf_settings(world, transmitter, tmp_path, risk_store={"redis_url": url})
    with TestClient(build_app(settings), client=PROXY_PEER) as client:
        assert ask(client, world.token(sid="sess-close")) == 200  # the store reads Redis
        assert connections() >= 1
    wait_until(lambda: connections() == 0, 5, "the sidecar's Redis connections to close")
    raw.close()


def test_without_transmitter_jwks_there_is_no_ssf_route(world, tmp_path):
    with TestClient(build_app(world.settings()), client=PROXY_PEER) as client:
        assert client.post("/ssf/events", content="x", headers=SECEVENT).status_code == 404


@pytest.mark.integration
def test_with_redis_an_event_received_by_one_sidecar_is_enforced_by_another(world, transmitter, tmp_path):
    with redis_server(tmp_path / "redis") as redis_url:
        settings = ssf_settings(
            world,
            transmitter,
            tmp_path,
            risk_store={"redis_url": redis_url},
            geo={"trusted_proxies": ["127.0.0.1/32"]},  # the test client names its US address in XFF
        )
        with (
            serve_sidecar(settings, tmp_path, name="a") as a,
            serve_sidecar(settings, tmp_path, name="b") as b,
        ):
            client_a = httpx.Client(base_url=a.url)
            client_b = httpx.Client(base_url=b.url)
            revoked, risky = world.token(sid="sess-shared"), world.token(sub="frank")
            assert ask(client_b, revoked) == 200  # b has now cached "no override" for up to 1 s
            assert ask(client_b, risky) == 200

            token = make_set(transmitter, REVOKE, sub_id=opaque("sess-shared"))
            assert push(client_a, token).status_code == 202
            event = {CAEP + "risk-level-change": {"current_level": "HIGH", "principal": "USER"}}
            assert push(client_a, make_set(transmitter, event, sub_id=user("frank"))).status_code == 202

            started = time.monotonic()
            wait_until(lambda: ask(client_b, revoked) == 401, 5, "b to enforce the revocation received by a")
            wait_until(lambda: ask(client_b, risky) == 403, 5, "b to enforce the risk received by a")
            assert time.monotonic() - started < 2.5  # the documented staleness bound is 1 s (local cache)

            replay = push(client_b, token)  # the jti is shared too
            assert (replay.status_code, replay.json()["err"]) == (400, "invalid_request")
            client_a.close()
            client_b.close()
