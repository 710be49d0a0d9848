"""Routing records encoded once (record_codec): the hash and the stored row are exactly what the
generic chain code makes of the same record; old spool payloads still replay; the writer
batches by size and time, not per fsync; a record the database refuses is set aside."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from compliance.audit import record_codec
from compliance.audit.canonical import Kind, entry_bytes, normalise_fields
from compliance.audit.ledger import append_entries
from compliance.audit.spool import Spool
from compliance.audit.verify import verify
from compliance.routing_batches import decode, encode
from compliance.routing_log import RoutingLogWriter
from compliance.store.base import transaction
from compliance.store.engine import create_store_engine
from compliance.store.migrate import upgrade
from compliance.store.routing_log_store import RoutingLogStore
from tests.audit_chain_support import decision, keys_of
from tests.audit_support import make_record, seeded_store
from tests.pg import PostgresUnavailable, temporary_database

AT = datetime(2026, 12, 1, 12, 0, 0, 250_000, tzinfo=UTC)


def full(record: Mapping[str, Any]) -> dict[str, Any]:
    """A record with every column, absent JSON columns as the store defaults them."""
    defaults = {"attempts": [], "jurisdictions": [], "regimes": [], "reasons": []}
    row = {name: record.get(name) for name in record_codec.INSERT_COLUMNS[:-3]}
    for name in record_codec.JSON_NAMES:
        if row[name] is None:
            row[name] = defaults.get(name, {})
    return row


@pytest.fixture(scope="module")
def real_records(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """Routing records made by the real routing core and gateway.routing.records."""
    from gateway.routing.snapshot import RoutingSnapshot

    path = tmp_path_factory.mktemp("codec") / "policy.db"
    store = seeded_store(f"sqlite:///{path}")
    snapshot = RoutingSnapshot(store.load_snapshot())
    store.close()
    return [
        make_record(snapshot, "r-1", AT, client="DE"),
        make_record(snapshot, "r-2", AT, client="DE", subject="CN"),
        make_record(snapshot, "r-3", AT, client="DE", fail_first=True),
        make_record(snapshot, "r-4", AT, client=None, tenant=None),
    ]


def all_records(real: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [*variants(), *real]


def variants() -> list[dict[str, Any]]:
    """Records the data path never makes, which the store must still hash the same."""
    return [
        decision(1),
        decision(2, at=AT.replace(microsecond=0)),  # no fraction: still .000000 in the hash
        decision(3, at=datetime(2026, 12, 1, 13, tzinfo=timezone(timedelta(hours=1)))),
        decision(4, latency_ms=7, policy_version="3", status_code="451"),
        decision(5, explanation={"tags": {"b", "a"}, 1: "non-string key"}, attempts=None),
        decision(6, reasons=("tuple", "reason"), latency_ms=float("nan")),
        {"decision_id": "m", "decided_at": AT, "outcome": "routed", "status_code": 200},
        decision(7, model="grüße-模型", tenant_id=None, explanation={"x": [1.5, -0.0, 10**15]}),
    ]


def test_payload_hash_is_the_canonical_entry_hash(real_records: list[dict[str, Any]]) -> None:
    for record in all_records(real_records):
        item = record_codec.parse(encode(record))
        fields = normalise_fields(Kind.DECISION, full(record))
        for seq, prev in ((1, "0" * 64), (123_456, "ab" * 32)):
            assert item.entry_bytes(seq, prev) == entry_bytes(Kind.DECISION, seq, prev, fields)
        decoded = decode(encode(record))
        assert orjson.dumps(decoded, option=orjson.OPT_SORT_KEYS) == orjson.dumps(
            {**fields, "decided_at": fields["decided_at"].astimezone(UTC)},
            option=orjson.OPT_SORT_KEYS,
        )


def raw_rows(path: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT * FROM routing_decisions ORDER BY seq").fetchall()


def test_stored_rows_are_byte_identical_to_the_generic_chain_code(
    tmp_path: Path, real_records: list[dict[str, Any]]
) -> None:
    records = all_records(real_records)
    fast, generic = tmp_path / "fast.db", tmp_path / "generic.db"
    for path in (fast, generic):
        upgrade(f"sqlite:///{path}")
    log = RoutingLogStore(f"sqlite:///{fast}")
    log.append_batch(records[:3])
    log.append_batch(records[3:])
    log.close()
    engine = create_store_engine(f"sqlite:///{generic}")
    for part in (records[:3], records[3:]):
        with transaction(engine, write=True) as conn:
            append_entries(conn, Kind.DECISION, [full(r) for r in part])
    engine.dispose()
    assert raw_rows(fast) == raw_rows(generic)
    key = Ed25519PrivateKey.generate()
    engine = create_store_engine(f"sqlite:///{fast}")
    try:
        report = verify(engine, keys_of(key))
    finally:
        engine.dispose()
    assert report.ok and report.records == len(records), report.problems


def pg_rows(url: str, records: list[dict[str, Any]], fast: bool) -> list[Any]:
    """Store `records` on PostgreSQL (record_codec or the generic chain code), read them back
    and check the chain verifies."""
    upgrade(url)
    engine = create_store_engine(url)
    try:
        if fast:
            RoutingLogStore(engine).append_batch(records, skip_existing=True)
        else:
            with transaction(engine, write=True) as conn:
                append_entries(conn, Kind.DECISION, [full(r) for r in records])
        report = verify(engine, keys_of(Ed25519PrivateKey.generate()))
        assert report.ok and report.records == len(records), report.problems
        return [RoutingLogStore(engine).get(r["decision_id"]) for r in records]
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_on_postgresql_rows_read_back_as_the_generic_code_stores_them_and_verify(
    real_records: list[dict[str, Any]],
) -> None:
    records = all_records(real_records)
    stored = []
    for fast in (True, False):
        with ExitStack() as stack:
            try:
                url = stack.enter_context(temporary_database("rg_codec"))
            except PostgresUnavailable as exc:
                pytest.skip(str(exc))
            stored.append(pg_rows(url, records, fast))
    fast_rows, generic_rows = stored
    for row in generic_rows:  # a NaN float column: PostgreSQL kept NaN, now NULL as on SQLite
        if row is not None and row["latency_ms"] != row["latency_ms"]:
            row["latency_ms"] = None
    assert fast_rows == generic_rows


def test_invalid_records_are_spooled_as_plain_json_and_refused_with_the_reason() -> None:
    for record, reason in (
        ({**decision(1), "seq": 9}, "unknown columns ['seq']"),
        ({"decision_id": "x", "decided_at": AT}, "missing ['outcome', 'status_code']"),
        (decision(2, decided_at=datetime(2026, 1, 1)), "timezone-aware"),
        (decision(3, status_code="teapot"), "invalid literal"),
    ):
        payload = encode(record)
        assert payload[:1] == b"{" and decode(payload)["decision_id"] == record["decision_id"]
        with pytest.raises(ValueError, match=reason.replace("[", r"\[").replace("]", r"\]")):
            record_codec.parse(payload)


class CountingSink:
    """A generic (dict) sink that counts its transactions."""

    def __init__(self) -> None:
        self.rows: list[Mapping[str, Any]] = []
        self.batches = 0

    def append_batch(
        self, records: Sequence[Mapping[str, Any]], *, skip_existing: bool = False
    ) -> int:
        self.batches += 1
        self.rows.extend(records)
        return len(records)


async def eventually(check: Any, seconds: float = 5.0) -> None:
    for _ in range(int(seconds / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached")


async def test_a_transaction_carries_a_batch_not_one_fsync_group(tmp_path: Path) -> None:
    sink = CountingSink()
    writer = RoutingLogWriter(sink, Spool(tmp_path), batch_size=50, linger=30.0)
    writer.start()
    futures = [writer.submit(decision(n)) for n in range(120)]
    await asyncio.gather(*futures)  # durable: enough for two full batches and a remainder
    await eventually(lambda: len(sink.rows) == 120)  # no 30 s linger while a backlog is there
    assert sink.batches <= 4
    for n in range(120, 125):
        await writer.record(decision(n))  # five fsyncs, less than a batch: they wait
    await asyncio.sleep(0.3)
    assert len(sink.rows) == 120
    batches = sink.batches
    await writer.close()
    assert [r["decision_id"] for r in sink.rows] == [f"dec-{n:06d}" for n in range(125)]
    assert sink.batches == batches + 1


async def test_old_format_spool_replays_and_the_store_refuses_are_set_aside(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path}/log.db"
    upgrade(url)
    old = Spool(tmp_path / "spool")
    old.open()
    for n in range(3):  # what the previous version spooled: the record as plain JSON
        old.append(orjson.dumps(decision(n)))
    old.flush()
    old.close()
    log = RoutingLogStore(url)
    rejected: list[tuple[Any, str]] = []
    writer = RoutingLogWriter(
        log, Spool(tmp_path / "spool"), on_poison=lambda r, e: rejected.append((r, e))
    )
    writer.start()
    await writer.record(decision(10))
    await writer.record(decision(11, outcome=None))  # encodes, but NOT NULL in the table
    await writer.record(decision(12))
    await writer.close()
    assert log.count() == 5
    assert log.get("dec-000011") is None and log.get("dec-000002") is not None
    assert [(r["decision_id"], "NOT NULL" in e) for r, e in rejected] == [("dec-000011", True)]
    engine = create_store_engine(url)
    try:
        report = verify(engine, keys_of(Ed25519PrivateKey.generate()))
    finally:
        engine.dispose()
        log.close()
    assert report.ok and report.records == 5, report.problems
