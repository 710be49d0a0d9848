"""Admin writes on real databases (SQLite file; PostgreSQL when reachable): versioning, ETags,
concurrent writers, references, and the configuration log entry every change leaves."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from compliance.model import TransferOptIn
from compliance.pack import load_pack
from compliance.snapshot import hash_api_key
from compliance.store.access_store import Principal, Role
from compliance.store.admin_documents import document_of, etag_of
from compliance.store.admin_ops import (
    REGIMES,
    REGIONS,
    TENANTS,
    AdminOps,
    InvalidReference,
    NotFoundError,
    PreconditionFailed,
    keep_keys_unless_given,
)
from compliance.store.catalog_file import load_catalog
from compliance.store.migrate import upgrade
from compliance.store.policy_store import PolicyStore
from compliance.store.schema import config_changes
from regions.catalog import Region, RegionStatus
from tests.pg import PostgresUnavailable, temporary_database

ADMIN = Principal("alice", Role.ADMIN)
OPERATOR = Principal("bob", Role.OPERATOR)
NEW = Region("eu-paris", "Paris", "FR", 48.85, 2.35, "http://127.0.0.1:9200", frozenset({"m"}))


BOTH_BACKENDS = pytest.mark.parametrize(
    "store", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
"""Tests whose point is the database's concurrency control also run on PostgreSQL."""


@pytest.fixture
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[PolicyStore]:
    with ExitStack() as stack:
        if getattr(request, "param", "sqlite") == "sqlite":
            url = f"sqlite:///{tmp_path}/policy.db"
        else:
            try:
                url = stack.enter_context(temporary_database("rg_admin"))
            except PostgresUnavailable as exc:
                pytest.skip(str(exc))
        upgrade(url)
        policy_store = PolicyStore(url)
        label, regimes = load_pack()
        regions, tenants = load_catalog()
        policy_store.seed_if_empty(label, regimes, regions, tenants)
        yield policy_store
        policy_store.close()


@pytest.fixture
def ops(store: PolicyStore) -> AdminOps:
    return AdminOps(store)


def changes(store: PolicyStore) -> list[dict[str, Any]]:
    columns = [
        config_changes.c[c]
        for c in ("actor", "role", "object_type", "object_id", "action", "before", "after")
    ]
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(*columns, config_changes.c.policy_version).order_by(config_changes.c.seq)
        )
        return [dict(r._mapping) for r in rows]


@BOTH_BACKENDS
def test_put_creates_replaces_and_is_idempotent(ops: AdminOps, store: PolicyStore) -> None:
    version = store.current_version()
    created = ops.put(REGIONS, NEW.id, lambda _: NEW, actor=ADMIN)
    assert (created.outcome, created.value, created.policy_version) == ("created", NEW, version + 1)
    again = ops.put(REGIONS, NEW.id, lambda _: NEW, actor=OPERATOR)
    assert (again.outcome, again.policy_version) == ("unchanged", version + 1)
    heavier = dataclasses.replace(NEW, weight=10)
    replaced = ops.put(REGIONS, NEW.id, lambda _: heavier, actor=OPERATOR, if_match=etag_of(NEW))
    assert (replaced.outcome, replaced.policy_version) == ("replaced", version + 2)
    assert store.load_snapshot().region_by_id[NEW.id] == heavier
    log = changes(store)
    assert [(c["action"], c["policy_version"]) for c in log] == [
        ("create", version + 1),
        ("replace", version + 2),
    ]
    assert log[0] | {"policy_version": 0} == {
        "actor": "alice",
        "role": "admin",
        "object_type": "region",
        "object_id": NEW.id,
        "action": "create",
        "before": None,
        "after": document_of(NEW)
        | {"legal_facts_changed": ["country FR (new region)", "attestations none"]},
        "policy_version": 0,
    }
    assert (log[1]["before"]["weight"], log[1]["after"]["weight"]) == (100, 10)


def test_stale_if_match_is_refused_and_changes_nothing(ops: AdminOps, store: PolicyStore) -> None:
    ops.put(REGIONS, NEW.id, lambda _: NEW, actor=ADMIN)
    version = store.current_version()
    with pytest.raises(PreconditionFailed) as caught:
        ops.put(REGIONS, NEW.id, lambda _: NEW, actor=ADMIN, if_match='"stale"')
    assert caught.value.current_etag == etag_of(NEW)
    with pytest.raises(PreconditionFailed, match="does not exist"):
        ops.put(REGIONS, "eu-nowhere", lambda _: NEW, actor=ADMIN, if_match="*")
    assert store.current_version() == version
    assert len(changes(store)) == 1


@BOTH_BACKENDS
def test_concurrent_writers_with_one_etag_cannot_both_win(ops: AdminOps) -> None:
    ops.put(REGIONS, NEW.id, lambda _: NEW, actor=ADMIN)
    tag, writers = etag_of(ops.get(REGIONS, NEW.id)), 6
    barrier, results = threading.Barrier(writers), []

    def write(weight: int) -> None:
        barrier.wait()
        try:
            value = dataclasses.replace(NEW, weight=weight)
            ops.put(REGIONS, NEW.id, lambda _: value, actor=ADMIN, if_match=tag)
            results.append(weight)
        except PreconditionFailed:
            results.append(-1)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [w for w in results if w >= 0]
    assert len(results) == writers and len(winners) == 1
    assert ops.get(REGIONS, NEW.id).weight == winners[0]


def test_patch_and_delete(ops: AdminOps, store: PolicyStore) -> None:
    drain = lambda r: dataclasses.replace(r, status=RegionStatus.DRAINING)  # noqa: E731
    with pytest.raises(NotFoundError, match="no region 'eu-paris'"):
        ops.put(REGIONS, NEW.id, drain, actor=ADMIN, create=False, patch=True)
    ops.put(REGIONS, NEW.id, lambda _: NEW, actor=ADMIN)
    patched = ops.put(REGIONS, NEW.id, drain, actor=ADMIN, create=False, patch=True)
    assert patched.outcome == "updated"
    deleted = ops.delete(REGIONS, NEW.id, actor=ADMIN, if_match=etag_of(patched.value))
    assert (deleted.outcome, deleted.value) == ("deleted", None)
    assert NEW.id not in store.load_snapshot().region_by_id
    last = changes(store)[-1]
    assert (last["action"], last["before"]["status"], last["after"]) == ("delete", "draining", None)
    with pytest.raises(NotFoundError):
        ops.delete(REGIONS, NEW.id, actor=ADMIN)


@BOTH_BACKENDS
def test_deleting_a_region_a_tenant_allows_warns_and_fails_closed(
    ops: AdminOps, store: PolicyStore
) -> None:
    ops.put(REGIONS, NEW.id, lambda _: NEW, actor=ADMIN)
    for tenant_id, allowed in (("acme-eu", {NEW.id, "eu-frankfurt"}), ("demo", {NEW.id})):
        tenant = dataclasses.replace(
            ops.get(TENANTS, tenant_id), allowed_regions=frozenset(allowed)
        )
        ops.put(TENANTS, tenant_id, lambda _, t=tenant: t, actor=ADMIN)  # type: ignore[misc]
    assert ops.delete(REGIONS, "us-oregon", actor=ADMIN).warnings == ()  # no tenant names it

    deleted = ops.delete(REGIONS, NEW.id, actor=ADMIN)
    assert deleted.warnings == (
        "tenant 'acme-eu' lists 'eu-paris' in allowed_regions; the regions it still allows: "
        "eu-frankfurt",
        "tenant 'demo' lists 'eu-paris' in allowed_regions and no other region: every request "
        "of this tenant will be refused until its allowed_regions is changed",
    )
    policy = store.load_snapshot()
    assert ops.get(TENANTS, "demo").allowed_regions == {NEW.id}  # kept as it was
    for countries in ({"FR"}, {"DE"}, {"US"}, {"IN"}):
        evaluation = policy.evaluate(
            frozenset(countries), "personal", policy.tenants["demo"], date(2026, 11, 26)
        )
        assert evaluation.allowed == frozenset()


def test_tenant_keys_replaced_or_kept(ops: AdminOps, store: PolicyStore) -> None:
    tenant = dataclasses.replace(
        ops.get(TENANTS, "demo"), api_key_hashes=frozenset({hash_api_key("new-key-1")})
    )
    ops.put(TENANTS, "demo", keep_keys_unless_given(tenant, True), actor=ADMIN)
    policy = store.load_snapshot()
    assert policy.tenant_for_key("new-key-1") is not None
    assert policy.tenant_for_key("rg-demo-key") is None
    renamed = dataclasses.replace(tenant, name="Renamed", api_key_hashes=frozenset())
    ops.put(TENANTS, "demo", keep_keys_unless_given(renamed, False), actor=ADMIN)
    policy = store.load_snapshot()
    assert policy.tenants["demo"].name == "Renamed"
    assert policy.tenant_for_key("new-key-1") is not None
    assert "new-key-1" not in str(changes(store))


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"allowed_regions": frozenset({"mars-1"})}, "allowed_regions", "unknown region 'mars-1'"),
        ({"denied_regions": frozenset({"mars-1"})}, "denied_regions", "unknown region 'mars-1'"),
        (
            {"transfer_opt_ins": (TransferOptIn("nope", "US", "SCC"),)},
            "transfer_opt_ins[0].regime_id",
            "unknown regime 'nope'",
        ),
        (
            {"api_key_hashes": frozenset({hash_api_key("rg-demo-key")})},
            "api_keys",
            "an API key is already used by tenant 'demo'",
        ),
    ],
)
def test_tenant_references_are_checked(
    ops: AdminOps, store: PolicyStore, change: dict[str, Any], field: str, message: str
) -> None:
    version = store.current_version()
    tenant = dataclasses.replace(ops.get(TENANTS, "acme-eu"), **change)
    with pytest.raises(InvalidReference) as caught:
        ops.put(TENANTS, tenant.id, lambda _: tenant, actor=ADMIN)
    assert (caught.value.field, str(caught.value)) == (field, f"{field}: {message}")
    assert store.current_version() == version
    assert changes(store) == []


@BOTH_BACKENDS
def test_regime_override_enables_and_revokes(ops: AdminOps, store: PolicyStore) -> None:
    saudi = ops.get(REGIMES, "sa_pdpl")
    assert not saudi.enabled
    on = dataclasses.replace(saudi, enabled=True)
    ops.put(REGIMES, "sa_pdpl", lambda _: on, actor=ADMIN, create=False, patch=True)
    gdpr = ops.get(REGIMES, "gdpr")
    rules = tuple(
        dataclasses.replace(
            r, destinations=tuple(d for d in r.destinations if d.attestation != "eu_us_dpf")
        )
        for r in gdpr.rules
    )
    ops.put(REGIMES, "gdpr", lambda _: dataclasses.replace(gdpr, rules=rules), actor=ADMIN)
    policy = store.load_snapshot()
    by_id = {r.id: r for r in policy.regimes}
    assert by_id["sa_pdpl"].enabled
    assert not any(
        d.attestation == "eu_us_dpf" for r in by_id["gdpr"].rules for d in r.destinations
    )
    assert [r.id for r in policy.regimes] == [r.id for r in load_pack()[1]]  # order kept
    assert [c["action"] for c in changes(store)] == ["update", "replace"]


def test_regimes_are_not_created_and_rule_ids_stay_unique(ops: AdminOps) -> None:
    gdpr = ops.get(REGIMES, "gdpr")
    with pytest.raises(NotFoundError, match="no regime 'xx'"):
        ops.put(REGIMES, "xx", lambda _: gdpr, actor=ADMIN, create=False)
    stolen = dataclasses.replace(gdpr, rules=(*gdpr.rules, *ops.get(REGIMES, "uk_gdpr").rules))
    stolen = dataclasses.replace(
        stolen, rules=tuple(dataclasses.replace(r, regime_id="gdpr") for r in stolen.rules)
    )
    with pytest.raises(InvalidReference, match=r"rule id 'uk_gdpr\.\S+' belongs to regime"):
        ops.put(REGIMES, "gdpr", lambda _: stolen, actor=ADMIN, create=False)
