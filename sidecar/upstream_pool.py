"""A small HTTP/1.1 keep-alive client for one upstream origin: the reverse proxy's upstream leg.

Built on asyncio protocols and httptools' response parser (both already under uvicorn) because a
general-purpose client cost more than the rest of the proxy (see sidecar/proxy.py for the numbers).

One `Connection` carries one exchange at a time; the caller writes the request head and body itself
(`write`, `drain`) and reads the response (`response_head`, `read`). Responses are framed by
Content-Length, chunked encoding or the end of the connection; HEAD answers and 1xx/204/304 carry no
body; interim 1xx responses are skipped. Body bytes are buffered up to a high-water mark, then reading
pauses until the caller catches up. Every wait for the upstream (connect, pool slot, data, drain) is
bounded by `timeout_s` (UpstreamTimeout). A connection goes back to the `UpstreamPool` only when its
response was read completely, framed, and keep-alive; idle connections older than `idle_timeout_s` are
not reused (below the 5 s keep-alive of Node and uvicorn servers, so a request rarely meets a
connection the upstream is closing).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ssl
from dataclasses import dataclass

import httptools

from ig_gate.errors import IgGateError

HIGH_WATER = 256 * 1024  # response body bytes buffered before reading from the upstream pauses
_BODYLESS_STATUS = frozenset({204, 304})


class UpstreamError(IgGateError):
    """The upstream is unreachable, closed the connection early, or broke HTTP/1.1 framing."""


class UpstreamTimeout(UpstreamError, TimeoutError):
    """No connection, pool slot or data from the upstream within the timeout."""


@dataclass(frozen=True, slots=True)
class Origin:
    """Where the upstream listens: scheme, host and port (the Host header it expects)."""

    host: str
    port: int
    tls: bool = False

    @property
    def host_header(self) -> bytes:
        """`host[:port]`, the port omitted when it is the scheme's default; IPv6 literals bracketed."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.tls else 80
        return (host if self.port == default else f"{host}:{self.port}").encode("idna")

    def __str__(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host_header.decode()}"


class Connection(asyncio.Protocol):
    """One keep-alive connection to the upstream; one request/response exchange at a time."""

    def __init__(self, pool: UpstreamPool) -> None:
        self._pool = pool
        self._loop = pool.loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reused = False  # served an earlier exchange (it may have gone stale)
        self.idle_since = 0.0
        self._busy = False
        self._waiter: asyncio.Future[None] | None = None
        self._write_paused = False
        self._read_paused = False
        self._reset(head=False)

    # -- one exchange -----------------------------------------------------------------------------

    def begin(self, *, head: bool) -> None:
        """Start an exchange; `head`: the request is HEAD (the response has no body)."""
        self._busy = True
        self._reset(head)

    def _reset(self, head: bool) -> None:
        self._head = head
        self._parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_done = False
        self.complete = False
        self.keep_alive = False
        self.received = False  # any response byte arrived
        self.abandoned = False  # the request was not sent completely: never reuse
        self.error: UpstreamError | None = None
        self._interim = False
        self._framed = False
        self._chunks: list[bytes] = []
        self._buffered = 0

    def write(self, data: bytes) -> None:
        """Send bytes of the request (raises the connection's error when it has failed)."""
        if self.error is not None:
            raise self.error
        transport = self.transport
        if self.closed or transport is None or transport.is_closing():
            raise UpstreamError(f"upstream {self._pool.origin} closed the connection")
        transport.write(data)

    async def drain(self) -> None:
        """Wait until the upstream takes more request bytes."""
        while self._write_paused and self.error is None and not self.closed:
            await self._wait()
        if self.error is not None:
            raise self.error

    async def response_head(self) -> None:
        """Wait for the response status and headers (`status`, `headers`: names lower-case)."""
        while not self.head_done:
            if self.error is not None:
                raise self.error
            await self._wait()

    async def read(self) -> bytes:
        """The next response body bytes; b"" once the body is complete."""
        while True:
            chunks = self._chunks
            if chunks:
                self._chunks = []
                self._buffered = 0
                if self._read_paused and self.transport is not None:
                    self._read_paused = False
                    self.transport.resume_reading()
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)
            if self.complete:
                return b""
            if self.error is not None:
                raise self.error
            await self._wait()

    @property
    def reusable(self) -> bool:
        """Whether the exchange ended cleanly and the connection may carry another."""
        return (
            self.complete and self.keep_alive and self.error is None
            and not (self.closed or self.abandoned or self._chunks)
        )

    def abort(self) -> None:
        """Cut the connection now (the upstream sees the request end abruptly)."""
        self.abandoned = True
        if self.transport is not None:
            self.transport.abort()

    # -- waiting ----------------------------------------------------------------------------------

    async def _wait(self) -> None:
        waiter = self._loop.create_future()
        self._waiter = waiter
        timer = self._loop.call_later(self._pool.timeout_s, self._expire, waiter)
        try:
            await waiter
        finally:
            self._waiter = None
            timer.cancel()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _expire(self, waiter: asyncio.Future[None]) -> None:
        if waiter.done():  # woken in the same loop iteration: not a timeout
            return
        pool = self._pool
        self._fail(UpstreamTimeout(f"upstream {pool.origin}: nothing happened for {pool.timeout_s:g} s"))

    def _fail(self, error: UpstreamError) -> None:
        if self.error is None:
            self.error = error
        self._wake()
        if self.transport is not None:
            self.transport.abort()

    # -- asyncio.Protocol -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if not self._busy or self.complete:  # unsolicited bytes: the framing is lost
            self._fail(UpstreamError(f"upstream {self._pool.origin} sent data outside a response"))
            return
        self.received = True
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self._fail(UpstreamError(f"upstream {self._pool.origin} sent a malformed response: {exc}"))

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._busy and not self.complete and self.error is None:
            if self.head_done and not self._framed:  # the body was delimited by the end of the connection
                self.complete = True
            else:
                self.error = UpstreamError(f"upstream {self._pool.origin} closed the connection mid-response")
        self._wake()
        self._pool._forget(self)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake()

    # -- httptools callbacks ----------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.complete:  # a second response to one request
            raise UpstreamError(f"upstream {self._pool.origin} sent more than one response")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        parser = self._parser
        status = parser.get_status_code()
        if status < 200:  # interim (100 Continue, 103 Early Hints): wait for the final response
            self._interim = True
            self.headers = []
            return
        self.status = status
        self.head_done = True
        for name, value in self.headers:
            if name == b"content-length" or (name == b"transfer-encoding" and b"chunked" in value.lower()):
                self._framed = True
        if self._head or status in _BODYLESS_STATUS:
            self._framed = True
            self.complete = True
            self.keep_alive = parser.should_keep_alive()
        self._wake()

    def on_body(self, body: bytes) -> None:
        if self.complete:  # body bytes after a HEAD, 204 or 304 response
            raise UpstreamError(f"upstream {self._pool.origin} sent a body where none is allowed")
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > HIGH_WATER and not self._read_paused and self.transport is not None:
            self._read_paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        self.complete = True
        self.keep_alive = self._parser.should_keep_alive()
        self._wake()


class UpstreamPool:
    """Keep-alive connections to one origin, at most `max_connections` open; create inside the loop."""

    def __init__(
        self,
        origin: Origin,
        *,
        timeout_s: float = 30.0,
        max_connections: int = 256,
        idle_timeout_s: float = 4.0,
    ) -> None:
        self.origin = origin
        self.timeout_s = timeout_s
        self.max_connections = max_connections
        self.idle_timeout_s = idle_timeout_s
        self.loop = asyncio.get_running_loop()
        self._ssl = ssl.create_default_context() if origin.tls else None
        self._idle: list[Connection] = []
        self._open = 0  # connections open or being opened
        self._waiters: collections.deque[asyncio.Future[Connection | None]] = collections.deque()
        self._closed = False

    async def acquire(self) -> Connection:
        """An idle connection (most recent first), a new one, or the next released one."""
        idle, now = self._idle, self.loop.time()
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.idle_since < self.idle_timeout_s:
                conn.reused = True
                return conn
            conn.abort()
        if self._closed:
            raise UpstreamError(f"upstream pool for {self.origin} is closed")
        if self._open < self.max_connections:
            self._open += 1
        elif (conn := await self._wait_for_slot()) is not None:
            return conn
        return await self._connect()

    def release(self, conn: Connection) -> None:
        """Return a connection after its exchange: kept when reusable, else closed."""
        conn._busy = False
        if not conn.reusable or self._closed:
            if conn.complete and not conn.abandoned and conn.transport is not None:
                conn.transport.close()
            else:
                conn.abort()
            return
        conn.reused = True
        if not self._hand_over(conn):
            conn.idle_since = self.loop.time()
            self._idle.append(conn)

    async def aclose(self) -> None:
        """Close idle connections and refuse waiters; busy connections close when released."""
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            if conn.transport is not None:
                conn.transport.close()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(UpstreamError(f"upstream pool for {self.origin} is closed"))
        await asyncio.sleep(0)  # let the transports report connection_lost

    async def _wait_for_slot(self) -> Connection | None:
        """A connection released by another request, or None: a slot was freed for a new one."""
        waiter: asyncio.Future[Connection | None] = self.loop.create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(self.timeout_s):
                return await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                handed = waiter.result()  # handed over while this task was being cancelled: pass it on
                if handed is None:
                    self._give_back_slot()
                else:
                    self.release(handed)
            waiter.cancel()
            if isinstance(exc, TimeoutError):
                raise UpstreamTimeout(
                    f"upstream {self.origin}: no free connection within {self.timeout_s:g} s "
                    f"({self.max_connections} busy)"
                ) from None
            raise

    async def _connect(self) -> Connection:
        """Open a connection in a slot already counted in _open."""
        conn = Connection(self)
        try:
            async with asyncio.timeout(self.timeout_s):
                await self.loop.create_connection(
                    lambda: conn, self.origin.host, self.origin.port, ssl=self._ssl,
                    server_hostname=self.origin.host if self._ssl else None,
                )  # fmt: skip
        except BaseException as exc:
            if conn.transport is None:  # never connected (else connection_lost gives the slot back)
                self._give_back_slot()
            if isinstance(exc, TimeoutError):
                raise UpstreamTimeout(
                    f"upstream {self.origin}: no connection within {self.timeout_s:g} s"
                ) from None
            if isinstance(exc, OSError):
                raise UpstreamError(f"upstream {self.origin} is unreachable: {exc.strerror or exc}") from None
            raise
        return conn

    def _forget(self, conn: Connection) -> None:
        """A connection was lost (called once per connection, by the protocol)."""
        with contextlib.suppress(ValueError):
            self._idle.remove(conn)
        self._give_back_slot()

    def _give_back_slot(self) -> None:
        """A slot is free: hand it to the first waiter (which then connects), else count it free."""
        if not self._hand_over(None):
            self._open -= 1

    def _hand_over(self, conn: Connection | None) -> bool:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return True
        return False
