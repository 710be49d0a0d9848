"""Routing log writer: every record is fsynced to the local spool, then stored in batches.

`write-ahead` durability: `write_ahead()` spools a request's decision (a chain entry of kind
`intent`) and returns once it is fsynced, so nothing leaves for a region before the decision
that sent it there is durable; `record(..., written_ahead=True)` then spools the outcome
(decision and outcome, joined to the intent by decision_id: compliance.audit.intents) and
returns once that is fsynced too, so a response never completes before its outcome is durable
either (what `strict` promises). `write-ahead-lazy`: the same decision first, but the outcome is
not waited for and asks for no flush of its own: it goes with the next group commit (another
request's decision, usually) or OUTCOME_FLUSH_DELAY later, so a request costs one fsync, not
two, and a crash before that leaves the decision without an outcome. A record not written ahead
(a refusal) is waited for in every mode but `relaxed`. Every flush is a group commit: one fsync
for every record that arrived meanwhile, from any request. `strict`: no intent; `record()`
returns once the record is fsynced, so a response can be held back until its record is safe.
`relaxed`: `record()` returns at once. Either way the database gets each record exactly once: a
background task reads durable records back from the spool, stores them (skipping any the
database already has, e.g. after a crash between store and acknowledgement) and acknowledges
them; records are kept while the database is down and replayed after a restart.

Cost per record is what limits a one-core gateway, so each record is encoded once, on the
event loop, into canonical bytes (compliance.audit.record_codec) that go unchanged through the
spool into the database and its hash; and the storing task writes one transaction per
`batch_size` records or per `linger` seconds, whichever comes first, so under load a
transaction carries hundreds of records (fsync flushes in between do not wake it). On a disk
with a fast fsync, a loop turn that spooled a single record fsyncs it on the event loop itself
instead of waking the spool's writer thread (see compliance.audit.spool). While the backlog is
short, batches are stored by a thread at idle CPU priority (compliance.idle_priority): on a
busy core they wait for a moment request handling leaves free, rather than delaying requests.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Literal, Protocol

from compliance.audit.canonical import Kind
from compliance.audit.spool import Position, Spool, SpoolError
from compliance.drain_watch import DrainWatch, StuckDrain
from compliance.idle_priority import idle_executor
from compliance.routing_batches import (
    PoisonHandler,
    Record,
    RoutingLogSink,
    SpoolDrain,
    encode,
    log_poison,
)
from compliance.store.errors import StoreUnavailable

logger = logging.getLogger(__name__)

IDLE_BATCH_MAX = 192
"""Most records one idle-priority batch stores (see RoutingLogWriter._store_batch)."""

INLINE_FLUSH_MAX_RECORDS = 1
"""A loop turn that spooled more records than this is busy: its flush goes to the spool's
writer thread, so the loop serves other requests while the disk syncs."""

OUTCOME_FLUSH_DELAY = 0.005
"""Seconds an outcome of a written-ahead decision waits for another flush to join before it is
flushed on its own (the longest it is not yet durable, plus the fsync)."""

Durability = Literal["write-ahead", "write-ahead-lazy", "strict", "relaxed"]
WRITE_AHEAD: frozenset[str] = frozenset({"write-ahead", "write-ahead-lazy"})
"""Modes in which `write_ahead()` makes a decision durable before it is forwarded."""


class PeriodicJob(Protocol):
    """Work run after stored batches when due (checkpoints, retention)."""

    run_at_close: bool

    def note(self, appended: int) -> None:
        """Count records this process stored."""

    def due(self) -> bool:
        """True when `run` should be called."""
        ...

    def run(self) -> object:
        """Do the work (blocking; may raise StoreUnavailable)."""
        ...


class RoutingLogWriter:
    """Spool first, database second (see the module docstring).

    `batch_size` is the most records one database transaction stores; a transaction starts
    when that many are durable or `linger` seconds after the previous one (at once while a
    backlog remains). A failed database write is retried with back-off (records stay in the
    spool); a batch the store rejects for its content is retried record by record and a record
    that still fails goes to `on_poison` (compliance.routing_batches). With `idle_backlog` >
    0, batches are stored at idle CPU priority while fewer records than that wait (see
    `_store_batch`).
    """

    def __init__(
        self,
        sink: RoutingLogSink,
        spool: Spool,
        *,
        durability: Durability = "write-ahead",
        batch_size: int = 512,
        retry_max: float = 5.0,
        linger: float = 0.05,
        on_poison: PoisonHandler = log_poison,
        jobs: Sequence[PeriodicJob] = (),
        job_interval: float = 1.0,
        idle_backlog: int = 0,
    ) -> None:
        self._spool_drain = SpoolDrain(sink, on_poison)
        self._spool = spool
        self.durability = durability
        self._batch_size = batch_size
        self._retry_max = retry_max
        self._linger = linger
        self._jobs = tuple(jobs)
        self._job_interval = job_interval
        self._idle_backlog = idle_backlog
        self._idle_pool: ThreadPoolExecutor | None = None
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()
        self._wakeup = asyncio.Event()
        self._wake_at = 1  # durable count at which a flush wakes the storing task
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._adopter: asyncio.Task[None] | None = None
        self._position = Position(0, 0)
        self._outcome_flush: asyncio.TimerHandle | None = None
        self._closing = False
        self.last_error: str | None = None
        self.watch = DrainWatch()

    @property
    def written(self) -> int:
        """Records this writer stored in the database."""
        return self._spool_drain.written

    @property
    def pending(self) -> int:
        """Records accepted (or recovered from the spool) but not yet in the database."""
        return self._spool.pending

    @property
    def stuck(self) -> list[StuckDrain]:
        """Drains failing again and again at one spool position (compliance.drain_watch);
        this process's own drain no longer once its acknowledged position has passed it (so
        a report never says stuck with nothing pending)."""
        own, acked = str(self._spool.directory), self._spool.ack_position
        return [
            s for s in self.watch.stuck if s.slot != own or Position(s.segment, s.offset) >= acked
        ]

    def start(self) -> None:
        """Open the spool (replaying what a previous process left) and start storing; slots
        abandoned by processes that are gone (fewer workers now, say) are stored too."""
        self._loop = asyncio.get_running_loop()
        self._spool.open(self._flushed_from_thread, on_queued=self._flush_this_turn)
        self._position = self._spool.ack_position
        if self._idle_backlog > 0:
            self._idle_pool = idle_executor("routing-log-idle")
        self._task = asyncio.create_task(self._run(), name="routing-log-writer")
        self._adopter = asyncio.create_task(self._adopt_orphans(), name="routing-log-orphans")

    async def _adopt_orphans(self) -> None:
        for slot in self._spool.other_slots():
            orphan = Spool(self._spool.root)
            try:
                await asyncio.to_thread(orphan.open, None, slot)
            except SpoolError:
                continue  # a live process owns it
            try:
                position, delay = orphan.ack_position, 0.05
                while orphan.pending:
                    try:
                        stored, position = await asyncio.to_thread(
                            self._spool_drain.drain, orphan, position, self._batch_size
                        )
                    except Exception as exc:
                        error, at = f"{type(exc).__name__}: {exc}", orphan.next_record(position)
                        if self.watch.failed(slot, at, error):
                            logger.warning("routing log: abandoned spool %s: %s", slot, exc)
                        if self._closing:
                            break  # kept for the next start
                        await asyncio.sleep(delay)
                        delay = min(delay * 2, self._retry_max)
                        continue
                    self.watch.progressed(slot)
                    if not stored:
                        break
                if not orphan.pending:
                    logger.info("routing log: stored the records left in %s", slot)
            finally:
                self.watch.forget(slot)
                await asyncio.to_thread(orphan.close)

    @property
    def fsyncs(self) -> int:
        """Spool flushes (one pwrite and one fdatasync each) since this process started."""
        return self._spool.flushes

    def submit(self, record: Record, kind: Kind = Kind.DECISION) -> asyncio.Future[None]:
        """Spool one record as a chain entry of `kind`; the future completes when it is
        fsynced (SpoolError if it fails)."""
        assert self._loop is not None, "start() first"
        number = self._spool.append(encode(record, kind))
        future = self._loop.create_future()
        self._waiters.append((number, future))
        return future

    async def write_ahead(self, record: Record) -> None:
        """In write-ahead mode, before a request is forwarded: spool its decision `record`
        as a write-ahead entry (kind `intent`) and return once it is fsynced; SpoolError if
        it cannot be (then the request must not be forwarded). Other modes: nothing."""
        if self.durability in WRITE_AHEAD:
            await self.submit(record, Kind.INTENT)

    async def record(self, record: Record, *, written_ahead: bool = False) -> None:
        """Spool one record (a refusal, or a forwarded request's outcome) and return once it is
        durable; except in relaxed mode, and in write-ahead-lazy mode for the outcome of a
        decision written ahead (`written_ahead`: fsynced with the next group commit)."""
        durability = self.durability
        if durability in ("write-ahead", "strict") or (
            durability == "write-ahead-lazy" and not written_ahead
        ):
            await self.submit(record)
        elif durability == "write-ahead-lazy":
            assert self._loop is not None, "start() first"
            self._spool.append(encode(record), lazy=True)
            if self._outcome_flush is None:
                self._outcome_flush = self._loop.call_later(
                    OUTCOME_FLUSH_DELAY, self._flush_outcomes
                )
        else:
            assert self._loop is not None, "start() first"
            self._spool.append(encode(record))

    def _flush_outcomes(self) -> None:
        """Outcomes spooled lazily (see `record`) get a flush unless one took them already."""
        self._outcome_flush = None
        try:
            self._spool.request_flush()
        except SpoolError:
            logger.exception("routing log: flushing outcomes failed")

    def _flush_this_turn(self) -> None:
        """A record was queued for an inline flush: fsync it, with every record queued during
        this event-loop turn, once the turn's ready callbacks have run (group commit)."""
        assert self._loop is not None
        self._loop.call_soon(self._flush_inline)

    def _flush_inline(self) -> None:
        try:
            count = self._spool.write_queued(INLINE_FLUSH_MAX_RECORDS)
        except SpoolError as exc:
            self._flushed(0, exc.__cause__ or exc)
            return
        if count is not None:
            self._flushed(count, None)

    def _flushed_from_thread(self, count: int, error: BaseException | None) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._flushed, count, error)

    def _flushed(self, count: int, error: BaseException | None) -> None:
        waiters = self._waiters
        while waiters and (error is not None or waiters[0][0] <= count):
            _, future = waiters.popleft()
            if future.done():
                continue
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(SpoolError(f"audit spool write failed: {error}"))
        if count >= self._wake_at:  # not per flush: the storing task waits for a batch
            self._wakeup.set()

    async def _run(self) -> None:
        delay = 0.05
        while True:
            closing = self._closing  # then this drain sees all records (close() flushes first)
            seen = self._spool.durable_count  # this drain reads at least these
            try:
                stored, full = await self._store_batch()
            except Exception as exc:  # records stay in the spool; the store may come back
                self.last_error = f"{type(exc).__name__}: {exc}"
                # Once stuck at this position, the watch logs instead (rate limited).
                at = self._spool.next_record(self._position)
                log = self.watch.failed(self._spool.directory, at, self.last_error)
                if log and isinstance(exc, StoreUnavailable):
                    logger.warning("routing log write failed, will retry: %s", self.last_error)
                elif log:
                    logger.exception("routing log write failed, will retry")
                if self._closing:
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._retry_max)
                continue
            delay = 0.05
            self.watch.progressed(self._spool.directory)
            if stored:
                self.last_error = None
                await self._run_jobs(stored)
                if full:
                    continue  # a backlog: store the next batch at once
            elif closing:
                return
            if self._closing:
                continue  # close() began during this drain: one more
            if not stored and not await self._wait(seen + 1, self._job_interval):
                await self._run_jobs(0)
                continue
            await self._wait(seen + self._batch_size, self._linger)  # let a batch gather

    async def _store_batch(self) -> tuple[int, bool]:
        """Store one batch in a thread: (records read, whether the batch was full).

        While the backlog is short: a small batch at idle priority (it may wait long for a
        free moment, and holds the database's write lock only briefly). Past `idle_backlog`
        (a saturated core): only the excess, at normal priority, so these batches are no
        larger than without idle priority; the idle thread stores the rest when it can.
        """
        pool, backlog = self._idle_pool, self.pending
        idle = pool is not None and not self._closing
        if idle and backlog < self._idle_backlog:
            limit = min(self._batch_size, IDLE_BATCH_MAX)
            assert self._loop is not None
            stored = await self._loop.run_in_executor(pool, self._drain_once, limit)
            return stored, stored >= limit
        limit = self._batch_size
        if idle:
            limit = min(limit, backlog - self._idle_backlog + 1)
        stored = await asyncio.to_thread(self._drain_once, limit)
        return stored, stored >= limit

    async def _wait(self, durable: int, seconds: float) -> bool:
        """Wait until `durable` records of this process are fsynced, close() is called or
        `seconds` pass (False). So one database transaction carries every record spooled
        meanwhile, and the flushes in between do not wake this task."""
        if self._closing or self._spool.durable_count >= durable:
            return True
        self._wakeup.clear()
        self._wake_at = durable
        try:
            await asyncio.wait_for(self._wakeup.wait(), seconds)
        except TimeoutError:
            return False
        finally:
            self._wake_at = 1 << 62
        return True

    async def _run_jobs(self, stored: int) -> None:
        for job in self._jobs:
            job.note(stored)
            if job.due():
                await self._run_job(job)

    @staticmethod
    async def _run_job(job: PeriodicJob) -> None:
        try:
            await asyncio.to_thread(job.run)
        except StoreUnavailable as exc:
            logger.warning("audit job %s postponed: %s", type(job).__name__, exc)
        except Exception:
            logger.exception("audit job %s failed", type(job).__name__)

    def _drain_once(self, limit: int) -> int:
        """Store one batch of this process's spooled records; returns how many were read."""
        count, self._position = self._spool_drain.drain(self._spool, self._position, limit)
        return count

    async def close(self, grace: float = 10.0) -> None:
        """Store what is spooled (up to `grace` seconds), then stop; the rest waits in the spool."""
        if self._outcome_flush is not None:
            self._outcome_flush.cancel()  # the flush below takes lazily spooled outcomes
        await asyncio.to_thread(self._spool.flush)
        self._closing = True
        self._wakeup.set()
        if self._adopter is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._adopter), grace)
            except TimeoutError:
                self._adopter.cancel()  # the rest stays in its slot for the next start
            except Exception:
                logger.exception("routing log: storing an abandoned spool failed")
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), grace)
            except TimeoutError:
                self._task.cancel()
                logger.error("routing log: not stored within %gs; the spool keeps the rest", grace)
                return  # a store call may still be running: leave the spool to process exit
            finally:
                if self._idle_pool is not None:
                    self._idle_pool.shutdown(wait=False)
        for job in self._jobs:
            if job.run_at_close:
                await self._run_job(job)
        await asyncio.to_thread(self._spool.close)
        if self._spool.pending:
            logger.warning(
                "routing log: %d records left in the spool, stored at the next start",
                self._spool.pending,
            )
