"""Operator access tokens and the configuration change log.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create access_tokens and config_changes."""
    op.create_table(
        "access_tokens",
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("revoked_at", _TS, nullable=True),
        sa.PrimaryKeyConstraint("token_hash", name="pk_access_tokens"),
        sa.UniqueConstraint("name", name="uq_access_tokens_name"),
        sa.CheckConstraint(
            "role IN ('admin', 'operator', 'auditor')", name="ck_access_tokens_role_known"
        ),
    )
    op.create_table(
        "config_changes",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("changed_at", _TS, nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("object_type", sa.String(16), nullable=False),
        sa.Column("object_id", sa.String(128), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("before", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("after", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("policy_version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_config_changes"),
    )
    op.create_index("ix_config_changes_changed_at", "config_changes", ["changed_at"])


def downgrade() -> None:
    """Drop both tables."""
    op.drop_index("ix_config_changes_changed_at", table_name="config_changes")
    op.drop_table("config_changes")
    op.drop_table("access_tokens")
