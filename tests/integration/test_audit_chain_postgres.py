"""The audit chain on PostgreSQL: several processes append at once and still build one chain;
tampering is located; exports verify; the migration chains rows written before it; the
checkpoint chain and receipts detect deleted checkpoints and rollbacks."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from compliance.audit.checkpoints import Cadence, checkpoint_head, latest_chained
from compliance.audit.export import export
from compliance.audit.ledger import read_head
from compliance.audit.verify import verify
from compliance.audit.verify_export import verify_export
from compliance.store.base import transaction
from compliance.store.engine import create_store_engine
from compliance.store.migrate import upgrade
from tests.audit_chain_support import build_chain, keys_of
from tests.integration.conftest import PROJECT_ROOT
from tests.integration.replicas_support import pg_database_or_skip

pytestmark = [pytest.mark.integration, pytest.mark.postgres]
KEY = Ed25519PrivateKey.generate()
KEYS = keys_of(KEY)

WRITER = textwrap.dedent(
    """
    import sys
    from compliance.store.base import transaction
    from compliance.store.engine import create_store_engine
    from compliance.store.routing_log_store import RoutingLogStore
    from tests.audit_chain_support import change, decision
    url, offset = sys.argv[1], int(sys.argv[2])
    engine = create_store_engine(url)
    log = RoutingLogStore(engine)
    for batch in range(25):
        base = offset + batch * 10
        log.append_batch([decision(base + i) for i in range(10)])
        with transaction(engine, write=True) as conn:
            change(conn, base)
    engine.dispose()
    """
)


@pytest.fixture
def url() -> Iterator[str]:
    with pg_database_or_skip("rg_audit_chain") as database:
        upgrade(database)
        yield database


def test_concurrent_processes_build_one_chain(url: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, url, str(k * 100_000)], env=env)
        for k in range(4)
    ]
    assert [w.wait(timeout=120) for w in writers] == [0, 0, 0, 0]
    engine = create_store_engine(url)
    try:
        with transaction(engine, write=True) as conn:
            checkpoint_head(conn, KEY)
        report = verify(engine, KEYS)
        with transaction(engine, write=False) as conn:
            head = read_head(conn)
    finally:
        engine.dispose()
    assert report.ok, report.problems
    assert report.records == head.seq == 4 * 25 * 11


@pytest.fixture
def chain(url: str) -> Iterator[sa.Engine]:
    engine = create_store_engine(url)
    build_chain(engine, KEY, 40, change_every=10, checkpoint_every=20)
    yield engine
    engine.dispose()


def test_tampering_is_located_on_postgres(chain: sa.Engine) -> None:
    assert verify(chain, KEYS).summary() == "chain intact: 44 records"
    with chain.begin() as conn:
        conn.execute(sa.text("UPDATE routing_decisions SET latency_ms = 1.0 WHERE chain_seq = 16"))
    first = verify(chain, KEYS).first_break
    assert first is not None
    assert (first.problem, first.seq, first.entry) == ("altered", 16, "decision dec-000015")
    with chain.begin() as conn:
        conn.execute(sa.text("DELETE FROM routing_decisions WHERE chain_seq > 40"))
        conn.execute(sa.text("DELETE FROM config_changes WHERE chain_seq > 40"))
    problems = {b.problem for b in verify(chain, KEYS).problems}
    assert {"altered", "truncated"} <= problems


def test_export_from_postgres_verifies(chain: sa.Engine) -> None:
    for fmt in ("jsonl", "csv"):
        data = b"".join(export(chain, KEY, fmt))  # type: ignore[arg-type]
        report = verify_export(data, KEY.public_key())
        assert report.ok and report.records == 44, report.problems


def test_checkpoint_chain_cadence_and_receipt_on_postgres(url: str) -> None:
    """Item 7 on PostgreSQL: the checkpoint chain links, a deleted checkpoint breaks it, and a
    rollback to an older signed state is caught by the auditor's receipt."""
    engine = create_store_engine(url)
    try:
        build_chain(engine, KEY, 40, change_every=10, checkpoint_every=5, cadence=Cadence(8, 3600))
        report = verify(engine, KEYS)
        assert report.ok and report.checkpoints == 8, report.problems
        with transaction(engine, write=False) as conn:
            receipt = latest_chained(conn)
        assert receipt is not None and receipt.seq == 44
        with engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM audit_checkpoints WHERE seq = 22"))
        found = {b.problem: b for b in verify(engine, KEYS).problems}
        assert found["missing checkpoint"].seq == 27
        with engine.begin() as conn:  # roll back to the state signed at #16
            conn.execute(sa.text("DELETE FROM audit_checkpoints WHERE seq > 16"))
            conn.execute(sa.text("DELETE FROM routing_decisions WHERE chain_seq > 16"))
            conn.execute(sa.text("DELETE FROM config_changes WHERE chain_seq > 16"))
            conn.execute(
                sa.text(
                    "UPDATE audit_chain_head SET seq = 16, record_hash = "
                    "(SELECT record_hash FROM routing_decisions WHERE chain_seq = 16)"
                )
            )
        assert verify(engine, KEYS).ok
        rolled = verify(engine, KEYS, receipt=receipt)
        assert rolled.receipt == "missing"
        assert rolled.first_break is not None and rolled.first_break.problem == "rolled back"
    finally:
        engine.dispose()
