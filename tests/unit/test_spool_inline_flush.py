"""Spool flushes in the owner's thread (the event loop) while fsync is fast, else its thread."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from compliance.audit.service import AuditChain
from compliance.audit.spool import Position, Spool, SpoolError
from compliance.routing_log import RoutingLogWriter
from compliance.store.engine import create_store_engine
from gateway.audit_setup import routing_log_writer
from gateway.settings import Settings
from tests.unit.test_routing_log_writer import FlakyStore

FAST_ENOUGH = 10.0
"""An inline limit (seconds) no real fsync reaches: tests of the inline path must not switch to
the writer thread because the test machine's disk is slow at the moment (one fsync of 2.5 ms
lifts the moving average over the default 0.5 ms)."""


def _flushes_by_thread(spool: Spool) -> list[str]:
    """The names of the threads the spool's writes run in, from now on."""
    names: list[str] = []
    original = spool._write

    def traced(data: bytes) -> None:
        names.append(threading.current_thread().name)
        original(data)

    spool._write = traced  # type: ignore[method-assign]
    return names


def test_owner_flushes_what_was_queued_with_one_write(tmp_path: Path) -> None:
    queued: list[int] = []
    spool = Spool(tmp_path, inline_limit=FAST_ENOUGH)
    spool.open(on_queued=lambda: queued.append(spool.durable_count))
    writes = _flushes_by_thread(spool)
    assert spool.inline
    numbers = [spool.append(f"record {i}".encode()) for i in range(3)]
    assert queued == [0]  # once, for the first record of an empty queue
    assert spool.durable_count == 0  # nothing is written until the owner flushes
    assert spool.write_queued() == 3
    assert writes == [threading.current_thread().name]  # one write, in this thread
    assert numbers == [1, 2, 3]
    payloads, _ = spool.read(Position(0, 0), 10)
    assert payloads == [b"record 0", b"record 1", b"record 2"]
    spool.append(b"record 3")
    assert queued == [0, 3]
    spool.close()  # the writer thread flushes what the owner left queued
    again = Spool(tmp_path)
    again.open()
    assert again.pending == 4
    again.close()


def test_slow_flushes_move_to_the_writer_thread_and_back(tmp_path: Path) -> None:
    queued: list[int] = []
    spool = Spool(tmp_path, inline_limit=1e-9)  # every real fsync is "slow"
    spool.open(on_queued=lambda: queued.append(1))
    writes = _flushes_by_thread(spool)
    spool.append(b"first")
    assert spool.write_queued() == 1
    assert not spool.inline  # that flush took longer than the limit
    spool.append(b"second")
    spool.flush()  # the writer thread writes it; the owner is not asked
    assert queued == [1]
    assert writes == [threading.current_thread().name, "audit-spool"]
    spool.inline_limit = 10.0  # a fast disk again: below half the limit -> inline
    spool.append(b"third")
    spool.flush()
    assert spool.inline
    spool.append(b"fourth")
    assert queued == [1, 1]
    assert spool.write_queued() == 4
    spool.close()


async def test_a_failed_inline_flush_fails_its_waiters_and_later_appends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = RoutingLogWriter(FlakyStore(), Spool(tmp_path))
    writer.start()
    await writer.record({"decision_id": "stored"})

    def broken(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", broken)
    first = writer.submit({"decision_id": "lost-1"})
    second = writer.submit({"decision_id": "lost-2"})
    for future in (first, second):
        with pytest.raises(SpoolError, match="Input/output error"):
            await future
    with pytest.raises(SpoolError, match="write failed"):
        writer.submit({"decision_id": "refused"})
    monkeypatch.undo()
    await writer.close(grace=1.0)


async def test_a_quiet_turn_is_flushed_on_the_loop_and_a_busy_one_by_the_thread(
    tmp_path: Path,
) -> None:
    store = FlakyStore()
    spool = Spool(tmp_path, inline_limit=FAST_ENOUGH)
    writer = RoutingLogWriter(store, spool, batch_size=50)
    writer.start()
    writes = _flushes_by_thread(spool)
    await writer.record({"decision_id": "0"})
    await writer.record({"decision_id": "1"})
    assert writes == ["MainThread", "MainThread"]  # one record a turn: fsync on the loop
    await asyncio.gather(*(writer.record({"decision_id": str(i)}) for i in range(2, 22)))
    assert writes[2:] == ["audit-spool"]  # twenty in one turn: one group commit, threaded
    assert spool.inline  # still the mode: the next quiet turn is flushed on the loop again
    await writer.record({"decision_id": "22"})
    assert writes[3:] == ["MainThread"]
    await writer.close()
    assert [r["decision_id"] for r in store.rows] == [str(i) for i in range(23)]


async def test_inline_limit_zero_keeps_every_flush_in_the_writer_thread(tmp_path: Path) -> None:
    store = FlakyStore()
    spool = Spool(tmp_path, inline_limit=0)
    writer = RoutingLogWriter(store, spool)
    writer.start()
    writes = _flushes_by_thread(spool)
    await asyncio.gather(*(writer.record({"decision_id": str(i)}) for i in range(5)))
    await writer.close()
    assert not spool.inline
    assert writes and set(writes) == {"audit-spool"}
    assert len(store.rows) == 5


async def test_settings_reach_the_writer_and_its_spool(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        audit_spool_inline_flush_ms=0,
        routing_log_linger_ms=250,
        routing_log_batch_size=7,
        routing_log_idle_backlog=99,
    )
    engine = create_store_engine(f"sqlite:///{tmp_path / 'gateway.db'}")
    chain = AuditChain(engine, Ed25519PrivateKey.generate())
    writer = routing_log_writer(settings, chain, FlakyStore(), lambda record, error: None)
    spool = writer._spool
    assert spool.root == tmp_path / "audit-spool"
    assert spool.inline_limit == 0
    assert (writer._linger, writer._batch_size, writer._idle_backlog) == (0.25, 7, 99)
    writer.start()
    await writer.record({"decision_id": "x"})
    assert not spool.inline  # 0 ms: every flush in the writer thread
    await writer.close()
    engine.dispose()
    defaults = Settings(data_dir=tmp_path)
    assert (defaults.audit_spool_inline_flush_ms, defaults.routing_log_linger_ms) == (0.5, 50.0)
    assert defaults.routing_log_idle_backlog == 2048
