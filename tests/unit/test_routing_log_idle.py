"""Routing records are stored at idle CPU priority while the backlog is short, else at normal."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from compliance.audit.spool import Spool
from compliance.idle_priority import idle_executor, is_idle_thread, lower_current_thread
from compliance.routing_log import IDLE_BATCH_MAX, RoutingLogWriter
from tests.unit.test_routing_log_writer import FlakyStore

pytestmark = pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="Linux scheduling class")


class PriorityNotingStore(FlakyStore):
    """Notes, for each stored batch, whether its thread ran at idle priority, and its size."""

    def __init__(self) -> None:
        super().__init__()
        self.stored: list[tuple[bool, int]] = []

    def append_batch(
        self, records: Sequence[Mapping[str, Any]], *, skip_existing: bool = False
    ) -> int:
        written = super().append_batch(records, skip_existing=skip_existing)
        self.stored.append((is_idle_thread(), len(records)))
        return written


def test_only_the_calling_thread_is_lowered() -> None:
    seen: list[bool] = []

    def lowered() -> None:
        seen.append(lower_current_thread())
        seen.append(is_idle_thread())

    thread = threading.Thread(target=lowered)
    thread.start()
    thread.join()
    assert seen == [True, True]
    assert not is_idle_thread()  # this thread (and so the event loop's) keeps its class
    pool = idle_executor("test-idle")
    try:
        assert pool.submit(is_idle_thread).result()
    finally:
        pool.shutdown()


async def _writer_with_backlog(
    tmp_path: Path, records: int, idle_backlog: int
) -> tuple[RoutingLogWriter, PriorityNotingStore]:
    """A started writer whose `records` are all fsynced while the database is down."""
    store = PriorityNotingStore()
    store.down = True
    writer = RoutingLogWriter(
        store, Spool(tmp_path), batch_size=512, retry_max=0.05, idle_backlog=idle_backlog
    )
    writer.start()
    for i in range(records):
        await writer.record({"decision_id": str(i)})
    assert writer.pending == records and store.stored == []
    return writer, store


async def _until_stored(writer: RoutingLogWriter) -> None:
    for _ in range(500):
        if writer.pending == 0:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{writer.pending} records not stored")


async def test_short_backlog_is_stored_in_small_idle_batches(tmp_path: Path) -> None:
    total = 2 * IDLE_BATCH_MAX + 10
    writer, store = await _writer_with_backlog(tmp_path, total, 4096)
    store.down = False
    await _until_stored(writer)
    await writer.close()
    assert store.stored == [(True, IDLE_BATCH_MAX), (True, IDLE_BATCH_MAX), (True, 10)]
    assert [r["decision_id"] for r in store.rows] == [str(i) for i in range(total)]


async def test_past_the_threshold_the_excess_is_stored_at_normal_priority(
    tmp_path: Path,
) -> None:
    writer, store = await _writer_with_backlog(tmp_path, 350, 100)
    store.down = False
    await _until_stored(writer)
    await writer.close()
    # 251 at normal priority leave 99, under the threshold: those go at idle priority
    assert store.stored == [(False, 251), (True, 99)]
    assert len(store.rows) == 350


async def test_closing_stores_at_normal_priority(tmp_path: Path) -> None:
    writer, store = await _writer_with_backlog(tmp_path, 30, 4096)
    store.down = False
    await writer.close()  # before the retry: the closing drain must not wait for idle time
    assert store.stored == [(False, 30)]


async def test_zero_threshold_never_uses_idle_priority(tmp_path: Path) -> None:
    writer, store = await _writer_with_backlog(tmp_path, 20, 0)
    store.down = False
    await _until_stored(writer)
    await writer.close()
    assert store.stored == [(False, 20)]
