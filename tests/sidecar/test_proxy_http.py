"""The proxy's HTTP/1.1 upstream leg against scripted upstreams: real loopback TCP servers that answer
with exact bytes (framing, keep-alive, early closes, malformed answers), and the ReverseProxy driven
as an ASGI app in the same event loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from ig_gate.sidecar.proxy import ReverseProxy
from ig_gate.sidecar.upstream_pool import HIGH_WATER, Origin, UpstreamError, UpstreamPool, UpstreamTimeout

pytestmark = pytest.mark.asyncio

Answer = Callable[[asyncio.StreamReader, asyncio.StreamWriter, "Request"], Awaitable[bool]]


@dataclass
class Request:
    """One request as the scripted upstream read it."""

    head: bytes
    body: bytes
    connection: int  # which connection (1-based) it came on

    @property
    def line(self) -> bytes:
        return self.head.split(b"\r\n", 1)[0]

    def header(self, name: bytes) -> bytes | None:
        for line in self.head.split(b"\r\n")[1:]:
            key, _, value = line.partition(b":")
            if key.strip().lower() == name:
                return value.strip()
        return None


@dataclass
class Scripted:
    """A loopback upstream: `answer` writes the response to each request; returning False closes."""

    answer: Answer
    port: int = 0
    requests: list[Request] = field(default_factory=list)
    connections: int = 0
    aborted: list[int] = field(default_factory=list)  # connections that ended mid-request

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return
                request = Request(head, b"", number)
                request.body = await _read_body(reader, request)
                self.requests.append(request)
                if not await self.answer(reader, writer, request):
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            self.aborted.append(number)
        except asyncio.CancelledError:  # the test ended with this connection open (3.11 would log it)
            pass
        finally:
            writer.close()


async def _read_body(reader: asyncio.StreamReader, request: Request) -> bytes:
    if (length := request.header(b"content-length")) is not None:
        return await reader.readexactly(int(length))
    if request.header(b"transfer-encoding") == b"chunked":
        body = b""
        while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
            body += (await reader.readexactly(size + 2))[:-2]
        await reader.readuntil(b"\r\n")
        return body
    return b""


@contextlib.asynccontextmanager
async def scripted(answer: Answer) -> AsyncIterator[Scripted]:
    upstream = Scripted(answer)
    server = await asyncio.start_server(upstream.handle, "127.0.0.1", 0)
    upstream.port = server.sockets[0].getsockname()[1]
    async with server:
        yield upstream
        server.close()


def replying(*responses: bytes, keep_open: bool = True) -> Answer:
    """Answer the n-th request on the upstream with responses[n] (the last one repeats)."""
    count = 0

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: Request) -> bool:
        nonlocal count
        writer.write(responses[min(count, len(responses) - 1)])
        count += 1
        await writer.drain()
        return keep_open

    return answer


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Up: 1\r\n\r\nhello"
CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n"


@contextlib.asynccontextmanager
async def pool_for(upstream: Scripted, **options: Any) -> AsyncIterator[UpstreamPool]:
    pool = UpstreamPool(Origin("127.0.0.1", upstream.port), **{"timeout_s": 2.0, **options})
    try:
        yield pool
    finally:
        await pool.aclose()


async def exchange(pool: UpstreamPool, request: bytes, *, head: bool = False) -> tuple[int, bytes, Any]:
    """Send request bytes; return (status, whole body, connection) after releasing the connection."""
    conn = await pool.acquire()
    conn.begin(head=head)
    try:
        conn.write(request)
        await conn.response_head()
        body = b""
        while chunk := await conn.read():
            body += chunk
        return conn.status, body, conn
    finally:
        pool.release(conn)


GET = b"GET /x HTTP/1.1\r\nhost: up\r\n\r\n"


# -- the pool ---------------------------------------------------------------------------------------


async def test_chunked_and_length_framed_responses_are_read_and_the_connection_is_reused():
    async with scripted(replying(CHUNKED, OK)) as upstream, pool_for(upstream) as pool:
        assert (await exchange(pool, GET))[:2] == (200, b"abcdefg")
        status, body, conn = await exchange(pool, GET)
        assert (status, body, conn.headers[-1]) == (200, b"hello", (b"x-up", b"1"))
    assert upstream.connections == 1


async def test_head_204_and_304_answers_have_no_body_and_keep_the_connection():
    no_body = (
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\n\r\n",
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n",
    )
    async with scripted(replying(*no_body, OK)) as upstream, pool_for(upstream) as pool:
        assert (await exchange(pool, GET, head=True))[:2] == (200, b"")
        assert (await exchange(pool, GET))[:2] == (204, b"")
        assert (await exchange(pool, GET))[:2] == (304, b"")
        assert (await exchange(pool, GET))[:2] == (200, b"hello")
    assert upstream.connections == 1


async def test_a_body_ended_by_closing_the_connection_is_complete_and_not_reused():
    eof_framed = b"HTTP/1.1 200 OK\r\n\r\nuntil the end"
    async with scripted(replying(eof_framed, keep_open=False)) as upstream, pool_for(upstream) as pool:
        assert (await exchange(pool, GET))[:2] == (200, b"until the end")
        assert (await exchange(pool, GET))[:2] == (200, b"until the end")
    assert upstream.connections == 2


async def test_connection_close_answers_are_not_reused():
    closing = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
    async with scripted(replying(closing)) as upstream, pool_for(upstream) as pool:
        for _ in range(3):
            assert (await exchange(pool, GET))[:2] == (200, b"ok")
    assert upstream.connections == 3


async def test_interim_1xx_answers_are_skipped():
    answers = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + OK
    async with scripted(replying(answers)) as upstream, pool_for(upstream) as pool:
        status, body, conn = await exchange(pool, GET)
    assert (status, body) == (200, b"hello")
    assert (b"link", b"</a>") not in conn.headers


async def test_a_large_body_streams_through_with_flow_control():
    size = 8 * HIGH_WATER
    big = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (size, bytes(range(256)) * (size // 256))
    async with scripted(replying(big)) as upstream, pool_for(upstream) as pool:
        conn = await pool.acquire()
        conn.begin(head=False)
        conn.write(GET)
        await conn.response_head()
        await asyncio.sleep(0.2)  # let the upstream fill the buffers: reading must pause, not grow
        assert conn._buffered < size // 2
        body = b""
        while chunk := await conn.read():
            body += chunk
        pool.release(conn)
    assert body == bytes(range(256)) * (size // 256)


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "closed the connection mid-response"),
        (b"NOT HTTP AT ALL\r\n\r\n", "malformed response"),
    ],
)
async def test_broken_answers_are_upstream_errors_and_the_connection_is_dropped(answer, message):
    async with scripted(replying(answer, keep_open=False)) as upstream, pool_for(upstream) as pool:
        with pytest.raises(UpstreamError, match=message):
            await exchange(pool, GET)
        assert pool._idle == []


async def test_bytes_after_a_complete_answer_drop_the_connection():
    async with scripted(replying(OK + b"HTTP/1.1 200 OK\r\n\r\n")) as upstream, pool_for(upstream) as pool:
        assert (await exchange(pool, GET))[:2] == (200, b"hello")
        assert (await exchange(pool, GET))[:2] == (200, b"hello")
    assert upstream.connections == 2


async def test_an_upstream_that_sends_nothing_times_out():
    async def silent(reader: Any, writer: Any, request: Request) -> bool:
        await asyncio.sleep(5)
        return False

    async with scripted(silent) as upstream, pool_for(upstream, timeout_s=0.2) as pool:
        with pytest.raises(UpstreamTimeout, match=r"nothing happened for 0\.2 s"):
            await exchange(pool, GET)


async def test_an_unreachable_upstream_is_an_error_not_a_timeout():
    async with scripted(replying(OK)) as upstream:
        port = upstream.port
    pool = UpstreamPool(Origin("127.0.0.1", port), timeout_s=2.0)
    with pytest.raises(UpstreamError, match="unreachable") as raised:
        await pool.acquire()
    assert not isinstance(raised.value, UpstreamTimeout)
    assert pool._open == 0


async def test_the_pool_limit_makes_requests_wait_for_a_released_connection():
    async with (
        scripted(replying(OK)) as upstream,
        pool_for(upstream, max_connections=1, timeout_s=0.3) as pool,
    ):
        first = await pool.acquire()
        with pytest.raises(UpstreamTimeout, match="no free connection"):
            await pool.acquire()
        waiting = asyncio.ensure_future(pool.acquire())
        await asyncio.sleep(0)
        first.begin(head=False)
        first.write(GET)
        await first.response_head()
        assert await first.read() == b"hello"
        pool.release(first)
        assert await waiting is first
        pool.release(first)
    assert upstream.connections == 1


async def test_idle_connections_the_upstream_closed_or_that_aged_are_not_reused():
    async with scripted(replying(OK, keep_open=False)) as upstream, pool_for(upstream) as pool:
        await exchange(pool, GET)  # the upstream closes after answering
        await asyncio.sleep(0.05)
        await exchange(pool, GET)
    assert upstream.connections == 2
    async with scripted(replying(OK)) as upstream, pool_for(upstream, idle_timeout_s=0.05) as pool:
        await exchange(pool, GET)
        await asyncio.sleep(0.1)
        await exchange(pool, GET)
    assert upstream.connections == 2


# -- the proxy as an ASGI app --------------------------------------------------------------------


@dataclass
class Client:
    """An ASGI client for the proxy: feeds request messages, collects what the proxy sends."""

    messages: list[dict[str, Any]]
    sent: list[dict[str, Any]] = field(default_factory=list)
    gone: asyncio.Event = field(default_factory=asyncio.Event)
    pace_s: float = 0.0  # a slow client: wait this long before each request message

    async def receive(self) -> dict[str, Any]:
        if self.messages:
            await asyncio.sleep(self.pace_s)
            return self.messages.pop(0)
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int:
        return self.sent[0]["status"]

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent[1:])

    @property
    def finished(self) -> bool:
        return len(self.sent) > 1 and not self.sent[-1].get("more_body", False)


def scope(method: str = "GET", headers: list[tuple[bytes, bytes]] | None = None) -> dict[str, Any]:
    return {
        "type": "http", "method": method, "path": "/q", "raw_path": b"/q", "query_string": b"a=1",
        "headers": headers or [], "client": ("10.0.0.9", 5000), "scheme": "http",
    }  # fmt: skip


@contextlib.asynccontextmanager
async def proxy_to(upstream: Scripted, timeout_s: float = 2.0, **options: Any) -> AsyncIterator[ReverseProxy]:
    proxy = ReverseProxy(f"http://127.0.0.1:{upstream.port}/base", timeout_s=timeout_s, **options)
    async with proxy.lifespan():
        yield proxy


def body_messages(*chunks: bytes) -> list[dict[str, Any]]:
    last = len(chunks) - 1
    return [{"type": "http.request", "body": c, "more_body": i < last} for i, c in enumerate(chunks)]


async def call(proxy: ReverseProxy, client: Client, request: dict[str, Any]) -> Client:
    await asyncio.wait_for(proxy(request, client.receive, client.send), 5)
    return client


async def test_request_framing_whole_streamed_with_length_and_chunked():
    # buffer_bytes=1: bodies beyond one byte stream (as bodies beyond server.max_body_bytes do)
    async with scripted(replying(OK)) as upstream, proxy_to(upstream, buffer_bytes=1) as proxy:
        whole = Client(body_messages(b"abc"))
        await call(proxy, whole, scope("POST", [(b"content-length", b"3")]))
        with_length = Client(body_messages(b"ab", b"", b"cd"))
        await call(proxy, with_length, scope("PUT", [(b"content-length", b"4")]))
        chunked = Client(body_messages(b"ab", b"cd", b""))
        await call(proxy, chunked, scope("POST", [(b"transfer-encoding", b"chunked")]))
        empty = Client(body_messages(b""))
        await call(proxy, empty, scope("POST", [(b"content-length", b"0")]))
    assert [c.status for c in (whole, with_length, chunked, empty)] == [200] * 4
    first, second, third, fourth = upstream.requests
    assert first.line == b"POST /base/q?a=1 HTTP/1.1"
    assert (first.body, first.header(b"content-length")) == (b"abc", b"3")
    assert (second.body, second.header(b"content-length")) == (b"abcd", b"4")
    assert (third.body, third.header(b"transfer-encoding"), third.header(b"content-length")) == (
        b"abcd", b"chunked", None,
    )  # fmt: skip
    assert (fourth.body, fourth.header(b"content-length")) == (b"", b"0")
    assert upstream.connections == 1


async def test_a_stale_keep_alive_connection_is_retried_for_idempotent_requests_only():
    drop_next = False

    async def answer(reader: Any, writer: asyncio.StreamWriter, request: Request) -> bool:
        nonlocal drop_next
        if drop_next:  # close with the request unanswered, as an upstream closing an idle connection does
            drop_next = False
            return False
        writer.write(OK)
        return True

    async with scripted(answer) as upstream, proxy_to(upstream) as proxy:
        await call(proxy, Client([]), scope())
        drop_next = True
        retried = await call(proxy, Client([]), scope("GET"))
        assert (retried.status, retried.body) == (200, b"hello")
        assert [r.connection for r in upstream.requests] == [1, 1, 2]

        drop_next = True
        post = await call(proxy, Client(body_messages(b"x")), scope("POST", [(b"content-length", b"1")]))
    assert post.status == 502
    assert [r.line.split()[0] for r in upstream.requests] == [b"GET", b"GET", b"GET", b"POST"]  # not resent


async def test_an_early_answer_stops_the_upload_and_is_relayed():
    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: Request) -> bool:
        writer.write(b"HTTP/1.1 413 Too Large\r\nContent-Length: 3\r\nConnection: close\r\n\r\nbig")
        await writer.drain()
        return False

    async def head_only(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await refuse(reader, writer, Request(b"", b"", 0))
        writer.close()

    upstream = Scripted(refuse)
    server = await asyncio.start_server(head_only, "127.0.0.1", 0)
    upstream.port = server.sockets[0].getsockname()[1]
    async with server, proxy_to(upstream, buffer_bytes=1) as proxy:  # the body streams
        client = Client(body_messages(b"a" * 100, b"b" * 100), pace_s=0.05)
        client.messages.append({"type": "http.request", "body": b"", "more_body": True})  # never ends
        await call(proxy, client, scope("PUT", [(b"content-length", b"999999")]))
    assert (client.status, client.body, client.finished) == (413, b"big", True)


async def test_a_client_that_hangs_up_during_a_streamed_answer_aborts_the_upstream():
    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: Request) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        while True:
            writer.write(b"5\r\ntick\n\r\n")
            await writer.drain()
            await asyncio.sleep(0.01)

    async with scripted(endless) as upstream, proxy_to(upstream) as proxy:
        client = Client([])
        relaying = asyncio.ensure_future(proxy(scope(), client.receive, client.send))
        while len(client.sent) < 3:
            await asyncio.sleep(0.01)
        client.gone.set()
        await asyncio.wait_for(relaying, 5)
        for _ in range(100):
            if upstream.aborted:
                break
            await asyncio.sleep(0.01)
    assert upstream.aborted == [1]
    assert client.status == 200 and client.body.startswith(b"tick\n") and not client.finished


async def test_head_requests_relay_headers_without_a_body():
    head_answer = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"
    async with scripted(replying(head_answer, OK)) as upstream, proxy_to(upstream) as proxy:
        head = await call(proxy, Client([]), scope("HEAD"))
        after = await call(proxy, Client([]), scope("GET"))
    assert (head.status, head.body, dict(head.sent[0]["headers"])[b"content-length"]) == (200, b"", b"5")
    assert (after.status, after.body) == (200, b"hello")
    assert upstream.connections == 1


async def test_malformed_and_silent_upstreams_answer_502_and_504_json():
    garbage = replying(b"garbage\r\n\r\n", keep_open=False)
    async with scripted(garbage) as upstream, proxy_to(upstream) as proxy:
        bad = await call(proxy, Client([]), scope())

    async def silent(reader: Any, writer: Any, request: Request) -> bool:
        await asyncio.sleep(5)
        return False

    async with scripted(silent) as upstream, proxy_to(upstream, timeout_s=0.2) as proxy:
        slow = await call(proxy, Client([]), scope())
    assert bad.status == 502
    assert bad.body == b'{"error":"bad_gateway","description":"the upstream is unreachable"}'
    assert slow.status == 504
    assert b"upstream_timeout" in slow.body
