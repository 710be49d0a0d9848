"""Audit chain: chain columns on routing_decisions and config_changes, head row, checkpoints.

Rows written before this revision are chained here, oldest first (config changes before
decisions at equal timestamps), so that `gateway audit verify` covers them too.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

from compliance.audit.canonical import (
    FIELDS,
    GENESIS_HASH,
    TIME_FIELD,
    Kind,
    entry_hash,
    normalise_fields,
)

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = sa.DateTime(timezone=True)


def _add_chain_columns(table: str, with_hashes: bool) -> None:
    if with_hashes:
        op.add_column(table, sa.Column("prev_hash", sa.String(64), nullable=True))
        op.add_column(table, sa.Column("record_hash", sa.String(64), nullable=True))
    op.add_column(table, sa.Column("chain_seq", sa.BigInteger(), nullable=True))
    op.create_index(f"ix_{table}_chain_seq", table, ["chain_seq"], unique=True)


def upgrade() -> None:
    """Add the chain columns and tables, then chain the rows already present."""
    _add_chain_columns("routing_decisions", with_hashes=False)
    _add_chain_columns("config_changes", with_hashes=True)
    op.create_table(
        "audit_chain_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("record_hash", sa.String(64), nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_chain_head"),
        sa.CheckConstraint("id = 1", name="ck_audit_chain_head_single_row"),
    )
    op.create_table(
        "audit_checkpoints",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("record_hash", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("signature", sa.String(128), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_checkpoints"),
    )
    op.create_index("ix_audit_checkpoints_seq", "audit_checkpoints", ["seq"])
    _chain_existing_rows()


def _chain_existing_rows() -> None:
    from compliance.store.schema import audit_chain_head, config_changes, routing_decisions

    conn = op.get_bind()
    entries: list[tuple[datetime, int, Kind, int, dict[str, Any]]] = []
    for kind, table, order in (
        (Kind.CONFIG_CHANGE, config_changes, 0),
        (Kind.DECISION, routing_decisions, 1),
    ):
        columns = [table.c.seq, *(table.c[name] for name in FIELDS[kind])]  # as of 0003
        for row in conn.execute(sa.select(*columns).order_by(table.c.seq)).mappings():
            fields = normalise_fields(kind, dict(row))
            stamp = row[TIME_FIELD[kind]]
            entries.append((stamp, order, kind, row["seq"], fields))
    entries.sort(key=lambda e: (e[0], e[1], e[3]))
    prev = GENESIS_HASH
    for chain_seq, (_, _, kind, row_seq, fields) in enumerate(entries, start=1):
        digest = entry_hash(kind, chain_seq, prev, fields)
        table = config_changes if kind is Kind.CONFIG_CHANGE else routing_decisions
        conn.execute(
            sa.update(table)
            .where(table.c.seq == row_seq)
            .values(chain_seq=chain_seq, prev_hash=prev, record_hash=digest)
        )
        prev = digest
    conn.execute(
        sa.insert(audit_chain_head).values(
            id=1, seq=len(entries), record_hash=prev, updated_at=datetime.now(UTC)
        )
    )


def downgrade() -> None:
    """Drop the chain tables and columns (the hashes are lost)."""
    op.drop_index("ix_audit_checkpoints_seq", table_name="audit_checkpoints")
    op.drop_table("audit_checkpoints")
    op.drop_table("audit_chain_head")
    for table in ("config_changes", "routing_decisions"):
        op.drop_index(f"ix_{table}_chain_seq", table_name=table)
        with op.batch_alter_table(table) as batch:
            batch.drop_column("chain_seq")
            if table == "config_changes":
                batch.drop_column("record_hash")
                batch.drop_column("prev_hash")
