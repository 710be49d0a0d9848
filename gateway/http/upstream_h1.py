"""A lean HTTP/1.1 upstream client: asyncio protocol + httptools parser, pooled keep-alive.

It implements the same small port as gateway.http.upstream (UpstreamClient / UpstreamResponse) at a
fraction of a general-purpose client's CPU per request: one pre-built request buffer, a C
parser, no per-request tasks or timeout objects beyond one timer. Errors are translated here
into UpstreamError, once.
"""

from __future__ import annotations

import asyncio
import functools
import select
import ssl
from collections import deque
from collections.abc import Sequence
from typing import cast
from urllib.parse import urlsplit

import httptools

from gateway.http.upstream import (
    DROPPED_RESPONSE_HEADERS,
    FailureKind,
    UpstreamError,
    UpstreamResponse,
    UpstreamTimeouts,
)
from gateway.http.upstream_pool import ConnectionPool

_PAUSE_AT = 1 << 20  # buffered body bytes before reading from the region is paused
_IDLE_PER_ORIGIN = 256


@functools.lru_cache(maxsize=1024)
def _target(url: str) -> tuple[str, str, int, bool, bytes]:
    """(origin key, host, port, tls, request-target) for a URL."""
    parts = urlsplit(url)
    tls = parts.scheme == "https"
    host = parts.hostname or ""
    port = parts.port or (443 if tls else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return f"{parts.scheme}://{host}:{port}", host, port, tls, target.encode("latin-1")


class _Exchange:
    """One response as it arrives: headers first, then body chunks (the UpstreamResponse)."""

    __slots__ = (
        "_buffered",
        "_chunks",
        "_connection",
        "_error",
        "_framed",
        "_has_headers",
        "_headers_waiter",
        "_read_timeout",
        "_waiter",
        "complete",
        "headers",
        "status",
    )

    def __init__(self, connection: _Connection, read_timeout: float) -> None:
        self._connection = connection
        self._read_timeout = read_timeout
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._error: UpstreamError | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._headers_waiter: asyncio.Future[None] = connection.loop.create_future()
        self._framed = False
        self._has_headers = False
        self.complete = False
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []

    # -- fed by the connection ------------------------------------------------------------

    def headers_done(self, status: int, framed: bool) -> None:
        self.status = status
        self._framed = framed
        self._has_headers = True
        if not self._headers_waiter.done():
            self._headers_waiter.set_result(None)

    def feed(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self._buffered += len(chunk)
        if self._buffered > _PAUSE_AT:
            self._connection.pause()
        self._wake()

    def finish(self) -> None:
        self.complete = True
        self._wake()

    def fail(self, error: UpstreamError) -> None:
        if self.complete or self._error is not None:  # the first failure is the one to report
            return
        if self._has_headers and not self._framed:
            self.finish()  # no length, not chunked: the body ends when the connection does
            return
        self._error = error
        if not self._headers_waiter.done():
            self._headers_waiter.set_exception(error)
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- read by the data path ------------------------------------------------------------

    async def wait_headers(self, limit: float) -> None:
        timer = self._connection.loop.call_later(limit, self._headers_timed_out)
        try:
            await self._headers_waiter
        finally:
            timer.cancel()

    def _headers_timed_out(self) -> None:
        if not self._headers_waiter.done():
            error = UpstreamError(FailureKind.TIMEOUT, "no response headers in time")
            self._error = error
            self._headers_waiter.set_exception(error)
            self._connection.abort()

    async def read(self) -> bytes:
        while not self._chunks:
            if self._error is not None:
                raise self._error
            if self.complete:
                return b""
            self._waiter = self._connection.loop.create_future()
            timer = self._connection.loop.call_later(self._read_timeout, self._timed_out)
            try:
                await self._waiter
            finally:
                timer.cancel()
                self._waiter = None
        chunk = self._chunks.popleft()
        self._buffered -= len(chunk)
        if self._buffered <= _PAUSE_AT:
            self._connection.resume()
        return chunk

    def _timed_out(self) -> None:
        if self._error is None and not self.complete:
            self._error = UpstreamError(FailureKind.TIMEOUT, "no body bytes within read timeout")
            self._connection.abort()
        self._wake()

    def release(self) -> None:
        self._connection.exchange_done(self)


class _Connection(asyncio.Protocol):
    """One keep-alive connection to a region; one exchange at a time."""

    def __init__(self, pool: ConnectionPool[_Connection], loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._pool = pool
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._exchange: _Exchange | None = None
        self._header_list: list[tuple[bytes, bytes]] = []
        self._paused = False
        self.closed = False
        self.reusable = True

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        exchange = self._exchange
        if exchange is None:  # bytes nobody asked for: the connection is unusable
            self.abort()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.reusable = False
            exchange.fail(UpstreamError(FailureKind.PROTOCOL, f"malformed response: {exc}"))
            self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._pool.forget(self)
        if self._exchange is not None:
            detail = str(exc) if exc else "connection closed by the region"
            self._exchange.fail(UpstreamError(FailureKind.PROTOCOL, detail))

    # -- httptools callbacks ---------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_list.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        exchange = self._exchange
        if exchange is None:
            return
        headers = self._header_list
        self._header_list = []
        names = {name for name, _ in headers}
        framed = b"content-length" in names or b"transfer-encoding" in names
        exchange.headers = [(n, v) for n, v in headers if n not in DROPPED_RESPONSE_HEADERS]
        if not self._parser.should_keep_alive():
            self.reusable = False
        exchange.headers_done(self._parser.get_status_code(), framed)

    def on_body(self, body: bytes) -> None:
        if self._exchange is not None:
            self._exchange.feed(body)

    def on_message_complete(self) -> None:
        if self._exchange is not None:
            self._exchange.finish()

    # -- used by the pool and the exchange -------------------------------------------------

    def start(self, request: bytes, read_timeout: float) -> _Exchange | None:
        """Write `request`; None if the connection was found dead before a byte of it left.

        Only then may the request go again on another connection: once bytes may have
        reached the region, a failure is this attempt's outcome (the region may be working
        on it), never a silent resend.
        """
        transport = self._transport
        assert transport is not None
        if self.closed or transport.is_closing():
            return None
        exchange = _Exchange(self, read_timeout)
        self._exchange = exchange
        transport.write(request)
        if transport.is_closing():  # the write failed at once (reset): nothing was sent
            self._exchange = None
            self.abort()
            return None
        return exchange

    def stale(self) -> bool:
        """An idle connection the region closed (or sent stray bytes on); it is aborted."""
        transport = self._transport
        if self.closed or transport is None or transport.is_closing() or _readable(transport):
            self.abort()
            return True
        return False

    def exchange_done(self, exchange: _Exchange) -> None:
        if self._exchange is not exchange:
            return
        self._exchange = None
        self.resume()
        if exchange.complete and self.reusable and not self.closed:
            self._pool.give_back(self)
        else:
            self.abort()

    def pause(self) -> None:
        if not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()

    def resume(self) -> None:
        if self._paused and self._transport is not None and not self.closed:
            self._paused = False
            self._transport.resume_reading()

    def abort(self) -> None:
        self.reusable = False
        self._pool.forget(self)  # its slot is free now, not when the loop gets to it
        if self._transport is not None and not self.closed:
            self._transport.abort()


def _readable(transport: asyncio.Transport) -> bool:
    """Whether an idle connection has something to read: the region's FIN (or stray bytes).

    The event loop may not have delivered a close that already arrived; asking the socket
    costs one poll(2) and keeps a stale connection from eating a request.
    """
    sock = transport.get_extra_info("socket")
    if sock is None:
        return False
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN | select.POLLPRI)
    return bool(poller.poll(0))


class H1Upstream:
    """UpstreamClient over pooled HTTP/1.1 connections (http and https), bounded in number."""

    def __init__(
        self, timeouts: UpstreamTimeouts, max_connections: int = 1024, per_region: int = 1024
    ) -> None:
        self._timeouts = timeouts
        self._pool: ConnectionPool[_Connection] = ConnectionPool(
            max_connections, per_region, _IDLE_PER_ORIGIN
        )
        self._tls: ssl.SSLContext | None = None

    async def _connect(
        self, origin: str, host: str, port: int, tls: bool, deadline: float
    ) -> _Connection:
        """Open a connection in the slot `acquire` reserved (freed again if this fails)."""
        loop = asyncio.get_running_loop()
        if tls and self._tls is None:
            self._tls = ssl.create_default_context()
        try:
            _, connection = await asyncio.wait_for(
                loop.create_connection(
                    lambda: _Connection(self._pool, loop),
                    host,
                    port,
                    ssl=self._tls if tls else None,
                    server_hostname=host if tls else None,
                ),
                max(deadline - loop.time(), 0.001),
            )
        except TimeoutError:
            self._pool.release(origin)
            raise UpstreamError(
                FailureKind.CONNECT, f"connect to {host}:{port} timed out"
            ) from None
        except (OSError, ssl.SSLError) as exc:
            self._pool.release(origin)
            raise UpstreamError(FailureKind.CONNECT, f"{host}:{port}: {exc}") from None
        except BaseException:
            self._pool.release(origin)
            raise
        if connection.closed:  # closed before it could be counted: forget() missed it
            self._pool.release(origin)
            raise UpstreamError(FailureKind.CONNECT, f"{host}:{port}: closed at once")
        self._pool.adopt(connection, origin)
        return connection

    async def _exchange(
        self, origin: str, host: str, port: int, tls: bool, request: bytes
    ) -> _Exchange:
        """Write the request on a pooled or new connection; waiting for one counts as connecting.

        A pooled connection found closed before the request was written is replaced (the
        region never saw the request); nothing that may have reached a region is resent.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeouts.connect
        while True:
            connection = await self._pool.acquire(origin, deadline)
            fresh = connection is None
            if connection is None:
                connection = await self._connect(origin, host, port, tls, deadline)
            elif connection.stale():
                continue
            exchange = connection.start(request, self._timeouts.read)
            if exchange is not None:
                return exchange
            connection.abort()
            if fresh:
                raise UpstreamError(
                    FailureKind.CONNECT, f"{host}:{port}: connection closed before the request"
                )

    async def send(
        self, url: str, headers: Sequence[tuple[str, str]], body: bytes
    ) -> UpstreamResponse:
        origin, host, port, tls, target = _target(url)
        head = [
            b"POST " if body else b"GET ",
            target,
            b" HTTP/1.1\r\nhost: ",
            f"{host}:{port}".encode("latin-1"),
            b"\r\ncontent-length: ",
            str(len(body)).encode(),
            b"\r\n",
        ]
        for name, value in headers:
            head.append(f"{name}: {value}\r\n".encode("latin-1"))
        head.append(b"\r\n")
        exchange = await self._exchange(origin, host, port, tls, b"".join(head) + body)
        try:
            await exchange.wait_headers(self._timeouts.first_byte)
        except BaseException:  # timeout, a broken connection, or the caller gave up
            exchange.release()  # an unfinished exchange aborts its connection
            raise
        return exchange

    async def close(self) -> None:
        self._pool.close()
