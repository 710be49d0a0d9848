"""The lean HTTP/1.1 upstream client against small real servers speaking raw HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from gateway.upstream import FailureKind, UpstreamError, UpstreamResponse, UpstreamTimeouts
from gateway.upstream_h1 import H1Upstream

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
