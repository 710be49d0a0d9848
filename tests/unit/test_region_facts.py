"""A region's country and attestations are legal facts: only the admin role changes them, and
the configuration log names what changed."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from compliance.pack import load_pack
from compliance.store.access_store import Principal, Role
from compliance.store.admin_ops import REGIONS, AdminOps
from compliance.store.catalog_file import load_catalog
from compliance.store.migrate import upgrade
from compliance.store.policy_store import PolicyStore
from compliance.store.region_facts import LegalFactsForbidden, legal_fact_changes
from compliance.store.schema import config_changes
from regions.catalog import Region, RegionStatus

ADMIN = Principal("alice", Role.ADMIN)
OPERATOR = Principal("bob", Role.OPERATOR)
PARIS = Region("eu-paris", "Paris", "FR", 48.85, 2.35, "http://127.0.0.1:9200", frozenset({"m"}))


@pytest.fixture
def ops(tmp_path: Path) -> Iterator[AdminOps]:
    url = f"sqlite:///{tmp_path}/policy.db"
    upgrade(url)
    store = PolicyStore(url)
    label, regimes = load_pack()
    store.seed_if_empty(label, regimes, *load_catalog())
    yield AdminOps(store)
    store.close()


def _last_after(ops: AdminOps) -> object:
    with ops._store.engine.connect() as conn:
        return conn.execute(
            sa.select(config_changes.c.after).order_by(config_changes.c.seq.desc()).limit(1)
        ).scalar()


def test_changes_are_named() -> None:
    oregon = dataclasses.replace(PARIS, country="US", attestations=frozenset({"eu_us_dpf"}))
    assert legal_fact_changes(PARIS, oregon) == ("country FR→US", "attestations +eu_us_dpf")
    assert legal_fact_changes(oregon, PARIS) == ("country US→FR", "attestations -eu_us_dpf")
    assert legal_fact_changes(PARIS, dataclasses.replace(PARIS, weight=3)) == ()
    assert legal_fact_changes(None, oregon) == (
        "country US (new region)",
        "attestations eu_us_dpf",
    )
    assert legal_fact_changes(PARIS, None) == ()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"attestations": frozenset({"eu_us_dpf"})}, "(attestations +eu_us_dpf)"),
        ({"country": "GB"}, "(country US→GB)"),
    ],
)
def test_operator_may_not_change_legal_facts(
    ops: AdminOps, change: dict[str, object], message: str
) -> None:
    virginia = ops.get(REGIONS, "us-virginia")
    changed = dataclasses.replace(virginia, **change)  # type: ignore[arg-type]
    with pytest.raises(LegalFactsForbidden) as refused:
        ops.put(REGIONS, "us-virginia", lambda _: changed, actor=OPERATOR)
    assert message in str(refused.value) and "needs the admin role" in str(refused.value)
    assert ops.get(REGIONS, "us-virginia") == virginia  # nothing written


def test_operator_may_not_create_but_may_run_and_delete(ops: AdminOps) -> None:
    with pytest.raises(LegalFactsForbidden, match="may not create a region"):
        ops.put(REGIONS, PARIS.id, lambda _: PARIS, actor=OPERATOR)
    assert ops.put(REGIONS, PARIS.id, lambda _: PARIS, actor=ADMIN).outcome == "created"
    running = dataclasses.replace(
        PARIS, status=RegionStatus.DRAINING, weight=5, base_url="http://127.0.0.1:9201"
    )
    assert ops.put(REGIONS, PARIS.id, lambda _: running, actor=OPERATOR).outcome == "replaced"
    assert "legal_facts_changed" not in _last_after(ops)  # type: ignore[operator]
    assert ops.delete(REGIONS, PARIS.id, actor=OPERATOR).outcome == "deleted"


def test_admin_change_is_logged_with_the_legal_facts(ops: AdminOps) -> None:
    virginia = ops.get(REGIONS, "us-virginia")
    widened = dataclasses.replace(virginia, attestations=frozenset({"eu_us_dpf"}))
    assert ops.put(REGIONS, "us-virginia", lambda _: widened, actor=ADMIN).outcome == "replaced"
    after = _last_after(ops)
    assert isinstance(after, dict)
    assert after["legal_facts_changed"] == ["attestations +eu_us_dpf"]
    assert after["attestations"] == ["eu_us_dpf"]
