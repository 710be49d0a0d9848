"""Policy database on a real SQLite file: migrations, seeding, round-trips, versioned writes."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from compliance.model import Destination, Regime, Tenant
from compliance.pack import load_pack
from compliance.store.catalog_file import load_catalog
from compliance.store.migrate import current_revision, head_revision, upgrade
from compliance.store.policy_store import (
    NotFoundError,
    PolicyStore,
    StoreError,
    StoreUnavailable,
)
from compliance.store.routing_log_store import RoutingLogStore
from compliance.store.schema import metadata
from regions.catalog import Region, RegionStatus

DEMO_CATALOG = Path(__file__).resolve().parents[2] / "regions" / "data" / "demo-catalog.yaml"
MIGRATIONS = Path(__file__).parents[2] / "compliance" / "store" / "migrations" / "versions"
TABLES = {"alembic_version", *metadata.tables}


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/nested/dir/policy.db"


@pytest.fixture
def store(url: str) -> Iterator[PolicyStore]:
    upgrade(url)
    policy_store = PolicyStore(url)
    yield policy_store
    policy_store.close()


@pytest.fixture
def seeded(store: PolicyStore) -> PolicyStore:
    label, regimes = load_pack()
    regions, tenants = load_catalog(DEMO_CATALOG)
    assert store.seed_if_empty(label, regimes, regions, tenants)
    return store


def decision(n: int, **overrides: Any) -> dict[str, Any]:
    """A routing log record as the gateway would write it."""
    record: dict[str, Any] = {
        "decision_id": f"dec-{n:04d}",
        "decided_at": datetime(2026, 12, 1, 12, 0, n % 60, 123456, tzinfo=UTC),
        "tenant_id": "demo",
        "client_ip_hmac": "ab" * 32,
        "client_country": "DE",
        "subject_country": None,
        "data_class": "personal",
        "model": "gpt-4o-mini",
        "outcome": "routed",
        "status_code": 200,
        "chosen_region": "eu-frankfurt",
        "served_region": "eu-frankfurt",
        "policy_version": 1,
        "trace_id": "0" * 32,
        "latency_ms": 12.5,
        "attempts": [{"region": "eu-frankfurt", "status": 200}],
        "jurisdictions": ["DE"],
        "regimes": ["gdpr"],
        "reasons": [],
        "explanation": {"decision_id": f"dec-{n:04d}", "nested": {"ok": True, "n": n}},
    }
    record.update(overrides)
    return record


def test_upgrade_creates_file_directory_and_tables(url: str, tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "policy.db"
    assert current_revision(url) is None
    assert not path.exists()
    upgrade(url)
    assert path.exists()
    assert current_revision(url) == head_revision()
    assert head_revision() == sorted(p.name.split("_")[0] for p in MIGRATIONS.glob("0*.py"))[-1]
    upgrade(url)  # idempotent
    engine = sa.create_engine(url)
    try:
        assert set(sa.inspect(engine).get_table_names()) == TABLES
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(context, metadata) == []  # migration matches schema.py
    finally:
        engine.dispose()


def test_seed_round_trips_pack_and_catalog_exactly(seeded: PolicyStore) -> None:
    label, regimes = load_pack()
    regions, tenants = load_catalog(DEMO_CATALOG)
    snapshot = seeded.load_snapshot()
    assert (snapshot.version, snapshot.label) == (1, label)
    assert snapshot.regimes == regimes  # order, rules, destinations, dates, flags
    assert snapshot.regions == tuple(sorted(regions, key=lambda r: r.id))
    assert dict(snapshot.tenants) == {t.id: t for t in tenants}
    rules = [rule for regime in regimes for rule in regime.rules]
    assert any(r.effective_from for r in rules) and any(r.waived_by for r in rules)
    assert any(not r.enabled for r in regimes)
    assert any(d.attestation for r in rules for d in r.destinations)


def test_seed_twice_is_a_no_op(seeded: PolicyStore) -> None:
    label, regimes = load_pack()
    assert not seeded.seed_if_empty("other", regimes[:1], [], [])
    assert seeded.current_version() == 1
    assert seeded.load_snapshot().label == label


def test_tenant_for_key(seeded: PolicyStore) -> None:
    snapshot = seeded.load_snapshot()
    demo = snapshot.tenant_for_key("rg-demo-key")
    assert demo is not None and demo.id == "demo"
    acme = snapshot.tenant_for_key("rg-acme-eu-key")
    assert acme is not None and acme.home_jurisdiction == "DE"
    assert snapshot.tenant_for_key("rg-wrong-key") is None


def test_unseeded_database_reads_as_version_zero(store: PolicyStore) -> None:
    assert store.current_version() == 0
    snapshot = store.load_snapshot()
    assert (snapshot.version, snapshot.regimes, snapshot.regions) == (0, (), ())


def test_every_write_bumps_the_version(seeded: PolicyStore) -> None:
    tokyo = Region(
        "ap-tokyo", "Tokyo", "JP", 35.68, 139.69, "https://tokyo.example", frozenset({"m"})
    )
    assert seeded.upsert_region(tokyo) == 2
    moved = dataclasses.replace(tokyo, weight=40, attestations=frozenset({"appi_private_sector"}))
    assert seeded.upsert_region(moved) == 3
    assert seeded.set_region_status("ap-tokyo", RegionStatus.DRAINING) == 4
    snapshot = seeded.load_snapshot()
    assert snapshot.version == 4
    assert snapshot.region_by_id["ap-tokyo"] == dataclasses.replace(
        moved, status=RegionStatus.DRAINING
    )
    assert seeded.delete_region("ap-tokyo") == 5
    assert "ap-tokyo" not in seeded.load_snapshot().region_by_id

    tenant = Tenant("beta", "Beta Ltd", home_jurisdiction="GB", allowed_countries=frozenset({"GB"}))
    assert seeded.upsert_tenant(tenant, ["rg-beta-1", "rg-beta-2"]) == 6
    assert seeded.upsert_tenant(dataclasses.replace(tenant, name="Beta plc")) == 7
    snapshot = seeded.load_snapshot()
    beta = snapshot.tenant_for_key("rg-beta-2")
    assert beta is not None and beta.name == "Beta plc"
    assert beta.allowed_countries == frozenset({"GB"}) and beta.allowed_regions is None
    assert seeded.upsert_tenant(tenant, ["rg-beta-3"]) == 8
    snapshot = seeded.load_snapshot()
    assert snapshot.tenant_for_key("rg-beta-1") is None
    assert snapshot.tenant_for_key("rg-beta-3") is not None

    gdpr = next(r for r in snapshot.regimes if r.id == "gdpr")
    rule = dataclasses.replace(
        gdpr.rules[0],
        destinations=(Destination("DE"), Destination("US", "eu_us_dpf", "DPF only")),
        effective_to=date(2031, 12, 31),
    )
    edited = dataclasses.replace(gdpr, enabled=False, rules=(rule,))
    assert seeded.replace_regime(edited) == 9
    snapshot = seeded.load_snapshot()
    assert snapshot.regimes[[r.id for r in snapshot.regimes].index("gdpr")] == edited
    assert snapshot.regimes[0].id == "gdpr"  # keeps its position

    new = Regime("xx_test", "Test regime", frozenset({"FR"}), (), "test", enabled=True)
    assert seeded.replace_regime(new) == 10
    assert seeded.load_snapshot().regimes[-1] == new
    assert seeded.current_version() == 10


def test_failed_writes_change_nothing(seeded: PolicyStore) -> None:
    with pytest.raises(NotFoundError):
        seeded.delete_region("nowhere")
    with pytest.raises(NotFoundError):
        seeded.set_region_status("nowhere", "disabled")
    with pytest.raises(ValueError):
        seeded.set_region_status("eu-frankfurt", "paused")
    thief = Tenant("thief", "Thief")
    with pytest.raises(StoreError):
        seeded.upsert_tenant(thief, ["rg-demo-key"])  # owned by 'demo'
    regime = load_pack()[1][0]
    with pytest.raises(ValueError, match="do not belong"):
        seeded.replace_regime(dataclasses.replace(regime, id="other"))
    assert seeded.current_version() == 1
    snapshot = seeded.load_snapshot()
    assert "thief" not in snapshot.tenants
    assert snapshot.region_by_id["eu-frankfurt"].status is RegionStatus.ACTIVE


def test_concurrent_writers_serialise(seeded: PolicyStore, url: str) -> None:
    other = PolicyStore(url)  # a second engine, as a second process would have
    errors: list[BaseException] = []

    def write(store: PolicyStore, prefix: str) -> None:
        try:
            for i in range(15):
                store.upsert_region(Region(f"{prefix}-{i}", "r", "DE", 50, 8, "http://h"))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [
        threading.Thread(target=write, args=(seeded, "a")),
        threading.Thread(target=write, args=(other, "b")),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    other.close()
    assert errors == []
    assert seeded.current_version() == 31


def test_snapshot_is_one_consistent_read(seeded: PolicyStore, url: str) -> None:
    writer = PolicyStore(url)
    fired: list[bool] = []

    def write_midway(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if not fired and "FROM regions" in statement:
            fired.append(True)
            writer.delete_region("eu-frankfurt")

    sa.event.listen(seeded.engine, "before_cursor_execute", write_midway)
    try:
        snapshot = seeded.load_snapshot()
    finally:
        sa.event.remove(seeded.engine, "before_cursor_execute", write_midway)
        writer.close()
    assert fired
    assert snapshot.version == 1 and "eu-frankfurt" in snapshot.region_by_id
    assert seeded.current_version() == 2
    assert "eu-frankfurt" not in seeded.load_snapshot().region_by_id


def test_unreachable_or_unmigrated_database_is_unavailable(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    for url in (f"sqlite:///{blocked}/policy.db", "postgresql+psycopg://postgres@127.0.0.1:1/x"):
        store = PolicyStore(url)
        with pytest.raises(StoreUnavailable):
            store.current_version()
        store.close()
    empty = PolicyStore(f"sqlite:///{tmp_path}/empty.db")
    with pytest.raises(StoreUnavailable):
        empty.load_snapshot()
    with pytest.raises(StoreUnavailable):
        RoutingLogStore(empty.engine).count()
    empty.close()


def test_routing_log_append_get_count_recent(store: PolicyStore) -> None:
    log = RoutingLogStore(store.engine)
    log.append_batch([])
    assert log.count() == 0
    log.append_batch([decision(1), decision(2, outcome="refused", status_code=451)])
    log.append_batch(
        [decision(3, decided_at=datetime(2026, 12, 1, 13, tzinfo=timezone(timedelta(hours=1))))]
    )
    assert log.count() == 3

    got = log.get("dec-0002")
    assert got is not None
    expected = decision(2, outcome="refused", status_code=451)
    assert {k: got[k] for k in expected} == expected
    assert got["seq"] == 2 and got["chain_seq"] == 2  # an audit-chain entry (compliance.audit)
    first = log.get("dec-0001")
    assert first is not None and got["prev_hash"] == first["record_hash"] != got["record_hash"]
    assert got["decided_at"].tzinfo is not None
    third = log.get("dec-0003")
    assert third is not None and third["decided_at"] == datetime(2026, 12, 1, 12, tzinfo=UTC)
    assert log.get("missing") is None
    assert [r["decision_id"] for r in log.recent(2)] == ["dec-0003", "dec-0002"]


def test_routing_log_batches_are_atomic_and_checked(store: PolicyStore) -> None:
    log = RoutingLogStore(store.engine)
    log.append_batch([decision(1)])
    with pytest.raises(StoreError):
        log.append_batch([decision(2), decision(1)])  # duplicate decision_id
    assert log.count() == 1
    with pytest.raises(ValueError, match="unknown columns"):
        log.append_batch([decision(5, seq=9)])
    with pytest.raises(ValueError, match="timezone-aware"):
        log.append_batch([decision(6, decided_at=datetime(2026, 1, 1))])
    minimal = {
        "decision_id": "m",
        "decided_at": datetime.now(UTC),
        "outcome": "x",
        "status_code": 0,
    }
    log.append_batch([minimal])
    row = log.get("m")
    assert row is not None and row["attempts"] == [] and row["explanation"] == {}
    assert row["tenant_id"] is None
