"""Raw asyncio HTTP/1.1 load generation: open loop at a fixed rate, closed loop, SSE streams.

Open loop (no coordinated omission): a ticker thread releases request i at `start + i / rate`
whatever the responses do, and latency runs from that scheduled time, so a server stall is
charged to every request scheduled during it. A released request takes an idle keep-alive
connection or opens another (never waits for one in flight). The ticker sleeps with
clock_nanosleep (`time.sleep`), not the event loop's millisecond timers; how late each send
went out is recorded as the generator's own lag.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import math
import sys
import threading
import time
from array import array
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import httptools

OK = 200
FAILED = -1  # connection lost or unparsable response


def build_request(path: str, port: int, headers: dict[str, str], body: bytes) -> bytes:
    """The bytes of one keep-alive POST request."""
    lines = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def percentile(values: Any, q: float) -> float:
    """Nearest-rank percentile of a sorted sequence (q in 0..100); NaN when empty."""
    if not values:
        return math.nan
    return float(values[min(len(values) - 1, max(0, math.ceil(q / 100 * len(values)) - 1))])


@dataclass
class Stats:
    """Outcome of one run; latencies and lags in seconds."""

    scheduled: int = 0
    latencies: array[float] = field(default_factory=lambda: array("d"))
    lags: array[float] = field(default_factory=lambda: array("d"))
    errors: int = 0
    lost: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    elapsed: float = 0.0
    connections: int = 0

    def summary(self) -> dict[str, Any]:
        """Milliseconds, rounded; `failed` = errors + lost (must be 0)."""
        lat = sorted(self.latencies)
        lags = sorted(self.lags)
        ms = {f"p{q:g}_ms".replace(".", "_"): percentile(lat, q) * 1e3 for q in (50, 90, 99, 99.9)}
        return {
            "scheduled": self.scheduled,
            "ok": len(lat),
            "errors": self.errors,
            "lost": self.lost,
            "failed": self.errors + self.lost,
            "statuses": {str(k): v for k, v in self.statuses.items()},
            **{k: round(v, 4) for k, v in ms.items()},
            "max_ms": round(lat[-1] * 1e3, 4) if lat else math.nan,
            "mean_ms": round(sum(lat) / len(lat) * 1e3, 4) if lat else math.nan,
            "achieved_rps": round(len(lat) / self.elapsed, 1) if self.elapsed else 0.0,
            "generator_lag_p50_ms": round(percentile(lags, 50) * 1e3, 4),
            "generator_lag_p99_ms": round(percentile(lags, 99) * 1e3, 4),
            "connections": self.connections,
        }


class _Conn(asyncio.Protocol):
    """One client connection; reports each complete response to its pool."""

    def __init__(self, pool: _Pool) -> None:
        self.pool = pool
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.due = 0.0
        self.busy = False
        self.closed = False
        self.body_sink: Callable[[bytes], None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._abort()

    def on_body(self, body: bytes) -> None:  # httptools binds callbacks when the parser is made
        if self.body_sink is not None:
            self.body_sink(body)

    def on_message_complete(self) -> None:
        self.busy = False
        if not self.parser.should_keep_alive():
            self.closed = True
            assert self.transport is not None
            self.transport.close()
        self.pool.completed(self, self.parser.get_status_code())

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.conns.discard(self)
        if self.busy:
            self.busy = False
            self.pool.completed(self, FAILED)

    def _abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def send(self, payload: bytes, due: float) -> None:
        assert self.transport is not None
        self.busy = True
        self.due = due
        self.transport.write(payload)


class _Pool:
    def __init__(self, port: int, payload: bytes) -> None:
        self.port = port
        self.payload = payload
        self.conns: set[_Conn] = set()
        self.stats = Stats()
        self.finished = 0
        self.done = asyncio.Event()

    async def open(self) -> _Conn:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(lambda: _Conn(self), "127.0.0.1", self.port)
        self.conns.add(conn)
        self.stats.connections += 1
        return conn

    def record(self, conn: _Conn, status: int, now: float) -> None:
        if status == OK:
            self.stats.latencies.append(now - conn.due)
        else:
            self.stats.errors += 1
            self.stats.statuses[status] += 1
        self.finished += 1
        if self.finished >= self.stats.scheduled:
            self.done.set()

    def completed(self, conn: _Conn, status: int) -> None:
        raise NotImplementedError

    def close(self) -> None:
        for conn in list(self.conns):
            if conn.transport is not None:
                conn.transport.close()


def _tight_timer_slack() -> None:
    """1 us timer slack for this thread (default 50 us), so sends leave on time."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(29, 1000, 0, 0, 0)  # PR_SET_TIMERSLACK, nanoseconds


def _tick(
    loop: asyncio.AbstractEventLoop,
    fire: Callable[[float], None],
    start: float,
    rate: float,
    count: int,
    stop: threading.Event,
) -> None:
    _tight_timer_slack()
    for i in range(count):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        if stop.is_set():
            return
        loop.call_soon_threadsafe(fire, due)


class OpenLoop(_Pool):
    """Sends at a fixed rate for a fixed time, independent of responses."""

    def __init__(self, port: int, payload: bytes, max_connections: int = 4096) -> None:
        super().__init__(port, payload)
        self.idle: deque[_Conn] = deque()
        self.backlog: deque[float] = deque()
        self.opening = 0
        self.max_connections = max_connections

    async def run(self, rate: float, duration: float, preopen: int = 32) -> Stats:
        """Offer `rate` req/s for `duration` s; wait at most 10 s more for stragglers."""
        sys.setswitchinterval(0.0002)  # let the ticker thread take the GIL promptly
        for _ in range(preopen):
            self.idle.append(await self.open())
        self.stats.scheduled = count = max(1, round(rate * duration))
        loop = asyncio.get_running_loop()
        stop = threading.Event()
        start = time.perf_counter() + 0.02
        ticker = threading.Thread(
            target=_tick, args=(loop, self._fire, start, rate, count, stop), daemon=True
        )
        ticker.start()
        try:
            await asyncio.wait_for(self.done.wait(), duration + 10.0)
        except TimeoutError:
            pass
        finally:
            stop.set()
            await asyncio.to_thread(ticker.join)
            self.stats.elapsed = time.perf_counter() - start
            self.stats.lost = count - self.finished
            self.close()
        return self.stats

    def _fire(self, due: float) -> None:
        while self.idle:
            conn = self.idle.popleft()  # FIFO keeps every pooled connection warm
            if not conn.closed:
                self._send(conn, due)
                return
        if len(self.conns) + self.opening < self.max_connections:
            self.opening += 1
            asyncio.get_running_loop().create_task(self._open_and_send(due))
        else:
            self.backlog.append(due)

    def _send(self, conn: _Conn, due: float) -> None:
        conn.send(self.payload, due)
        self.stats.lags.append(time.perf_counter() - due)

    async def _open_and_send(self, due: float) -> None:
        try:
            conn = await self.open()
        except OSError:
            self.stats.errors += 1
            self.stats.statuses[FAILED] += 1
            self.finished += 1
            if self.finished >= self.stats.scheduled:
                self.done.set()
            return
        finally:
            self.opening -= 1
        self._send(conn, due)

    def completed(self, conn: _Conn, status: int) -> None:
        self.record(conn, status, time.perf_counter())
        if conn.closed:
            if self.backlog:
                self._fire(self.backlog.popleft())
        elif self.backlog:
            self._send(conn, self.backlog.popleft())
        else:
            self.idle.append(conn)


class ClosedLoop(_Pool):
    """`concurrency` connections, each sending its next request when the last one answered."""

    def __init__(
        self,
        port: int,
        payload: bytes,
        progress: Callable[[int], None] | None = None,
        progress_every: int = 100_000,
    ) -> None:
        super().__init__(port, payload)
        self.sent = 0
        self.progress = progress
        self.progress_every = progress_every

    async def run(self, total: int, concurrency: int = 1) -> Stats:
        """Send `total` requests; bounded by a generous deadline (>= 100 req/s)."""
        self.stats.scheduled = total
        start = time.perf_counter()
        for _ in range(min(concurrency, total)):
            self._next(await self.open())
        try:
            await asyncio.wait_for(self.done.wait(), 60.0 + total / 100)
        except TimeoutError:
            pass
        finally:
            self.stats.elapsed = time.perf_counter() - start
            self.stats.lost = total - self.finished
            self.close()
        return self.stats

    def _next(self, conn: _Conn) -> None:
        if self.sent < self.stats.scheduled:
            self.sent += 1
            conn.send(self.payload, time.perf_counter())

    async def _reopen(self) -> None:
        try:
            self._next(await self.open())
        except OSError:
            self.stats.errors += self.stats.scheduled - self.sent
            self.finished += self.stats.scheduled - self.sent
            self.done.set()

    def completed(self, conn: _Conn, status: int) -> None:
        self.record(conn, status, time.perf_counter())
        if self.progress is not None and self.finished % self.progress_every == 0:
            self.progress(self.finished)
        if not conn.closed:
            self._next(conn)
        elif self.sent < self.stats.scheduled:
            asyncio.get_running_loop().create_task(self._reopen())
