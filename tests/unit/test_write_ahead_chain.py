"""Write-ahead decisions (kind `intent`) in the audit chain on a real SQLite file: stored before
their outcomes, verified and tamper-evident like every entry, and shown with outcome
`unknown` while no outcome joins them (search pages, show, report)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from compliance.audit.canonical import Kind
from compliance.audit.entries import iter_entries
from compliance.audit.spool import Spool
from compliance.audit.verify import verify
from compliance.audit_query.filters import parse_filter
from compliance.audit_query.reader import AuditReader
from compliance.routing_log import OUTCOME_FLUSH_DELAY, Durability, RoutingLogWriter
from compliance.store.base import transaction
from compliance.store.engine import create_store_engine
from compliance.store.migrate import upgrade
from compliance.store.routing_log_store import RoutingLogStore
from tests.audit_chain_support import T0, decision, intent_entry, keys_of, outcome_entry

KEYS = keys_of(Ed25519PrivateKey.generate())


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[sa.Engine]:
    url = f"sqlite:///{tmp_path}/audit.db"
    upgrade(url)
    engine = create_store_engine(url)
    yield engine
    engine.dispose()


def test_intents_go_before_their_outcomes_and_verify(engine: sa.Engine) -> None:
    store = RoutingLogStore(engine)
    # One batch as the spool hands it over: decisions and outcomes interleaved.
    batch = [
        intent_entry(1),
        intent_entry(2),
        outcome_entry(1),
        intent_entry(3),
        outcome_entry(2),
        outcome_entry(9),
    ]
    assert store.append_encoded(batch, skip_existing=True) == 6
    assert (
        store.append_encoded([intent_entry(3), outcome_entry(3)], skip_existing=True) == 1
    )  # replayed
    with transaction(engine, write=False) as conn:
        entries = [(e.kind, e.fields["decision_id"]) for e in iter_entries(conn)]
    assert entries == [
        (Kind.INTENT, "dec-000001"),
        (Kind.INTENT, "dec-000002"),
        (Kind.INTENT, "dec-000003"),
        (Kind.DECISION, "dec-000001"),
        (Kind.DECISION, "dec-000002"),
        (Kind.DECISION, "dec-000009"),
        (Kind.DECISION, "dec-000003"),
    ]
    report = verify(engine, KEYS)
    assert report.ok and report.summary() == "chain intact: 7 records", report.problems
    assert (report.decisions, report.intents, report.without_outcome) == (4, 3, 0)


def test_an_altered_intent_is_named(engine: sa.Engine) -> None:
    RoutingLogStore(engine).append_encoded([intent_entry(1), outcome_entry(1), intent_entry(2)])
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE routing_intents SET chosen_region = 'us-virginia'"))
    first = verify(engine, KEYS).first_break
    assert first is not None and first.problem == "altered" and first.seq == 1
    assert first.entry == "write-ahead decision dec-000001"


def test_a_decision_without_outcome_is_listed_as_unknown_on_its_page(engine: sa.Engine) -> None:
    store = RoutingLogStore(engine)
    # 1..6 answered, 7 never (crash); 8 answered at the very instant 7 was decided.
    store.append_encoded([intent_entry(n) for n in range(1, 8)])
    same = T0 + timedelta(seconds=7)
    store.append_encoded([outcome_entry(n) for n in range(1, 7)])
    store.append_encoded([outcome_entry(8, decided_at=same)])
    reader = AuditReader(engine)
    seen: list[tuple[str, str]] = []
    cursor = None
    while True:
        page = reader.search(parse_filter(), limit=2, cursor=cursor)
        seen += [(r["decision_id"], r["outcome"]) for r in page.records]
        cursor = page.next_cursor
        if cursor is None:
            break
    expected = [("dec-000008", "routed"), ("dec-000007", "unknown")]
    expected += [(f"dec-{n:06d}", "routed") for n in range(6, 0, -1)]
    assert seen == expected  # each once, in (time, records before open decisions) order

    only = reader.search(parse_filter(outcome="unknown"), limit=10).records
    assert [(r["decision_id"], r["status_code"], r["outcome_recorded"]) for r in only] == [
        ("dec-000007", None, False)
    ]
    assert reader.search(parse_filter(outcome="routed"), limit=10).records[-1]["seq"] == 1
    shown = reader.get("dec-000007")
    assert shown is not None and shown["outcome"] == "unknown" and shown["write_ahead_seq"] == 7
    report = reader.report(parse_filter())
    assert report.outcomes == {"routed": 7, "unknown": 1} and report.without_outcome == 1
    assert verify(engine, KEYS).without_outcome == 1

    store.append_encoded([outcome_entry(7)])  # the outcome arrives after all (e.g. a late replay)
    assert reader.get("dec-000007")["outcome"] == "routed"  # type: ignore[index]
    assert reader.search(parse_filter(outcome="unknown"), limit=10).records == []


async def wait_until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    for _ in range(int(seconds / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met in time")


def started_writer(tmp_path: Path, durability: Durability) -> RoutingLogWriter:
    url = f"sqlite:///{tmp_path}/audit.db"
    upgrade(url)
    writer = RoutingLogWriter(
        RoutingLogStore(url), Spool(tmp_path / "spool"), durability=durability
    )
    writer.start()
    return writer


async def test_write_ahead_waits_for_the_decision_then_the_outcome(tmp_path: Path) -> None:
    writer = started_writer(tmp_path, "write-ahead")
    try:
        await writer.write_ahead(decision(1, status_code=0, attempts=[]))
        assert writer.fsyncs == 1  # durable before the caller may forward
        await writer.record(decision(1), written_ahead=True)
        assert writer.fsyncs == 2  # and the outcome before the response may complete
        await writer.record(decision(2, outcome="refused", status_code=451))
        assert writer.fsyncs == 3  # a refusal (no decision written ahead) too
    finally:
        await writer.close()


async def test_lazy_write_ahead_is_durable_on_return_and_shares_fsyncs(tmp_path: Path) -> None:
    writer = started_writer(tmp_path, "write-ahead-lazy")
    try:
        await writer.write_ahead(decision(1, status_code=0, attempts=[]))
        assert writer.fsyncs == 1  # durable before the caller may forward
        await writer.record(decision(1), written_ahead=True)
        assert writer.fsyncs == 1 and writer.pending == 2  # the outcome is not waited for
        await asyncio.gather(*(writer.write_ahead(decision(n)) for n in range(2, 52)))
        assert writer.fsyncs <= 2, writer.fsyncs  # 50 decisions and the outcome: one commit
        for n in range(2, 52):
            await writer.record(decision(n), written_ahead=True)
        durable = writer.fsyncs
        await asyncio.sleep(OUTCOME_FLUSH_DELAY)  # with no decision to go along with:
        await wait_until(lambda: writer.fsyncs > durable)  # flushed on their own, all at once
    finally:
        await writer.close()
    engine = create_store_engine(f"sqlite:///{tmp_path}/audit.db")
    with transaction(engine, write=False) as conn:
        kinds = [(e.kind, e.fields["decision_id"]) for e in iter_entries(conn)]
    engine.dispose()
    assert kinds[0] == (Kind.INTENT, "dec-000001") and len(kinds) == 102
    assert sum(kind is Kind.INTENT for kind, _ in kinds) == 51


async def test_write_ahead_writes_nothing_in_strict_mode(tmp_path: Path) -> None:
    writer = started_writer(tmp_path, "strict")
    await writer.write_ahead(decision(1))
    assert writer.fsyncs == 0
    await writer.record(decision(1), written_ahead=True)
    assert writer.fsyncs == 1  # strict: every record is waited for
    await writer.close()
    engine = create_store_engine(f"sqlite:///{tmp_path}/audit.db")
    assert verify(engine, KEYS).intents == 0
    engine.dispose()
