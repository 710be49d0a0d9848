"""Streaming CSV / JSON Lines export of a period of the chain, closed by a signed manifest.

The last line of an export is its manifest (JSONL: `{"manifest": {...}}`; CSV: `#manifest
{...}`): record count, first/last chain position and hash, the SHA-256 of every byte before the
manifest line, and an Ed25519 signature over the manifest, so an auditor can check the file
offline with the gateway's public key (see verify_export.py).

A period is exported as one contiguous stretch of the chain, from the first entry stamped at or
after `since` to the last entry stamped before `until`, so every entry links to the one before.

The manifest also carries the signed checkpoints of that stretch (version 2): the contiguous
part of the checkpoint chain from the first to the last checkpoint signing an exported entry,
as receipts, so the file shows the checkpoint chain and the signed cadence offline too.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Connection, Engine, func, select

from compliance.audit import checkpoints as cps
from compliance.audit.canonical import (
    CHANGE_FIELDS,
    DECISION_FIELDS,
    TIME_FIELD,
    canonical_timestamp,
)
from compliance.audit.checkpoints import CHAIN_NAME
from compliance.audit.entries import Entry, iter_entries
from compliance.audit.keys import key_id, public_key_pem
from compliance.audit.ledger import TABLES
from compliance.store.base import transaction

Format = Literal["csv", "jsonl"]
FORMATS: tuple[str, ...] = ("csv", "jsonl")
CHAIN_COLUMNS: tuple[str, ...] = ("chain_seq", "kind", "prev_hash", "record_hash")
FIELD_COLUMNS: tuple[str, ...] = tuple(dict.fromkeys((*DECISION_FIELDS, *CHANGE_FIELDS)))
CSV_COLUMNS: tuple[str, ...] = (*CHAIN_COLUMNS, *FIELD_COLUMNS, "record_json")
CSV_MANIFEST_PREFIX = "#manifest "
EXPORT_VERSION = 2
_CHUNK = 64 * 1024


def parse_instant(value: str | None, name: str) -> datetime | None:
    """An ISO 8601 date (midnight UTC) or date-time (UTC if no offset); None stays None.

    Raises ValueError naming the parameter.
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        parsed = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    except ValueError:
        raise ValueError(
            f"{name}: {value!r} is not an ISO 8601 date or date-time (e.g. 2026-12-01 or "
            "2026-12-01T09:30:00Z)"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def manifest_payload(manifest: dict[str, Any]) -> bytes:
    """The signed bytes: sorted-key JSON of the manifest without its signature."""
    unsigned = {k: v for k, v in manifest.items() if k != "signature"}
    return orjson.dumps(unsigned, option=orjson.OPT_SORT_KEYS)


def exported_fields(entry: Entry) -> dict[str, Any]:
    """An entry's hashed fields as exported (timestamp in canonical form)."""
    fields = dict(entry.fields)
    name = TIME_FIELD[entry.kind]
    if fields[name] is not None:
        fields[name] = canonical_timestamp(fields[name])
    return fields


def csv_cell(value: Any) -> str:
    """How a field value appears in its own CSV column."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def _jsonl_line(entry: Entry) -> bytes:
    document = {
        "chain_seq": entry.seq,
        "kind": entry.kind.value,
        "prev_hash": entry.prev_hash,
        "record_hash": entry.record_hash,
        **exported_fields(entry),
    }
    return orjson.dumps(document) + b"\n"


def _csv_text(rows: list[list[str]]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue().encode("utf-8")


def _csv_row(entry: Entry) -> list[str]:
    fields = exported_fields(entry)
    chain = [str(entry.seq), entry.kind.value, entry.prev_hash or "", entry.record_hash or ""]
    cells = [csv_cell(fields.get(name)) for name in FIELD_COLUMNS]
    return [*chain, *cells, orjson.dumps(fields, option=orjson.OPT_SORT_KEYS).decode()]


def chain_range(
    conn: Connection, since: datetime | None, until: datetime | None
) -> tuple[int, int] | None:
    """First and last chain position of the period, or None if it holds no entries."""
    lows: list[int] = []
    highs: list[int] = []
    for kind, table in TABLES.items():
        stamp = table.c[TIME_FIELD[kind]]
        low = select(func.min(table.c.chain_seq))
        high = select(func.max(table.c.chain_seq))
        if since is not None:
            low, high = low.where(stamp >= since), high.where(stamp >= since)
        if until is not None:
            low, high = low.where(stamp < until), high.where(stamp < until)
        for query, bucket in ((low, lows), (high, highs)):
            value = conn.execute(query.where(table.c.chain_seq.is_not(None))).scalar()
            if value is not None:
                bucket.append(int(value))
    if not lows:
        return None
    return min(lows), max(highs)


def chain_checkpoints(conn: Connection, first: int, last: int) -> list[dict[str, Any]]:
    """Receipts of the checkpoint chain's stretch (in the order written) from the first to the
    last chained checkpoint that signs an entry in [first, last]."""
    chained = sorted((c for c in cps.load_all(conn) if c.chained), key=lambda c: c.id or 0)
    inside = [i for i, c in enumerate(chained) if first <= c.seq <= last]
    if not inside:
        return []
    return [c.receipt() for c in chained[inside[0] : inside[-1] + 1]]


class _Digest:
    """Counts and hashes everything written before the manifest."""

    def __init__(self) -> None:
        self.sha = hashlib.sha256()
        self.records = 0
        self.first: Entry | None = None
        self.last: Entry | None = None

    def add(self, entry: Entry) -> None:
        self.records += 1
        self.first = self.first or entry
        self.last = entry


def _manifest(
    digest: _Digest,
    fmt: str,
    since: datetime | None,
    until: datetime | None,
    key: Ed25519PrivateKey,
    checkpoints: list[dict[str, Any]],
) -> dict[str, Any]:
    first, last = digest.first, digest.last
    public = key.public_key()
    manifest: dict[str, Any] = {
        "chain": CHAIN_NAME,
        "export_version": EXPORT_VERSION,
        "format": fmt,
        "since": None if since is None else canonical_timestamp(since),
        "until": None if until is None else canonical_timestamp(until),
        "records": digest.records,
        "first_seq": first.seq if first else None,
        "last_seq": last.seq if last else None,
        "first_prev_hash": first.prev_hash if first else None,
        "first_hash": first.record_hash if first else None,
        "last_hash": last.record_hash if last else None,
        "sha256": digest.sha.hexdigest(),
        "created_at": canonical_timestamp(datetime.now(UTC)),
        "key_id": key_id(public),
        "public_key": public_key_pem(public),
        "checkpoints": checkpoints,
    }
    manifest["signature"] = key.sign(manifest_payload(manifest)).hex()
    return manifest


def export(
    engine: Engine,
    key: Ed25519PrivateKey,
    fmt: Format,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Iterator[bytes]:
    """The export as chunks of bytes (one consistent read; the manifest comes last)."""
    if fmt not in FORMATS:
        raise ValueError(f"format: must be one of {', '.join(FORMATS)}, not {fmt!r}")
    digest = _Digest()
    pending: list[bytes] = []
    size = 0
    if fmt == "csv":
        pending.append(_csv_text([list(CSV_COLUMNS)]))
    with transaction(engine, write=False) as conn:
        bounds = chain_range(conn, since, until)
        entries = iter_entries(conn, bounds[0], bounds[1]) if bounds else iter([])
        rows: list[list[str]] = []
        for entry in entries:
            digest.add(entry)
            if fmt == "jsonl":
                line = _jsonl_line(entry)
                pending.append(line)
                size += len(line)
            else:
                rows.append(_csv_row(entry))
                size += 512
            if size >= _CHUNK:
                if rows:
                    pending.append(_csv_text(rows))
                    rows = []
                chunk = b"".join(pending)
                digest.sha.update(chunk)
                yield chunk
                pending, size = [], 0
        if rows:
            pending.append(_csv_text(rows))
        signed = chain_checkpoints(conn, bounds[0], bounds[1]) if bounds else []
    chunk = b"".join(pending)
    digest.sha.update(chunk)
    manifest = _manifest(digest, fmt, since, until, key, signed)
    if fmt == "jsonl":
        trailer = orjson.dumps({"manifest": manifest}) + b"\n"
    else:
        trailer = (CSV_MANIFEST_PREFIX + orjson.dumps(manifest).decode() + "\n").encode()
    yield chunk + trailer
