"""uvicorn's httptools protocol with a response's header block and first body bytes written in
one `send()` system call instead of two.

uvicorn writes the status line and headers as soon as the app sends `http.response.start`, and
the body with each `http.response.body`. A `send()` on loopback that wakes the peer costs ~30 µs
of CPU on this hardware (py-spy: ~13% of the event loop's samples were these writes), and a
proxied answer is mostly one header block and one body chunk (`gateway.http.relay` sends them
back to back). So a write is held until the next one or the end of the event-loop turn,
whichever comes first, and the two leave together. A stream's header block still leaves in the
turn it was sent, and every later write is written at once.

The protocol also bounds what one client connection may cost (`gateway.http.limits`): the size
and arrival time of the request header block (431, 408), the gap between request body chunks
(408), and the number of open connections per worker (503). Those answers, and the answer to
malformed HTTP (400), carry the gateway's JSON error shape and close the connection.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any

import httptools
import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from gateway.http import limits as http_limits
from gateway.http.asgi import openai_error

logger = logging.getLogger(__name__)


class CoalescingTransport:
    """A transport that holds one write until the next write or the end of the loop turn."""

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Write `data`, together with a held write if there is one; else hold it this turn."""
        held = self._held
        if held is None:
            self._held = bytes(data)
            self._loop.call_soon(self.flush)
            return
        self._held = None
        self._transport.write(held + data)

    def writelines(self, chunks: Any) -> None:
        """Write several chunks (as `write`)."""
        for chunk in chunks:
            self.write(chunk)

    def flush(self) -> None:
        """Write a held write now."""
        held = self._held
        if held is not None:
            self._held = None
            if not self._transport.is_closing():
                self._transport.write(held)

    def write_eof(self) -> None:
        """Flush, then half-close."""
        self.flush()
        self._transport.write_eof()

    def close(self) -> None:
        """Flush, then close (as `Transport.close`, written data is still sent)."""
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        """Close at once, dropping a held write."""
        self._held = None
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        """Bytes held here and buffered in the underlying transport."""
        held = len(self._held) if self._held is not None else 0
        return held + self._transport.get_write_buffer_size()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


CAP_WARNING_INTERVAL = 10.0
_cap_warned_at = float("-inf")


def _warn_at_cap(cap: int) -> None:
    """Log that connections are being refused, at most every CAP_WARNING_INTERVAL seconds."""
    global _cap_warned_at
    now = time.monotonic()
    if now - _cap_warned_at >= CAP_WARNING_INTERVAL:
        _cap_warned_at = now
        logger.warning("refusing new connections: %d are open (GATEWAY_MAX_CONNECTIONS)", cap)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools HTTP/1.1 protocol over a `CoalescingTransport`, with limits.

    A request's header block is counted in raw bytes as they are fed to the parser (httptools
    itself buffers a header without bound), so no more than the limit is ever parsed or held.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._limits = http_limits.current()
        self._header_budget = self._limits.max_header_bytes
        self._reading_headers = True  # the next bytes belong to a request's header block
        self._headers_seen = 0
        self._request_begun = False
        self._last_body = 0.0
        self._header_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._linger_timer: asyncio.TimerHandle | None = None
        self._rejected = False  # answered with an error: input is read and discarded

    # -- connection ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]
        cap = self._limits.max_connections
        count = len(self.connections)
        if count > cap:
            _warn_at_cap(cap)
            # Lingering (so that the 503 is read, not lost to a reset) holds the descriptor a
            # little longer: only a bounded number of refusals may do it at once.
            linger = count <= cap + http_limits.REFUSAL_LINGER_SLOTS
            self._reject(
                503,
                f"the gateway is at its limit of {cap} open connections; retry later",
                "too_many_connections",
                error_type="server_error",
                headers=[(b"retry-after", b"1")],
                linger=linger,
            )
            return
        self._header_timer = self.loop.call_later(
            self._limits.header_timeout, self._header_timed_out
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        if self._linger_timer is not None:
            self._linger_timer.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._rejected:
            return  # lingering before close: input is discarded unparsed
        self._unset_keepalive_if_required()
        while self._reading_headers and len(data) > self._header_budget:
            head, data = data[: self._header_budget], data[self._header_budget :]
            self._header_budget = 0
            seen = self._headers_seen
            if not self._feed(head):
                return
            if self._headers_seen == seen:  # the block did not end within the limit
                limit = self._limits.max_header_bytes
                self._reject(
                    431,
                    f"request header block (request line and headers) exceeds the limit "
                    f"of {limit} bytes",
                    "request_headers_too_large",
                )
                return
        if self._reading_headers:
            self._header_budget -= len(data)
        if data:
            self._feed(data)

    def _feed(self, data: bytes) -> bool:
        """Parse `data`; False once the connection was rejected (malformed HTTP)."""
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
        except httptools.HttpParserError as exc:
            self._reject(400, f"malformed HTTP request: {exc}", "invalid_http_request")
        return not self._rejected

    def send_400_response(self, msg: str) -> None:
        """uvicorn's plain-text 400, in the gateway's JSON error shape."""
        self._reject(400, f"malformed HTTP request: {msg}", "invalid_http_request")

    # -- parser callbacks -----------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._request_begun = True
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(
                self._limits.header_timeout, self._header_timed_out
            )

    def on_headers_complete(self) -> None:
        self._headers_seen += 1
        self._reading_headers = False
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        super().on_headers_complete()
        self._last_body = self.loop.time()
        self._body_timer = self.loop.call_later(
            self._limits.body_idle_timeout, self._body_timed_out
        )

    def on_body(self, body: bytes) -> None:
        self._last_body = self.loop.time()
        super().on_body(body)

    def on_message_complete(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        self._reading_headers = True
        self._header_budget = self._limits.max_header_bytes
        super().on_message_complete()

    # -- timeouts -------------------------------------------------------------------------

    def _header_timed_out(self) -> None:
        self._header_timer = None
        if self._rejected or self.transport.is_closing():
            return
        if self.flow.read_paused:  # not reading is our doing (pipelining): wait again
            self._header_timer = self.loop.call_later(
                self._limits.header_timeout, self._header_timed_out
            )
        elif not self._request_begun:
            self.transport.close()  # a connection that never sent a byte: nothing to answer
        else:
            timeout = self._limits.header_timeout
            self._reject(
                408,
                f"request header block not received within {timeout:g} seconds",
                "request_timeout",
            )

    def _body_timed_out(self) -> None:
        self._body_timer = None
        if self._rejected or self.transport.is_closing():
            return
        timeout = self._limits.body_idle_timeout
        idle = self.loop.time() - self._last_body
        cycle = self.cycle
        if self.flow.read_paused or (cycle is not None and cycle.waiting_for_100_continue):
            # The app has not asked for (more of) the body yet: the wait is not the client's.
            self._last_body = self.loop.time()
            idle = 0.0
        if idle < timeout:
            self._body_timer = self.loop.call_later(timeout - idle, self._body_timed_out)
        elif cycle is None or cycle.response_complete:
            self.transport.close()  # answered already (e.g. 413): drop the rest of the upload
        else:
            self._reject(
                408, f"request body stalled: no data for {timeout:g} seconds", "request_timeout"
            )

    def _cancel_timers(self) -> None:
        for timer in (self._header_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._header_timer = self._body_timer = None

    # -- rejection ------------------------------------------------------------------------

    def _reject(
        self,
        status: int,
        message: str,
        code: str,
        *,
        error_type: str = "invalid_request_error",
        headers: Iterable[tuple[bytes, bytes]] = (),
        linger: bool = True,
    ) -> None:
        """Answer `status` with a JSON error, stop parsing, and close the connection.

        While answers to earlier (pipelined) requests are still due, no answer can be framed
        for this one: those are sent, then the connection closes. If this request's answer has
        begun, or requests are queued behind it, the connection is closed at once.
        """
        if self._rejected:
            return
        self._rejected = True
        self._cancel_timers()
        cycle = self.cycle
        pending = cycle is not None and not cycle.response_complete
        if cycle is not None and pending and self._reading_headers:
            cycle.keep_alive = False  # uvicorn closes the connection after that answer
            self.flow.pause_reading()
            return
        if cycle is not None and pending:
            cycle.disconnected = True  # the app's answer, if any, is dropped
            cycle.message_event.set()
            if self.pipeline or cycle.response_started:
                self.transport.close()
                return
        payload = orjson.dumps(openai_error(message, error_type, code))
        lines = [STATUS_LINE[status]]
        for name, value in [
            *self.server_state.default_headers,
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode()),
            (b"connection", b"close"),
            *headers,
        ]:
            lines += [name, b": ", value, b"\r\n"]
        lines += [b"\r\n", payload]
        self.transport.write(b"".join(lines))
        if not linger or not self.transport.can_write_eof():
            self.transport.close()
            return
        # Half-close and read (discarding) until the client closes or LINGER_SECONDS pass:
        # closing with unread input would send a reset that can destroy the answer.
        self.flow.resume_reading()
        self.transport.write_eof()
        self._linger_timer = self.loop.call_later(http_limits.LINGER_SECONDS, self.transport.close)
