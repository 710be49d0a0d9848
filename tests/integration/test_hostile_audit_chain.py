"""Hostile: someone with write access to the database (and no signing key) truncates, rewrites
or rolls back the signed routing log of a real gateway; the real `gateway audit verify` must
say what is wrong and exit non-zero, and must say "intact" for the untouched database.

A gateway signs a checkpoint every 4 records or 0.5 s (batches of one record, so the signed
cadence allows 9 unsigned entries and 3 s), serves two rounds of requests and stops; an
auditor keeps a receipt after each round. Each test tampers with its own copy using plain SQL.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from compliance.audit.canonical import GENESIS_HASH, entry_hash
from compliance.audit.entries import iter_entries
from compliance.audit.ledger import TABLES
from compliance.store.access_store import AccessStore, Role
from compliance.store.base import transaction
from compliance.store.engine import create_store_engine
from tests.integration.conftest import (
    HTTP,
    IP_DE,
    PROJECT_ROOT,
    GatewayProcess,
    openai_client,
)

pytestmark = pytest.mark.integration

OVERRIDES = {
    "GATEWAY_AUDIT_CHECKPOINT_RECORDS": "4",
    "GATEWAY_AUDIT_CHECKPOINT_SECONDS": "0.5",
    "GATEWAY_ROUTING_LOG_BATCH_SIZE": "1",
}
MAX_UNSIGNED_SECONDS = 3.0  # 2 x 0.5 s + 2 s, signed into every checkpoint


@dataclass(frozen=True)
class Signed:
    """The stopped gateway's data directory and the auditor's receipts (files)."""

    data_dir: Path
    receipt_round_1: Path
    receipt_final: Path
    receipt_api: Path


def cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update(PYTHONPATH=str(PROJECT_ROOT), GATEWAY_DATA_DIR=str(data_dir))
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "audit", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def query(data_dir: Path, sql: str, *params: object) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(data_dir / "gateway.db")
    try:
        with conn:
            return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def head_signed(data_dir: Path) -> bool:
    head = query(data_dir, "SELECT seq FROM audit_chain_head")[0][0]
    signed = query(data_dir, "SELECT max(seq) FROM audit_checkpoints")[0][0]
    return signed is not None and signed == head


def serve(gateway: GatewayProcess, count: int) -> None:
    """`count` answered requests, each stored, then wait until a checkpoint signs the head."""
    with openai_client(gateway, IP_DE) as client:
        for _ in range(count):
            raw = client.chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
            )
            gateway.record(raw.headers["x-residency-decision"])
    deadline = time.monotonic() + 15
    while not head_signed(gateway.data_dir):
        assert time.monotonic() < deadline, "no checkpoint signed the head"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def signed(catalog: Path, tmp_path_factory: pytest.TempPathFactory) -> Signed:
    data_dir = tmp_path_factory.mktemp("hostile-chain") / "gw"
    receipts = data_dir.parent
    with GatewayProcess(catalog, data_dir, OVERRIDES) as gateway:
        serve(gateway, 14)
        result = cli(data_dir, "checkpoint", "export", "-o", str(receipts / "round1.json"))
        assert result.returncode == 0, result.stderr
        store = AccessStore(gateway.database_url)
        try:
            token = store.create("hostile-auditor", Role.AUDITOR)
        finally:
            store.close()
        serve(gateway, 22)
        answer = HTTP.get(
            f"{gateway.base_url}/audit/chain/receipt",
            headers={"Authorization": f"Bearer {token}"},
        )
        assert answer.status_code == 200, answer.text
        (receipts / "api.json").write_bytes(answer.content)
    result = cli(data_dir, "checkpoint", "export")
    assert result.returncode == 0, result.stderr
    (receipts / "final.json").write_text(result.stdout)
    # the time rule needs the newest signatures to be older than the signed 3 s
    newest = datetime.fromisoformat(orjson.loads(result.stdout)["created_at"])
    time.sleep(max(0.0, MAX_UNSIGNED_SECONDS + 1 - (datetime.now(UTC) - newest).total_seconds()))
    return Signed(
        data_dir, receipts / "round1.json", receipts / "final.json", receipts / "api.json"
    )


@pytest.fixture
def copy(signed: Signed, tmp_path: Path) -> Iterator[Path]:
    """The stopped gateway's data directory (database, key), for one test to tamper with."""
    target = tmp_path / "gw"
    shutil.copytree(signed.data_dir, target, ignore=shutil.ignore_patterns("*.log"))
    yield target


def checkpoint_seqs(data_dir: Path) -> list[int]:
    return [int(r[0]) for r in query(data_dir, "SELECT seq FROM audit_checkpoints ORDER BY id")]


def entry_hash_at(data_dir: Path, seq: int) -> str:
    rows = query(
        data_dir,
        "SELECT record_hash FROM routing_decisions WHERE chain_seq = ? "
        "UNION ALL SELECT record_hash FROM config_changes WHERE chain_seq = ? "
        "UNION ALL SELECT record_hash FROM routing_intents WHERE chain_seq = ?",
        seq,
        seq,
        seq,
    )
    return str(rows[0][0])


def truncate(data_dir: Path, entries_after: int, checkpoints_after: int) -> None:
    """Drop a suffix and the checkpoints signing it, and move the unsigned head back."""
    query(data_dir, "DELETE FROM audit_checkpoints WHERE seq > ?", checkpoints_after)
    query(data_dir, "DELETE FROM routing_decisions WHERE chain_seq > ?", entries_after)
    query(data_dir, "DELETE FROM config_changes WHERE chain_seq > ?", entries_after)
    query(data_dir, "DELETE FROM routing_intents WHERE chain_seq > ?", entries_after)
    query(
        data_dir,
        "UPDATE audit_chain_head SET seq = ?, record_hash = ?",
        entries_after,
        entry_hash_at(data_dir, entries_after),
    )


def verify(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return cli(data_dir, "verify", "--workers", "1", *args)


def assert_broken(result: subprocess.CompletedProcess[str], *phrases: str) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert result.stdout.startswith("chain broken: "), output
    for phrase in phrases:
        assert phrase in output, output


def test_untouched_database_is_intact_with_and_without_receipts(signed: Signed, copy: Path) -> None:
    assert len(checkpoint_seqs(copy)) >= 6
    plain = verify(copy)
    assert plain.returncode == 0 and plain.stdout.startswith("chain intact: "), plain.stdout
    for receipt in (signed.receipt_final, signed.receipt_api, signed.receipt_round_1):
        pinned = verify(copy, "--since-checkpoint", str(receipt))
        assert pinned.returncode == 0, pinned.stdout + pinned.stderr
        assert "receipt: its checkpoint is in the chain" in pinned.stdout


def test_deleted_checkpoints_and_suffix_are_a_gap(copy: Path) -> None:
    seqs = sorted(checkpoint_seqs(copy))
    keep_signed, keep_entries = seqs[-3], seqs[-2]  # entries up to the second newest checkpoint
    truncate(copy, entries_after=keep_entries, checkpoints_after=keep_signed)
    assert_broken(
        verify(copy),
        f"gap at #{keep_signed + 1}: unsigned tail: {keep_entries - keep_signed} entries "
        f"(#{keep_signed + 1}..#{keep_entries})",
    )


def test_rewritten_rehashed_entry_with_one_checkpoint_deleted_is_a_gap(copy: Path) -> None:
    seqs = sorted(checkpoint_seqs(copy))
    target = seqs[-2] + 1  # signed only by the newest checkpoint, which the attacker deletes
    query(copy, "UPDATE routing_decisions SET served_region = 'cn-x' WHERE chain_seq = ?", target)
    engine = create_store_engine(f"sqlite:///{copy / 'gateway.db'}")
    try:
        with transaction(engine, write=False) as conn:
            entries = list(iter_entries(conn))
    finally:
        engine.dispose()
    prev = GENESIS_HASH if target == 1 else entries[target - 2].record_hash
    for entry in entries[target - 1 :]:  # what a careful attacker does: re-hash onwards
        digest = entry_hash(entry.kind, entry.seq, prev, entry.fields)
        table = TABLES[entry.kind].name
        query(
            copy,
            f"UPDATE {table} SET prev_hash = ?, record_hash = ? WHERE chain_seq = ?",
            prev,
            digest,
            entry.seq,
        )
        prev = digest
    query(copy, "UPDATE audit_chain_head SET record_hash = ?", prev)
    query(copy, "DELETE FROM audit_checkpoints WHERE seq = ?", seqs[-1])
    assert_broken(verify(copy), f"gap at #{target}: unsigned tail", "s ago; the signed cadence")


def test_only_the_newest_checkpoint_deleted_leaves_an_unsigned_tail(copy: Path) -> None:
    seqs = sorted(checkpoint_seqs(copy))
    query(copy, "DELETE FROM audit_checkpoints WHERE seq = ?", seqs[-1])
    assert_broken(
        verify(copy),
        f"unsigned tail: {seqs[-1] - seqs[-2]} entries (#{seqs[-2] + 1}..#{seqs[-1]})",
        "newer checkpoints were deleted",
    )


def test_deleted_middle_checkpoint_breaks_the_checkpoint_chain(copy: Path) -> None:
    seqs = checkpoint_seqs(copy)
    query(copy, "DELETE FROM audit_checkpoints WHERE seq = ?", seqs[len(seqs) // 2])
    assert_broken(verify(copy), "missing checkpoint", "checkpoint chain broken after checkpoint")


def test_rollback_to_an_older_signed_state_is_caught_by_the_receipt(
    signed: Signed, copy: Path
) -> None:
    old = orjson.loads(signed.receipt_round_1.read_bytes())["seq"]
    truncate(copy, entries_after=old, checkpoints_after=old)
    quiet = verify(copy)  # a consistent older signed state: without a receipt it looks whole
    assert quiet.returncode == 0, quiet.stdout
    assert_broken(
        verify(copy, "--since-checkpoint", str(signed.receipt_final)),
        "rolled back",
        "is not in the database: the log was rolled back to an older state",
    )
    assert verify(copy, "--since-checkpoint", str(signed.receipt_round_1)).returncode == 0


def test_unreadable_receipt_is_a_clear_usage_error(copy: Path, tmp_path: Path) -> None:
    bogus = tmp_path / "receipt.json"
    bogus.write_text('{"seq": 3}')
    result = verify(copy, "--since-checkpoint", str(bogus))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "not a checkpoint receipt" in result.stderr and "Traceback" not in result.stderr
