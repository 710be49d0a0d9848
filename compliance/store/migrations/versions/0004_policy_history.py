"""Policy history for re-evaluating old decisions; indexes for audit search and reports.

The policy as it stands is recorded under the current version, so records decided from now
on (and those of the current version) can be re-evaluated. The snapshot is taken from the
tables as reflected here, not through application code, so later schema changes cannot
change what this revision does.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = sa.DateTime(timezone=True)
_SNAPSHOT_TABLES = ("regimes", "regime_rules", "regions", "tenants")
_SEARCH_INDEX = (
    "decided_at",
    "seq",
    "tenant_id",
    "client_country",
    "subject_country",
    "data_class",
    "outcome",
    "chosen_region",
    "served_region",
)
"""Audit search order, then every filter (schema.SEARCH_INDEX_COLUMNS)."""
_REPORT_INDEX = (
    "policy_version",
    "tenant_id",
    "client_country",
    "subject_country",
    "data_class",
    "outcome",
    "chosen_region",
    "served_region",
    "decided_at",
    "seq",
)
"""What the audit period report groups by, in its order (schema.REPORT_INDEX_COLUMNS)."""


def upgrade() -> None:
    """Create policy_versions, record the current policy, add the search indexes."""
    op.create_table(
        "policy_versions",
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("label", sa.String(255), nullable=False),
        sa.Column("recorded_at", _TS, nullable=False),
        sa.Column("snapshot", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("version", name="pk_policy_versions"),
    )
    op.create_index("ix_routing_decisions_search", "routing_decisions", list(_SEARCH_INDEX))
    op.create_index("ix_routing_decisions_report", "routing_decisions", list(_REPORT_INDEX))
    _record_current_policy()


def _jsonable(value: Any) -> Any:
    return value.isoformat() if isinstance(value, date | datetime) else value


def _record_current_policy() -> None:
    conn = op.get_bind()
    meta = sa.MetaData()
    head = sa.Table("policy_version", meta, autoload_with=conn)
    row = conn.execute(sa.select(head.c.version, head.c.label)).first()
    if row is None:
        return  # not seeded yet: the first policy write records version 1
    document: dict[str, Any] = {"format": 1}
    for name in _SNAPSHOT_TABLES:
        table = sa.Table(name, meta, autoload_with=conn)
        rows = conn.execute(sa.select(table).order_by(*table.primary_key.columns)).mappings()
        document[name] = [{k: _jsonable(v) for k, v in r.items()} for r in rows]
    history = sa.Table("policy_versions", meta, autoload_with=conn)
    conn.execute(
        sa.insert(history).values(
            version=row.version,
            label=row.label,
            recorded_at=datetime.now(UTC),
            snapshot=document,
        )
    )


def downgrade() -> None:
    """Drop the indexes and the history."""
    op.drop_index("ix_routing_decisions_report", table_name="routing_decisions")
    op.drop_index("ix_routing_decisions_search", table_name="routing_decisions")
    op.drop_table("policy_versions")
