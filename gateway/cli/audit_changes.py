"""`gateway audit changes`, and `gateway audit show` for a change or a chain position.

Configuration changes (regions, tenants, regimes, operator tokens) are chain entries like
routing decisions, but have other fields, so they are listed by their own command; `audit
search` stays the decision search. Reads the database directly, like `audit search`.
"""

from __future__ import annotations

import argparse
import re
from typing import Any

import orjson

from compliance.audit_query.changes import FILTER_NAMES, change_document, parse_change_filter
from compliance.audit_query.explain import decision_document
from compliance.audit_query.filters import FilterError, parse_limit
from compliance.audit_query.reader import AuditReader
from gateway.cli.common import CliError, print_table
from gateway.cli.database import migrated_database_url
from gateway.settings import Settings

_HELP = {
    "since": "from this time (ISO 8601, inclusive; no offset = UTC)",
    "until": "up to this time (exclusive)",
    "actor": "who made it (e.g. alice, cli:tokens:root, cli:tenants-keys-create)",
    "object_type": "region, tenant, regime or token",
    "object_id": "the object's id (region id, tenant id, token name)",
    "action": "create, replace, update, delete, revoke",
}
_COLUMNS = (
    ("changed_at", "CHANGED_AT (UTC)", 26),
    ("change_id", "CHANGE", 6),
    ("chain_seq", "CHAIN", 6),
    ("actor", "ACTOR", 24),
    ("object", "OBJECT", 28),
    ("action", "ACTION", 7),
    ("what", "WHAT", 0),
)
_CHAIN_POSITION = re.compile(r"#?(\d{1,18})")
_CHANGE_ID = re.compile(r"change[-:]?(\d{1,18})", re.IGNORECASE)


def _reader() -> AuditReader:
    return AuditReader(migrated_database_url(Settings()))


def _dump(value: Any) -> None:
    print(orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode())


def _cell(change: dict[str, Any], name: str) -> str:
    if name == "changed_at":
        return str(change["changed_at"].isoformat(timespec="microseconds")[:26])
    if name == "chain_seq":
        return f"#{change['chain_seq']}"
    if name == "object":
        return f"{change['object_type']} {change['object_id']}"
    if name == "what":
        facts = change["legal_facts_changed"]
        fields = {"create": "new", "delete": "removed"}.get(
            change["action"], ", ".join(change["changed_fields"])
        )
        return "; ".join(p for p in (fields, *(f"legal: {f}" for f in facts)) if p)
    return str(change.get(name, "-"))


def _changes(args: argparse.Namespace) -> int:
    try:
        spec = parse_change_filter(**{name: getattr(args, name) for name in FILTER_NAMES})
        limit = parse_limit(args.limit)
    except FilterError as exc:
        raise CliError(f"--{exc.field.replace('_', '-')}: {exc.problem}") from None
    reader = _reader()
    try:
        page = reader.search_changes(spec, limit, args.cursor)
    except FilterError as exc:
        raise CliError(f"--{exc.field}: {exc.problem}") from None
    finally:
        reader.close()
    if args.json:
        _dump({"changes": page.changes, "next_cursor": page.next_cursor, "limit": limit})
        return 0
    print_table(_COLUMNS, page.changes, _cell)
    shown = f"{len(page.changes)} configuration change(s)"
    print(f"{shown}; next page: --cursor {page.next_cursor}" if page.next_cursor else shown)
    return 0


def _print(document: dict[str, Any], as_json: bool) -> None:
    if as_json:
        _dump(document)
        return
    print(document["summary"])
    print()
    for line in document["explanation_text"]:
        print(line)


def show_entry(ref: str, as_json: bool) -> bool:
    """Print the change or chain entry `ref` names (`change-N`, `#N` or `N`); False if `ref`
    is neither form (then it is a decision id). CliError if nothing is stored there."""
    by_change = _CHANGE_ID.fullmatch(ref.strip())
    at = _CHAIN_POSITION.fullmatch(ref.strip())
    if by_change is None and at is None:
        return False
    reader = _reader()
    try:
        if by_change is not None:
            change = reader.get_change(int(by_change.group(1)))
            if change is None:
                raise CliError(f"no configuration change {by_change.group(1)}")
            _print(change_document(change), as_json)
            return True
        assert at is not None
        found = reader.entry_at(int(at.group(1)))
    finally:
        reader.close()
    if found is None:
        raise CliError(f"nothing at chain position #{at.group(1)} (not written yet, or pruned)")
    kind, record = found
    _print(change_document(record) if kind == "change" else decision_document(record), as_json)
    return True


def register(audit_commands: Any) -> None:
    """Add `audit changes`."""
    changes = audit_commands.add_parser(
        "changes",
        help="configuration changes in the chain (regions, tenants, regimes, tokens), newest first",
    )
    for name in FILTER_NAMES:
        changes.add_argument(f"--{name.replace('_', '-')}", dest=name, help=_HELP[name])
    changes.add_argument("--limit", help="changes per page (default 50, at most 1000)")
    changes.add_argument("--cursor", help="continue after a previous page (its next cursor)")
    changes.add_argument("--json", action="store_true", help="print JSON")
    changes.set_defaults(handler=_changes)
