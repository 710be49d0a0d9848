"""`gateway audit search | show | report`: read the routing log straight from the database
(configuration changes: gateway.cli.audit_changes).

Meant for a compliance officer on an admin host: it needs only the database URL from the
settings (GATEWAY_DATABASE_URL or GATEWAY_DATA_DIR), not a running gateway.
"""

from __future__ import annotations

import argparse
from typing import Any

import orjson

from compliance.audit_query.explain import decision_document
from compliance.audit_query.filters import FilterError, parse_filter, parse_limit
from compliance.audit_query.reader import AuditReader
from gateway.cli.audit_changes import show_entry
from gateway.cli.common import CliError, print_table
from gateway.cli.database import migrated_database_url
from gateway.settings import Settings

_FILTERS = (
    ("since", "from this time (ISO 8601, inclusive; no offset = UTC)"),
    ("until", "up to this time (exclusive)"),
    ("tenant", "tenant id"),
    ("client-country", "client country (ISO code, from GeoIP)"),
    ("jurisdiction", "subject jurisdiction: declared subject country, else client country"),
    ("data-class", "public, personal, special, health, payment, ..."),
    ("region", "chosen or served region id"),
    (
        "outcome",
        "routed, refused, unavailable, model_not_found, upstream_error, or unknown "
        "(write-ahead decisions without an outcome recorded)",
    ),
)
_COLUMNS = (
    ("decided_at", "DECIDED_AT (UTC)", 26),
    ("decision_id", "DECISION", 24),
    ("tenant_id", "TENANT", 12),
    ("jurisdiction", "SUBJECT", 7),
    ("client_country", "CLIENT", 6),
    ("data_class", "CLASS", 10),
    ("outcome", "OUTCOME", 15),
    ("region", "REGION", 14),
    ("status_code", "HTTP", 4),
)


def _reader() -> AuditReader:
    return AuditReader(migrated_database_url(Settings()))


def _spec(args: argparse.Namespace) -> Any:
    try:
        return parse_filter(
            **{
                name.replace("-", "_"): getattr(args, name.replace("-", "_"))
                for name, _ in _FILTERS
            }
        )
    except FilterError as exc:
        raise CliError(f"--{exc.field.replace('_', '-')}: {exc.problem}") from None


def _dump(value: Any) -> None:
    print(orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode())


def _cell(record: dict[str, Any], name: str) -> str:
    if name == "region":
        value = record.get("served_region") or record.get("chosen_region")
    elif name == "decided_at":
        value = record["decided_at"].isoformat(timespec="microseconds")[:26]
    else:
        value = record.get(name)
    return "-" if value is None else str(value)


def _search(args: argparse.Namespace) -> int:
    spec = _spec(args)
    try:
        limit = parse_limit(args.limit)
    except FilterError as exc:
        raise CliError(f"--limit: {exc.problem}") from None
    reader = _reader()
    try:
        page = reader.search(spec, limit, args.cursor)
    except FilterError as exc:
        raise CliError(f"--{exc.field}: {exc.problem}") from None
    finally:
        reader.close()
    if args.json:
        _dump({"decisions": page.records, "next_cursor": page.next_cursor, "limit": limit})
        return 0
    print_table(_COLUMNS, page.records, _cell)
    shown = f"{len(page.records)} decision(s)"
    print(f"{shown}; next page: --cursor {page.next_cursor}" if page.next_cursor else shown)
    return 0


def _show(args: argparse.Namespace) -> int:
    if show_entry(args.decision_id, args.json):
        return 0
    reader = _reader()
    try:
        record = reader.get(args.decision_id)
    finally:
        reader.close()
    if record is None:
        raise CliError(f"no routing record with decision id {args.decision_id!r}")
    document = decision_document(record)
    if args.json:
        _dump(document)
        return 0
    print(document["summary"])
    print()
    for line in document["explanation_text"]:
        print(line)
    return 0


def _report_text(report: dict[str, Any]) -> list[str]:
    period = report["period"]
    lines = [
        f"Report {period['since'] or 'beginning'} .. {period['until'] or 'now'}: "
        f"{report['total']} decisions",
        "Outcomes: " + (", ".join(f"{k} {v}" for k, v in report["outcomes"].items()) or "none"),
    ]
    if report.get("without_outcome"):
        lines.append(
            f"Without an outcome recorded (write-ahead decisions; may have reached their "
            f"chosen region): {report['without_outcome']}; list them with --outcome unknown"
        )
    lines += [
        "Subject jurisdiction x processing region:",
    ]
    matrix = report["matrix"]
    heads = [*matrix["regions"], "not processed"]
    lines.append("  " + "".ljust(8) + "".join(h.rjust(max(len(h), 6) + 2) for h in heads))
    for j in matrix["jurisdictions"]:
        counts = {**matrix["counts"][j], "not processed": matrix["not_processed"][j]}
        cells = "".join(str(counts.get(h, 0)).rjust(max(len(h), 6) + 2) for h in heads)
        lines.append("  " + j.ljust(8) + cells)
    lines.append("Refusals by reason:")
    lines.extend(f"  {r['count']:>8}  {r['reason']}" for r in report["refusals"])
    re = report["reevaluation"]
    lines.append(
        f"Re-evaluation: {re['checked']} routed records checked ({re['groups_evaluated']} "
        f"distinct cases): {re['violations']} violations, {re['unverifiable']} unverifiable"
    )
    lines.extend(f"  unverifiable {u['count']}: {u['reason']}" for u in re["unverifiable_reasons"])
    lines.extend(
        f"  VIOLATION {v['count']} x {v['region']} (policy v{v['policy_version']}, "
        f"{v['data_class']}, {'/'.join(v['jurisdictions'])}): {v['why']}; "
        f"e.g. {', '.join(v['sample_decision_ids'])}"
        for v in re["violating"]
    )
    return lines


def _report(args: argparse.Namespace) -> int:
    spec = _spec(args)
    reader = _reader()
    try:
        report = reader.report(spec).to_dict()
    finally:
        reader.close()
    if args.json:
        _dump(report)
    else:
        print("\n".join(_report_text(report)))
    return 1 if report["reevaluation"]["violations"] else 0


def _add_filters(parser: argparse.ArgumentParser) -> None:
    for name, helptext in _FILTERS:
        parser.add_argument(f"--{name}", dest=name.replace("-", "_"), help=helptext)


def register(audit_commands: Any) -> None:
    """Add `audit search`, `audit show` and `audit report`."""
    search = audit_commands.add_parser("search", help="find routing decisions, newest first")
    _add_filters(search)
    search.add_argument("--limit", help="records per page (default 50, at most 1000)")
    search.add_argument("--cursor", help="continue after a previous page (its next cursor)")
    search.add_argument("--json", action="store_true", help="print JSON")
    search.set_defaults(handler=_search)
    show = audit_commands.add_parser(
        "show", help="one decision or configuration change, explained in plain words"
    )
    show.add_argument(
        "decision_id",
        metavar="ID",
        help="a decision id, a configuration change (change-5) or a chain position (#38 or 38)",
    )
    show.add_argument("--json", action="store_true", help="print the record as JSON")
    show.set_defaults(handler=_show)
    report = audit_commands.add_parser(
        "report",
        help="jurisdiction x region matrix, refusals, re-evaluation (exit 1 on a violation)",
    )
    _add_filters(report)
    report.add_argument("--json", action="store_true", help="print JSON")
    report.set_defaults(handler=_report)
