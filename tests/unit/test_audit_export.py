"""Signed exports: CSV and JSON Lines verify offline; edits, deletions, swaps, forged manifests
and wrong keys are all detected."""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from compliance.audit.export import CSV_COLUMNS, export, manifest_payload, parse_instant
from compliance.audit.verify_export import ExportFormatError, ExportReport, verify_export
from compliance.store.engine import create_store_engine
from compliance.store.migrate import upgrade
from tests.audit_chain_support import T0, build_chain

KEY = Ed25519PrivateKey.generate()
PUBLIC = KEY.public_key()


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sa.Engine]:
    path = tmp_path_factory.mktemp("export") / "audit.db"
    upgrade(f"sqlite:///{path}")
    engine = create_store_engine(f"sqlite:///{path}")
    build_chain(engine, KEY, 60, change_every=10, checkpoint_every=30)
    yield engine
    engine.dispose()


def exported(engine: sa.Engine, fmt: str, **period: str) -> bytes:
    since = parse_instant(period.get("since"), "since")
    until = parse_instant(period.get("until"), "until")
    return b"".join(export(engine, KEY, fmt, since, until))  # type: ignore[arg-type]


def check(data: bytes) -> ExportReport:
    return verify_export(data, PUBLIC)


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_full_export_verifies_offline(engine: sa.Engine, fmt: str) -> None:
    data = exported(engine, fmt)
    report = check(data)
    assert report.ok, report.problems
    assert report.records == 66 and report.summary().startswith("export intact: 66 records")
    manifest = report.manifest
    assert (manifest["first_seq"], manifest["last_seq"], manifest["format"]) == (1, 66, fmt)
    assert manifest["first_prev_hash"] == "0" * 64
    body = data[: data.rstrip(b"\n").rfind(b"\n") + 1]
    assert manifest["sha256"] == hashlib.sha256(body).hexdigest()


def test_period_is_one_contiguous_stretch_of_the_chain(engine: sa.Engine) -> None:
    since = (T0 + timedelta(seconds=15)).isoformat()
    until = (T0 + timedelta(seconds=25)).isoformat()
    data = exported(engine, "jsonl", since=since, until=until)
    report = check(data)
    assert report.ok, report.problems
    lines = [orjson.loads(line) for line in data.splitlines()[:-1]]
    ids = [line.get("decision_id") for line in lines if line["kind"] == "decision"]
    assert ids == [f"dec-{n:06d}" for n in range(15, 25)]
    assert any(line["kind"] == "config_change" for line in lines)  # #22 sits in the period
    assert lines[0]["prev_hash"] != "0" * 64 and report.manifest["since"].startswith("2026-12")


def test_empty_period_has_a_signed_manifest(engine: sa.Engine) -> None:
    data = exported(engine, "csv", since="2030-01-01")
    report = check(data)
    assert report.ok and report.records == 0 and report.manifest["first_hash"] is None


def jsonl_lines(data: bytes) -> list[bytes]:
    return data.splitlines(keepends=True)


def resign(lines: list[bytes]) -> bytes:
    """Recompute the digest and re-sign with another key: what a forger can do at best."""
    body = b"".join(lines[:-1])
    manifest = orjson.loads(lines[-1])["manifest"]
    manifest["sha256"] = hashlib.sha256(body).hexdigest()
    manifest["signature"] = Ed25519PrivateKey.generate().sign(manifest_payload(manifest)).hex()
    return body + orjson.dumps({"manifest": manifest}) + b"\n"


def test_edited_record_is_located(engine: sa.Engine) -> None:
    lines = jsonl_lines(exported(engine, "jsonl"))
    lines[4] = lines[4].replace(b'"served_region":"eu-frankfurt"', b'"served_region":"us-oregon"')
    report = check(b"".join(lines))
    assert not report.ok
    assert report.problems[0] == "line 5 (#5 decision): record does not match its hash (altered)"
    assert "file digest does not match" in " ".join(report.problems)


def test_deleted_and_swapped_lines_are_located(engine: sa.Engine) -> None:
    lines = jsonl_lines(exported(engine, "jsonl"))
    deleted = check(b"".join(lines[:7] + lines[8:]))
    assert deleted.problems[0].startswith("line 8 (#9 decision): follows #7")
    swapped = check(b"".join([*lines[:7], lines[8], lines[7], *lines[9:]]))
    assert swapped.problems[0].startswith("line 8 (#9 decision): follows #7")


def test_recomputed_digest_without_the_key_fails_the_signature(engine: sa.Engine) -> None:
    lines = jsonl_lines(exported(engine, "jsonl"))
    report = check(resign(lines[:-2] + lines[-1:]))  # drop the last record, fix the digest
    assert not report.ok
    assert "manifest signature invalid (manifest altered or forged)" in report.problems
    assert any("manifest lists 66 records, the file has 65" in p for p in report.problems)


def test_edited_manifest_and_wrong_key_are_detected(engine: sa.Engine) -> None:
    data = exported(engine, "jsonl")
    lines = jsonl_lines(data)
    lines[-1] = lines[-1].replace(b'"records":66', b'"records":60')
    assert (
        "manifest signature invalid (manifest altered or forged)" in check(b"".join(lines)).problems
    )
    other = verify_export(data, Ed25519PrivateKey.generate().public_key())
    assert not other.ok and "not the given key" in other.problems[0]


def test_csv_cells_must_match_the_hashed_record(engine: sa.Engine) -> None:
    data = exported(engine, "csv")
    body, manifest = data.rstrip(b"\n").rsplit(b"\n", 1)
    rows = list(csv.reader(io.StringIO(body.decode())))
    assert rows[0] == list(CSV_COLUMNS)
    rows[3][CSV_COLUMNS.index("chosen_region")] = "us-virginia"
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    report = check(buffer.getvalue().encode() + manifest + b"\n")
    assert (
        report.problems[0] == "line 4 (#3 decision): column chosen_region differs from record_json"
    )


def test_not_an_export_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ExportFormatError, match="not an export manifest"):
        check(b'{"a": 1}\n{"b": 2}\n')
    with pytest.raises(ValueError, match="since: 'last week' is not an ISO 8601 date"):
        parse_instant("last week", "since")
