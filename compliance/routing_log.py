"""Routing log writer: records leave the response path at once, reach the store in batches."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from compliance.store.errors import StoreUnavailable

logger = logging.getLogger(__name__)

Record = Mapping[str, Any]


class RoutingLogSink(Protocol):
    """Where batches of routing records end up (the database store)."""

    def append_batch(self, records: Sequence[Record]) -> None:
        """Persist all records in one transaction or raise."""
        ...


PoisonHandler = Callable[[Record, str], None]


def _log_poison(record: Record, error: str) -> None:
    logger.error("routing record %s rejected by the store: %s", record.get("decision_id"), error)


class RoutingLogWriter:
    """Queues records in memory and writes them in batches from a background task.

    `submit` never blocks and never drops: a failed batch stays at the head of the queue and is
    retried with back-off, so a database outage delays records but does not lose them. A batch
    the store rejects for its content is retried record by record; a record that still fails
    goes to `on_poison` (so one bad record cannot block the queue).
    """

    def __init__(
        self,
        sink: RoutingLogSink,
        batch_size: int = 512,
        retry_max: float = 5.0,
        linger: float = 0.01,
        on_poison: PoisonHandler = _log_poison,
    ) -> None:
        self._sink = sink
        self._on_poison = on_poison
        self._linger = linger
        self._batch_size = batch_size
        self._retry_max = retry_max
        self._queue: deque[Record] = deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.written = 0
        self.last_error: str | None = None

    @property
    def pending(self) -> int:
        """Records accepted but not yet in the store."""
        return len(self._queue)

    def start(self) -> None:
        """Start the background writer on the running loop."""
        self._task = asyncio.create_task(self._run(), name="routing-log-writer")

    def submit(self, record: Record) -> None:
        """Accept one record for writing."""
        self._queue.append(record)
        if len(self._queue) == 1 or len(self._queue) >= self._batch_size:
            self._wakeup.set()

    async def _run(self) -> None:
        delay = 0.05
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                if len(self._queue) < self._batch_size and not self._closing:
                    await asyncio.sleep(self._linger)  # let a batch gather under load
                continue
            batch = [self._queue[i] for i in range(min(self._batch_size, len(self._queue)))]
            try:
                await asyncio.to_thread(self._write, batch)
            except StoreUnavailable as exc:  # keep the records; the store may come back
                self.last_error = f"{type(exc).__name__}: {exc}"
                logger.warning("routing log write failed, will retry: %s", self.last_error)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._retry_max)
                continue
            for _ in batch:
                self._queue.popleft()
            self.written += len(batch)
            self.last_error = None
            delay = 0.05

    def _write(self, batch: list[Record]) -> None:
        try:
            self._sink.append_batch(batch)
            return
        except StoreUnavailable:
            raise
        except Exception:
            pass
        for record in batch:  # isolate the record(s) the store refuses
            try:
                self._sink.append_batch([record])
            except StoreUnavailable:
                raise
            except Exception as exc:
                self._on_poison(record, f"{type(exc).__name__}: {exc}")

    async def close(self, grace: float = 10.0) -> None:
        """Write what is queued (up to `grace` seconds), then stop."""
        self._closing = True
        self._wakeup.set()
        if self._task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._task), grace)
        except TimeoutError:
            logger.error("routing log: %d records not written at shutdown", len(self._queue))
            self._task.cancel()
