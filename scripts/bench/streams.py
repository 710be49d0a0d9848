"""SSE streaming probe: time to first token and each chunk's transit through a path.

The fake upstream stamps every event with its CLOCK_MONOTONIC write time (`"t": ns`); the
client notes when each event arrived, so transit = arrival - stamp, per chunk, on one clock.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from dataclasses import dataclass, field
from typing import Any

from bench.loadgen import FAILED, OK, _Conn, _Pool, percentile

_EVENT_TIME = re.compile(rb'"t":(\d+)')


@dataclass
class StreamStats:
    """Per stream: time to first token and mean gap; per chunk: transit time (all in ns)."""

    ttft: list[int] = field(default_factory=list)
    gaps: list[float] = field(default_factory=list)
    transit: list[int] = field(default_factory=list)
    errors: int = 0
    chunks_expected: int = 0

    def summary(self) -> dict[str, Any]:
        """Milliseconds, rounded."""
        ttft, gaps, transit = sorted(self.ttft), sorted(self.gaps), sorted(self.transit)
        return {
            "streams": len(ttft),
            "errors": self.errors,
            "ttft_p50_ms": round(percentile(ttft, 50) / 1e6, 4),
            "ttft_p99_ms": round(percentile(ttft, 99) / 1e6, 4),
            "chunk_transit_p50_ms": round(percentile(transit, 50) / 1e6, 4),
            "chunk_transit_p99_ms": round(percentile(transit, 99) / 1e6, 4),
            "chunk_gap_mean_ms": round(sum(gaps) / len(gaps) / 1e6, 4) if gaps else math.nan,
        }


class StreamClient(_Pool):
    """One connection, one SSE stream at a time; times every event against its upstream stamp."""

    def __init__(self, port: int, payload: bytes, chunks: int) -> None:
        super().__init__(port, payload)
        self.result = StreamStats(chunks_expected=chunks)
        self._buffer = b""
        self._arrivals: list[int] = []
        self._stamps: list[int] = []
        self._status: asyncio.Future[int] | None = None

    def _on_body(self, data: bytes) -> None:
        now = time.monotonic_ns()
        self._buffer += data
        *events, self._buffer = self._buffer.split(b"\n\n")
        for event in events:
            match = _EVENT_TIME.search(event)
            if match:
                self._stamps.append(int(match.group(1)))
                self._arrivals.append(now)

    def completed(self, conn: _Conn, status: int) -> None:
        if self._status is not None and not self._status.done():
            self._status.set_result(status)

    async def run(self, count: int) -> StreamStats:
        """Run `count` streams one after another."""
        conn = await self.open()
        conn.body_sink = self._on_body
        try:
            for _ in range(count):
                if conn.closed:
                    conn = await self.open()
                    conn.body_sink = self._on_body
                await self._one(conn)
        finally:
            self.close()
        return self.result

    async def _one(self, conn: _Conn) -> None:
        self._buffer, self._arrivals, self._stamps = b"", [], []
        self._status = asyncio.get_running_loop().create_future()
        sent = time.monotonic_ns()
        conn.send(self.payload, 0.0)
        try:
            status = await asyncio.wait_for(self._status, 30.0)
        except TimeoutError:
            status = FAILED
            if conn.transport is not None:
                conn.transport.abort()
        arrivals, stamps = self._arrivals, self._stamps
        if status != OK or len(stamps) != self.result.chunks_expected:
            self.result.errors += 1
            return
        self.result.ttft.append(arrivals[0] - sent)
        self.result.transit.extend(a - s for a, s in zip(arrivals, stamps, strict=True))
        if len(arrivals) > 1:
            self.result.gaps.append((arrivals[-1] - arrivals[0]) / (len(arrivals) - 1))
