"""Policy database on PostgreSQL: migrations, seed, snapshot round-trip, versioned writes, log."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from compliance.pack import load_pack
from compliance.store.catalog_file import load_catalog
from compliance.store.migrate import current_revision, head_revision, upgrade
from compliance.store.policy_store import PolicyStore, StoreError
from compliance.store.routing_log_store import RoutingLogStore
from compliance.store.schema import metadata
from regions.catalog import Region, RegionStatus
from tests.pg import PostgresUnavailable, temporary_database

pytestmark = [pytest.mark.postgres, pytest.mark.integration]


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with ExitStack() as stack:
        try:
            database_url = stack.enter_context(temporary_database("rg_store"))
        except PostgresUnavailable as exc:
            pytest.skip(str(exc))
        yield database_url


@pytest.fixture(scope="module")
def store(url: str) -> Iterator[PolicyStore]:
    assert current_revision(url) is None
    upgrade(url)
    policy_store = PolicyStore(url)
    label, regimes = load_pack()
    regions, tenants = load_catalog()
    assert policy_store.seed_if_empty(label, regimes, regions, tenants)
    yield policy_store
    policy_store.close()


def test_migration_matches_schema(store: PolicyStore, url: str) -> None:
    assert current_revision(url) == head_revision()
    upgrade(url)  # idempotent
    with store.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, metadata) == []
        names = set(sa.inspect(conn).get_table_names())
    assert {"policy_version", "regime_rules", "routing_decisions", "tenant_api_keys"} <= names


def test_seed_round_trips_exactly(store: PolicyStore) -> None:
    label, regimes = load_pack()
    regions, tenants = load_catalog()
    assert not store.seed_if_empty(label, regimes, regions, tenants)
    snapshot = store.load_snapshot()
    assert snapshot.label == label
    assert snapshot.regimes == regimes
    assert snapshot.regions == tuple(sorted(regions, key=lambda r: r.id))
    assert dict(snapshot.tenants) == {t.id: t for t in tenants}
    tenant = snapshot.tenant_for_key("rg-demo-key")
    assert tenant is not None and tenant.id == "demo"


def test_writes_bump_version_and_snapshot_is_consistent(store: PolicyStore, url: str) -> None:
    start = store.current_version()
    region = Region("ap-seoul", "Seoul", "KR", 37.57, 126.98, "https://seoul.example")
    assert store.upsert_region(region) == start + 1
    assert store.set_region_status("ap-seoul", "disabled") == start + 2
    status = store.load_snapshot().region_by_id["ap-seoul"].status
    assert status is RegionStatus.DISABLED

    # A write landing between the statements of load_snapshot() is not half-seen.
    writer = PolicyStore(url)
    fired: list[bool] = []

    def write_midway(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if not fired and "FROM regions" in statement:
            fired.append(True)
            writer.delete_region("ap-seoul")

    sa.event.listen(store.engine, "before_cursor_execute", write_midway)
    try:
        snapshot = store.load_snapshot()
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", write_midway)
        writer.close()
    assert fired
    assert snapshot.version == start + 2 and "ap-seoul" in snapshot.region_by_id
    assert store.current_version() == start + 3

    gdpr = snapshot.regimes[0]
    assert store.replace_regime(dataclasses.replace(gdpr, rules=gdpr.rules[:0])) == start + 4
    assert store.load_snapshot().regimes[0].rules == ()


def test_routing_log_batch(store: PolicyStore) -> None:
    log = RoutingLogStore(store.engine)
    records = [
        {
            "decision_id": f"pg-{i}",
            "decided_at": datetime(2026, 12, 1, 12, 0, i, tzinfo=UTC),
            "tenant_id": "demo",
            "outcome": "routed",
            "status_code": 200,
            "chosen_region": "eu-frankfurt",
            "latency_ms": 3.25,
            "attempts": [{"region": "eu-frankfurt", "status": 200}],
            "explanation": {"n": i, "regions": ["eu-frankfurt"]},
        }
        for i in range(50)
    ]
    log.append_batch(records)
    assert log.count() == 50
    with pytest.raises(StoreError):
        log.append_batch([{**records[0], "decision_id": "pg-new"}, records[1]])
    assert log.count() == 50
    got = log.get("pg-7")
    assert got is not None
    assert got["decided_at"] == records[7]["decided_at"] and got["decided_at"].tzinfo is not None
    assert got["explanation"] == {"n": 7, "regions": ["eu-frankfurt"]}
    assert [r["decision_id"] for r in log.recent(3)] == ["pg-49", "pg-48", "pg-47"]
