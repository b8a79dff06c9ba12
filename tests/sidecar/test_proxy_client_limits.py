"""What one client may hold of the proxy (issue 9, items 7 and 8), with ReverseProxy driven as an ASGI app
in front of scripted loopback upstreams (tests/sidecar/test_proxy_http.py): body buffering before a
pool slot is taken, the per-client exchange cap, the body deadline, and header hygiene."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ig_gate.sidecar.client_limits import ClientBodyDeadline, ExchangeLimiter
from ig_gate.sidecar.proxy import upstream_headers
from tests.sidecar.test_proxy_http import OK, Client, body_messages, call, proxy_to, replying, scope, scripted


@pytest.mark.asyncio
async def test_a_trickling_body_holds_no_upstream_connection():
    async with scripted(replying(OK)) as upstream, proxy_to(upstream, max_connections=1) as proxy:
        trickler = Client([{"type": "http.request", "body": b"x", "more_body": True}])  # never ends
        trickling = asyncio.ensure_future(
            proxy(scope("POST", [(b"content-length", b"100")]), trickler.receive, trickler.send)
        )
        others = [await call(proxy, Client([]), scope("GET")) for _ in range(3)]  # one connection, reused
        assert not trickling.done() and trickler.sent == []
        trickler.gone.set()
        await asyncio.wait_for(trickling, 5)
    assert [c.status for c in others] == [200, 200, 200]
    assert [r.line.split()[0] for r in upstream.requests] == [b"GET"] * 3  # the upload never went upstream


@pytest.mark.asyncio
async def test_a_chunked_body_within_the_bound_goes_upstream_whole_with_its_length():
    async with scripted(replying(OK)) as upstream, proxy_to(upstream, buffer_bytes=1024) as proxy:
        chunked = Client(body_messages(b"ab", b"cd", b""))
        await call(proxy, chunked, scope("POST", [(b"transfer-encoding", b"chunked")]))
    (request,) = upstream.requests
    assert (request.body, request.header(b"content-length"), request.header(b"transfer-encoding")) == (
        b"abcd", b"4", None,
    )  # fmt: skip


@pytest.mark.asyncio
async def test_exchanges_beyond_the_per_client_cap_get_429_with_retry_after():
    release = asyncio.Event()

    async def held(reader: Any, writer: asyncio.StreamWriter, request: Any) -> bool:
        await release.wait()
        writer.write(OK)
        await writer.drain()
        return True

    limiter = ExchangeLimiter(1)  # keyed by the socket peer
    async with scripted(held) as upstream, proxy_to(upstream, limiter=limiter) as proxy:
        first = Client([])
        running = asyncio.ensure_future(proxy(scope(), first.receive, first.send))
        while not upstream.requests:
            await asyncio.sleep(0.01)
        same = await call(proxy, Client([]), scope())
        other_scope = {**scope(), "client": ("10.0.0.10", 5000)}
        other = Client([])
        other_running = asyncio.ensure_future(proxy(other_scope, other.receive, other.send))
        while len(upstream.requests) < 2:
            await asyncio.sleep(0.01)
        release.set()
        await asyncio.wait_for(asyncio.gather(running, other_running), 5)
        after = await call(proxy, Client([]), scope())  # the count went back down
    assert same.status == 429
    assert dict(same.sent[0]["headers"])[b"retry-after"] == b"1"
    assert (first.status, other.status, after.status) == (200, 200, 200)


async def _reading_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"read"})


@pytest.mark.asyncio
async def test_a_body_still_arriving_at_the_deadline_is_answered_408_and_the_connection_closed():
    client = Client([{"type": "http.request", "body": b"x", "more_body": True}])  # then nothing
    app = ClientBodyDeadline(_reading_app, timeout_s=0.2)
    request = scope("POST", [(b"content-length", b"10")])

    await asyncio.wait_for(app(request, client.receive, client.send), 5)

    assert client.status == 408
    assert (b"connection", b"close") in client.sent[0]["headers"]
    assert b"client_body_timeout" in client.body


@pytest.mark.asyncio
async def test_a_body_that_arrives_in_time_is_not_cut_by_the_deadline():
    client = Client(body_messages(b"a", b"b"), pace_s=0.05)
    app = ClientBodyDeadline(_reading_app, timeout_s=2.0)

    await asyncio.wait_for(app(scope("POST", [(b"content-length", b"2")]), client.receive, client.send), 5)

    assert (client.status, client.body) == (200, b"read")


def _scope_with(*headers: tuple[bytes, bytes]) -> dict[str, Any]:
    return {"headers": list(headers), "client": ("10.1.1.1", 5000), "scheme": "http"}


# names that read as headers the proxy sets or drops, once "_" is read as "-"; one that does not; a plain one
RESERVED = [b"x_auth_subject", b"x_forwarded_for", b"proxy_authorization", b"transfer_encoding"]
SMUGGLED = (*((name, b"spoofed") for name in RESERVED), (b"x_custom", b"1"), (b"x-keep", b"2"))


def test_header_names_with_underscores_are_dropped_by_default():
    assert upstream_headers(_scope_with(*SMUGGLED)) == [
        (b"x-keep", b"2"),
        (b"x-forwarded-for", b"10.1.1.1"),
        (b"x-forwarded-proto", b"http"),
    ]


def test_allowed_underscore_headers_never_pass_under_a_name_the_proxy_sets_or_drops():
    assert upstream_headers(_scope_with(*SMUGGLED), underscores=True) == [
        (b"x_custom", b"1"),
        (b"x-keep", b"2"),
        (b"x-forwarded-for", b"10.1.1.1"),
        (b"x-forwarded-proto", b"http"),
    ]
