"""CoalescingTransport: a response's header block and body leave in one write, nothing is lost."""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.http.protocol import CoalescingTransport


class _RecordingTransport:
    """Stands in for the event loop's socket transport; records what reaches the socket."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.aborted = False
        self.eof = False

    def write(self, data: bytes) -> None:
        assert not self.closed, "write after close"
        self.writes.append(bytes(data))

    def write_eof(self) -> None:
        self.eof = True

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def get_write_buffer_size(self) -> int:
        return 7

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 5000)}.get(name, default)


def _run(scenario: Any) -> _RecordingTransport:
    async def main() -> _RecordingTransport:
        raw = _RecordingTransport()
        await scenario(CoalescingTransport(raw, asyncio.get_running_loop()), raw)  # type: ignore[arg-type]
        return raw

    return asyncio.run(main())


def test_header_block_and_body_leave_in_one_write() -> None:
    async def scenario(transport: CoalescingTransport, raw: _RecordingTransport) -> None:
        transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        assert raw.writes == []  # held until the body or the end of this turn
        transport.write(b"ok")
        assert raw.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"]
        await asyncio.sleep(0)
        assert len(raw.writes) == 1  # the end of the turn finds nothing held

    _run(scenario)


def test_a_lone_write_leaves_at_the_end_of_the_turn() -> None:
    async def scenario(transport: CoalescingTransport, raw: _RecordingTransport) -> None:
        transport.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        assert transport.get_write_buffer_size() == 7 + 47
        await asyncio.sleep(0)
        assert raw.writes == [b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"]
        transport.write(memoryview(b"5\r\nhello\r\n"))
        await asyncio.sleep(0)
        assert raw.writes[1:] == [b"5\r\nhello\r\n"]
        assert transport.get_extra_info("peername") == ("127.0.0.1", 5000)

    _run(scenario)


def test_close_and_eof_send_what_is_held_and_abort_drops_it() -> None:
    async def closing(transport: CoalescingTransport, raw: _RecordingTransport) -> None:
        transport.writelines([b"HTTP/1.1 500 ", b"Internal Server Error\r\n\r\n"])
        transport.write(b"bye")
        transport.close()
        assert raw.closed
        await asyncio.sleep(0)

    raw = _run(closing)
    assert b"".join(raw.writes) == b"HTTP/1.1 500 Internal Server Error\r\n\r\nbye"

    async def eof(transport: CoalescingTransport, raw: _RecordingTransport) -> None:
        transport.write(b"last")
        transport.write_eof()
        assert raw.writes == [b"last"] and raw.eof

    _run(eof)

    async def aborting(transport: CoalescingTransport, raw: _RecordingTransport) -> None:
        transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
        transport.abort()
        await asyncio.sleep(0)
        assert raw.writes == [] and raw.aborted

    _run(aborting)
