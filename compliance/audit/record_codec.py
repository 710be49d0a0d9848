"""Routing records encoded once, as canonical bytes, from the data path to the database (pure).

The spool payload of a routing record already holds the canonical pieces its chain hash is
made of (see canonical.py): the hashed scalar fields as compact sorted-key JSON (timestamp in
canonical form, numbers with their column's type) and each JSON-valued field's canonical text,
which is also exactly what a SQLite JSON column stores. So the database writer parses only the
small scalar part, splices the hashed bytes together around the chain position, and binds the
texts unchanged: no per-field re-serialisation in the writer thread.

Layout: ``marker | scalars-json | 0x00 | attempts | 0x00 | explanation | 0x00 | jurisdictions |
0x00 | reasons | 0x00 | regimes`` (JSON field texts in sorted name order; orjson never writes
a raw 0x00 byte, it escapes control characters). The marker byte names the chain entry's
kind: 0x01 a routing decision (with its outcome), 0x02 a write-ahead decision (kind `intent`,
same fields: see compliance.audit.intents). A payload beginning with ``{`` is the older
format, the record as plain JSON, still read back for spools written before this one.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from hashlib import sha256
from operator import itemgetter
from typing import Any

import orjson

from compliance.audit.canonical import (
    DECISION_FIELDS,
    JSON_FIELDS,
    Kind,
    canonical_timestamp,
    json_safe,
    json_text,
)

FAST = b"\x01"
INTENT = b"\x02"
MARKERS: dict[Kind, bytes] = {Kind.DECISION: FAST, Kind.INTENT: INTENT}
_KIND_OF = {marker[0]: kind for kind, marker in MARKERS.items()}
SEPARATOR = b"\x00"
JSON_NAMES: tuple[str, ...] = tuple(sorted(JSON_FIELDS[Kind.DECISION]))
SCALAR_NAMES: tuple[str, ...] = tuple(n for n in DECISION_FIELDS if n not in JSON_NAMES)
REST_NAMES: tuple[str, ...] = SCALAR_NAMES[2:]
"""Scalar columns after `decision_id` and `decided_at`, in the order `Encoded.values` holds."""
INSERT_COLUMNS: tuple[str, ...] = (
    "decision_id",
    "decided_at",
    *REST_NAMES,
    *JSON_NAMES,
    "chain_seq",
    "prev_hash",
    "record_hash",
)
"""Column order of the rows `chain_row` returns."""

REQUIRED = frozenset({"decision_id", "decided_at", "outcome", "status_code"})
_ALLOWED = frozenset(DECISION_FIELDS)
_EMPTY: dict[str, Any] = {"attempts": [], "jurisdictions": [], "regimes": [], "reasons": []}
_SORTED = orjson.OPT_SORT_KEYS
_REST = itemgetter(*REST_NAMES)
_JSON_HEAD = b'{"json":{"attempts":'
_E, _J, _R, _G = (b',"' + name.encode() + b'":' for name in JSON_NAMES[1:])
_PREVS = {kind: b'},"kind":"' + kind.value.encode() + b'","prev":"' for kind in MARKERS}
_RECORD = b'","record":'
_SEQ = b',"seq":'

assert JSON_NAMES == ("attempts", "explanation", "jurisdictions", "reasons", "regimes")
assert SCALAR_NAMES[:2] == ("decision_id", "decided_at")


def _json_text(value: Any) -> bytes:
    """Canonical text of a JSON field: `json_text(json_safe(value))`, in one pass when the
    value holds only JSON-native types (it always does on the data path)."""
    try:
        return orjson.dumps(value, option=_SORTED)
    except TypeError:  # sets, non-string keys, ...: the general (round-trip) path
        return json_text(json_safe(value)).encode("utf-8")


def _timestamp(value: datetime) -> str:
    """canonical_timestamp, quicker for the UTC datetimes the data path makes."""
    if value.tzinfo is UTC and value.year >= 1000:  # (strftime does not pad years < 1000)
        if value.microsecond:  # orjson then writes all six digits (it drops a zero fraction)
            return orjson.dumps(value, option=orjson.OPT_UTC_Z)[1:-1].decode("ascii")
        return value.isoformat(timespec="microseconds")[:-6] + "Z"
    return canonical_timestamp(value)


def encode_record(record: Mapping[str, Any], kind: Kind = Kind.DECISION) -> bytes:
    """The canonical spool payload of a routing record, as a chain entry of `kind` (decision
    or intent); ValueError/TypeError if it is not a valid record: unknown or missing keys, a
    naive `decided_at`, a non-numeric number, ..."""
    if not _ALLOWED.issuperset(record):
        raise ValueError(f"unknown columns {sorted(set(record) - _ALLOWED)}")
    if not REQUIRED.issubset(record):
        raise ValueError(f"missing {sorted(REQUIRED - set(record))}")
    decided_at = record["decided_at"]
    if not isinstance(decided_at, datetime) or decided_at.tzinfo is None:
        raise ValueError("decided_at: must be a timezone-aware datetime")
    get = record.get
    scalars: dict[str, Any] = {name: get(name) for name in SCALAR_NAMES}
    scalars["decided_at"] = _timestamp(decided_at)
    scalars["status_code"] = int(scalars["status_code"])
    if scalars["policy_version"] is not None:
        scalars["policy_version"] = int(scalars["policy_version"])
    if scalars["latency_ms"] is not None:  # to the ns, as canonical.normalise_fields
        scalars["latency_ms"] = round(float(scalars["latency_ms"]), 6)
    parts = [MARKERS[kind] + orjson.dumps(scalars, option=_SORTED)]
    for name in JSON_NAMES:
        value = get(name)
        if value is None:
            value = _EMPTY.get(name, {})
        parts.append(_json_text(value))
    return SEPARATOR.join(parts)


_GIL_FREE_MIN = 2048
"""hashlib lets go of the GIL to hash this many bytes or more at once: for a routing record
that costs more (another thread takes the GIL, then this one waits) than hashing it."""


def _sha256_hex(data: bytes) -> str:
    if len(data) < _GIL_FREE_MIN:
        return sha256(data).hexdigest()
    view = memoryview(data)
    digest = sha256()
    for start in range(0, len(data), _GIL_FREE_MIN - 1):
        digest.update(view[start : start + _GIL_FREE_MIN - 1])
    return digest.hexdigest()


class Encoded:
    """A parsed fast payload: what the database writer binds and hashes."""

    __slots__ = ("decided_at", "decision_id", "kind", "payload", "record_json", "texts", "values")

    def __init__(self, payload: bytes) -> None:
        kind = _KIND_OF.get(payload[0]) if payload else None
        if kind is None:
            raise ValueError("routing record payload: unknown marker")
        self.kind = kind
        parts = payload[1:].split(SEPARATOR)
        if len(parts) != len(JSON_NAMES) + 1:
            raise ValueError(f"routing record payload: {len(parts)} parts")
        self.payload = payload
        self.record_json = parts[0]
        self.texts = parts[1:]
        scalars = orjson.loads(parts[0])
        self.decision_id: str = scalars["decision_id"]
        self.decided_at: str = scalars["decided_at"]
        self.values: tuple[Any, ...] = _REST(scalars)

    def entry_bytes(self, seq: int, prev_hash: str) -> bytes:
        """canonical.entry_bytes of this record at chain position `seq` after `prev_hash`."""
        attempts, explanation, jurisdictions, reasons, regimes = self.texts
        return b"".join(
            (
                _JSON_HEAD,
                attempts,
                _E,
                explanation,
                _J,
                jurisdictions,
                _R,
                reasons,
                _G,
                regimes,
                _PREVS[self.kind],
                prev_hash.encode("ascii"),
                _RECORD,
                self.record_json,
                _SEQ,
                str(seq).encode("ascii"),
                b"}",
            )
        )

    def chain_row(self, seq: int, prev_hash: str, decided_at: Any) -> tuple[tuple[Any, ...], str]:
        """(the INSERT_COLUMNS row at `seq`, its record hash); `decided_at` as the database
        wants the timestamp bound."""
        digest = _sha256_hex(self.entry_bytes(seq, prev_hash))
        texts = tuple(t.decode("utf-8") for t in self.texts)
        return (self.decision_id, decided_at, *self.values, *texts, seq, prev_hash, digest), digest


def parse(payload: bytes) -> Encoded:
    """A spool payload (either format) ready to store; ValueError if it is not a valid record."""
    try:
        if payload[:1] not in (FAST, INTENT):
            payload = encode_record(decode(payload))
        return Encoded(payload)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"routing record rejected: {exc}") from None


def decode(payload: bytes) -> dict[str, Any]:
    """The record a payload holds (either format; fast ones normalised), for generic sinks and
    error reports. ValueError if it cannot be read."""
    try:
        if payload[:1] not in (FAST, INTENT):
            record: dict[str, Any] = orjson.loads(payload)
            if isinstance(record.get("decided_at"), str):
                record["decided_at"] = datetime.fromisoformat(record["decided_at"])
            return record
        parts = payload[1:].split(SEPARATOR)
        record = orjson.loads(parts[0])
        record["decided_at"] = datetime.fromisoformat(record["decided_at"])
        for name, text in zip(JSON_NAMES, parts[1:], strict=True):
            record[name] = orjson.loads(text)
        return {name: record[name] for name in DECISION_FIELDS}
    except (AttributeError, KeyError, TypeError) as exc:
        raise ValueError(f"routing record payload unreadable: {exc!r}") from None


def legacy_payload(record: Mapping[str, Any]) -> bytes:
    """The plain-JSON payload (records `encode_record` refuses are spooled like this, so the
    store can reject them with the reason and nothing is lost on the way)."""
    return orjson.dumps(record)
