"""Paths are normalised once, refused when ambiguous, and `exclude_paths` is not a side door (issue 9,
item 6): middleware/paths.py, its settings validation, and ZeroTrustMiddleware driven with raw ASGI scopes
(the request target exactly as a server hands it over)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from ig_gate.middleware.asgi import ZeroTrustMiddleware
from ig_gate.middleware.paths import (
    _NORMALISED,
    REMEMBERED,
    AmbiguousPath,
    ExcludedPathError,
    ExcludedPaths,
    normalise_path,
    normalise_raw,
    normalise_scope,
    parse_excluded,
)
from ig_gate.middleware.settings import ConfigError
from tests.middleware.conftest import PEER, World


@pytest.mark.parametrize(
    ("raw", "normal", "path"),
    [
        (b"/graphql", b"/graphql", "/graphql"),
        (b"/", b"/", "/"),
        (b"//graphql", b"/graphql", "/graphql"),
        (b"/public//x//", b"/public/x/", "/public/x/"),
        (b"/p%75blic/%7euser", b"/public/~user", "/public/~user"),
        (b"/a%20b%3f%c3%a9", b"/a%20b%3F%C3%A9", "/a b?\u00e9"),
        (b"/caf\xc3\xa9", b"/caf%C3%A9", "/caf\u00e9"),
        (b"/.well-known/jwks.json", b"/.well-known/jwks.json", "/.well-known/jwks.json"),
        (b"/a/...b/c.", b"/a/...b/c.", "/a/...b/c."),
        (b"/a;x=1/b", b"/a;x=1/b", "/a;x=1/b"),
        (b"/a\x00b", b"/a%00b", "/a\x00b"),
        (b"/graphql\t", b"/graphql%09", "/graphql\t"),
        (b"/a b<c>\"d", b"/a%20b%3Cc%3E%22d", '/a b<c>"d'),
        (b"/a/\xff.", b"/a/%FF.", "/a/\ufffd."),
    ],
)
def test_a_path_is_normalised_to_one_form(raw: bytes, normal: bytes, path: str) -> None:
    scope: dict[str, Any] = {"path": "ignored: raw_path decides", "raw_path": raw}

    assert normalise_raw(raw) == normal
    assert normalise_scope(scope) == path
    assert (scope["raw_path"], scope["path"]) == (normal, path)


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"/public/../graphql", "dot segment"),
        (b"/public/./graphql", "dot segment"),
        (b"/public/..", "dot segment"),
        (b"/.", "dot segment"),
        (b"/graphql/.", "dot segment"),
        (b"/graphql/.;x", "dot segment"),
        (b"/public/%2e%2e/graphql", "dot segment"),
        (b"/public/.%2E/graphql", "dot segment"),
        (b"/public/..;jsessionid=1/graphql", "dot segment"),
        (b"/public/..%3b/graphql", "dot segment"),
        (b"//public//..//graphql", "dot segment"),
        (b"/public%2F..%2Fgraphql", "encoded '/'"),
        (b"/public%2f", "encoded '/'"),
        (b"/public%5C..%5Cgraphql", "encoded '/' or '\\'"),
        (b"/public\\..\\graphql", "backslash"),
        (b"/public/%zz", "malformed percent-escape"),
        (b"/public/%4", "malformed percent-escape"),
        (b"*", "start with '/'"),
        (b"http://evil.example/graphql", "start with '/'"),
    ],
)
def test_an_ambiguous_path_is_refused_with_the_reason(raw: bytes, why: str) -> None:
    with pytest.raises(AmbiguousPath, match=why.replace("\\", "\\\\").replace("(", r"\(")):
        normalise_raw(raw)


def test_a_decoded_path_without_raw_path_is_normalised_and_given_a_raw_path() -> None:
    scope: dict[str, Any] = {"path": "/public//100%/x y"}

    assert normalise_scope(scope) == "/public/100%/x y"
    assert scope["raw_path"] == b"/public/100%25/x%20y"


@pytest.mark.parametrize(
    "raw",
    [b"/public/../graphql", b"/public/%2e%2e/graphql", b"/public%2F..%2Fgraphql", b"/public\\..\\graphql"],
)
def test_an_ambiguous_path_is_refused_every_time_also_after_its_normal_neighbour_passed(raw: bytes) -> None:
    for _ in range(3):
        assert normalise_scope({"path": "/graphql", "raw_path": b"/graphql"}) == "/graphql"
        with pytest.raises(AmbiguousPath):
            normalise_scope({"path": "/graphql", "raw_path": raw})
        with pytest.raises(AmbiguousPath):
            normalise_path(raw)


def test_the_scope_path_comes_from_raw_path_also_for_a_path_seen_before() -> None:
    seen: dict[str, Any] = {"path": "/graphql", "raw_path": b"/graphql"}
    disagreeing: dict[str, Any] = {"path": "/admin", "raw_path": b"/graphql"}  # a server decoding otherwise
    escaped: dict[str, Any] = {"path": "/admin", "raw_path": b"/p%75blic//x"}
    escaped_again = dict(escaped)

    assert [normalise_scope(scope) for scope in (seen, disagreeing, escaped, escaped_again)] == [
        "/graphql", "/graphql", "/public/x", "/public/x",
    ]  # fmt: skip
    assert (disagreeing["raw_path"], disagreeing["path"]) == (b"/graphql", "/graphql")
    assert (escaped_again["raw_path"], escaped_again["path"]) == (b"/public/x", "/public/x")


def test_a_flood_of_distinct_paths_keeps_the_remembered_forms_bounded() -> None:
    for i in range(REMEMBERED + 500):
        assert normalise_path(b"/flood/%d/%%7e" % i) == f"/flood/{i}/~"
    long = b"/" + b"a" * 5000

    assert normalise_path(long) == long.decode()
    assert 0 < len(_NORMALISED) <= REMEMBERED and long not in _NORMALISED
    assert normalise_path(b"/p%75blic//x") == "/public/x"  # still right once the flood has gone through


def test_excluded_entries_pass_reads_only_unless_they_name_their_methods() -> None:
    excluded = ExcludedPaths(["/healthz", "/public/", "POST /webhooks/", "GET,PUT /hooks/github"])

    assert [excluded.match(m, "/public/x") for m in ("GET", "HEAD", "OPTIONS", "POST", "DELETE")] == [
        True, True, True, False, False,
    ]  # fmt: skip
    assert excluded.match("GET", "/healthz") and not excluded.match("GET", "/healthz/x")
    assert not excluded.match("GET", "/public")  # a prefix entry matches below it, not itself bare
    assert excluded.match("POST", "/webhooks/a") and not excluded.match("GET", "/webhooks/a")
    assert excluded.match("PUT", "/hooks/github") and not excluded.match("HEAD", "/hooks/github")


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("public/", "must start with '/'"),
        ("/public/../admin", "dot segment"),
        ("/a//b", "normalised form, '/a/b'"),
        ("post /webhooks/", "unknown method 'post'"),
        ("POST,FETCH /x", "unknown method 'FETCH'"),
        ("POST /a /b", "expected '/path' or 'METHOD"),
    ],
)
def test_an_unreadable_exclude_paths_entry_is_a_config_error_naming_it(
    world: World, entry: str, message: str
) -> None:
    with pytest.raises(ExcludedPathError, match=message):
        parse_excluded(entry)
    with pytest.raises(ConfigError, match=r"^exclude_paths\[1\]: .*" + message):
        world.settings(exclude_paths=["/healthz", entry])


# -- the middleware, driven with raw scopes ----------------------------------------------------------


class Recorder:
    """The app behind the middleware: records the scopes it was called with, answers 200."""

    def __init__(self) -> None:
        self.scopes: list[dict[str, Any]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.scopes.append(dict(scope))
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"app"})


@pytest.fixture
def gated(world: World, tmp_path: Any) -> Any:
    app = Recorder()
    settings = world.settings(
        exclude_paths=["/healthz", "/public/", "POST /webhooks/"],
        decision_log={"path": str(tmp_path / "decisions.jsonl")},
    )
    middleware = ZeroTrustMiddleware(app, config=settings)
    yield middleware, app
    middleware.gate.close()


def _run(middleware: ZeroTrustMiddleware, scope: dict[str, Any], *incoming: dict[str, Any]) -> list[Any]:
    sent: list[dict[str, Any]] = []
    queue = [*incoming]

    async def receive() -> dict[str, Any]:
        return queue.pop(0) if queue else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(middleware(scope, receive, send))
    return sent


def http_scope(method: str, raw: bytes, kind: str = "http") -> dict[str, Any]:
    return {
        "type": kind, "method": method, "path": raw.decode("latin-1"), "raw_path": raw, "query_string": b"",
        "headers": [(b"host", b"app.example")], "client": PEER, "scheme": "http",
    }  # fmt: skip


def test_the_app_sees_exactly_the_normalised_path_of_an_excluded_request(gated: Any) -> None:
    middleware, app = gated
    sent = _run(middleware, http_scope("GET", b"/p%75blic//a%20b"))

    assert sent[0]["status"] == 200
    assert (app.scopes[0]["path"], app.scopes[0]["raw_path"]) == ("/public/a b", b"/public/a%20b")


@pytest.mark.parametrize("raw", [b"/public/../graphql", b"/public/%2e%2e/graphql", b"/public%2F..%2Fgraphql"])
def test_an_ambiguous_path_gets_the_gates_json_400_and_never_reaches_the_app(gated: Any, raw: bytes) -> None:
    middleware, app = gated
    sent = _run(middleware, http_scope("GET", raw))

    assert sent[0]["status"] == 400
    body = json.loads(sent[1]["body"])
    assert body["error"] == "bad_request" and body["decision_id"]
    assert app.scopes == []


def test_a_write_to_an_excluded_prefix_is_judged(gated: Any) -> None:
    middleware, app = gated
    sent = _run(middleware, http_scope("POST", b"/public/x"), {"type": "http.request", "body": b"{}"})

    assert sent[0]["status"] == 401
    assert app.scopes == []


def test_an_entry_naming_post_lets_post_through_and_only_post(gated: Any) -> None:
    middleware, app = gated
    posted = _run(middleware, http_scope("POST", b"/webhooks/github"), {"type": "http.request", "body": b""})
    got = _run(middleware, http_scope("GET", b"/webhooks/github"))

    assert (posted[0]["status"], got[0]["status"]) == (200, 401)
    assert len(app.scopes) == 1


def test_a_websocket_on_an_ambiguous_path_is_closed_4400_before_the_app_sees_it(gated: Any) -> None:
    middleware, app = gated
    scope = http_scope("GET", b"/public/../graphql", "websocket")
    sent = _run(middleware, scope, {"type": "websocket.connect"})

    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.close"]
    assert sent[1]["code"] == 4400 and sent[1]["reason"] == "ambiguous_path"
    assert app.scopes == []
