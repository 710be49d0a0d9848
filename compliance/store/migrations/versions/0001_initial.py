"""Initial policy database: policy version, regimes and rules, regions, tenants, routing log.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = sa.DateTime(timezone=True)


def _json_nullable() -> sa.JSON:
    return sa.JSON(none_as_null=True)


def upgrade() -> None:
    """Create every table."""
    op.create_table(
        "policy_version",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("label", sa.String(255), nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_policy_version_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_policy_version")),
    )
    op.create_table(
        "regimes",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("countries", sa.JSON(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_regimes")),
    )
    op.create_table(
        "regime_rules",
        sa.Column("id", sa.String(128), nullable=False),
        sa.Column("regime_id", sa.String(64), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("data_classes", sa.JSON(), nullable=False),
        sa.Column("destinations", sa.JSON(), nullable=False),
        sa.Column("excluded_countries", sa.JSON(), nullable=False),
        sa.Column("tenant_flags", sa.JSON(), nullable=False),
        sa.Column("waived_by", sa.String(64), nullable=True),
        sa.Column("contractual_extension", sa.Boolean(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("effective_from", sa.Date(), nullable=True),
        sa.Column("effective_to", sa.Date(), nullable=True),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["regime_id"],
            ["regimes.id"],
            name=op.f("fk_regime_rules_regime_id_regimes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_regime_rules")),
    )
    op.create_index(op.f("ix_regime_rules_regime_id"), "regime_rules", ["regime_id"])
    op.create_table(
        "data_classes",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_data_classes")),
    )
    op.create_table(
        "regions",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("country", sa.String(2), nullable=False),
        sa.Column("latitude", sa.Float(), nullable=False),
        sa.Column("longitude", sa.Float(), nullable=False),
        sa.Column("base_url", sa.String(2048), nullable=False),
        sa.Column("models", sa.JSON(), nullable=False),
        sa.Column("attestations", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("weight", sa.Integer(), nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_regions")),
    )
    op.create_table(
        "tenants",
        sa.Column("id", sa.String(128), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("home_jurisdiction", sa.String(2), nullable=True),
        sa.Column("flags", sa.JSON(), nullable=False),
        sa.Column("opt_ins", sa.JSON(), nullable=False),
        sa.Column("transfer_opt_ins", sa.JSON(), nullable=False),
        sa.Column("allowed_regions", _json_nullable(), nullable=True),
        sa.Column("allowed_countries", _json_nullable(), nullable=True),
        sa.Column("denied_regions", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tenants")),
    )
    op.create_table(
        "tenant_api_keys",
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("tenant_id", sa.String(128), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("label", sa.String(255), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_tenant_api_keys_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("key_hash", name=op.f("pk_tenant_api_keys")),
    )
    op.create_index(op.f("ix_tenant_api_keys_tenant_id"), "tenant_api_keys", ["tenant_id"])
    op.create_table(
        "routing_decisions",
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
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_routing_decisions")),
        sa.UniqueConstraint("decision_id", name=op.f("uq_routing_decisions_decision_id")),
    )
    for column in (
        "decided_at",
        "tenant_id",
        "outcome",
        "chosen_region",
        "client_country",
        "subject_country",
    ):
        op.create_index(op.f(f"ix_routing_decisions_{column}"), "routing_decisions", [column])


def downgrade() -> None:
    """Drop every table (the routing log included)."""
    for table in (
        "routing_decisions",
        "tenant_api_keys",
        "tenants",
        "regions",
        "data_classes",
        "regime_rules",
        "regimes",
        "policy_version",
    ):
        op.drop_table(table)
