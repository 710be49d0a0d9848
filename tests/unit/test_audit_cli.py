"""`gateway audit verify | export | verify-export | public-key | prune | checkpoint` in-process,
on a real SQLite database in a data directory."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from compliance.audit.keys import key_id, load_or_create_signing_key
from compliance.store.engine import create_store_engine
from compliance.store.migrate import upgrade
from gateway.cli import main
from tests.audit_chain_support import build_chain


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("GATEWAY_DATABASE_URL", "GATEWAY_AUDIT_SIGNING_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GATEWAY_DATA_DIR", str(tmp_path))
    url = f"sqlite:///{tmp_path}/gateway.db"
    upgrade(url)
    key = load_or_create_signing_key(tmp_path / "audit-signing-key.pem")
    engine = create_store_engine(url)
    build_chain(engine, key, 30, change_every=10, checkpoint_every=20)
    engine.dispose()
    return tmp_path


def test_verify_reports_intact_then_the_first_break(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["audit", "verify", "--workers", "1"]) == 0
    assert capsys.readouterr().out.startswith("chain intact: 33 records\n")
    engine = create_store_engine(f"sqlite:///{data_dir}/gateway.db")
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE routing_decisions SET tenant_id = 'x' WHERE chain_seq = 4"))
    engine.dispose()
    assert main(["audit", "verify"]) == 1
    assert capsys.readouterr().out.startswith(
        "chain broken: altered at #4: decision dec-000004 does not match its hash"
    )


def _key_id(data_dir: Path) -> str:
    return key_id(load_or_create_signing_key(data_dir / "audit-signing-key.pem").public_key())


def test_export_public_key_and_verify_export(
    data_dir: Path, tmp_path_factory: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path_factory.mktemp("auditor")
    assert main(["audit", "public-key", "-o", str(out / "key.pem")]) == 0
    assert main(["audit", "export", "--format", "jsonl", "-o", str(out / "log.jsonl")]) == 0
    capsys.readouterr()
    args = ["audit", "verify-export", str(out / "log.jsonl"), "--public-key", str(out / "key.pem")]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("export intact: 33 records (#1..#33)")
    assert f"\ntrusted key {_key_id(data_dir)}: --public-key {out / 'key.pem'}\n" in printed
    # Without --public-key it says that it trusted this gateway's own key, and which file.
    assert main(args[:3]) == 0
    local = data_dir / "audit-signing-key.pem"
    assert f"trusted key {_key_id(data_dir)}: this gateway's signing key {local}" in (
        capsys.readouterr().out
    )
    (out / "log.jsonl").write_bytes((out / "log.jsonl").read_bytes().replace(b"DE", b"FR", 1))
    assert main(args) == 1
    printed = capsys.readouterr().out
    assert printed.startswith("export broken: line 1 (#1 decision)")
    assert f"keys tried: {_key_id(data_dir)} (--public-key {out / 'key.pem'})" in printed


def test_prune_and_checkpoint_commands(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "checkpoint"]) == 0
    assert "signed checkpoint" in capsys.readouterr().out
    assert main(["audit", "prune"]) == 2
    assert "--days: required" in capsys.readouterr().err
    assert main(["audit", "prune", "--days", "1"]) == 0  # the test chain is dated 2026-12-01
    assert main(["audit", "verify"]) == 0
    assert "chain intact" in capsys.readouterr().out


def test_missing_database_and_key_are_clear_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("GATEWAY_DATABASE_URL", raising=False)
    monkeypatch.setenv("GATEWAY_DATA_DIR", str(tmp_path / "empty"))
    assert main(["audit", "verify"]) == 2
    assert "no gateway database at" in capsys.readouterr().err
    monkeypatch.setenv("GATEWAY_AUDIT_SIGNING_KEY", str(tmp_path / "missing.pem"))
    assert main(["audit", "public-key"]) == 2
    assert "audit signing key" in capsys.readouterr().err
