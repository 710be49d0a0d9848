"""RoutingLogWriter: spools first, batches, survives outages without loss, isolates poison."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from compliance.audit.spool import Spool
from compliance.routing_log import RoutingLogWriter
from compliance.store.errors import StoreError, StoreUnavailable


class FlakyStore:
    """In-memory sink that can be down, and refuses records marked poison."""

    def __init__(self) -> None:
        self.rows: list[Mapping[str, Any]] = []
        self.down = False
        self.batches = 0

    def append_batch(
        self, records: Sequence[Mapping[str, Any]], *, skip_existing: bool = False
    ) -> int:
        if self.down:
            raise StoreUnavailable("database unreachable")
        if any(r.get("poison") for r in records):
            raise StoreError("bad record")
        self.batches += 1
        self.rows.extend(records)
        return len(records)


async def test_batches_and_writes_everything(tmp_path: Path) -> None:
    store = FlakyStore()
    writer = RoutingLogWriter(store, Spool(tmp_path), batch_size=50)
    writer.start()
    for i in range(500):
        writer.submit({"decision_id": str(i)})
    await writer.close()
    assert [r["decision_id"] for r in store.rows] == [str(i) for i in range(500)]
    assert store.batches <= 20


async def test_outage_delays_but_loses_nothing(tmp_path: Path) -> None:
    store = FlakyStore()
    store.down = True
    writer = RoutingLogWriter(store, Spool(tmp_path), batch_size=10, retry_max=0.05)
    writer.start()
    for i in range(25):
        await writer.record({"decision_id": str(i)})
    await asyncio.sleep(0.2)
    assert store.rows == [] and writer.pending == 25
    assert writer.last_error is not None and "unreachable" in writer.last_error
    store.down = False
    await writer.close()
    assert len(store.rows) == 25 and writer.pending == 0


async def test_poison_record_is_set_aside_not_blocking(tmp_path: Path) -> None:
    store = FlakyStore()
    rejected: list[str] = []
    writer = RoutingLogWriter(
        store, Spool(tmp_path), on_poison=lambda r, e: rejected.append(r["decision_id"])
    )
    writer.start()
    writer.submit({"decision_id": "a"})
    writer.submit({"decision_id": "b", "poison": True})
    writer.submit({"decision_id": "c"})
    await writer.close()
    assert [r["decision_id"] for r in store.rows] == ["a", "c"]
    assert rejected == ["b"]


async def test_a_drain_stuck_at_one_position_is_reported_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = FlakyStore()
    store.down = True
    writer = RoutingLogWriter(store, Spool(tmp_path), batch_size=10, retry_max=0.02)
    writer.start()
    for i in range(5):
        await writer.record({"decision_id": str(i)})
    for _ in range(200):  # bounded wait for a few retries
        if writer.watch.failures_total >= 8:
            break
        await asyncio.sleep(0.02)
    [stuck] = writer.stuck
    assert (stuck.segment, stuck.offset) == (1, 0) and stuck.failures >= 8
    assert "unreachable" in stuck.error
    assert caplog.text.count("routing log drain stuck") == 1  # not a line per retry
    assert caplog.text.count("will retry") == 2
    assert "segment 1 offset 0" in caplog.text
    store.down = False
    await writer.close()
    assert writer.stuck == [] and len(store.rows) == 5
    assert "routing log drain moving again" in caplog.text
