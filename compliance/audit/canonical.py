"""Canonical serialisation and hashing of audit-chain entries (pure: no database, no I/O).

Every entry of the one chain, whether a routing decision or a configuration change, is hashed
as SHA-256 over compact sorted-key JSON (UTF-8, no whitespace, as `orjson.OPT_SORT_KEYS`
writes it) of::

    {"json": {<JSON-valued fields>}, "kind": <kind>, "prev": <previous entry's hash>,
     "record": {<other fields>}, "seq": <chain position>}

holding exactly the fields listed below for its kind (a fixed list: columns added to the tables
later do not change old hashes), timestamps as `YYYY-MM-DDTHH:MM:SS.ffffffZ` (UTC). The first
entry's `prev` is GENESIS_HASH.

On SQLite, JSON values are stored as exactly this compact sorted text (see ledger.py), so
`RawLayout` hashes a stored row without parsing it; that is why JSON-valued fields sit apart
from the others. Rows stored otherwise (PostgreSQL, older rows) are parsed and re-serialised.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any

import orjson

GENESIS_HASH = "0" * 64
"""The `prev` of the first entry of a chain."""


class Kind(StrEnum):
    """What an entry records."""

    DECISION = "decision"
    CONFIG_CHANGE = "config_change"
    INTENT = "intent"
    """A write-ahead routing decision: made durable before its request left for a region;
    the `decision` entry with the same decision_id holds its outcome (same fields)."""


DECISION_FIELDS: tuple[str, ...] = (
    "decision_id",
    "decided_at",
    "tenant_id",
    "client_ip_hmac",
    "client_country",
    "subject_country",
    "data_class",
    "model",
    "outcome",
    "status_code",
    "chosen_region",
    "served_region",
    "policy_version",
    "trace_id",
    "latency_ms",
    "attempts",
    "jurisdictions",
    "regimes",
    "reasons",
    "explanation",
)
CHANGE_FIELDS: tuple[str, ...] = (
    "changed_at",
    "actor",
    "role",
    "object_type",
    "object_id",
    "action",
    "before",
    "after",
    "policy_version",
)
DECISION_JSON_FIELDS = frozenset({"attempts", "jurisdictions", "regimes", "reasons", "explanation"})
FIELDS: dict[Kind, tuple[str, ...]] = {
    Kind.DECISION: DECISION_FIELDS,
    Kind.CONFIG_CHANGE: CHANGE_FIELDS,
    Kind.INTENT: DECISION_FIELDS,
}
TIME_FIELD: dict[Kind, str] = {
    Kind.DECISION: "decided_at",
    Kind.CONFIG_CHANGE: "changed_at",
    Kind.INTENT: "decided_at",
}
JSON_FIELDS: dict[Kind, frozenset[str]] = {
    Kind.DECISION: DECISION_JSON_FIELDS,
    Kind.CONFIG_CHANGE: frozenset({"before", "after"}),
    Kind.INTENT: DECISION_JSON_FIELDS,
}
_INT_FIELDS = frozenset({"status_code", "policy_version"})
_FLOAT_FIELDS = frozenset({"latency_ms"})
_SQLITE_TS_LENGTH = len("2026-01-01 00:00:00.000000")


def canonical_timestamp(value: datetime | str) -> str:
    """`YYYY-MM-DDTHH:MM:SS.ffffffZ` in UTC, from an aware datetime or a stored SQLite text."""
    if isinstance(value, str):
        if len(value) == _SQLITE_TS_LENGTH and value[10] == " ":
            return f"{value[:10]}T{value[11:]}Z"  # the SQLite storage format, already UTC
        if len(value) == _SQLITE_TS_LENGTH + 1 and value[10] == "T" and value[-1] == "Z":
            return value  # already canonical
        parsed = datetime.fromisoformat(value)
        value = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    if value.tzinfo is None:
        raise ValueError(f"naive timestamp {value.isoformat()}: must be timezone-aware")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _json_default(value: Any) -> Any:
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def json_safe(value: Any) -> Any:
    """`value` as stored in a JSON column: keys strings and in sorted order (so the stored text
    is canonical), sets sorted lists, tuples lists, NaN null."""
    if value is None:
        return None
    options = orjson.OPT_NON_STR_KEYS | orjson.OPT_SORT_KEYS
    return orjson.loads(orjson.dumps(value, default=_json_default, option=options))


def normalise_fields(kind: Kind, record: Mapping[str, Any]) -> dict[str, Any]:
    """The hashed fields of `record` with the types the database returns.

    Absent fields are None; JSON fields go through `json_safe`; numbers get their column's type
    (an int latency would read back as a float from a REAL column and change the hash), and
    milliseconds are rounded to 6 decimals.
    """
    fields: dict[str, Any] = {}
    json_fields = JSON_FIELDS[kind]
    for name in FIELDS[kind]:
        value = record.get(name)
        if value is not None:
            if name in json_fields:
                value = json_safe(value)
            elif name in _INT_FIELDS:
                value = int(value)
            elif name in _FLOAT_FIELDS:  # to the ns: short digits, as SQLite also prints them
                value = round(float(value), 6)
        fields[name] = value
    return fields


def json_text(value: Any) -> str:
    """The canonical JSON text of a `json_safe` value (what SQLite JSON columns hold)."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode("utf-8")


def sqlite_timestamp(value: datetime) -> str:
    """A timestamp as SQLAlchemy stores UTCDateTime in SQLite (naive UTC, microseconds)."""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def entry_bytes(kind: Kind | str, seq: int, prev_hash: str, fields: Mapping[str, Any]) -> bytes:
    """The canonical serialisation hashed for one entry (`fields` as normalise_fields gives)."""
    kind = Kind(kind)
    json_fields = JSON_FIELDS[kind]
    time_field = TIME_FIELD[kind]
    record = {name: fields[name] for name in FIELDS[kind] if name not in json_fields}
    stamp = record[time_field]
    record[time_field] = None if stamp is None else canonical_timestamp(stamp)
    document = {
        "json": {name: fields[name] for name in json_fields},
        "kind": kind.value,
        "prev": prev_hash,
        "record": record,
        "seq": seq,
    }
    return orjson.dumps(document, option=orjson.OPT_SORT_KEYS)


def entry_hash(kind: Kind | str, seq: int, prev_hash: str, fields: Mapping[str, Any]) -> str:
    """Hex SHA-256 of `entry_bytes`."""
    return hashlib.sha256(entry_bytes(kind, seq, prev_hash, fields)).hexdigest()


class RawLayout:
    """Hashes one kind's stored row without parsing its JSON text.

    A row holds `offset` leading values, then the JSON fields' text in sorted name order
    (`json_names`, never None), then the other fields (`scalar_names`) with the timestamp
    already in canonical form. When the stored text is canonical (see the module docstring)
    `entry_bytes` equals the module-level `entry_bytes`; otherwise the hashes differ and the
    caller falls back to parsing (`fields`).
    """

    def __init__(self, kind: Kind, offset: int) -> None:
        json_fields = JSON_FIELDS[kind]
        self.kind = kind
        self.offset = offset
        self.json_names = tuple(sorted(json_fields))
        self.scalar_names = tuple(name for name in FIELDS[kind] if name not in json_fields)
        self._labels = tuple(f'"{name}":' for name in self.json_names)
        self._split = offset + len(self.json_names)

    def entry_bytes(self, seq: int, prev_hash: str, row: Sequence[Any]) -> bytes:
        """Canonical bytes spliced from a stored row (TypeError if a value has a wrong type)."""
        spliced = ",".join(map(str.__add__, self._labels, row[self.offset : self._split]))
        record = dict(zip(self.scalar_names, row[self._split :], strict=True))
        rest = orjson.dumps(
            {"kind": self.kind.value, "prev": prev_hash, "record": record, "seq": seq},
            option=orjson.OPT_SORT_KEYS,
        )
        return b'{"json":{' + spliced.encode("utf-8") + b"}," + rest[1:]

    def fields(self, row: Sequence[Any]) -> dict[str, Any]:
        """The row's fields, JSON parsed (text that does not parse stays text)."""
        fields: dict[str, Any] = dict(zip(self.scalar_names, row[self._split :], strict=True))
        for name, text in zip(self.json_names, row[self.offset : self._split], strict=True):
            try:
                fields[name] = orjson.loads(text)
            except (orjson.JSONDecodeError, TypeError):
                fields[name] = text  # cannot hash like the JSON that was written
        return fields
