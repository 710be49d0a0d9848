"""The audit chain on a real SQLite file: intact chains verify, every kind of tampering is
detected and located (edit, delete, swap, insert, truncate, forged or bypassed checkpoints)."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from datetime import timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from compliance.audit import checkpoints as cps
from compliance.audit import verify_parallel
from compliance.audit.cadence import ReceiptError, from_receipt
from compliance.audit.canonical import GENESIS_HASH, Kind, entry_hash, normalise_fields
from compliance.audit.config_log import record_change
from compliance.audit.entries import iter_canonical, iter_entries
from compliance.audit.ledger import ChainHead, read_head, set_head
from compliance.audit.verify import VerifyReport, verify
from compliance.store.base import transaction
from compliance.store.engine import create_store_engine
from compliance.store.migrate import upgrade
from compliance.store.routing_log_store import RoutingLogStore
from tests.audit_chain_support import T0, build_chain, change, decision, keys_of

KEY = Ed25519PrivateKey.generate()
KEYS = keys_of(KEY)
# build_chain(40, change_every=10, checkpoint_every=20): decisions 1-10 are #1-#10, a config
# change #11, decisions 11-20 #12-#21, change #22 (signed), ... 44 entries, signed at #22, #44.
SEQ = {n: n + (n - 1) // 10 for n in range(1, 41)}


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 44-entry chain, built once; each test tampers with its own copy."""
    path = tmp_path_factory.mktemp("audit") / "template.db"
    upgrade(f"sqlite:///{path}")
    engine = create_store_engine(f"sqlite:///{path}")
    build_chain(engine, KEY, 40, change_every=10, checkpoint_every=20)
    engine.dispose()  # the last connection checkpoints the WAL into the file
    return path


@pytest.fixture
def engine(template: Path, tmp_path: Path) -> Iterator[sa.Engine]:
    copy = tmp_path / "audit.db"
    shutil.copyfile(template, copy)
    engine = create_store_engine(f"sqlite:///{copy}")
    yield engine
    engine.dispose()


def run(engine: sa.Engine, statement: str, **params: Any) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text(statement), params)


def broken(engine: sa.Engine) -> Any:
    report = verify(engine, KEYS)
    assert not report.ok, report.summary()
    first = report.first_break
    assert first is not None and report.summary().startswith("chain broken: ")
    return first


def test_intact_chain_counts_every_entry(engine: sa.Engine) -> None:
    report = verify(engine, KEYS)
    assert report.ok, report.problems
    assert report.summary() == "chain intact: 44 records"
    assert (report.first_seq, report.last_seq, report.head_seq) == (1, 44, 44)
    assert report.checkpoints == 2
    assert report.to_dict()["first_break"] is None
    with transaction(engine, write=False) as conn:
        kinds = [e.kind for e in iter_entries(conn)]
    assert kinds.count(Kind.CONFIG_CHANGE) == 4 and len(kinds) == 44
    assert [e for e in kinds[10:12]] == [Kind.CONFIG_CHANGE, Kind.DECISION]


def test_edited_field_is_located(engine: sa.Engine) -> None:
    run(
        engine,
        "UPDATE routing_decisions SET served_region = 'us-virginia' "
        "WHERE decision_id = 'dec-000015'",
    )
    first = broken(engine)
    assert (first.problem, first.seq, first.entry) == ("altered", SEQ[15], "decision dec-000015")


def test_edited_json_and_config_change_are_located(engine: sa.Engine) -> None:
    run(engine, "UPDATE config_changes SET after = '{\"weight\": 99}' WHERE chain_seq = 22")
    first = broken(engine)
    assert (first.problem, first.seq) == ("altered", 22)
    assert first.entry is not None and first.entry.startswith("config change ")
    assert "region-20 update by alice" in first.entry


def test_unreadable_timestamp_is_an_alteration(engine: sa.Engine) -> None:
    run(engine, "UPDATE routing_decisions SET decided_at = 'yesterday' WHERE chain_seq = 3")
    assert (broken(engine).problem, broken(engine).seq) == ("altered", 3)


def test_deleted_row_is_located(engine: sa.Engine) -> None:
    run(engine, "DELETE FROM routing_decisions WHERE decision_id = 'dec-000015'")
    first = broken(engine)
    assert (first.problem, first.seq) == ("deleted", SEQ[15])
    assert "decision dec-000016" in first.detail


def swap(engine: sa.Engine, a: int, b: int) -> None:
    run(engine, "UPDATE routing_decisions SET chain_seq = -1 WHERE chain_seq = :a", a=a)
    run(engine, "UPDATE routing_decisions SET chain_seq = :a WHERE chain_seq = :b", a=a, b=b)
    run(engine, "UPDATE routing_decisions SET chain_seq = :b WHERE chain_seq = -1", b=b)


@pytest.mark.parametrize(("a", "b"), [(15, 16), (13, 19)])
def test_swapped_rows_are_located(engine: sa.Engine, a: int, b: int) -> None:
    swap(engine, SEQ[a], SEQ[b])
    first = broken(engine)
    assert (first.problem, first.seq) == ("reordered", SEQ[a])
    assert first.entry == f"decision dec-{b:06d}"
    assert f"written as #{SEQ[b]}" in first.detail


def entry_at(engine: sa.Engine, seq: int) -> Any:
    with transaction(engine, write=False) as conn:
        return next(iter_entries(conn, seq, seq))


def insert_forged(engine: sa.Engine, at: int, *, shift: bool) -> None:
    """Insert a correctly hashed fake decision at #at (moving later entries up if `shift`)."""
    prev = entry_at(engine, at - 1).record_hash
    if shift:
        for table in ("routing_decisions", "config_changes"):
            run(
                engine, f"UPDATE {table} SET chain_seq = -chain_seq - 1 WHERE chain_seq >= :s", s=at
            )
            run(engine, f"UPDATE {table} SET chain_seq = -chain_seq WHERE chain_seq < 0")
    fake = decision(999_999, served_region="us-virginia")
    fields = normalise_fields(Kind.DECISION, fake)
    log = RoutingLogStore(engine)
    log.append_batch([fake])  # stored at the head, then moved to `at` with a forged hash
    run(
        engine,
        "UPDATE routing_decisions SET chain_seq = :s, prev_hash = :p, record_hash = :h "
        "WHERE decision_id = 'dec-999999'",
        s=at,
        p=prev,
        h=entry_hash(Kind.DECISION, at, prev, fields),
    )


def test_inserted_row_is_located(engine: sa.Engine) -> None:
    insert_forged(engine, SEQ[15], shift=True)
    first = broken(engine)
    assert (first.problem, first.seq, first.entry) == ("inserted", SEQ[15], "decision dec-999999")


def test_row_without_chain_position_is_reported(engine: sa.Engine) -> None:
    RoutingLogStore(engine).append_batch([decision(777)])
    run(engine, "UPDATE routing_decisions SET chain_seq = NULL WHERE decision_id = 'dec-000777'")
    run(engine, "UPDATE audit_chain_head SET seq = 44")
    problems = {b.problem for b in verify(engine, KEYS).problems}
    assert "inserted" in problems
    assert "decision dec-000777" in broken(engine).detail or any(
        b.entry == "decision dec-000777" for b in verify(engine, KEYS).problems
    )


def test_truncated_tail_is_detected_against_the_head(engine: sa.Engine) -> None:
    run(engine, "DELETE FROM routing_decisions WHERE chain_seq > 41")
    run(engine, "DELETE FROM config_changes WHERE chain_seq > 41")
    first = broken(engine)
    assert (first.problem, first.seq) == ("truncated", 42)
    assert "chain head is #44" in first.detail


def test_truncation_with_a_moved_head_is_caught_by_the_signed_checkpoint(
    engine: sa.Engine,
) -> None:
    run(engine, "DELETE FROM routing_decisions WHERE chain_seq > 41")
    run(engine, "DELETE FROM config_changes WHERE chain_seq > 41")
    with transaction(engine, write=True) as conn:
        set_head(conn, ChainHead(41, entry_at(engine, 41).record_hash))
    first = broken(engine)
    assert (first.problem, first.seq) == ("truncated", 42)
    assert "signed entry #44" in first.detail


def test_forged_checkpoint_is_detected(engine: sa.Engine) -> None:
    run(engine, "UPDATE audit_checkpoints SET record_hash = :h WHERE seq = 22", h="f" * 64)
    first = broken(engine)
    assert (first.problem, first.seq) == ("forged", 22)
    assert "signature invalid" in first.detail


def test_checkpoint_signed_by_another_key_is_detected(engine: sa.Engine) -> None:
    mallory = Ed25519PrivateKey.generate()
    head = entry_at(engine, 44)
    with transaction(engine, write=True) as conn:
        cps.store(conn, cps.sign(mallory, 44, head.record_hash, cps.PERIODIC))
    first = broken(engine)
    assert first.problem == "forged" and "unknown key" in first.detail


def rehash_from(engine: sa.Engine, start: int) -> None:
    """What a careful attacker does after an edit: recompute every later hash and the head."""
    with transaction(engine, write=False) as conn:
        entries = list(iter_entries(conn))
    prev = GENESIS_HASH if start == 1 else entries[start - 2].record_hash
    for entry in entries[start - 1 :]:
        digest = entry_hash(entry.kind, entry.seq, prev, entry.fields)
        table = "routing_decisions" if entry.kind is Kind.DECISION else "config_changes"
        run(
            engine,
            f"UPDATE {table} SET prev_hash = :p, record_hash = :h WHERE chain_seq = :s",
            p=prev,
            h=digest,
            s=entry.seq,
        )
        prev = digest
    with transaction(engine, write=True) as conn:
        set_head(conn, ChainHead(entries[-1].seq, prev))


def test_rehashed_rewrite_is_caught_by_the_signed_checkpoint(engine: sa.Engine) -> None:
    run(engine, "UPDATE routing_decisions SET served_region = 'cn-x' WHERE chain_seq = 5")
    rehash_from(engine, 5)
    first = broken(engine)
    assert (first.problem, first.seq) == ("rewritten", 22)
    assert "rewritten after it was signed" in first.detail


def test_altered_and_rehashed_entry_is_named_by_its_successor(engine: sa.Engine) -> None:
    row = entry_at(engine, 30)
    fields = {**row.fields, "served_region": "us-virginia"}
    run(
        engine,
        "UPDATE routing_decisions SET served_region = 'us-virginia', record_hash = :h "
        "WHERE chain_seq = 30",
        h=entry_hash(Kind.DECISION, 30, row.prev_hash, fields),
    )
    first = broken(engine)
    assert (first.problem, first.seq, first.entry) == ("altered", 30, row.describe())


def test_record_change_checks_its_input(engine: sa.Engine) -> None:
    with transaction(engine, write=True) as conn:
        with pytest.raises(ValueError, match="actor: must be a non-empty string"):
            record_change(
                conn,
                actor="",
                role="admin",
                object_type="region",
                object_id="x",
                action="update",
                before=None,
                after={},
                policy_version=2,
            )
        with pytest.raises(ValueError, match="object_type: longer than 16"):
            record_change(
                conn,
                actor="a",
                role="admin",
                object_type="r" * 17,
                object_id="x",
                action="update",
                before=None,
                after={},
                policy_version=2,
            )
        seq = change(conn, 41)
    assert seq == 45
    assert verify(engine, KEYS).ok


def test_concurrent_writers_build_one_chain(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/concurrent.db"
    upgrade(url)
    errors: list[BaseException] = []

    def writer(offset: int) -> None:
        engine = create_store_engine(url)  # one engine each, as separate processes would have
        try:
            log = RoutingLogStore(engine)
            for batch in range(20):
                base = offset + batch * 10
                log.append_batch([decision(base + i) for i in range(10)])
                with transaction(engine, write=True) as conn:
                    change(conn, base)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=writer, args=(k * 10_000,)) for k in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    engine = create_store_engine(url)
    report: VerifyReport = verify(engine, {})
    with transaction(engine, write=False) as conn:
        head = read_head(conn)
    engine.dispose()
    assert report.ok, report.problems
    assert report.records == head.seq == 3 * 20 * 11


def test_unparsable_json_is_an_alteration(engine: sa.Engine) -> None:
    run(engine, "UPDATE routing_decisions SET explanation = '{broken' WHERE chain_seq = 7")
    first = broken(engine)
    assert (first.problem, first.seq, first.entry) == ("altered", 7, "decision dec-000007")


def test_two_entries_at_one_position_are_reported(engine: sa.Engine) -> None:
    run(engine, "UPDATE config_changes SET chain_seq = 30 WHERE chain_seq = 33")
    first = broken(engine)
    assert (first.problem, first.seq) == ("inserted", 30)
    assert first.detail.startswith("two entries claim #30: decision ")
    assert "config change" in first.detail


def test_rows_stored_in_another_json_form_still_verify(engine: sa.Engine) -> None:
    """Rows written before this layout (spaced JSON text) verify through the parsing path."""
    run(
        engine,
        "UPDATE routing_decisions SET explanation = :text WHERE chain_seq = 12",
        text='{"candidates": [{"allowed": true, "policy": [], "region": "eu-frankfurt", '
        '"skipped": null}, {"allowed": false, "policy": ["no DPF"], "region": "us-virginia", '
        '"skipped": null}], "decision_id": "dec-000011", "facts": {"client_country": "DE", '
        '"data_class": "personal", "tenant": "demo"}}',
    )
    assert verify(engine, KEYS).ok


@pytest.fixture
def parallel(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let the parallel pass run on the small test chain (2 workers of 22 entries)."""
    monkeypatch.setattr(verify_parallel, "MIN_PER_WORKER", 10)


@pytest.mark.usefixtures("parallel")
def test_parallel_pass_agrees_with_the_serial_walk(engine: sa.Engine) -> None:
    report = verify(engine, KEYS, workers=2)
    assert report.ok and report.records == 44 and report.checkpoints == 2
    run(engine, "UPDATE routing_decisions SET model = 'x' WHERE chain_seq = 31")
    assert verify(engine, KEYS, workers=2).first_break == verify(engine, KEYS).first_break
    assert broken(engine).seq == 31


@pytest.mark.usefixtures("parallel")
def test_parallel_pass_checks_signed_checkpoints(engine: sa.Engine) -> None:
    run(engine, "UPDATE routing_decisions SET served_region = 'cn-x' WHERE chain_seq = 5")
    rehash_from(engine, 5)
    first = verify(engine, KEYS, workers=2).first_break
    assert first is not None and (first.problem, first.seq) == ("rewritten", 22)


@pytest.mark.parametrize("page", [1, 7, 44, 100])
def test_paged_reads_see_every_entry_once(engine: sa.Engine, page: int) -> None:
    with transaction(engine, write=False) as conn:
        canonical = [row[0] for row in iter_canonical(conn, 1, 44, page)]
        entries = [e.seq for e in iter_entries(conn, page=page)]
    assert canonical == entries == list(range(1, 45))


def test_migration_chains_rows_written_before_it(tmp_path: Path) -> None:
    from alembic import command

    from compliance.store.migrate import alembic_config

    url = f"sqlite:///{tmp_path}/old.db"
    command.upgrade(alembic_config(url), "0002")
    engine = create_store_engine(url)
    with engine.begin() as conn:
        for n in (1, 2, 3):
            row = decision(n)
            conn.execute(
                sa.text(
                    "INSERT INTO routing_decisions (decision_id, decided_at, outcome, "
                    "status_code, attempts, jurisdictions, regimes, reasons, explanation) "
                    "VALUES (:i, :t, 'routed', 200, '[]', '[\"DE\"]', '[]', '[]', :e)"
                ),
                {
                    "i": row["decision_id"],
                    "t": row["decided_at"].strftime("%Y-%m-%d %H:%M:%S.%f"),
                    "e": '{"z": 1, "a": [1, 2]}',
                },
            )
        conn.execute(
            sa.text(
                "INSERT INTO config_changes (changed_at, actor, role, object_type, object_id, "
                "action, before, after, policy_version) VALUES ('2026-12-01 12:00:01.500000', "
                "'alice', 'admin', 'region', 'eu-x', 'create', NULL, '{\"w\": 1}', 2)"
            )
        )
    engine.dispose()
    upgrade(url)
    engine = create_store_engine(url)
    report = verify(engine, {})
    with transaction(engine, write=False) as conn:
        kinds = [e.kind.value for e in iter_entries(conn)]
    engine.dispose()
    assert report.ok and report.records == 4, report.problems
    assert kinds == ["decision", "config_change", "decision", "decision"]


# --- the checkpoint chain, the signed cadence and receipts (issue 13, item 7) ---------------
# build_chain(40, change_every=10, checkpoint_every=5): 44 entries, signed at #5, #11, #16, #22,
# #27, #33, #38 and #44, each checkpoint promising at most 8 unsigned entries and (to test the
# time rule without waiting) 0 seconds of an unsigned tail.
TIGHT = cps.Cadence(8, 0.0)
SIGNED_AT = [5, 11, 16, 22, 27, 33, 38, 44]


@pytest.fixture(scope="module")
def signed_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("signed") / "template.db"
    upgrade(f"sqlite:///{path}")
    engine = create_store_engine(f"sqlite:///{path}")
    build_chain(engine, KEY, 40, change_every=10, checkpoint_every=5, cadence=TIGHT)
    engine.dispose()
    return path


@pytest.fixture
def signed(signed_template: Path, tmp_path: Path) -> Iterator[sa.Engine]:
    copy = tmp_path / "signed.db"
    shutil.copyfile(signed_template, copy)
    engine = create_store_engine(f"sqlite:///{copy}")
    yield engine
    engine.dispose()


def checkpoints_of(engine: sa.Engine) -> list[cps.Checkpoint]:
    with transaction(engine, write=False) as conn:
        return sorted(cps.load_all(conn), key=lambda c: c.id or 0)


def move_head_to(engine: sa.Engine, seq: int) -> None:
    with transaction(engine, write=True) as conn:
        set_head(conn, ChainHead(seq, entry_at(engine, seq).record_hash))


def truncate(engine: sa.Engine, entries_after: int, checkpoints_after: int) -> None:
    """What an attacker with write access does: drop a suffix and the checkpoints signing it,
    and move the (unsigned) head back so the log looks complete."""
    run(engine, "DELETE FROM audit_checkpoints WHERE seq > :s", s=checkpoints_after)
    run(engine, "DELETE FROM routing_decisions WHERE chain_seq > :s", s=entries_after)
    run(engine, "DELETE FROM config_changes WHERE chain_seq > :s", s=entries_after)
    move_head_to(engine, entries_after)


def problems_of(report: VerifyReport) -> dict[str, Any]:
    return {b.problem: b for b in report.problems}


def test_checkpoints_link_into_one_chain(signed: sa.Engine) -> None:
    chain = checkpoints_of(signed)
    assert [c.seq for c in chain] == SIGNED_AT
    assert chain[0].prev_hash == GENESIS_HASH
    assert all(b.prev_hash == a.digest() for a, b in pairwise(chain))
    assert all(c.cadence == TIGHT for c in chain)
    report = verify(signed, KEYS)
    assert report.ok, report.problems
    assert (report.unsigned_tail, report.tail_since) == (0, None)


def test_deleted_middle_checkpoint_breaks_the_checkpoint_chain(signed: sa.Engine) -> None:
    run(signed, "DELETE FROM audit_checkpoints WHERE seq = 22")
    report = verify(signed, KEYS)
    found = problems_of(report)
    assert found["missing checkpoint"].seq == 27
    assert "checkpoint chain broken after checkpoint" in found["missing checkpoint"].detail
    assert "(periodic, #16)" in found["missing checkpoint"].detail
    assert found["gap"].detail.startswith("gap between #16 and #27: 11 entries")


def test_truncated_suffix_with_its_checkpoints_leaves_a_gap(signed: sa.Engine) -> None:
    truncate(signed, entries_after=33, checkpoints_after=22)
    report = verify(signed, KEYS)
    assert not report.ok
    first = report.first_break
    assert first is not None and (first.problem, first.seq) == ("gap", 23)
    assert first.detail.startswith("unsigned tail: 11 entries (#23..#33) after checkpoint")
    assert "allows at most 8" in first.detail
    assert report.summary().startswith("chain broken: gap at #23: unsigned tail")


def test_rewrite_rehash_and_newest_checkpoint_deleted_is_an_unsigned_tail(
    signed: sa.Engine,
) -> None:
    run(signed, "UPDATE routing_decisions SET served_region = 'cn-x' WHERE chain_seq = 40")
    rehash_from(signed, 40)
    run(signed, "DELETE FROM audit_checkpoints WHERE seq = 44")
    first = broken(signed)
    assert (first.problem, first.seq) == ("gap", 39)
    assert first.detail.startswith("unsigned tail: 6 entries (#39..#44) after checkpoint")
    assert "(periodic, #38), signed" in first.detail and "allows 0 s" in first.detail


def test_rollback_to_an_older_signed_state_is_detected_by_a_receipt(signed: sa.Engine) -> None:
    newest = checkpoints_of(signed)[-1].receipt()
    older = checkpoints_of(signed)[3].receipt()  # #22
    truncate(signed, entries_after=22, checkpoints_after=22)
    assert verify(signed, KEYS).ok  # a consistent older state: only the receipt tells
    report = verify(signed, KEYS, receipt=from_receipt(newest))
    assert report.receipt == "missing"
    first = report.first_break
    assert first is not None and (first.problem, first.seq) == ("rolled back", 44)
    assert "is not in the database: the log was rolled back" in first.detail
    kept = verify(signed, KEYS, receipt=from_receipt(older))
    assert kept.ok and kept.receipt == "present"


def test_forged_receipt_is_rejected(signed: sa.Engine) -> None:
    receipt = {**checkpoints_of(signed)[-1].receipt(), "record_hash": "f" * 64}
    report = verify(signed, KEYS, receipt=from_receipt(receipt))
    assert report.receipt == "invalid" and not report.ok
    with pytest.raises(ReceiptError):
        from_receipt({"seq": 1})


def test_unsigned_tail_within_the_cadence_is_reported(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/tail.db"
    upgrade(url)
    engine = create_store_engine(url)
    try:
        build_chain(
            engine, KEY, 20, change_every=0, checkpoint_every=5, cadence=cps.Cadence(8, 3600)
        )
        RoutingLogStore(engine).append_batch([decision(n) for n in range(21, 24)])
        report = verify(engine, KEYS)
        assert report.ok, report.problems
        assert (report.unsigned_tail, report.tail_since) == (3, 21)
        assert report.to_dict()["unsigned_tail"] == 3
    finally:
        engine.dispose()


def test_log_without_any_checkpoint_is_held_to_the_configured_cadence(engine: sa.Engine) -> None:
    run(engine, "DELETE FROM audit_checkpoints")
    report = verify(engine, KEYS, cadence=cps.Cadence(8, 3600))
    first = report.first_break
    assert first is not None and (first.problem, first.seq) == ("gap", 1)
    assert "44 entries (#1..#44) and no checkpoint signs any entry" in first.detail


def test_legacy_checkpoints_still_verify_and_the_chain_starts_after_them(tmp_path: Path) -> None:
    from alembic import command

    from compliance.store.migrate import alembic_config

    url = f"sqlite:///{tmp_path}/legacy.db"
    command.upgrade(alembic_config(url), "0005")
    engine = create_store_engine(url)
    RoutingLogStore(engine).append_batch([decision(n) for n in range(1, 11)])
    with transaction(engine, write=False) as conn:
        head = read_head(conn)
    legacy = cps.sign(KEY, head.seq, head.record_hash, cps.PERIODIC, prev_hash=None)
    run(
        engine,
        "INSERT INTO audit_checkpoints (seq, record_hash, kind, created_at, key_id, signature) "
        "VALUES (:s, :h, 'periodic', :t, :k, :g)",
        s=legacy.seq,
        h=legacy.record_hash,
        t=legacy.created_at.strftime("%Y-%m-%d %H:%M:%S.%f"),
        k=legacy.key_id,
        g=legacy.signature,
    )
    engine.dispose()
    upgrade(url)  # 0006: the old checkpoint stays, unchained
    engine = create_store_engine(url)
    try:
        assert verify(engine, KEYS).ok
        RoutingLogStore(engine).append_batch([decision(n) for n in range(11, 16)])
        with transaction(engine, write=True) as conn:
            first = cps.checkpoint_head(conn, KEY)
        assert first is not None and first.prev_hash == GENESIS_HASH
        chain = checkpoints_of(engine)
        assert [(c.seq, c.chained) for c in chain] == [(10, False), (15, True)]
        report = verify(engine, KEYS)
        assert report.ok and report.checkpoints == 2, report.problems
        # a chained checkpoint cannot be passed off as a legacy one: the signature covers the link
        run(engine, "UPDATE audit_checkpoints SET prev_checkpoint_hash = NULL WHERE seq = 15")
        assert problems_of(verify(engine, KEYS))["forged"].seq == 15
    finally:
        engine.dispose()


def test_export_carries_the_checkpoint_chain(signed: sa.Engine) -> None:
    from compliance.audit.export import export
    from compliance.audit.verify_export import verify_export

    data = b"".join(export(signed, KEY, "jsonl"))
    report = verify_export(data, KEY.public_key())
    assert report.ok, report.problems
    assert [c["seq"] for c in report.manifest["checkpoints"]] == SIGNED_AT
    run(signed, "DELETE FROM audit_checkpoints WHERE seq = 22")
    damaged = verify_export(b"".join(export(signed, KEY, "jsonl")), KEY.public_key())
    assert not damaged.ok
    assert any("(#27) does not link to the checkpoint before it" in p for p in damaged.problems)
    assert any("gap between #16 and #27" in p for p in damaged.problems)


def test_receipt_older_than_the_prune_point_is_pruned_not_tampering(signed: sa.Engine) -> None:
    from compliance.audit.retention import prune

    old = checkpoints_of(signed)[2]  # #16
    result = prune(signed, KEY, T0 + timedelta(seconds=20), TIGHT)  # decisions 1-19: #1..#20
    assert result.through == 20 and result.checkpoint is not None
    assert result.checkpoint.prev_hash == checkpoints_of(signed)[-2].digest()
    report = verify(signed, KEYS, receipt=old)
    assert report.ok, report.problems
    assert (report.receipt, report.first_seq, report.bridged_by) == ("pruned", 21, 20)
    assert len(checkpoints_of(signed)) == len(SIGNED_AT) + 1  # checkpoints are never pruned
