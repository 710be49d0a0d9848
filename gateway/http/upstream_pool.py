"""The h1 client's connection pool: idle keep-alive connections and a bound on open ones.

At most `total` connections are open (or being opened) at once, and at most `per_origin` to one
region, so a hung region cannot hold every socket. A request that finds no room waits, first in
first out, for a connection of its region to come back or for a slot to free up; an idle
connection of another region is closed to make room. The wait is bounded by the caller.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, Protocol, TypeVar

from gateway.http.upstream import FailureKind, UpstreamError


class PooledConnection(Protocol):
    """What the pool needs of a connection."""

    @property
    def closed(self) -> bool:
        """The connection is gone (closed by either side)."""
        ...

    def abort(self) -> None:
        """Close at once (the pool is told through `forget`)."""
        ...


C = TypeVar("C", bound=PooledConnection)


class ConnectionPool(Generic[C]):
    """Idle connections per origin, and the count of open ones per origin and in all."""

    def __init__(self, total: int, per_origin: int, idle_per_origin: int = 256) -> None:
        self.total = total
        self.per_origin = min(per_origin, total)
        self._idle_per_origin = idle_per_origin
        self._idle: dict[str, list[C]] = {}
        self._origin: dict[C, str] = {}  # open connections
        self._open: dict[str, int] = {}  # open or being opened, per origin
        self._open_total = 0
        self._waiters: dict[str, deque[asyncio.Future[C | None]]] = {}

    @property
    def open_total(self) -> int:
        """Connections open or being opened now."""
        return self._open_total

    def open_to(self, origin: str) -> int:
        """Connections to `origin` open or being opened now."""
        return self._open.get(origin, 0)

    async def acquire(self, origin: str, deadline: float) -> C | None:
        """An idle connection to `origin`, or None: a slot is reserved, open a new connection.

        Raises UpstreamError (connect) if neither comes by `deadline` (event-loop time).
        """
        connection = self._take_idle(origin)
        if connection is not None:
            return connection
        if not self._room(origin) and self._room_in(origin):
            self._evict_idle()  # all in all is the limit: an idle socket elsewhere makes room
        if self._room(origin):
            self._reserve(origin)
            return None
        return await self._wait(origin, deadline)

    def adopt(self, connection: C, origin: str) -> None:
        """Count a newly opened connection (its slot was reserved by `acquire`)."""
        self._origin[connection] = origin

    def give_back(self, connection: C) -> None:
        """A connection finished its exchange and may be reused."""
        origin = self._origin.get(connection)
        if origin is None or connection.closed:
            connection.abort()
            return
        waiter = self._next_waiter(origin)
        if waiter is not None:
            waiter.set_result(connection)
            return
        idle = self._idle.setdefault(origin, [])
        if len(idle) >= self._idle_per_origin or (
            self._waiters and any(self._room_in(o) for o in self._waiters)
        ):
            connection.abort()  # frees its slot for a request to another region
            return
        idle.append(connection)

    def forget(self, connection: C) -> None:
        """A connection is closed (or being aborted): free its slot. Idempotent."""
        origin = self._origin.pop(connection, None)
        if origin is None:
            return
        idle = self._idle.get(origin)
        if idle and connection in idle:
            idle.remove(connection)
        self.release(origin)

    def release(self, origin: str) -> None:
        """Free a slot (a connection closed, or opening one failed) and pass it on."""
        self._open_total -= 1
        left = self._open[origin] - 1
        if left:
            self._open[origin] = left
        else:
            del self._open[origin]
        if not self._waiters:
            return
        for candidate in (origin, *self._waiters):
            if not self._room(candidate):
                continue
            waiter = self._next_waiter(candidate)
            if waiter is not None:
                self._reserve(candidate)
                waiter.set_result(None)
                return

    def close(self) -> None:
        """Abort every connection."""
        for connection in list(self._origin):
            connection.abort()
        self._idle.clear()

    # -- internals -------------------------------------------------------------------------

    def _room_in(self, origin: str) -> bool:
        return self._open.get(origin, 0) < self.per_origin

    def _room(self, origin: str) -> bool:
        return self._open_total < self.total and self._room_in(origin)

    def _reserve(self, origin: str) -> None:
        self._open_total += 1
        self._open[origin] = self._open.get(origin, 0) + 1

    def _take_idle(self, origin: str) -> C | None:
        idle = self._idle.get(origin)
        while idle:
            connection = idle.pop()
            if not connection.closed:
                return connection
        return None

    def _evict_idle(self) -> bool:
        """Close the oldest idle connection of any origin; False if there is none."""
        for idle in self._idle.values():
            if idle:
                idle[0].abort()  # forget() runs and frees the slot at once
                return True
        return False

    def _next_waiter(self, origin: str) -> asyncio.Future[C | None] | None:
        """The longest-waiting request for `origin` still waiting, taken off the queue."""
        waiters = self._waiters.get(origin)
        while waiters:
            waiter = waiters.popleft()
            if not waiters:
                del self._waiters[origin]
            if not waiter.done():
                return waiter
        return None

    async def _wait(self, origin: str, deadline: float) -> C | None:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[C | None] = loop.create_future()
        self._waiters.setdefault(origin, deque()).append(waiter)

        def expire() -> None:
            if not waiter.done():
                waiter.set_exception(
                    UpstreamError(
                        FailureKind.CONNECT,
                        f"no free connection to {origin} in time "
                        f"(limits: {self.per_origin} per region, {self.total} in all)",
                    )
                )

        timer = loop.call_at(deadline, expire)
        try:
            return await waiter
        except BaseException:
            # Cancelled just as a connection or slot was handed over: hand it on again.
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                granted = waiter.result()
                if granted is None:
                    self.release(origin)
                else:
                    self.give_back(granted)
            raise
        finally:
            timer.cancel()
            waiters = self._waiters.get(origin)
            if waiters is not None and waiter in waiters:  # timed out or cancelled
                waiters.remove(waiter)
                if not waiters:
                    del self._waiters[origin]
