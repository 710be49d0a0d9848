"""Tables of the policy database (SQLAlchemy Core). Migrations in `migrations/` must match."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
"""Constraint names, so PostgreSQL and SQLite (and future migrations) agree on them."""

metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware timestamp stored in UTC; SQLite's naive values come back as UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value.isoformat()}: timestamps must be tz-aware")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _json_nullable() -> JSON:
    return JSON(none_as_null=True)


policy_version = Table(
    "policy_version",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("version", Integer, nullable=False),
    Column("label", String(255), nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    CheckConstraint("id = 1", name="single_row"),
)

regimes = Table(
    "regimes",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(255), nullable=False),
    Column("countries", JSON, nullable=False),
    Column("source", Text, nullable=False),
    Column("enabled", Boolean, nullable=False),
    Column("position", Integer, nullable=False),
)

regime_rules = Table(
    "regime_rules",
    metadata,
    Column("id", String(128), primary_key=True),
    Column(
        "regime_id",
        String(64),
        ForeignKey("regimes.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("description", Text, nullable=False),
    Column("data_classes", JSON, nullable=False),
    Column("destinations", JSON, nullable=False),
    Column("excluded_countries", JSON, nullable=False),
    Column("tenant_flags", JSON, nullable=False),
    Column("waived_by", String(64)),
    Column("contractual_extension", Boolean, nullable=False),
    Column("source", Text, nullable=False),
    Column("effective_from", Date),
    Column("effective_to", Date),
    Column("position", Integer, nullable=False),
)

data_classes = Table(
    "data_classes",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("description", Text, nullable=False),
)

regions = Table(
    "regions",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(255), nullable=False),
    Column("country", String(2), nullable=False),
    Column("latitude", Float, nullable=False),
    Column("longitude", Float, nullable=False),
    Column("base_url", String(2048), nullable=False),
    Column("models", JSON, nullable=False),
    Column("attestations", JSON, nullable=False),
    Column("status", String(16), nullable=False),
    Column("weight", Integer, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

tenants = Table(
    "tenants",
    metadata,
    Column("id", String(128), primary_key=True),
    Column("name", String(255), nullable=False),
    Column("home_jurisdiction", String(2)),
    Column("flags", JSON, nullable=False),
    Column("opt_ins", JSON, nullable=False),
    Column("transfer_opt_ins", JSON, nullable=False),
    Column("allowed_regions", _json_nullable()),
    Column("allowed_countries", _json_nullable()),
    Column("denied_regions", JSON, nullable=False),
)

tenant_api_keys = Table(
    "tenant_api_keys",
    metadata,
    Column("key_hash", String(64), primary_key=True),
    Column(
        "tenant_id",
        String(128),
        ForeignKey("tenants.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("created_at", UTCDateTime, nullable=False),
    Column("label", String(255), nullable=False),
)


def _routing_table(name: str, *extra: Column[object]) -> Table:
    """A table of routing records, each an audit-chain entry (decisions and write-ahead
    intents share these columns: compliance.audit.canonical hashes both alike)."""
    return Table(
        name,
        metadata,
        Column(
            "seq",
            BigInteger().with_variant(Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        Column("decision_id", String(40), nullable=False, unique=True),
        Column("decided_at", UTCDateTime, nullable=False),
        Column("tenant_id", String(128)),
        Column("client_ip_hmac", String(64)),
        Column("client_country", String(16)),
        Column("subject_country", String(16)),
        Column("data_class", String(32)),
        Column("model", String(255)),
        Column("outcome", String(32), nullable=False),
        Column("status_code", Integer, nullable=False),
        Column("chosen_region", String(64)),
        Column("served_region", String(64)),
        Column("policy_version", Integer),
        Column("trace_id", String(32)),
        Column("latency_ms", Float),
        Column("attempts", JSON, nullable=False),
        Column("jurisdictions", JSON, nullable=False),
        Column("regimes", JSON, nullable=False),
        Column("reasons", JSON, nullable=False),
        Column("explanation", JSON, nullable=False),
        Column("prev_hash", String(64)),
        Column("record_hash", String(64)),
        Column("chain_seq", BigInteger, index=True, unique=True),
        *extra,
    )


routing_decisions = _routing_table("routing_decisions")
"""The routing audit log; each row is an entry of the audit chain (see compliance.audit)."""

routing_intents = _routing_table("routing_intents", Column("outcome_logged", Boolean))
"""Write-ahead routing decisions (audit-chain entries of kind `intent`), each durable before
its request left for a region; its outcome is the `routing_decisions` row with the same
decision_id. `outcome_logged` (not hashed, set when that row is stored) only indexes the
intents still without an outcome: evidence is the join, which `verify` recomputes (migration
0007)."""
Index(
    "ix_routing_intents_open",
    routing_intents.c.decided_at,
    routing_intents.c.seq,
    sqlite_where=routing_intents.c.outcome_logged.is_(None),
    postgresql_where=routing_intents.c.outcome_logged.is_(None),
)

access_tokens = Table(
    "access_tokens",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("name", String(128), nullable=False, unique=True),
    Column("role", String(16), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime),
    CheckConstraint("role IN ('admin', 'operator', 'auditor')", name="role_known"),
)
"""Operator tokens for the admin and audit APIs (SHA-256 hashes only; tenant keys live apart)."""

config_changes = Table(
    "config_changes",
    metadata,
    Column(
        "seq",
        BigInteger().with_variant(Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    Column("changed_at", UTCDateTime, nullable=False, index=True),
    Column("actor", String(128), nullable=False),
    Column("role", String(16), nullable=False),
    Column("object_type", String(16), nullable=False),
    Column("object_id", String(128), nullable=False),
    Column("action", String(16), nullable=False),
    Column("before", _json_nullable()),
    Column("after", _json_nullable()),
    Column("policy_version", Integer, nullable=False),
    Column("prev_hash", String(64)),
    Column("record_hash", String(64)),
    Column("chain_seq", BigInteger, index=True, unique=True),
)
"""Every configuration change (region, tenant, policy): who, when, before and after.

Rows are audit-chain entries: write them only through compliance.audit.config_log.record_change.
"""

audit_chain_head = Table(
    "audit_chain_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("record_hash", String(64), nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    CheckConstraint("id = 1", name="single_row"),
)
"""The last entry of the audit chain; appends lock this row (one chain across replicas)."""

audit_checkpoints = Table(
    "audit_checkpoints",
    metadata,
    Column(
        "id",
        BigInteger().with_variant(Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    Column("seq", BigInteger, nullable=False, index=True),
    Column("record_hash", String(64), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("key_id", String(64), nullable=False),
    Column("signature", String(128), nullable=False),
    Column("prev_checkpoint_hash", String(64)),
    Column("max_records", BigInteger),
    Column("max_seconds", Float),
)
"""Ed25519-signed statements "the chain entry `seq` has hash `record_hash`".

Since migration 0006 each also signs the hash of the checkpoint before it (one checkpoint chain)
and the signing cadence verify enforces; rows with NULL `prev_checkpoint_hash` are legacy."""

policy_versions = Table(
    "policy_versions",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("label", String(255), nullable=False),
    Column("recorded_at", UTCDateTime, nullable=False),
    Column("snapshot", JSON, nullable=False),
)
"""The policy as of every version (see policy_history), so old decisions can be re-evaluated."""

SEARCH_INDEX_COLUMNS = (
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
Index("ix_routing_decisions_search", *(routing_decisions.c[c] for c in SEARCH_INDEX_COLUMNS))
"""Audit searches walk this newest first and test every filter inside it, reading a table row
only for a record that matches (migration 0004)."""
REPORT_INDEX_COLUMNS = (
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
Index("ix_routing_decisions_report", *(routing_decisions.c[c] for c in REPORT_INDEX_COLUMNS))
"""The audit period report groups by these columns in this order: read from the index alone,
already sorted, instead of sorting a million rows (migration 0004)."""
