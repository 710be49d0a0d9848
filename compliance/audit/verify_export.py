"""`gateway audit verify-export FILE`: check an export offline against the gateway's public key.

Checks the manifest signature, the SHA-256 of the file body, every entry's hash, the links and
positions between consecutive entries, and the manifest's count and first/last hashes; names the
first line that does not hold. Then the signed checkpoints the manifest carries: each one's
signature, the links between them, the entry hash each signs, and the signed cadence between
them (see compliance.audit.cadence).
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from compliance.audit.cadence import ReceiptError, check_cadence, from_receipt
from compliance.audit.canonical import FIELDS, Kind, entry_hash
from compliance.audit.checkpoints import Checkpoint
from compliance.audit.export import (
    CHAIN_COLUMNS,
    CSV_COLUMNS,
    CSV_MANIFEST_PREFIX,
    FIELD_COLUMNS,
    csv_cell,
    manifest_payload,
)
from compliance.audit.keys import key_id, signature_ok


class ExportFormatError(Exception):
    """The file is not an export (no manifest, unreadable lines)."""


@dataclass(frozen=True, slots=True)
class ExportReport:
    """What verify_export found."""

    records: int
    manifest: dict[str, Any]
    problems: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        """True if nothing is wrong."""
        return not self.problems

    def summary(self) -> str:
        """`export intact: N records (#a..#b)` or `export broken: <first problem>`."""
        if self.problems:
            return f"export broken: {self.problems[0]}"
        span = ""
        if self.records:
            span = f" (#{self.manifest['first_seq']}..#{self.manifest['last_seq']})"
        return (
            f"export intact: {self.records} records{span}, signed by key {self.manifest['key_id']}"
        )


@dataclass(frozen=True, slots=True)
class _Row:
    line: int
    seq: int
    kind: Kind
    prev_hash: str
    record_hash: str
    fields: dict[str, Any]


def _split(data: bytes) -> tuple[bytes, bytes]:
    body = data[:-1] if data.endswith(b"\n") else data
    cut = body.rfind(b"\n") + 1
    return data[:cut], body[cut:]


def _parse_manifest(line: bytes) -> dict[str, Any]:
    try:
        if line.startswith(CSV_MANIFEST_PREFIX.encode()):
            manifest = orjson.loads(line[len(CSV_MANIFEST_PREFIX) :])
        else:
            manifest = orjson.loads(line)["manifest"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        raise ExportFormatError("the last line is not an export manifest") from None
    if not isinstance(manifest, dict) or "signature" not in manifest:
        raise ExportFormatError("the last line is not an export manifest")
    return manifest


def _row(line: int, chain: dict[str, Any], fields: dict[str, Any]) -> _Row:
    try:
        kind = Kind(chain["kind"])
        return _Row(
            line,
            int(chain["chain_seq"]),
            kind,
            str(chain["prev_hash"]),
            str(chain["record_hash"]),
            {name: fields.get(name) for name in FIELDS[kind]},
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise ExportFormatError(f"line {line}: not an export record ({exc})") from None


def _jsonl_rows(body: bytes) -> Iterator[tuple[_Row, str | None]]:
    for number, line in enumerate(body.splitlines(), start=1):
        try:
            document = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise ExportFormatError(f"line {number}: not JSON") from None
        chain = {name: document.pop(name, None) for name in CHAIN_COLUMNS}
        yield _row(number, chain, document), None


def _csv_rows(body: bytes) -> Iterator[tuple[_Row, str | None]]:
    reader = csv.reader(io.StringIO(body.decode("utf-8")))
    header = next(reader, None)
    if header != list(CSV_COLUMNS):
        raise ExportFormatError("line 1: not the export's CSV header")
    for cells in reader:
        number = reader.line_num
        if len(cells) != len(CSV_COLUMNS):
            raise ExportFormatError(
                f"line {number}: {len(cells)} cells, expected {len(CSV_COLUMNS)}"
            )
        values = dict(zip(CSV_COLUMNS, cells, strict=True))
        try:
            fields = orjson.loads(values["record_json"])
        except orjson.JSONDecodeError:
            raise ExportFormatError(f"line {number}: record_json is not JSON") from None
        row = _row(number, values, fields)
        mismatch = next((n for n in FIELD_COLUMNS if values[n] != csv_cell(fields.get(n))), None)
        yield row, (None if mismatch is None else f"column {mismatch} differs from record_json")


def _signed(manifest: dict[str, Any]) -> list[Checkpoint]:
    try:
        return [from_receipt(document) for document in manifest.get("checkpoints") or []]
    except ReceiptError as exc:
        raise ExportFormatError(f"manifest checkpoints: {exc}") from None


def _check_checkpoints(
    signed: list[Checkpoint],
    hashes: dict[int, str],
    keys: Mapping[str, Ed25519PublicKey],
    manifest: dict[str, Any],
) -> list[str]:
    problems: list[str] = []
    for index, cp in enumerate(signed):
        name = f"manifest checkpoint {index + 1} (#{cp.seq})"
        error = cp.check(keys)
        if error is not None:
            problems.append(f"{name}: {error}")
        if index and cp.prev_hash != signed[index - 1].digest():
            problems.append(f"{name} does not link to the checkpoint before it (one was removed)")
        if cp.seq in hashes and hashes[cp.seq] != cp.record_hash:
            problems.append(f"{name} signs a different hash than the exported entry #{cp.seq}")
    first, last = manifest.get("first_seq"), manifest.get("last_seq")
    if signed and isinstance(first, int) and isinstance(last, int):
        inside = [c for c in signed if first <= c.seq <= last]
        start = min(c.seq for c in inside) if inside else first
        gaps, _ = check_cadence(inside, start, start, None)
        problems += [gap.detail for gap in gaps]
    return problems


def _check_rows(
    rows: Iterator[tuple[_Row, str | None]], manifest: dict[str, Any], wanted: set[int]
) -> tuple[int, list[str], dict[int, str]]:
    count, previous = 0, None
    hashes: dict[int, str] = {}
    first: _Row | None = None
    for row, cell_problem in rows:
        where = f"line {row.line} (#{row.seq} {row.kind.value})"
        if cell_problem:
            return count, [f"{where}: {cell_problem}"], hashes
        if entry_hash(row.kind, row.seq, row.prev_hash, row.fields) != row.record_hash:
            return count, [f"{where}: record does not match its hash (altered)"], hashes
        if previous is not None and row.seq != previous.seq + 1:
            problem = f"{where}: follows #{previous.seq} (deleted, inserted or reordered)"
            return count, [problem], hashes
        if previous is not None and row.prev_hash != previous.record_hash:
            return count, [f"{where}: does not link to line {previous.line} (reordered)"], hashes
        if row.seq in wanted:
            hashes[row.seq] = row.record_hash
        first = first or row
        previous = row
        count += 1
    problems = []
    if count != manifest.get("records"):
        problems.append(f"manifest lists {manifest.get('records')} records, the file has {count}")
    expected = {
        "first_seq": first.seq if first else None,
        "first_prev_hash": first.prev_hash if first else None,
        "first_hash": first.record_hash if first else None,
        "last_seq": previous.seq if previous else None,
        "last_hash": previous.record_hash if previous else None,
    }
    problems += [
        f"manifest {name} is {manifest.get(name)!r}, the records give {value!r}"
        for name, value in expected.items()
        if manifest.get(name) != value
    ]
    return count, problems, hashes


def verify_export(
    data: bytes,
    public: Ed25519PublicKey,
    checkpoint_keys: Mapping[str, Ed25519PublicKey] | None = None,
) -> ExportReport:
    """Verify an export's bytes with the gateway's public key (`checkpoint_keys`: the keys its
    checkpoints may be signed by, e.g. other replicas'; default: `public` alone)."""
    body, last = _split(data)
    manifest = _parse_manifest(last)
    problems: list[str] = []
    if manifest.get("key_id") != key_id(public):
        problems.append(
            f"manifest signed by key {manifest.get('key_id')}, not the given key {key_id(public)}"
        )
    elif not signature_ok(public, str(manifest["signature"]), manifest_payload(manifest)):
        problems.append("manifest signature invalid (manifest altered or forged)")
    if hashlib.sha256(body).hexdigest() != manifest.get("sha256"):
        problems.append("file digest does not match the manifest (records altered)")
    fmt = manifest.get("format")
    if fmt not in ("csv", "jsonl"):
        raise ExportFormatError(f"manifest format {fmt!r} is not csv or jsonl")
    rows = _csv_rows(body) if fmt == "csv" else _jsonl_rows(body)
    signed = _signed(manifest)
    count, row_problems, hashes = _check_rows(rows, manifest, {c.seq for c in signed})
    keys = dict(checkpoint_keys or {}) or {key_id(public): public}
    problems += _check_checkpoints(signed, hashes, keys, manifest)
    # a located record problem is the most useful first line for the auditor
    return ExportReport(count, manifest, tuple(row_problems + problems))
