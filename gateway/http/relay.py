"""Relaying a region's answer to the client: unbuffered, durable before the end, abandonable."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from gateway.http.asgi import RawHeaders, Receive, Scope, Send
from gateway.http.upstream import UpstreamError, UpstreamResponse
from gateway.intake import RequestRejected


class NothingRelayed(Exception):
    """The region broke off before any byte of its answer reached the client."""

    def __init__(self, error: UpstreamError) -> None:
        super().__init__(error.detail)
        self.error = error


async def read_body(receive: Receive, limit: int) -> bytes:
    """Read the whole request body, refusing more than `limit` bytes with 413."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise RequestRejected(
                400, "client disconnected before sending the body", "disconnected"
            )
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise RequestRejected(
                413, f"request body exceeds the limit of {limit} bytes", "request_too_large"
            )
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def declared_length(scope: Scope) -> int | None:
    for key, value in scope["headers"]:
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def relay(
    send: Send,
    response: UpstreamResponse,
    headers: RawHeaders,
    before_end: Callable[[float, int], Awaitable[None]],
) -> float:
    """Pass status, headers and body chunks through as they arrive, unbuffered.

    `before_end(first_chunk_at, body_bytes)` runs before the message completing the body (the
    routing record is made durable there: no client holds a complete answer whose record could
    still be lost).
    An answer of known length is held until its first chunk: if that is the whole body (the
    usual case), start and body are sent back to back after `before_end`, and the server
    writes them in one go (gateway.http.protocol). If the region breaks off before that first
    chunk, NothingRelayed says the client has received nothing (another region may answer).
    Returns when the first body chunk arrived (perf_counter seconds).
    """
    length = next((int(v) for k, v in response.headers if k == b"content-length"), None)
    start = {
        "type": "http.response.start",
        "status": response.status,
        "headers": [*response.headers, *headers],
    }
    first = b""
    first_chunk_at = 0.0
    if length is not None:
        try:
            first = await response.read()
        except UpstreamError as exc:
            raise NothingRelayed(exc) from None
        first_chunk_at = time.perf_counter()
        if len(first) == length:
            await before_end(first_chunk_at, length)
            await send(start)
            await send({"type": "http.response.body", "body": first, "more_body": False})
            return first_chunk_at
    await send(start)
    sent = len(first)
    if first:
        await send({"type": "http.response.body", "body": first, "more_body": True})
    while chunk := await response.read():
        if not sent:
            first_chunk_at = time.perf_counter()
        sent += len(chunk)
        if sent == length:  # the known last chunk closes the response in one message
            await before_end(first_chunk_at, sent)
            await send({"type": "http.response.body", "body": chunk, "more_body": False})
            return first_chunk_at
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    first_chunk_at = first_chunk_at or time.perf_counter()
    await before_end(first_chunk_at, sent)
    await send({"type": "http.response.body", "body": b"", "more_body": False})
    return first_chunk_at


class ClientWatch:
    """Cancels the forwarding task when the client disconnects while it is armed.

    Whatever the task awaits then (a region's headers, a body chunk, a write to the client)
    raises CancelledError; the upstream exchange is abandoned, which closes its connection.
    The watch is disarmed before a routing record is written, so a record is never cut off.
    A watcher task starts only once forwarding has taken `after` seconds: quick answers
    cost nothing, and the ASGI server drops writes to a closed connection silently.
    """

    __slots__ = ("_receive", "_task", "_timer", "_watcher", "armed", "left")

    def __init__(self, receive: Receive, after: float = 0.01) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._task = task
        self._receive = receive
        self._watcher: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = asyncio.get_running_loop().call_later(
            after, self._start
        )
        self.armed = True
        self.left = False

    def _start(self) -> None:
        self._timer = None
        if self.armed:
            self._watcher = asyncio.ensure_future(self._watch())

    async def _watch(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass
        if self.armed:
            self.armed = False
            self.left = True
            self._task.cancel()

    def disarm(self) -> None:
        """From here on the task finishes what it does, client or not."""
        self.armed = False

    def client_left(self) -> bool:
        """In an `except CancelledError`: True if the client leaving caused it (absorbed)."""
        if not self.left:
            return False
        self.left = False
        self._task.uncancel()
        return True

    def close(self) -> None:
        """Stop watching."""
        self.armed = False
        if self._timer is not None:
            self._timer.cancel()
        if self._watcher is not None:
            self._watcher.cancel()
