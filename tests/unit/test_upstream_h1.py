"""The upstream clients (the lean HTTP/1.1 one, and aiohttp where marked) against small real
servers speaking raw HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import socketserver
import threading
import time
from collections.abc import AsyncIterator, Callable

import pytest

from gateway.http.upstream import (
    AiohttpUpstream,
    FailureKind,
    UpstreamClient,
    UpstreamError,
    UpstreamResponse,
    UpstreamTimeouts,
)
from gateway.http.upstream_h1 import H1Upstream

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], "asyncio.Future[None] | object"]
OK = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head + await reader.readexactly(length)


class RawServer:
    """A TCP server whose handler writes whatever bytes a test wants; counts connections."""

    def __init__(self, handler: Callable[..., object]) -> None:
        self.handler = handler
        self.connections = 0
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> RawServer:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            try:
                await self.handler(self, reader, writer)  # type: ignore[misc]
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        self.server = await asyncio.start_server(serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self.server is not None
        self.server.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/v1/chat/completions"


async def body_of(response: UpstreamResponse) -> bytes:
    chunks = []
    while chunk := await response.read():
        chunks.append(chunk)
    response.release()
    return b"".join(chunks)


@pytest.fixture
async def client() -> AsyncIterator[H1Upstream]:
    upstream = H1Upstream(UpstreamTimeouts(connect=1.0, first_byte=0.5, read=0.5))
    yield upstream
    await upstream.close()


async def keep_alive_ok(server: RawServer, reader: asyncio.StreamReader, writer: object) -> None:
    while True:
        server.requests.append(await read_request(reader))
        writer.write(OK)  # type: ignore[attr-defined]


async def test_keep_alive_connection_is_reused_and_request_is_well_formed(
    client: H1Upstream,
) -> None:
    async with RawServer(keep_alive_ok) as server:
        for _ in range(3):
            response = await client.send(server.url, [("x-test", "1")], b'{"a":1}')
            assert response.status == 200
            assert await body_of(response) == b"{}"
    assert server.connections == 1
    first = server.requests[0]
    assert first.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
    assert b"\r\ncontent-length: 7\r\n" in first and b"\r\nx-test: 1\r\n" in first
    assert first.endswith(b'\r\n\r\n{"a":1}')


async def test_idle_connection_closed_by_the_region_is_replaced_transparently(
    client: H1Upstream,
) -> None:
    async def one_per_connection(server: RawServer, reader: object, writer: object) -> None:
        await read_request(reader)  # type: ignore[arg-type]
        writer.write(OK)  # type: ignore[attr-defined]
        await writer.drain()  # type: ignore[attr-defined]

    async with RawServer(one_per_connection) as server:
        for _ in range(2):
            response = await client.send(server.url, [], b"{}")
            assert await body_of(response) == b"{}"
            await asyncio.sleep(0.05)  # the server has closed the kept-alive connection
    assert server.connections == 2


async def test_chunked_and_close_delimited_bodies_arrive_whole(client: H1Upstream) -> None:
    async def chunked(server: RawServer, reader: object, writer: object) -> None:
        await read_request(reader)  # type: ignore[arg-type]
        writer.write(  # type: ignore[attr-defined]
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-type: text/event-stream"
            b"\r\n\r\n5\r\ndata:\r\n3\r\n 1\n\r\n0\r\n\r\n"
        )

    async def until_close(server: RawServer, reader: object, writer: object) -> None:
        await read_request(reader)  # type: ignore[arg-type]
        writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nhello")  # type: ignore[attr-defined]

    async with RawServer(chunked) as server:
        response = await client.send(server.url, [], b"{}")
        assert b"transfer-encoding" not in dict(response.headers)
        assert await body_of(response) == b"data: 1\n"
    async with RawServer(until_close) as server:
        response = await client.send(server.url, [], b"{}")
        assert await body_of(response) == b"hello"


async def test_failures_become_upstream_errors(client: H1Upstream) -> None:
    async def silent(server: RawServer, reader: object, writer: object) -> None:
        await read_request(reader)  # type: ignore[arg-type]
        await asyncio.sleep(5)

    async def stalls_mid_body(server: RawServer, reader: object, writer: object) -> None:
        await read_request(reader)  # type: ignore[arg-type]
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc")  # type: ignore[attr-defined]
        await asyncio.sleep(5)

    async def garbage(server: RawServer, reader: object, writer: object) -> None:
        await read_request(reader)  # type: ignore[arg-type]
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")  # type: ignore[attr-defined]

    async def drops(server: RawServer, reader: object, writer: object) -> None:
        await read_request(reader)  # type: ignore[arg-type]
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc")  # type: ignore[attr-defined]

    with pytest.raises(UpstreamError) as refused:
        await client.send("http://127.0.0.1:9/v1/x", [], b"{}")
    assert refused.value.kind is FailureKind.CONNECT
    async with RawServer(silent) as server:
        with pytest.raises(UpstreamError) as no_headers:
            await client.send(server.url, [], b"{}")
        assert no_headers.value.kind is FailureKind.TIMEOUT
    async with RawServer(stalls_mid_body) as server:
        response = await client.send(server.url, [], b"{}")
        assert await response.read() == b"abc"
        with pytest.raises(UpstreamError) as stalled:
            await response.read()
        assert stalled.value.kind is FailureKind.TIMEOUT
        response.release()
    async with RawServer(garbage) as server:
        with pytest.raises(UpstreamError) as malformed:
            await client.send(server.url, [], b"{}")
        assert malformed.value.kind is FailureKind.PROTOCOL
    async with RawServer(drops) as server:
        response = await client.send(server.url, [], b"{}")
        with pytest.raises(UpstreamError) as dropped:
            await body_of(response)
        assert dropped.value.kind is FailureKind.PROTOCOL


# -- a request reaches a region at most once (issue 13, item 6) ----------------------------


def make_client(kind: str, **limits: int) -> UpstreamClient:
    timeouts = UpstreamTimeouts(connect=0.3, first_byte=0.8, read=0.8)
    if kind == "aiohttp":
        return AiohttpUpstream(timeouts, **limits)
    return H1Upstream(timeouts, **limits)


CLIENTS = pytest.mark.parametrize("kind", ["h1", "aiohttp"])


@CLIENTS
async def test_a_timed_out_request_is_not_resent(kind: str) -> None:
    async def second_one_hangs(server: RawServer, reader: object, writer: object) -> None:
        while True:
            server.requests.append(await read_request(reader))  # type: ignore[arg-type]
            if len(server.requests) > 1:
                await asyncio.sleep(5)
            writer.write(OK)  # type: ignore[attr-defined]

    client = make_client(kind)
    try:
        async with RawServer(second_one_hangs) as server:
            assert await body_of(await client.send(server.url, [], b"{}")) == b"{}"
            with pytest.raises(UpstreamError) as timed_out:
                await client.send(server.url, [], b'{"prompt":1}')  # on the pooled connection
            assert timed_out.value.kind is FailureKind.TIMEOUT
            await asyncio.sleep(0.2)  # a resend would have arrived by now
        assert len(server.requests) == 2, "the timed-out request was delivered again"
        assert server.connections == 1
    finally:
        await client.close()


class ThreadedServer:
    """A blocking server in a thread (it runs while the test blocks the event loop).

    It follows `plan`, one step per request: "answer" (keep the connection), "answer+close"
    (as a region closing an idle keep-alive connection), or "drop" (close, no answer).
    """

    def __init__(self, plan: list[str]) -> None:
        self.plan = plan
        self.requests: list[bytes] = []
        outer = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                data = b""
                while True:
                    while not data.endswith(b"}"):
                        chunk = self.request.recv(65536)
                        if not chunk:
                            return
                        data += chunk
                    outer.requests.append(data.rsplit(b"\r\n\r\n", 1)[1])
                    data = b""
                    step = outer.plan.pop(0) if outer.plan else "drop"
                    if step == "drop":
                        return
                    self.request.sendall(OK)
                    if step == "answer+close":
                        return

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/chat/completions"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


async def test_only_a_request_no_byte_of_which_was_written_is_resent() -> None:
    client = H1Upstream(UpstreamTimeouts(connect=0.5, first_byte=0.5, read=0.5))
    server = ThreadedServer(["answer+close", "answer", "drop"])
    try:
        assert await body_of(await client.send(server.url, [], b'{"n":1}')) == b"{}"
        # The region has closed the idle connection; the event loop has not noticed yet.
        time.sleep(0.2)  # noqa: ASYNC251 - blocks the loop on purpose
        # Never written: the request goes on a new connection, transparently.
        assert await body_of(await client.send(server.url, [], b'{"n":2}')) == b"{}"
        # On that kept-alive connection, this one reaches the region, which hangs up
        # without answering: it may have started on it, so it is not sent again.
        with pytest.raises(UpstreamError) as dropped:
            await client.send(server.url, [], b'{"n":3}')
        assert dropped.value.kind is FailureKind.PROTOCOL
        await asyncio.sleep(0.2)
        assert server.requests == [b'{"n":1}', b'{"n":2}', b'{"n":3}']
    finally:
        await client.close()
        server.close()


# -- connection limits (issue 13, item 17) -------------------------------------------------


class Gate:
    """A server that holds every request until `open()`, tracking connections open at once."""

    def __init__(self) -> None:
        self.opened = asyncio.Event()
        self.open_now = 0
        self.most_open = 0
        self.requests = 0

    async def __call__(self, server: RawServer, reader: object, writer: object) -> None:
        self.open_now += 1
        self.most_open = max(self.most_open, self.open_now)
        try:
            while True:
                await read_request(reader)  # type: ignore[arg-type]
                self.requests += 1
                await self.opened.wait()
                writer.write(OK)  # type: ignore[attr-defined]
        finally:
            self.open_now -= 1


@CLIENTS
async def test_connections_are_bounded_and_reused_by_waiting_requests(kind: str) -> None:
    gate = Gate()
    client = make_client(kind, max_connections=2, per_region=2)
    try:
        async with RawServer(gate) as server:

            async def fetch() -> bytes:
                return await body_of(await client.send(server.url, [], b"{}"))

            fetches = [asyncio.ensure_future(fetch()) for _ in range(4)]
            await asyncio.sleep(0.2)
            assert gate.requests == 2  # two wait for a connection
            gate.opened.set()
            assert await asyncio.gather(*fetches) == [b"{}"] * 4
        assert gate.most_open == 2
        assert server.connections == 2
    finally:
        await client.close()


@CLIENTS
async def test_waiting_for_a_connection_counts_against_the_connect_timeout(kind: str) -> None:
    slow, other = Gate(), Gate()
    other.opened.set()
    client = make_client(kind, max_connections=4, per_region=1)
    try:
        async with RawServer(slow) as hung, RawServer(other) as healthy:
            held = asyncio.ensure_future(client.send(hung.url, [], b"{}"))
            await asyncio.sleep(0.1)
            with pytest.raises(UpstreamError) as no_room:
                await client.send(hung.url, [], b"{}")
            assert no_room.value.kind is FailureKind.CONNECT  # never sent: safe to fail over
            assert slow.requests == 1
            # Another region is not held up by the first one's full quota.
            assert await body_of(await client.send(healthy.url, [], b"{}")) == b"{}"
            slow.opened.set()
            assert await body_of(await held) == b"{}"
    finally:
        await client.close()


@CLIENTS
async def test_a_request_given_up_on_closes_its_connection(kind: str) -> None:
    closed = asyncio.Event()

    async def answers_second(server: RawServer, reader: object, writer: object) -> None:
        await read_request(reader)  # type: ignore[arg-type]
        if server.connections == 1:  # holds the first request until the gateway hangs up
            assert await reader.read() == b""  # type: ignore[attr-defined]
            closed.set()
            return
        writer.write(OK)  # type: ignore[attr-defined]

    client = make_client(kind, max_connections=1, per_region=1)
    try:
        async with RawServer(answers_second) as server:
            waiting = asyncio.ensure_future(client.send(server.url, [], b"{}"))
            await asyncio.sleep(0.1)
            waiting.cancel()  # e.g. the gateway's client went away
            with contextlib.suppress(asyncio.CancelledError):
                await waiting
            await asyncio.wait_for(closed.wait(), 2.0)  # the region sees the exchange end
            # Its slot is free again: the only allowed connection can be opened anew.
            assert await body_of(await client.send(server.url, [], b"{}")) == b"{}"
        assert server.connections == 2
    finally:
        await client.close()


async def test_an_idle_connection_to_one_region_makes_room_for_another() -> None:
    client = make_client("h1", max_connections=1, per_region=1)
    try:
        async with RawServer(keep_alive_ok) as first, RawServer(keep_alive_ok) as second:
            assert await body_of(await client.send(first.url, [], b"{}")) == b"{}"
            # The one allowed connection idles, kept alive to `first`: it is closed, not waited on.
            assert await body_of(await client.send(second.url, [], b"{}")) == b"{}"
            assert await body_of(await client.send(first.url, [], b"{}")) == b"{}"
        assert (first.connections, second.connections) == (2, 1)
    finally:
        await client.close()
