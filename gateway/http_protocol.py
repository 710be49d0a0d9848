"""uvicorn's httptools protocol with a response's header block and first body bytes written in
one `send()` system call instead of two.

uvicorn writes the status line and headers as soon as the app sends `http.response.start`, and
the body with each `http.response.body`. A `send()` on loopback that wakes the peer costs ~30 µs
of CPU on this hardware (py-spy: ~13% of the event loop's samples were these writes), and a
proxied answer is mostly one header block and one body chunk (`gateway.relay` sends them back to
back). So a write is held until the next one or the end of the event-loop turn, whichever comes
first, and the two leave together. A stream's header block still leaves in the turn it was sent,
and every later write is written at once.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


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


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools HTTP/1.1 protocol over a `CoalescingTransport`."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]
