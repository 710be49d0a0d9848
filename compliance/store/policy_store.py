"""The policy database: seed it once, read consistent snapshots, and make versioned edits.

Every write runs in one transaction that also bumps `policy_version`, so a reader that sees a
new version number sees the whole change. Only pure values (compliance.model, regions.catalog,
PolicySnapshot) cross this module's boundary, never rows.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Table, delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from compliance.jurisdictions import DATA_CLASS_DESCRIPTIONS, DataClass
from compliance.model import Regime, Tenant
from compliance.snapshot import PolicySnapshot, hash_api_key
from compliance.store import rows, schema
from compliance.store.base import EngineStore
from compliance.store.change_feed import POLICY_CHANNEL
from compliance.store.errors import NotFoundError, StoreError, StoreUnavailable
from compliance.store.policy_history import record_version
from regions.catalog import Region, RegionStatus

__all__ = ["NotFoundError", "PolicyStore", "StoreError", "StoreUnavailable"]

_SEED_LOCK_KEY = 0x52475345  # "RGSE": serialises concurrent seeders on PostgreSQL


def _now() -> datetime:
    return datetime.now(UTC)


def _upsert(conn: Connection, table: Table, row: Mapping[str, Any], key: str) -> None:
    """Insert `row`, or update every other column where `key` already exists."""
    dialect = conn.dialect.name
    if dialect in ("postgresql", "sqlite"):
        module: Any = postgresql if dialect == "postgresql" else sqlite
        stmt = module.insert(table).values(dict(row))
        updates = {c: stmt.excluded[c] for c in row if c != key}
        conn.execute(stmt.on_conflict_do_update(index_elements=[key], set_=updates))
        return
    result = conn.execute(update(table).where(table.c[key] == row[key]).values(dict(row)))
    if result.rowcount == 0:
        conn.execute(insert(table).values(dict(row)))


class PolicyStore(EngineStore):
    """Regimes, regions and tenants in a SQL database (SQLite or PostgreSQL).

    Database errors surface as StoreUnavailable (cannot reach or use the database) or
    StoreError (a constraint refused the change; NotFoundError for a missing region).
    """

    # -- reads ---------------------------------------------------------------------------------

    def current_version(self) -> int:
        """The policy version (0 before the database is seeded)."""
        with self.transaction(write=False) as conn:
            version = conn.execute(select(schema.policy_version.c.version)).scalar()
        return int(version or 0)

    def load_snapshot(self) -> PolicySnapshot:
        """Everything, read in one transaction, as an immutable snapshot."""
        with self.transaction(write=False) as conn:
            pv = schema.policy_version
            head = conn.execute(select(pv.c.version, pv.c.label)).first()
            rule_rows = conn.execute(
                select(schema.regime_rules).order_by(
                    schema.regime_rules.c.regime_id, schema.regime_rules.c.position
                )
            ).mappings()
            rules_by_regime: dict[str, list[Any]] = defaultdict(list)
            for row in rule_rows:
                rules_by_regime[row["regime_id"]].append(rows.to_rule(row))
            regime_rows = conn.execute(
                select(schema.regimes).order_by(schema.regimes.c.position, schema.regimes.c.id)
            ).mappings()
            regimes = [rows.to_regime(r, rules_by_regime[r["id"]]) for r in regime_rows]
            regions = [
                rows.to_region(r)
                for r in conn.execute(select(schema.regions).order_by(schema.regions.c.id))
                .mappings()
                .all()
            ]
            keys: dict[str, list[str]] = defaultdict(list)
            key_table = schema.tenant_api_keys
            for tenant_id, key_hash in conn.execute(
                select(key_table.c.tenant_id, key_table.c.key_hash)
            ):
                keys[tenant_id].append(key_hash)
            tenants = [
                rows.to_tenant(r, keys[r["id"]])
                for r in conn.execute(select(schema.tenants).order_by(schema.tenants.c.id))
                .mappings()
                .all()
            ]
        version, label = (int(head.version), str(head.label)) if head else (0, "")
        return PolicySnapshot(version, regimes, regions, tenants, label=label)

    # -- writes --------------------------------------------------------------------------------

    @staticmethod
    def bump_version(conn: Connection, label: str | None = None) -> int:
        """Increment `policy_version` inside the caller's transaction; returns the new version.

        Creates the row (version 1) if there is none. `label`, if given, replaces the label.
        """
        pv = schema.policy_version
        values: dict[str, Any] = {"version": pv.c.version + 1, "updated_at": _now()}
        if label is not None:
            values["label"] = label
        if conn.execute(update(pv).where(pv.c.id == 1).values(values)).rowcount == 0:
            conn.execute(insert(pv).values(id=1, version=1, label=label or "", updated_at=_now()))
        version = int(conn.execute(select(pv.c.version).where(pv.c.id == 1)).scalar_one())
        # Keep this version's policy for audit re-evaluation (bump after the change is written).
        record_version(conn, version)
        if conn.dialect.name == "postgresql":
            # Delivered on commit only: replicas LISTENing reload at once (see change_feed).
            conn.execute(select(func.pg_notify(POLICY_CHANNEL, str(version))))
        return version

    def seed_if_empty(
        self,
        label: str,
        regimes: Sequence[Regime],
        regions: Iterable[Region],
        tenants: Iterable[Tenant],
        data_classes: Mapping[DataClass, str] | Mapping[str, str] = DATA_CLASS_DESCRIPTIONS,
    ) -> bool:
        """Load a pack and a catalog into an empty database; False (no change) if already seeded.

        "Empty" means no regimes. Regions, tenants and data classes that already exist are kept.
        Tenant API keys are taken from `Tenant.api_key_hashes`.
        """
        with self.transaction(write=True) as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(select(func.pg_advisory_xact_lock(_SEED_LOCK_KEY)))
            if conn.execute(select(func.count()).select_from(schema.regimes)).scalar_one():
                return False
            now = _now()
            existing = set(conn.execute(select(schema.data_classes.c.name)).scalars())
            self._insert_many(
                conn,
                schema.data_classes,
                [
                    {"name": str(name), "description": text}
                    for name, text in data_classes.items()
                    if str(name) not in existing
                ],
            )
            for position, regime in enumerate(regimes):
                self._write_regime(conn, regime, position)
            existing = set(conn.execute(select(schema.regions.c.id)).scalars())
            self._insert_many(
                conn,
                schema.regions,
                [rows.region_row(r, now) for r in regions if r.id not in existing],
            )
            existing = set(conn.execute(select(schema.tenants.c.id)).scalars())
            new_tenants = [t for t in tenants if t.id not in existing]
            self._insert_many(conn, schema.tenants, [rows.tenant_row(t) for t in new_tenants])
            self._insert_many(
                conn,
                schema.tenant_api_keys,
                [
                    {"key_hash": h, "tenant_id": t.id, "created_at": now, "label": "seed"}
                    for t in new_tenants
                    for h in sorted(t.api_key_hashes)
                ],
            )
            self.bump_version(conn, label=label)
        return True

    def upsert_region(self, region: Region) -> int:
        """Create or replace a region; returns the new policy version."""
        with self.transaction(write=True) as conn:
            _upsert(conn, schema.regions, rows.region_row(region, _now()), "id")
            return self.bump_version(conn)

    def delete_region(self, region_id: str) -> int:
        """Delete a region; returns the new policy version. NotFoundError if there is none."""
        with self.transaction(write=True) as conn:
            table = schema.regions
            if conn.execute(delete(table).where(table.c.id == region_id)).rowcount == 0:
                raise NotFoundError(f"no region {region_id!r}")
            return self.bump_version(conn)

    def set_region_status(self, region_id: str, status: RegionStatus | str) -> int:
        """Set a region's status; returns the new policy version. NotFoundError if unknown."""
        value = RegionStatus(status).value
        with self.transaction(write=True) as conn:
            table = schema.regions
            result = conn.execute(
                update(table).where(table.c.id == region_id).values(status=value, updated_at=_now())
            )
            if result.rowcount == 0:
                raise NotFoundError(f"no region {region_id!r}")
            return self.bump_version(conn)

    def upsert_tenant(
        self, tenant: Tenant, api_keys: Sequence[str] | None = None, key_label: str = ""
    ) -> int:
        """Create or replace a tenant; returns the new policy version.

        `api_keys` (plaintext) replaces the tenant's keys, stored hashed; None leaves the stored
        keys as they are (`tenant.api_key_hashes` is not consulted). A key already owned by
        another tenant raises StoreError.
        """
        with self.transaction(write=True) as conn:
            _upsert(conn, schema.tenants, rows.tenant_row(tenant), "id")
            if api_keys is not None:
                self._replace_keys(conn, tenant.id, {hash_api_key(k) for k in api_keys}, key_label)
            return self.bump_version(conn)

    def replace_regime(self, regime: Regime) -> int:
        """Create or replace a regime and all of its rules; returns the new policy version."""
        strays = [r.id for r in regime.rules if r.regime_id != regime.id]
        if strays:
            raise ValueError(f"rules {strays} do not belong to regime {regime.id!r}")
        with self.transaction(write=True) as conn:
            table = schema.regimes
            position = conn.execute(
                select(table.c.position).where(table.c.id == regime.id)
            ).scalar()
            if position is None:
                last = conn.execute(select(func.max(table.c.position))).scalar()
                position = 0 if last is None else int(last) + 1
            self._write_regime(conn, regime, int(position))
            return self.bump_version(conn)

    # -- helpers -------------------------------------------------------------------------------

    @staticmethod
    def _insert_many(conn: Connection, table: Table, values: list[dict[str, Any]]) -> None:
        if values:
            conn.execute(insert(table), values)

    def _write_regime(self, conn: Connection, regime: Regime, position: int) -> None:
        _upsert(conn, schema.regimes, rows.regime_row(regime, position), "id")
        rules = schema.regime_rules
        conn.execute(delete(rules).where(rules.c.regime_id == regime.id))
        self._insert_many(conn, rules, [rows.rule_row(r, i) for i, r in enumerate(regime.rules)])

    def _replace_keys(self, conn: Connection, tenant_id: str, hashes: set[str], label: str) -> None:
        table = schema.tenant_api_keys
        stored = set(
            conn.execute(select(table.c.key_hash).where(table.c.tenant_id == tenant_id)).scalars()
        )
        gone = stored - hashes
        if gone:
            conn.execute(delete(table).where(table.c.key_hash.in_(gone)))
        now = _now()
        self._insert_many(
            conn,
            table,
            [
                {"key_hash": h, "tenant_id": tenant_id, "created_at": now, "label": label}
                for h in sorted(hashes - stored)
            ],
        )
