"""Configuration changes in the audit chain: filters, keyset search, one change explained.

The chain holds routing decisions and configuration changes (regions, tenants, regimes,
operator tokens: `config_changes`); this module is the read side of the latter. Pages are
ordered newest first by (changed_at, seq), like the decision search (search.py).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import ColumnElement, Connection, select, tuple_

from compliance.audit_query.cursor import CHANGES, Position, decode_cursor, encode_cursor
from compliance.audit_query.filters import FilterError, parse_time
from compliance.store.region_facts import LEGAL_FACTS_KEY
from compliance.store.schema import config_changes as t

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,15}")
_ACTIONS = {"create": "created", "replace": "replaced", "update": "updated", "delete": "deleted"}


@dataclass(frozen=True, slots=True)
class ChangeFilter:
    """Which configuration changes to return; every set field must match (AND).

    `since` is inclusive and `until` exclusive (changed_at); the others match exactly.
    """

    since: datetime | None = None
    until: datetime | None = None
    actor: str | None = None
    object_type: str | None = None
    object_id: str | None = None
    action: str | None = None

    def as_query(self) -> dict[str, str]:
        """The filter as query parameters (only the fields that are set)."""
        out: dict[str, str] = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if value is not None:
                out[item.name] = value.isoformat() if isinstance(value, datetime) else str(value)
        return out


FILTER_NAMES: tuple[str, ...] = tuple(f.name for f in fields(ChangeFilter))


def _text(field: str, value: str, limit: int) -> str:
    value = value.strip()
    if len(value) > limit:
        raise FilterError(field, f"longer than {limit} characters")
    return value


def _name(field: str, value: str) -> str:
    value = value.strip()
    if not _NAME.fullmatch(value):
        raise FilterError(field, f"{value!r} is not a name (e.g. region, tenant, token, update)")
    return value.lower()


def parse_change_filter(
    *,
    since: str | None = None,
    until: str | None = None,
    actor: str | None = None,
    object_type: str | None = None,
    object_id: str | None = None,
    action: str | None = None,
) -> ChangeFilter:
    """Validate raw filter text (empty strings mean "not set"); FilterError names the field."""
    given = {
        name: value.strip() if value and value.strip() else None
        for name, value in (
            ("since", since),
            ("until", until),
            ("actor", actor),
            ("object_type", object_type),
            ("object_id", object_id),
            ("action", action),
        )
    }
    result = ChangeFilter(
        since=parse_time("since", given["since"]) if given["since"] else None,
        until=parse_time("until", given["until"]) if given["until"] else None,
        actor=_text("actor", given["actor"], 128) if given["actor"] else None,
        object_type=_name("object_type", given["object_type"]) if given["object_type"] else None,
        object_id=_text("object_id", given["object_id"], 128) if given["object_id"] else None,
        action=_name("action", given["action"]) if given["action"] else None,
    )
    if result.since and result.until and result.since >= result.until:
        raise FilterError("until", "must be later than since")
    return result


@dataclass(frozen=True, slots=True)
class ChangePage:
    """One page of changes (summaries, newest first) and the next page's cursor (or None)."""

    changes: list[dict[str, Any]]
    next_cursor: str | None


def _json(value: Any) -> Any:
    """A JSON column's value (SQLAlchemy parses it; a raw string is parsed here)."""
    if isinstance(value, str | bytes):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
    return value


def _fields(value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        return {}
    return {k: v for k, v in value.items() if k != LEGAL_FACTS_KEY}


def changed_fields(before: Any, after: Any) -> list[str]:
    """Top-level fields whose value differs (all of them for a create or a delete)."""
    old, new = _fields(before), _fields(after)
    return sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))


def legal_facts(after: Any) -> list[str]:
    """The legal facts a region change changed (empty if none are recorded)."""
    listed = after.get(LEGAL_FACTS_KEY) if isinstance(after, Mapping) else None
    return [str(item) for item in listed] if isinstance(listed, list) else []


def _summary_line(row: Mapping[str, Any]) -> str:
    done = _ACTIONS.get(str(row["action"]), str(row["action"]))
    head = f"{row['object_type']} {row['object_id']} {done} by {row['actor']} ({row['role']})"
    changed = changed_fields(row["before"], row["after"])
    if row["before"] is not None and row["after"] is not None and changed:
        head += f": {', '.join(changed)}"
    facts = legal_facts(row["after"])
    return head + (f"; legal facts changed: {'; '.join(facts)}" if facts else "")


def _record(row: Mapping[Any, Any]) -> dict[str, Any]:
    record = {str(k): v for k, v in row.items()}
    record["change_id"] = record.pop("seq")
    record["before"], record["after"] = _json(record["before"]), _json(record["after"])
    return record


def _summary(record: dict[str, Any]) -> dict[str, Any]:
    """A list row: the columns without the full values, plus what changed."""
    out = {k: v for k, v in record.items() if k not in ("before", "after", "prev_hash")}
    out["changed_fields"] = changed_fields(record["before"], record["after"])
    out[LEGAL_FACTS_KEY] = legal_facts(record["after"])
    out["summary"] = _summary_line(record)
    return out


def search_changes(
    conn: Connection, spec: ChangeFilter, limit: int, cursor: str | None
) -> ChangePage:
    """Up to `limit` changes matching `spec`, after `cursor` (FilterError if it is malformed)."""
    where: list[ColumnElement[bool]] = [t.c.chain_seq.is_not(None)]
    if spec.since is not None:
        where.append(t.c.changed_at >= spec.since)
    if spec.until is not None:
        where.append(t.c.changed_at < spec.until)
    for name in ("actor", "object_type", "object_id", "action"):
        value = getattr(spec, name)
        if value is not None:
            where.append(t.c[name] == value)
    if cursor:
        after = decode_cursor(cursor, CHANGES)
        where.append(tuple_(t.c.changed_at, t.c.seq) < tuple_(after.decided_at, after.seq))
    stmt = select(t).where(*where).order_by(t.c.changed_at.desc(), t.c.seq.desc()).limit(limit + 1)
    rows = [_record(row) for row in conn.execute(stmt).mappings()]
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = None
    if more and rows:
        last = rows[-1]
        next_cursor = encode_cursor(Position(last["changed_at"], int(last["change_id"])), CHANGES)
    return ChangePage([_summary(r) for r in rows], next_cursor)


def get_change(conn: Connection, change_id: int) -> dict[str, Any] | None:
    """Every column of one change (by its change id), or None."""
    row = conn.execute(select(t).where(t.c.seq == change_id)).mappings().first()
    return None if row is None else _record(row)


def change_at(conn: Connection, chain_seq: int) -> dict[str, Any] | None:
    """The change at chain position `chain_seq`, or None (none there, or a decision)."""
    row = conn.execute(select(t).where(t.c.chain_seq == chain_seq)).mappings().first()
    return None if row is None else _record(row)


def _value(value: Any) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, str):
        return value
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def change_document(record: Mapping[str, Any]) -> dict[str, Any]:
    """A stored change as the API and CLI return it: every column, what changed (before ->
    after per field), the legal facts it changed, and a plain-words account."""
    before, after = record.get("before"), record.get("after")
    diff = [
        {"field": name, "before": _fields(before).get(name), "after": _fields(after).get(name)}
        for name in changed_fields(before, after)
    ]
    facts = legal_facts(after)
    at = record.get("changed_at")
    when = at.isoformat() if isinstance(at, datetime) else str(at)
    lines = [
        f"Configuration change {record.get('change_id')} (chain #{record.get('chain_seq')}) at "
        f"{when}: {record.get('object_type')} {record.get('object_id')} "
        f"{_ACTIONS.get(str(record.get('action')), record.get('action'))}.",
        f"By {record.get('actor')} (role {record.get('role')}); policy version "
        f"{record.get('policy_version')}.",
    ]
    if before is None and after is not None:
        lines.append("Created with: " + _pairs(_fields(after)))
    elif after is None and before is not None:
        lines.append("Removed; it was: " + _pairs(_fields(before)))
    else:
        lines.extend(f"{d['field']}: {_value(d['before'])} → {_value(d['after'])}" for d in diff)
        if not diff:
            lines.append("No field changed.")
    if facts:
        lines.append("Legal facts changed: " + "; ".join(facts) + ".")
    return {
        **record,
        "changes": diff,
        LEGAL_FACTS_KEY: facts,
        "summary": _summary_line(record),
        "explanation_text": lines,
    }


def _pairs(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={_value(v)}" for k, v in sorted(values.items())) or "(no fields)"
