"""Retention: pruning old entries keeps the chain verifiable through a signed prune checkpoint,
and removing more than retention did is still detected."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from compliance.audit.ledger import read_head
from compliance.audit.retention import RetentionJob, prune
from compliance.audit.verify import verify
from compliance.store.base import transaction
from compliance.store.engine import create_store_engine
from compliance.store.migrate import upgrade
from compliance.store.routing_log_store import RoutingLogStore
from tests.audit_chain_support import T0, build_chain, decision, keys_of

KEY = Ed25519PrivateKey.generate()
KEYS = keys_of(KEY)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[sa.Engine]:
    url = f"sqlite:///{tmp_path}/audit.db"
    upgrade(url)
    engine = create_store_engine(url)
    build_chain(engine, KEY, 40, change_every=10, checkpoint_every=20)  # 44 entries
    yield engine
    engine.dispose()


def test_prune_keeps_the_rest_verifiable(engine: sa.Engine) -> None:
    result = prune(engine, KEY, T0 + timedelta(seconds=15))  # decisions 1-14, change #11
    assert (result.removed, result.through) == (15, 15)
    assert result.checkpoint is not None and result.checkpoint.kind == "prune"
    report = verify(engine, KEYS)
    assert report.ok, report.problems
    assert report.summary() == "chain intact: 29 records"
    assert (report.first_seq, report.bridged_by) == (16, 15)
    again = prune(engine, KEY, T0 + timedelta(seconds=31))
    assert again.through == 33 and verify(engine, KEYS).ok


def test_removing_more_than_retention_did_is_detected(engine: sa.Engine) -> None:
    prune(engine, KEY, T0 + timedelta(seconds=15))
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM routing_decisions WHERE chain_seq IN (16, 17)"))
    first = verify(engine, KEYS).first_break
    assert first is not None and (first.problem, first.seq) == ("deleted", 16)
    assert "no signed prune checkpoint" in first.detail


def test_a_prefix_deleted_without_retention_is_detected(engine: sa.Engine) -> None:
    with engine.begin() as conn:  # up to the periodic checkpoint at #22: not a prune checkpoint
        conn.execute(sa.text("DELETE FROM routing_decisions WHERE chain_seq <= 22"))
        conn.execute(sa.text("DELETE FROM config_changes WHERE chain_seq <= 22"))
    first = verify(engine, KEYS).first_break
    assert first is not None and (first.problem, first.seq) == ("deleted", 1)


def test_pruning_everything_then_writing_on(engine: sa.Engine) -> None:
    result = prune(engine, KEY, T0 + timedelta(days=1))
    assert result.removed == 44
    report = verify(engine, KEYS)
    assert report.ok and report.records == 0 and report.head_seq == 44
    RoutingLogStore(engine).append_batch([decision(100)])
    report = verify(engine, KEYS)
    assert report.ok and report.summary() == "chain intact: 1 records"
    assert report.first_seq == 45


def test_retention_job_prunes_by_age_once_per_interval(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/aged.db"
    upgrade(url)
    engine = create_store_engine(url)
    old = datetime.now(UTC) - timedelta(days=3)
    build_chain(engine, KEY, 20, change_every=0, start=old)
    RoutingLogStore(engine).append_batch([decision(21, datetime.now(UTC))])
    job = RetentionJob(engine, KEY, days=2, interval=3600)
    assert job.due()
    result = job.run()
    assert (result.removed, result.through) == (20, 20) and not job.due()
    with transaction(engine, write=False) as conn:
        assert read_head(conn).seq == 21
    report = verify(engine, KEYS)
    engine.dispose()
    assert report.ok and report.records == 1 and report.bridged_by == 20
