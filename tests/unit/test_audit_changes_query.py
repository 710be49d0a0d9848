"""The configuration-change read side (compliance.audit_query.changes) on real databases:
filters, keyset pages, one change explained, chain positions, and the verify breakdown."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from compliance.audit.config_log import record_change
from compliance.audit.verify import verify
from compliance.audit_query.changes import change_document, parse_change_filter
from compliance.audit_query.cursor import Position, encode_cursor
from compliance.audit_query.filters import FilterError
from compliance.audit_query.reader import AuditReader
from compliance.store.access_store import AccessStore, Principal, Role, hash_token
from compliance.store.base import transaction
from compliance.store.engine import create_store_engine
from compliance.store.migrate import upgrade
from compliance.store.routing_log_store import RoutingLogStore
from tests.audit_chain_support import T0, decision
from tests.pg import PostgresUnavailable, temporary_database

REGION = {"name": "Frankfurt", "country": "DE", "weight": 100, "attestations": []}


def _change(engine: sa.Engine, n: int, **fields: Any) -> int:
    values: dict[str, Any] = {
        "actor": "alice",
        "role": "admin",
        "object_type": "region",
        "object_id": "eu-frankfurt",
        "action": "update",
        "before": REGION,
        "after": {**REGION, "weight": 50},
        "policy_version": n,
        "changed_at": T0 + timedelta(seconds=n),
        **fields,
    }
    with transaction(engine, write=True) as conn:
        return record_change(conn, **values)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with ExitStack() as stack:
        if request.param == "sqlite":
            database = f"sqlite:///{tmp_path / 'changes.db'}"
        else:
            try:
                database = stack.enter_context(temporary_database("rg_changes"))
            except PostgresUnavailable as exc:
                pytest.skip(str(exc))
        upgrade(database)
        yield database


@pytest.fixture
def engine(url: str) -> Iterator[sa.Engine]:
    engine = create_store_engine(url)
    yield engine
    engine.dispose()


@pytest.fixture
def reader(engine: sa.Engine) -> Iterator[AuditReader]:
    reader = AuditReader(engine)
    yield reader
    reader.close()


def test_filters_and_pages_newest_first(engine: sa.Engine, reader: AuditReader) -> None:
    for n in range(1, 8):
        _change(engine, n, actor="bob" if n % 2 else "alice", object_id=f"r-{n % 3}")
    # two changes at the same instant: the keyset order must still be total
    _change(engine, 8, changed_at=T0 + timedelta(seconds=7))

    seen: list[int] = []
    cursor = None
    while True:
        page = reader.search_changes(parse_change_filter(), 3, cursor)
        seen.extend(c["change_id"] for c in page.changes)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == [8, 7, 6, 5, 4, 3, 2, 1]

    bob = reader.search_changes(parse_change_filter(actor="bob", object_id="r-1"), 50, None)
    assert [c["change_id"] for c in bob.changes] == [7, 1]
    period = parse_change_filter(
        since=(T0 + timedelta(seconds=2)).isoformat(), until=(T0 + timedelta(seconds=4)).isoformat()
    )
    assert [c["change_id"] for c in reader.search_changes(period, 50, None).changes] == [3, 2]
    row = bob.changes[0]
    assert row["changed_fields"] == ["weight"]
    assert row["summary"] == "region r-1 updated by bob (admin): weight"
    assert "before" not in row and "after" not in row


def test_a_decision_cursor_is_refused_for_changes(engine: sa.Engine, reader: AuditReader) -> None:
    _change(engine, 1)
    foreign = encode_cursor(Position(T0, 1))
    with pytest.raises(FilterError, match="cursor: not a cursor"):
        reader.search_changes(parse_change_filter(), 10, foreign)


@pytest.mark.parametrize(
    ("given", "field"),
    [
        ({"since": "yesterday"}, "since"),
        ({"since": "2026-12-02", "until": "2026-12-01"}, "until"),
        ({"object_type": "region type"}, "object_type"),
        ({"action": "drop;"}, "action"),
        ({"actor": "x" * 129}, "actor"),
    ],
)
def test_bad_filters_name_the_field(given: dict[str, str], field: str) -> None:
    with pytest.raises(FilterError) as caught:
        parse_change_filter(**given)
    assert caught.value.field == field


def test_a_region_change_is_explained_with_its_legal_facts(
    engine: sa.Engine, reader: AuditReader
) -> None:
    after = {
        **REGION,
        "attestations": ["eu_us_dpf"],
        "legal_facts_changed": ["attestations +eu_us_dpf"],
    }
    _change(engine, 1)
    seq = _change(engine, 2, after=after)
    found = reader.entry_at(seq)
    assert found is not None and found[0] == "change"
    document = change_document(found[1])
    assert document["change_id"] == 2 and document["chain_seq"] == seq
    assert document["changes"] == [{"field": "attestations", "before": [], "after": ["eu_us_dpf"]}]
    assert document["legal_facts_changed"] == ["attestations +eu_us_dpf"]
    assert document["explanation_text"][1:] == [
        "By alice (role admin); policy version 2.",
        'attestations: [] → ["eu_us_dpf"]',
        "Legal facts changed: attestations +eu_us_dpf.",
    ]
    assert document["summary"].endswith("; legal facts changed: attestations +eu_us_dpf")


def test_creates_and_deletes_show_the_whole_object(engine: sa.Engine, reader: AuditReader) -> None:
    _change(engine, 1, action="create", before=None, after=REGION)
    _change(engine, 2, action="delete", before=REGION, after=None)
    created, deleted = (reader.get_change(n) for n in (1, 2))
    assert created is not None and deleted is not None
    assert change_document(created)["explanation_text"][2] == (
        "Created with: attestations=[], country=DE, name=Frankfurt, weight=100"
    )
    assert change_document(deleted)["explanation_text"][2].startswith("Removed; it was: ")
    assert reader.get_change(3) is None


def test_chain_positions_name_decisions_and_changes(url: str, engine: sa.Engine) -> None:
    log = RoutingLogStore(url)
    try:
        log.append_batch([decision(1)])
        _change(engine, 1)
        log.append_batch([decision(2)])
    finally:
        log.close()
    reader = AuditReader(engine)
    kinds = [(found[0] if found else None) for found in map(reader.entry_at, (1, 2, 3, 4))]
    assert kinds == ["decision", "change", "decision", None]
    report = verify(engine, {})
    assert (report.records, report.decisions, report.config_changes) == (3, 2, 1)
    assert report.to_dict()["breakdown"] == (
        "2 decisions, 1 configuration changes; 0 signed checkpoints"
    )


def test_token_changes_enter_the_chain_without_the_token(
    url: str, engine: sa.Engine, reader: AuditReader
) -> None:
    store = AccessStore(engine)
    actor = Principal("cli:tokens:alice", Role.ADMIN)
    token = store.create("ops-auditor", Role.AUDITOR, actor=actor)
    assert store.revoke("ops-auditor", actor=actor)
    assert not store.revoke("ops-auditor", actor=actor)  # nothing live: nothing recorded

    changes = reader.search_changes(parse_change_filter(object_type="token"), 10, None).changes
    assert [(c["action"], c["object_id"], c["actor"]) for c in changes] == [
        ("revoke", "ops-auditor", "cli:tokens:alice"),
        ("create", "ops-auditor", "cli:tokens:alice"),
    ]
    assert changes[0]["changed_fields"] == ["revoked_at"]
    created = reader.get_change(changes[1]["change_id"])
    assert created is not None and created["after"]["role"] == "auditor"
    with engine.connect() as conn:
        stored = str(conn.execute(sa.text("SELECT * FROM config_changes")).all())
    assert token not in stored and hash_token(token) not in stored
    assert verify(engine, {}).ok


def test_a_refused_token_writes_nothing(engine: sa.Engine, reader: AuditReader) -> None:
    store = AccessStore(engine)
    store.create("twice", Role.ADMIN)
    with pytest.raises(Exception, match="already exists"):
        store.create("twice", Role.ADMIN)
    assert len(reader.search_changes(parse_change_filter(), 10, None).changes) == 1
