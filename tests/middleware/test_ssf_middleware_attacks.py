"""Attacks on `POST /ssf/events` as ZeroTrustMiddleware serves it (ssf.* set): a real uvicorn on a free
loopback port, the demo app behind the middleware, raw HTTP/1.1 from the standard library (http.client
sends a path exactly as written; socket for bodies that never end).

Each attack is followed by the question that matters: is the victim session still allowed (nothing forged
was applied), did anything reach the app unjudged, and did an unauthenticated sender leave state behind.
SETs are minted with tests/sidecar/test_ssf.py's helpers; a header or signature is swapped on a real SET.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import http.client
import json
import socket
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import httpx
import pytest
import websockets.sync.client
from websockets.exceptions import ConnectionClosed

from ig_gate.middleware.asgi import ZeroTrustMiddleware
from ig_gate.middleware.settings import Settings
from tests.middleware.conftest import DE_IP, REPO, US_IP, World, demo_app, query
from tests.middleware.test_preauth_bounds import MB, rss_bytes
from tests.sidecar.test_ssf import CAEP, REVOKE, SECEVENT, make_set, opaque, ssf_settings
from tests.support.keys import KeyPair, make_keypair
from tests.support.procs import free_port, running
from tests.support.served_middleware import serve_argv
from tests.support.sidecar import write_config
from tests.support.uvicorn_thread import serve_in_thread

US_PROXY = {"geo": {"trusted_proxies": ["127.0.0.1/32"]}}  # the client names its US address in XFF


@pytest.fixture(scope="module")
def transmitter() -> KeyPair:
    return make_keypair("ES256", "ssf-1")


class Recorder:
    """The demo app, remembering (method, path) of every HTTP request and WebSocket ("WS") that reached it."""

    def __init__(self) -> None:
        self.app = demo_app()
        self.seen: list[tuple[str, str]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            self.seen.append((scope.get("method", "WS"), scope["path"]))
        await self.app(scope, receive, send)


@dataclass
class Served:
    """The middleware under uvicorn: its address, the middleware and the app behind it."""

    host: str
    port: int
    middleware: ZeroTrustMiddleware | None = None  # None: served by another process
    app: Recorder | None = None

    def request(
        self, method: str, path: str, body: bytes | str = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        """(status, headers, body) of one request on a new connection; the path is sent as written."""
        connection = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            connection.close()

    def push(self, token: str, path: str = "/ssf/events", **headers: str) -> tuple[int, dict[str, Any]]:
        """POST a SET: (status, JSON body or {})."""
        status, _, body = self.request("POST", path, token, {**SECEVENT, **headers})
        return status, json.loads(body) if body else {}

    def ask(self, token: str, **headers: str) -> int:
        """The status of an allowed-looking GraphQL query of this session (from the US unless `headers`
        say otherwise)."""
        sent = {"authorization": f"Bearer {token}", "content-type": "application/json",
                "x-forwarded-for": US_IP, **headers}
        return self.request("POST", "/graphql", query(), sent)[0]


@pytest.fixture(scope="module")
def serve(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[Settings], Served]]:
    """serve(settings) -> Served: the middleware under a real uvicorn, stopped at module end."""
    with contextlib.ExitStack() as stack:

        def start(settings: Settings) -> Served:
            app = Recorder()
            middleware = ZeroTrustMiddleware(app, config=settings)
            host, _, port = stack.enter_context(serve_in_thread(middleware)).partition(":")
            return Served(host, int(port), middleware, app)

        yield start


@pytest.fixture(scope="module")
def ssf_on(world, transmitter, tmp_path_factory, serve) -> Served:
    """The middleware with ssf.* set (memory risk store, the demo bundle)."""
    return serve(ssf_settings(world, transmitter, tmp_path_factory.mktemp("ssf-on"), **US_PROXY))


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def resigned(token: str, alg: str, secret: bytes | None, kid: str = "ssf-1") -> str:
    """The same claims under another JOSE header: HMAC-signed with `secret`, or unsigned (None)."""
    payload = token.split(".")[1]
    header = b64url(json.dumps({"alg": alg, "kid": kid, "typ": "secevent+jwt"}).encode())
    signing_input = f"{header}.{payload}"
    signature = b"" if secret is None else hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def revoke(pair: KeyPair, sid: str, **claims: Any) -> str:
    """A session-revoked SET for session `sid` signed by `pair`."""
    return make_set(pair, REVOKE, sub_id=opaque(sid), **claims)


def test_a_valid_set_revokes_a_live_session_and_its_next_request_is_refused_401(world, transmitter, ssf_on):
    victim, bystander = world.token(sid="live-1"), world.token(sid="live-2")
    assert ssf_on.ask(victim) == 200

    assert ssf_on.push(revoke(transmitter, "live-1")) == (202, {})

    status, headers, _ = ssf_on.request(
        "POST", "/graphql", query(),
        {"authorization": f"Bearer {victim}", "content-type": "application/json", "x-forwarded-for": US_IP},
    )
    assert status == 401 and 'error="invalid_token"' in headers["www-authenticate"]
    assert ssf_on.ask(bystander) == 200
    assert ("POST", "/ssf/events") not in ssf_on.app.seen  # the push was answered, not passed on


@pytest.mark.parametrize(
    ("forge", "err"),
    [
        (lambda t, sid: revoke(make_keypair("ES256", "ssf-1"), sid), "authentication_failed"),
        (lambda t, sid: revoke(make_keypair("ES256", "ssf-9"), sid), "invalid_key"),
        (lambda t, sid: revoke(t, sid, iss="https://evil.example"), "invalid_issuer"),
        (lambda t, sid: revoke(t, sid, aud="https://other-receiver.example"), "invalid_audience"),
        (lambda t, sid: revoke(t, sid, aud=["https://other-receiver.example"]), "invalid_audience"),
        (lambda t, sid: revoke(t, sid, iat=int(time.time()) - 2 * 86_400), "invalid_request"),
        (lambda t, sid: revoke(t, sid, iat=int(time.time()) + 3_600), "invalid_request"),
        (lambda t, sid: revoke(t, sid, iat="now"), "invalid_request"),
        (lambda t, sid: resigned(revoke(t, sid), "none", None), "invalid_key"),
        (lambda t, sid: resigned(revoke(t, sid), "None", None), "invalid_key"),
        (lambda t, sid: resigned(revoke(t, sid), "HS256", t.public_pem), "invalid_key"),
        (lambda t, sid: revoke(t, sid).rsplit(".", 1)[0] + ".", "authentication_failed"),
    ],
    ids=["forged-signature", "unknown-kid", "wrong-iss", "wrong-aud", "wrong-aud-list", "expired-iat",
         "future-iat", "iat-not-a-number", "alg-none", "alg-None", "hs256-with-the-public-key",
         "signature-stripped"],
)
def test_a_forged_or_misaddressed_set_is_refused_400_and_the_session_stays_allowed(
    world, transmitter, ssf_on, forge, err, request
):
    sid = f"victim-{request.node.callspec.id}"
    victim = world.token(sid=sid)
    status, body = ssf_on.push(forge(transmitter, sid))
    assert (status, body.get("err")) == (400, err), body
    assert ssf_on.ask(victim) == 200


def test_hs256_signed_with_the_public_key_is_refused_even_when_hs256_is_an_accepted_algorithm(
    world, transmitter, tmp_path, serve
):
    settings = ssf_settings(world, transmitter, tmp_path, **US_PROXY)
    settings = replace(settings, ssf=replace(settings.ssf, algorithms=("ES256", "HS256")))
    served = serve(settings)
    victim = world.token(sid="confused")
    for secret in (transmitter.public_pem, json.dumps(transmitter.jwk()).encode()):
        status, body = served.push(resigned(revoke(transmitter, "confused"), "HS256", secret))
        assert (status, body["err"]) == (400, "invalid_key"), body
    assert served.ask(victim) == 200


def test_a_replayed_set_is_refused_and_a_forged_one_does_not_burn_its_jti(world, transmitter, ssf_on):
    token = revoke(transmitter, "replay-1", jti="jti-replay-1")
    impostor = revoke(make_keypair("ES256", "ssf-1"), "replay-1", jti="jti-replay-1")
    assert ssf_on.push(impostor)[0] == 400  # same jti, forged: must not claim it
    assert ssf_on.push(token) == (202, {})
    status, body = ssf_on.push(token)
    assert (status, body["description"]) == (400, "SET already received (jti replayed)")


def test_forged_sets_leave_no_state_behind(world, transmitter, ssf_on):
    receiver = ssf_on.middleware.system.ssf.receiver
    guard = receiver._replay
    before = len(guard._seen)
    for n in range(30):
        forged = revoke(make_keypair("ES256", "ssf-1"), f"state-{n}")  # distinct jti, bad signature
        misaddressed = revoke(transmitter, f"state-{n}", aud="https://other-receiver.example")
        assert ssf_on.push(forged)[0] == 400
        assert ssf_on.push(misaddressed)[0] == 400
    assert len(guard._seen) == before  # no jti of an unverified or misaddressed SET is remembered
    assert ssf_on.middleware.gate.risk_store.get(f"state-{n}") is None


@pytest.mark.parametrize("content_type", ["application/jwt", "text/plain", "application/json", ""])
def test_the_wrong_content_type_is_refused_before_the_body_is_read(world, transmitter, ssf_on, content_type):
    sid = f"ctype-{content_type or 'none'}"
    token = revoke(transmitter, sid)
    headers = {"content-type": content_type} if content_type else {}
    status, _, body = ssf_on.request("POST", "/ssf/events", token, headers)
    assert (status, json.loads(body)["err"]) == (400, "invalid_request")
    assert ssf_on.ask(world.token(sid=sid)) == 200
    assert ssf_on.push(token)[0] == 202  # the refused attempt did not burn the jti


@pytest.mark.parametrize("method", ["GET", "HEAD", "PUT", "PATCH", "DELETE", "OPTIONS", "post"])
def test_other_methods_on_the_ssf_path_are_judged_by_the_gate_and_never_pushed(
    world, transmitter, ssf_on, method
):
    sid = f"method-{method}"
    status, _, _ = ssf_on.request(method, "/ssf/events", revoke(transmitter, sid), SECEVENT)
    assert status in (400, 401, 405), status  # refused by the gate: no token
    assert (method, "/ssf/events") not in ssf_on.app.seen
    assert ssf_on.ask(world.token(sid=sid)) == 200


def test_a_websocket_to_the_ssf_path_is_judged_and_closed_without_a_token(ssf_on):
    with (
        websockets.sync.client.connect(f"ws://{ssf_on.host}:{ssf_on.port}/ssf/events") as socket_,
        pytest.raises(ConnectionClosed) as closed,
    ):
        socket_.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
    assert not [seen for seen in ssf_on.app.seen if "ssf" in seen[1].lower()]


PUSHED = "pushed"  # the variant is /ssf/events once normalised: the SET endpoint answers it


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/ssf/events/", 401),
        ("/SSF/events", 401),
        ("/ssf/Events", 401),
        ("/ssf/events;x", 401),
        ("/ssf/events%00", 401),
        ("/ssf/events%20", 401),
        ("/ssf%2Fevents", 400),
        ("/ssf%2fevents", 400),
        ("/ssf/events%2F", 400),
        ("/ssf%5Cevents", 400),
        ("/ssf/./events", 400),
        ("/ssf/x/../events", 400),
        ("/ssf/%2e%2e/ssf/events", 400),
        ("/ssf/..;/ssf/events", 400),
        ("/ssf/events/.", 400),
        ("/ssf//events", PUSHED),
        ("//ssf/events", PUSHED),
        ("/ssf/%65vents", PUSHED),
        ("/ssf/events?x=1", PUSHED),
    ],
)
def test_path_variants_are_refused_judged_or_pushed_as_their_normalised_form_and_never_reach_the_app(
    world, transmitter, ssf_on, path, expected
):
    sid = f"path-{hashlib.sha256(path.encode()).hexdigest()[:8]}"
    status, _, _ = ssf_on.request("POST", path, revoke(transmitter, sid), SECEVENT)
    assert not [seen for seen in ssf_on.app.seen if "ssf" in seen[1].lower()]  # nothing reached the app
    if expected == PUSHED:
        assert status == 202
        assert ssf_on.ask(world.token(sid=sid)) == 401
    else:
        assert status == expected
        assert ssf_on.ask(world.token(sid=sid)) == 200


def test_a_set_naming_one_tenants_session_leaves_the_other_tenants_sessions_alone(world, transmitter, ssf_on):
    """Risk keys are the identity issuer's `sid` (else `sub`), unique at that issuer whatever the tenant."""
    acme = world.token(tenant="acme", sub="alice", sid="tenant-acme-1")
    globex = world.token(tenant="globex", sub="gina", sid="tenant-globex-1")  # globex: DE, managed devices
    in_globex = {"x-forwarded-for": DE_IP, "x-device-attestation": world.attestation("managed", sub="gina")}
    assert (ssf_on.ask(acme), ssf_on.ask(globex, **in_globex)) == (200, 200)
    sub_id = {"format": "complex", "session": opaque("tenant-acme-1"), "tenant": opaque("acme")}
    assert ssf_on.push(make_set(transmitter, REVOKE, sub_id=sub_id)) == (202, {})
    assert (ssf_on.ask(acme), ssf_on.ask(globex, **in_globex)) == (401, 200)


def raw_post(served: Served, headers: str, body: bytes) -> tuple[bytes, bool]:
    """POST /ssf/events on a raw socket with `headers` then `body` (the rest of what they announce is
    never sent): the response head, and whether the server closed the connection within 2 s of it
    (sooner than uvicorn's 5 s keep-alive timeout would)."""
    with socket.create_connection((served.host, served.port), timeout=10) as sock:
        sock.sendall(f"POST /ssf/events HTTP/1.1\r\nhost: test\r\n{headers}\r\n".encode() + body)
        received = b""
        while b"\r\n\r\n" not in received and (chunk := sock.recv(65_536)):
            received += chunk
        head, _, rest = received.partition(b"\r\n\r\n")
        length = next((int(line.split(b":")[1]) for line in head.lower().split(b"\r\n")
                       if line.startswith(b"content-length:")), 0)
        while len(rest) < length and (chunk := sock.recv(65_536)):
            rest += chunk
        sock.settimeout(2.0)
        try:
            closed = sock.recv(1) == b""
        except ConnectionResetError:  # closed with the unread body still in its buffers
            closed = True
        except TimeoutError:
            closed = False
        return head, closed


LARGE = 128 * 1024  # sent; the announced body is larger still


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
@pytest.mark.parametrize("content_type", ["application/secevent+jwt", "text/plain"])
def test_an_oversized_push_is_refused_and_the_connection_closed_instead_of_draining_it(
    ssf_on, framing, content_type
):
    """An unauthenticated sender announces 1 GB (or an endless chunked body): the refusal must end the
    connection, or the server would receive and discard all of it to keep the connection alive."""
    if framing == "content-length":
        headers = f"content-type: {content_type}\r\ncontent-length: {1 << 30}\r\n"
        body = b"a" * LARGE
    else:
        headers = f"content-type: {content_type}\r\ntransfer-encoding: chunked\r\n"
        body = b"%x\r\n%s\r\n" % (LARGE, b"a" * LARGE)
    head, closed = raw_post(ssf_on, headers, body)
    assert head.startswith(b"HTTP/1.1 400"), head[:100]
    assert b"connection: close" in head.lower()
    assert closed


def test_a_small_refused_push_keeps_the_connection(world, transmitter, ssf_on):
    token = revoke(make_keypair("ES256", "ssf-1"), "keepalive").encode()
    headers = f"content-type: application/secevent+jwt\r\ncontent-length: {len(token)}\r\n"
    head, closed = raw_post(ssf_on, headers, token)
    assert head.startswith(b"HTTP/1.1 400") and b"connection: close" not in head.lower()
    assert not closed


def test_150_distinct_1mb_pushes_leave_no_memory_behind(world, transmitter, tmp_path, record_property):
    """uvicorn in its own process (its RSS is the server's alone) with ssf.* set; every other push is
    chunked, so that the endpoint reads up to its bound before refusing."""
    settings = ssf_settings(world, transmitter, tmp_path, **US_PROXY)
    config = write_config(settings, tmp_path / "ig-gate.yaml")
    port = free_port()
    env = {"IG_GATE_CONFIG": str(config)}
    url = f"http://127.0.0.1:{port}/ssf/events"
    valid = revoke(transmitter, "rss-victim").encode()

    def push_junk(client: httpx.Client, n: int) -> int:
        junk = b"%08d" % n + valid * (MB // len(valid))  # 1 MB, distinct, signed SETs inside
        content = junk if n % 2 else iter([junk[:65_536], junk[65_536:]])
        return client.post(url, content=content, headers=SECEVENT).status_code

    with (
        running(serve_argv(port), port=port, log=tmp_path / "uvicorn.log", env=env, cwd=REPO) as process,
        httpx.Client(timeout=60.0) as client,
    ):
        victim = world.token(sid="rss-victim")
        assert Served("127.0.0.1", port).ask(victim) == 200
        assert [push_junk(client, n) for n in range(6)] == [400] * 6
        before = rss_bytes(process.pid)
        assert [push_junk(client, 1_000 + n) for n in range(150)] == [400] * 150
        after = rss_bytes(process.pid)
        assert Served("127.0.0.1", port).ask(victim) == 200
    growth = after - before
    record_property("rss_growth_mb", round(growth / MB, 1))
    print(f"\nRSS {before / MB:.1f} MB -> {after / MB:.1f} MB after 150 x 1 MB pushes", file=sys.stderr)
    assert growth < 20 * MB


def test_without_ssf_settings_the_path_is_judged_like_any_other(world, transmitter, tmp_path, serve):
    served = serve(world.settings(**US_PROXY))
    assert served.middleware.system.ssf is None
    token = revoke(transmitter, "unset-1")
    status, _, _ = served.request("POST", "/ssf/events", token, SECEVENT)
    assert status == 401  # no bearer token: refused by the gate like any request
    assert ("POST", "/ssf/events") not in served.app.seen
    user = world.token(sid="unset-1")
    bearer = {**SECEVENT, "authorization": f"Bearer {user}", "x-forwarded-for": US_IP}
    judged, _, _ = served.request("POST", "/ssf/events", token, bearer)
    elsewhere, _, _ = served.request("POST", "/not-ssf", token, bearer)
    assert judged == elsewhere  # decided as any other path; no SET was applied
    assert served.ask(user) == 200


def test_unknown_event_types_and_foreign_events_change_nothing(world, transmitter, ssf_on):
    victim = world.token(sid="foreign-1")
    event = {"https://example.test/event-type/revoke-everything": {}}
    assert ssf_on.push(make_set(transmitter, event, sub_id=opaque("foreign-1"))) == (202, {})
    other = {CAEP + "session-revoked": {}}
    jwt_id = {"format": "jwt_id", "iss": "x", "jti": "foreign-1"}  # names no session
    assert ssf_on.push(make_set(transmitter, other, sub_id=jwt_id)) == (202, {})
    assert ssf_on.ask(victim) == 200
