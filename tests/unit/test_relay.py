"""relay(): what reaches the client, in which order, and when the record is made durable."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway.http.relay import NothingRelayed, relay
from gateway.http.upstream import FailureKind, UpstreamError


class _Answer:
    """A region's answer: headers, then body chunks (an exception breaks it off)."""

    def __init__(self, headers: list[tuple[bytes, bytes]], chunks: list[bytes | Exception]):
        self.status = 200
        self.headers = headers
        self._chunks = list(chunks)

    async def read(self) -> bytes:
        if not self._chunks:
            return b""
        chunk = self._chunks.pop(0)
        if isinstance(chunk, Exception):
            raise chunk
        return chunk


def _relay(
    answer: _Answer, relayed: list[int] | None = None
) -> tuple[list[Any], BaseException | None]:
    events: list[Any] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            events.append(("start", message["status"]))
        else:
            events.append(("body", message["body"], message["more_body"]))

    class Meter:
        def relayed(self, first_byte_at: float, size: int) -> None:
            assert first_byte_at > 0
            if relayed is not None:
                relayed.append(size)

    async def before_end() -> None:
        events.append("durable")

    async def main() -> BaseException | None:
        try:
            await relay(
                send, answer, [(b"x-residency-region", b"eu-frankfurt")], before_end, Meter()
            )  # type: ignore[arg-type]
        except Exception as exc:
            return exc
        return None

    return events, asyncio.run(main())


def test_a_one_chunk_answer_is_durable_before_start_and_body_go_back_to_back() -> None:
    events, error = _relay(_Answer([(b"content-length", b"5")], [b"hello"]))
    assert error is None
    assert events == ["durable", ("start", 200), ("body", b"hello", False)]


@pytest.mark.parametrize(
    ("headers", "chunks"),
    [
        ([(b"content-length", b"5")], [b"hello"]),
        ([(b"content-length", b"6")], [b"abc", b"def"]),
        ([], [b"data: 1\n\n", b"data: 2\n\n", b""]),
    ],
)
def test_the_record_hook_gets_the_body_bytes_relayed(
    headers: list[tuple[bytes, bytes]], chunks: list[bytes]
) -> None:
    relayed: list[int] = []
    _, error = _relay(_Answer(headers, list(chunks)), relayed)
    assert error is None
    assert relayed == [sum(len(c) for c in chunks)]


def test_a_chunked_answer_of_known_length_is_relayed_as_it_arrives() -> None:
    events, error = _relay(_Answer([(b"content-length", b"6")], [b"abc", b"def"]))
    assert error is None
    assert events == [
        ("start", 200),
        ("body", b"abc", True),
        "durable",
        ("body", b"def", False),
    ]


def test_a_stream_starts_before_its_first_chunk() -> None:
    events, error = _relay(_Answer([(b"content-type", b"text/event-stream")], [b"data: 1\n\n"]))
    assert error is None
    assert events == [
        ("start", 200),
        ("body", b"data: 1\n\n", True),
        "durable",
        ("body", b"", False),
    ]


def test_a_region_failing_before_any_byte_leaves_the_client_untouched() -> None:
    broken = UpstreamError(FailureKind.PROTOCOL, "connection reset")
    events, error = _relay(_Answer([(b"content-length", b"5")], [broken]))
    assert events == []
    assert isinstance(error, NothingRelayed)
    assert error.error is broken


def test_a_break_after_bytes_reached_the_client_is_the_regions_error() -> None:
    broken = UpstreamError(FailureKind.TIMEOUT, "no body bytes within read timeout")
    events, error = _relay(_Answer([(b"content-length", b"6")], [b"abc", broken]))
    assert events == [("start", 200), ("body", b"abc", True)]
    assert error is broken


@pytest.mark.parametrize("length", [b"0"])
def test_an_empty_answer_is_durable_then_complete(length: bytes) -> None:
    events, error = _relay(_Answer([(b"content-length", length)], []))
    assert error is None
    assert events == ["durable", ("start", 200), ("body", b"", False)]
