"""Policy history: a snapshot of regimes, rules, regions and tenants for every policy version.

`PolicyStore.bump_version` records one in the same transaction as the change, so the routing
log's `policy_version` always names a policy that can be re-evaluated later (audit reports).
A snapshot is the policy tables' rows as JSON (tenant API keys are not kept).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import Connection, Table, delete, insert, select

from compliance.snapshot import PolicySnapshot
from compliance.store import rows, schema

FORMAT = 1
_TABLES: tuple[Table, ...] = (
    schema.regimes,
    schema.regime_rules,
    schema.regions,
    schema.tenants,
)


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return value


def dump_policy(conn: Connection) -> dict[str, Any]:
    """The current policy tables as a JSON-ready document."""
    document: dict[str, Any] = {"format": FORMAT}
    for table in _TABLES:
        ordered = conn.execute(select(table).order_by(*table.primary_key.columns)).mappings()
        document[table.name] = [{k: _jsonable(v) for k, v in row.items()} for row in ordered]
    return document


def record_version(conn: Connection, version: int) -> None:
    """Store the policy as it stands in `conn`'s transaction under `version` (replacing any)."""
    pv = schema.policy_version
    label = conn.execute(select(pv.c.label).where(pv.c.id == 1)).scalar() or ""
    history = schema.policy_versions
    conn.execute(delete(history).where(history.c.version == version))
    conn.execute(
        insert(history).values(
            version=version,
            label=str(label),
            recorded_at=datetime.now(UTC),
            snapshot=dump_policy(conn),
        )
    )


def _first(pair: tuple[int, Any]) -> int:
    return pair[0]


def _date(value: Any) -> date | None:
    return None if value is None else date.fromisoformat(str(value)[:10])


def snapshot_from_document(version: int, label: str, document: Mapping[str, Any]) -> PolicySnapshot:
    """A PolicySnapshot from a stored document (inverse of `dump_policy`)."""
    rules_by_regime: dict[str, list[tuple[int, Any]]] = {}
    for row in document.get("regime_rules", []):
        dated = {
            **row,
            "effective_from": _date(row.get("effective_from")),
            "effective_to": _date(row.get("effective_to")),
        }
        rules_by_regime.setdefault(row["regime_id"], []).append(
            (int(row.get("position", 0)), rows.to_rule(dated))
        )
    regime_rows = sorted(
        document.get("regimes", []), key=lambda r: (int(r.get("position", 0)), r["id"])
    )
    regimes = [
        rows.to_regime(
            r, [rule for _, rule in sorted(rules_by_regime.get(r["id"], []), key=_first)]
        )
        for r in regime_rows
    ]
    regions = [rows.to_region(r) for r in document.get("regions", [])]
    tenants = [rows.to_tenant(r, ()) for r in document.get("tenants", [])]
    return PolicySnapshot(version, regimes, regions, tenants, label=label)


def load_history(
    conn: Connection, versions: Iterable[int] | None = None
) -> dict[int, PolicySnapshot]:
    """Snapshots by version (all of them, or only `versions`; missing ones are absent)."""
    history = schema.policy_versions
    stmt = select(history.c.version, history.c.label, history.c.snapshot)
    if versions is not None:
        wanted = sorted(set(versions))
        if not wanted:
            return {}
        stmt = stmt.where(history.c.version.in_(wanted))
    return {
        int(row.version): snapshot_from_document(int(row.version), str(row.label), row.snapshot)
        for row in conn.execute(stmt)
    }
