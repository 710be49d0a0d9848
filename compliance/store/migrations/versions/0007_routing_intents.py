"""Write-ahead routing decisions: the `routing_intents` table (audit-chain entries of kind
`intent`).

Same columns as `routing_decisions` (an intent is a routing record made before forwarding,
hashed the same way), plus `outcome_logged`, set once the outcome record with the same
decision_id is stored, and a partial index over the intents still without one. Existing
entries are not touched: their hashes do not change.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = sa.DateTime(timezone=True)
_TABLE = "routing_intents"


def upgrade() -> None:
    """Create routing_intents with its unique and partial indexes."""
    op.create_table(
        _TABLE,
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("decision_id", sa.String(40), nullable=False),
        sa.Column("decided_at", _TS, nullable=False),
        sa.Column("tenant_id", sa.String(128), nullable=True),
        sa.Column("client_ip_hmac", sa.String(64), nullable=True),
        sa.Column("client_country", sa.String(16), nullable=True),
        sa.Column("subject_country", sa.String(16), nullable=True),
        sa.Column("data_class", sa.String(32), nullable=True),
        sa.Column("model", sa.String(255), nullable=True),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("chosen_region", sa.String(64), nullable=True),
        sa.Column("served_region", sa.String(64), nullable=True),
        sa.Column("policy_version", sa.Integer(), nullable=True),
        sa.Column("trace_id", sa.String(32), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("attempts", sa.JSON(), nullable=False),
        sa.Column("jurisdictions", sa.JSON(), nullable=False),
        sa.Column("regimes", sa.JSON(), nullable=False),
        sa.Column("reasons", sa.JSON(), nullable=False),
        sa.Column("explanation", sa.JSON(), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=True),
        sa.Column("record_hash", sa.String(64), nullable=True),
        sa.Column("chain_seq", sa.BigInteger(), nullable=True),
        sa.Column("outcome_logged", sa.Boolean(), nullable=True),
        sa.PrimaryKeyConstraint("seq", name=op.f(f"pk_{_TABLE}")),
        sa.UniqueConstraint("decision_id", name=op.f(f"uq_{_TABLE}_decision_id")),
    )
    op.create_index(f"ix_{_TABLE}_chain_seq", _TABLE, ["chain_seq"], unique=True)
    open_only = sa.text("outcome_logged IS NULL")
    op.create_index(
        f"ix_{_TABLE}_open",
        _TABLE,
        ["decided_at", "seq"],
        sqlite_where=open_only,
        postgresql_where=open_only,
    )


def downgrade() -> None:
    """Drop routing_intents (its chain entries with it: the chain then has gaps)."""
    op.drop_table(_TABLE)
