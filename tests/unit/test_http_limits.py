"""The HTTP protocol's limits, served over real loopback sockets in this process."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

import httptools
import orjson
import pytest
import uvicorn
from uvicorn.server import ServerState

from gateway.http import limits as http_limits
from gateway.http.asgi import Receive, Scope, Send, send_json
from gateway.http.limits import HttpLimits, connection_cap
from gateway.http.protocol import CoalescingHttpToolsProtocol

HEADER_LIMIT = 256


async def _echo_length(scope: Scope, receive: Receive, send: Send) -> None:
    """Answers every request with the length of its body."""
    if scope["type"] != "http":
        return
    size, more = 0, True
    while more:
        message = await receive()
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    await send_json(send, 200, {"path": scope["path"], "size": size})


@pytest.fixture
def limits() -> Iterator[HttpLimits]:
    chosen = HttpLimits(
        max_header_bytes=HEADER_LIMIT, header_timeout=5, body_idle_timeout=5, max_connections=2
    )
    before = http_limits.current()
    http_limits.configure(chosen)
    yield chosen
    http_limits.configure(before)


@contextlib.asynccontextmanager
async def _server() -> AsyncIterator[int]:
    """The gateway's protocol serving `_echo_length` on a loopback port; yields the port."""
    config = uvicorn.Config(_echo_length, lifespan="off", log_level="warning")
    config.load()
    state = ServerState()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: CoalescingHttpToolsProtocol(config, state, {}, _loop=loop), "127.0.0.1", 0
    )
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for connection in list(state.connections):
            connection.shutdown()
        await server.wait_closed()


class _Responses:
    """Every response on one connection, parsed with httptools."""

    def __init__(self) -> None:
        self.statuses: list[int] = []
        self.bodies: list[bytes] = []
        self._parser = httptools.HttpResponseParser(self)

    def on_message_begin(self) -> None:
        self.bodies.append(b"")

    def on_body(self, body: bytes) -> None:
        self.bodies[-1] += body

    def on_message_complete(self) -> None:
        self.statuses.append(self._parser.get_status_code())

    async def read_until_closed(self, reader: asyncio.StreamReader) -> _Responses:
        while data := await asyncio.wait_for(reader.read(65536), 10):
            self._parser.feed_data(data)
        return self


def _get(path: str, header_block: int | None = None, *, close: bool = True) -> bytes:
    connection = b"close" if close else b"keep-alive"
    head = b"GET " + path.encode() + b" HTTP/1.1\r\nConnection: " + connection + b"\r\nX-Pad: "
    tail = b"\r\n\r\n"
    pad = 0 if header_block is None else header_block - len(head) - len(tail)
    return head + b"p" * pad + tail


async def _exchange(port: int, *writes: bytes) -> _Responses:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for data in writes:
        writer.write(data)
        await writer.drain()
    try:
        return await _Responses().read_until_closed(reader)
    finally:
        writer.close()


async def test_header_block_is_counted_in_raw_bytes_whatever_the_reads(limits: HttpLimits) -> None:
    at_limit = _get("/a", HEADER_LIMIT)
    over = _get("/b", HEADER_LIMIT + 1)
    async with _server() as port:
        served = await _exchange(port, *(at_limit[i : i + 1] for i in range(len(at_limit))))
        refused = await _exchange(port, over[:100], over[100:])
    assert served.statuses == [200]
    assert refused.statuses == [431]
    error = orjson.loads(refused.bodies[0])["error"]
    assert error["code"] == "request_headers_too_large"


async def test_pipelined_requests_are_answered_then_an_oversized_one_closes(
    limits: HttpLimits,
) -> None:
    post = b"POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc"
    async with _server() as port:
        # Bytes after a message ends within one read are not counted against the next one
        # (the parser does not say where it ended): a pipelined header block is refused once
        # it exceeds twice the limit.
        oversized = _get("/3", 2 * HEADER_LIMIT + 1)
        responses = await _exchange(port, _get("/1", close=False) + post + oversized)
    # The third request cannot be answered before the first two: they are sent, then the
    # connection closes.
    assert responses.statuses == [200, 200]
    assert [orjson.loads(body) for body in responses.bodies] == [
        {"path": "/1", "size": 0},
        {"path": "/p", "size": 3},
    ]


async def test_connections_beyond_the_cap_get_503(limits: HttpLimits) -> None:
    async with _server() as port:
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        refused = await _exchange(port, _get("/x"))
        for _, writer in held:
            writer.close()
            await writer.wait_closed()
        for _ in range(100):  # the server sees the closes a little later
            served = await _exchange(port, _get("/y"))
            if served.statuses != [503]:
                break
            await asyncio.sleep(0.02)
    assert refused.statuses == [503]
    assert orjson.loads(refused.bodies[0])["error"]["code"] == "too_many_connections"
    assert served.statuses == [200]


@pytest.mark.parametrize(
    ("wanted", "upstream", "open_files", "cap"),
    [
        (10_000, 1024, 1_048_576, 10_000),  # plenty of descriptors
        (10_000, 1024, 8192, 8192 - 256 - 64 - 1024),  # lowered to fit
        (10_000, 1024, 1024, (1024 - 256 - 64) // 2),  # few: half for clients, half upstream
        (10_000, 1024, 100, 1),
    ],
)
def test_connection_cap_fits_the_open_files_limit(
    wanted: int, upstream: int, open_files: int, cap: int
) -> None:
    assert connection_cap(wanted, upstream, open_files) == cap
