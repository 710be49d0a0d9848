"""Chain the audit checkpoints: each signs the previous checkpoint's hash and its cadence.

Adds three nullable columns to `audit_checkpoints`. Rows already present keep NULL there: they
are legacy (unchained) checkpoints, still verified by their own signature; the checkpoint chain
starts at the first checkpoint written after this revision.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS = ("prev_checkpoint_hash", "max_records", "max_seconds")


def upgrade() -> None:
    """Add the chain link and the signed cadence limits."""
    op.add_column(
        "audit_checkpoints", sa.Column("prev_checkpoint_hash", sa.String(64), nullable=True)
    )
    op.add_column("audit_checkpoints", sa.Column("max_records", sa.BigInteger(), nullable=True))
    op.add_column("audit_checkpoints", sa.Column("max_seconds", sa.Float(), nullable=True))


def downgrade() -> None:
    """Drop them (every checkpoint becomes unchained again)."""
    with op.batch_alter_table("audit_checkpoints") as batch:
        for column in _COLUMNS:
            batch.drop_column(column)
