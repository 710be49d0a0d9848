"""A fast fake OpenAI-compatible upstream for the gateway benchmark (raw uvloop + httptools).

The full region simulator (aiohttp) would be the bottleneck; this answers in microseconds:
- `GET /healthz` -> 200;
- `POST` with `"stream": true` in the body -> SSE, `--chunks` events `--chunk-interval-ms` apart,
  each carrying `"t": <CLOCK_MONOTONIC ns when written>` so a client can time each chunk's transit;
- any other `POST` -> a fixed small chat-completion JSON body.

Run: `python scripts/bench/upstream.py --port P [--chunks 64] [--chunk-interval-ms 1]`.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import time
from typing import cast

import httptools
import uvloop

COMPLETION = (
    b'{"id":"chatcmpl-bench","object":"chat.completion","created":0,"model":"gpt-4o-mini",'
    b'"choices":[{"index":0,"message":{"role":"assistant","content":"ok"},'
    b'"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}'
)


def _response(status: bytes, body: bytes) -> bytes:
    return (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


JSON_RESPONSE = _response(b"200 OK", COMPLETION)
HEALTH_RESPONSE = _response(b"200 OK", b'{"status":"ok"}')
NOT_FOUND = _response(b"404 Not Found", b'{"error":{"message":"not found"}}')
SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)
_EVENT = (
    b'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":0,'
    b'"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":"tok"}}],"t":%d}\n\n'
)
_DONE = b"data: [DONE]\n\n"


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _event() -> bytes:
    return _chunk(_EVENT % time.monotonic_ns())


class UpstreamProtocol(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; requests are answered in order (no pipelining)."""

    chunks = 64
    interval = 0.001

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        transport = self.transport
        assert transport is not None
        url, body = self.url, b"".join(self.body)
        self.url, self.body = b"", []
        keep_alive = self.parser.should_keep_alive()
        if url.startswith(b"/healthz"):
            transport.write(HEALTH_RESPONSE)
        elif not url.startswith(b"/v1/"):
            transport.write(NOT_FOUND)
        elif b'"stream":true' in body.replace(b" ", b""):
            asyncio.get_running_loop().create_task(self._stream(transport, keep_alive))
            return
        else:
            transport.write(JSON_RESPONSE)
        if not keep_alive:
            transport.close()

    async def _stream(self, transport: asyncio.Transport, keep_alive: bool) -> None:
        transport.write(SSE_HEAD + _event())
        for _ in range(self.chunks - 1):
            await asyncio.sleep(self.interval)
            if transport.is_closing():
                return
            transport.write(_event())
        transport.write(_chunk(_DONE) + b"0\r\n\r\n")
        if not keep_alive:
            transport.close()


async def serve(host: str, port: int) -> None:
    """Serve until SIGTERM/SIGINT."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(UpstreamProtocol, host, port, backlog=4096)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"upstream listening on {host}:{port}", flush=True)
    await stop.wait()
    server.close()


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--chunks", type=int, default=64, help="SSE events per stream")
    parser.add_argument("--chunk-interval-ms", type=float, default=1.0)
    args = parser.parse_args()
    UpstreamProtocol.chunks = max(1, args.chunks)
    UpstreamProtocol.interval = args.chunk_interval_ms / 1000.0
    uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
