"""Admin writes to the policy database: regions, tenants and regime overrides.

Every write is one transaction that checks the caller's If-Match against the current value,
applies the change, bumps `policy_version` and records the change (who, before, after) in the
tamper-evident configuration log (for regions also which legal facts changed, see
`region_facts`). Writes are serialised (BEGIN IMMEDIATE on SQLite, an advisory
lock on PostgreSQL), so two writers holding the same ETag cannot both win. Only pure values
(Region, Tenant, Regime) cross this module's boundary.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Generic, Literal, TypeVar

from sqlalchemy import Connection, delete, func, insert, select, update

from compliance.audit.config_log import record_change
from compliance.model import Regime, Tenant
from compliance.store import rows, schema
from compliance.store.access_store import Principal
from compliance.store.admin_documents import document_of, etag_of, if_match_satisfied
from compliance.store.errors import NotFoundError, StoreError
from compliance.store.policy_store import PolicyStore
from compliance.store.region_facts import (
    LEGAL_FACTS_KEY,
    authorise_region_change,
    legal_fact_changes,
)
from regions.catalog import Region

__all__ = ["AdminOps", "Change", "InvalidReference", "NotFoundError", "PreconditionFailed"]

_ADMIN_LOCK_KEY = 0x5247414D  # "RGAM": serialises admin writers on PostgreSQL
KEY_LABEL = "admin-api"

V = TypeVar("V", Region, Tenant, Regime)
Outcome = Literal["created", "replaced", "updated", "unchanged", "deleted"]


class PreconditionFailed(StoreError):
    """If-Match did not match the current value (someone else changed it): nothing written."""

    def __init__(self, message: str, current_etag: str | None) -> None:
        super().__init__(message)
        self.current_etag = current_etag


class InvalidReference(StoreError):
    """The value refers to something that does not exist or belongs to another object."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True, slots=True)
class Change(Generic[V]):
    """What a write did; `value` is the value now stored (None after a delete); `warnings`:
    what the change does to other objects that name it (done all the same)."""

    outcome: Outcome
    value: V | None
    policy_version: int
    warnings: tuple[str, ...] = ()


def _version(conn: Connection) -> int:
    return int(conn.execute(select(schema.policy_version.c.version)).scalar() or 0)


def _lock(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(select(func.pg_advisory_xact_lock(_ADMIN_LOCK_KEY)))


@dataclass(frozen=True, slots=True)
class _Kind(Generic[V]):
    """How to read, check, write and remove one kind of configuration object."""

    name: str
    read: Callable[[Connection, str], V | None]
    check: Callable[[Connection, V, V | None], None]
    write: Callable[[Connection, V, V | None], None]
    remove: Callable[[Connection, str], None]
    removal_warnings: Callable[[Connection, str], tuple[str, ...]] = lambda _conn, _id: ()
    authorise: Callable[[Principal, V | None, V], None] = lambda _actor, _before, _after: None
    """Raises if the actor's role may not make this change (beyond the route's role check)."""
    legal_changes: Callable[[V | None, V | None], tuple[str, ...]] = lambda _b, _a: ()
    """The legal facts a change alters, named in the configuration log."""


# -- regions ---------------------------------------------------------------------------------


def _read_region(conn: Connection, region_id: str) -> Region | None:
    table = schema.regions
    row = conn.execute(select(table).where(table.c.id == region_id)).mappings().first()
    return None if row is None else rows.to_region(row)


def _write_region(conn: Connection, region: Region, current: Region | None) -> None:
    table, row = schema.regions, rows.region_row(region, datetime.now(UTC))
    if current is None:
        conn.execute(insert(table).values(row))
    else:
        conn.execute(update(table).where(table.c.id == region.id).values(row))


def _remove_region(conn: Connection, region_id: str) -> None:
    conn.execute(delete(schema.regions).where(schema.regions.c.id == region_id))


def _region_ids(conn: Connection) -> set[str]:
    return set(conn.execute(select(schema.regions.c.id)).scalars())


def _tenants_allowing_region(conn: Connection, region_id: str) -> tuple[str, ...]:
    """Tenants whose allowed_regions name the region about to go (kept: routing fails closed
    for them), and what each still allows; a tenant left with none has every request refused."""
    others = _region_ids(conn) - {region_id}
    table = schema.tenants
    warnings = []
    for tenant_id, allowed in conn.execute(select(table.c.id, table.c.allowed_regions)):
        if not allowed or region_id not in allowed:
            continue
        remaining = sorted(set(allowed) & others)
        named = f"tenant {tenant_id!r} lists {region_id!r} in allowed_regions"
        if remaining:
            warnings.append(f"{named}; the regions it still allows: {', '.join(remaining)}")
        else:
            warnings.append(
                f"{named} and no other region: every request of this tenant will be refused "
                "until its allowed_regions is changed"
            )
    return tuple(sorted(warnings))


def _no_check(conn: Connection, value: V, current: V | None) -> None:
    return None


# -- tenants ---------------------------------------------------------------------------------


def _read_tenant(conn: Connection, tenant_id: str) -> Tenant | None:
    table, keys = schema.tenants, schema.tenant_api_keys
    row = conn.execute(select(table).where(table.c.id == tenant_id)).mappings().first()
    if row is None:
        return None
    hashes = conn.execute(select(keys.c.key_hash).where(keys.c.tenant_id == tenant_id)).scalars()
    return rows.to_tenant(row, hashes)


def _check_tenant(conn: Connection, tenant: Tenant, current: Tenant | None) -> None:
    regions = _region_ids(conn)
    for field in ("allowed_regions", "denied_regions"):
        # Ids kept from before may name a region deleted since; only new ids must exist.
        known = regions | set(getattr(current, field, None) or ())
        for region_id in sorted(set(getattr(tenant, field) or ()) - known):
            raise InvalidReference(f"{field}: unknown region {region_id!r}", field)
    regimes = set(conn.execute(select(schema.regimes.c.id)).scalars())
    for i, opt_in in enumerate(tenant.transfer_opt_ins):
        if opt_in.regime_id not in regimes:
            field = f"transfer_opt_ins[{i}].regime_id"
            raise InvalidReference(f"{field}: unknown regime {opt_in.regime_id!r}", field)
    keys = schema.tenant_api_keys
    owner = conn.execute(
        select(keys.c.tenant_id).where(
            keys.c.key_hash.in_(tenant.api_key_hashes), keys.c.tenant_id != tenant.id
        )
    ).scalar()
    if owner is not None:
        raise InvalidReference(
            f"api_keys: an API key is already used by tenant {owner!r}", "api_keys"
        )


def _write_tenant(conn: Connection, tenant: Tenant, current: Tenant | None) -> None:
    table, keys = schema.tenants, schema.tenant_api_keys
    if current is None:
        conn.execute(insert(table).values(rows.tenant_row(tenant)))
    else:
        conn.execute(update(table).where(table.c.id == tenant.id).values(rows.tenant_row(tenant)))
    stored = current.api_key_hashes if current else frozenset()
    gone, new = stored - tenant.api_key_hashes, tenant.api_key_hashes - stored
    if gone:
        conn.execute(delete(keys).where(keys.c.key_hash.in_(gone)))
    if new:
        now = datetime.now(UTC)
        conn.execute(
            insert(keys),
            [
                {"key_hash": h, "tenant_id": tenant.id, "created_at": now, "label": KEY_LABEL}
                for h in sorted(new)
            ],
        )


def _remove_tenant(conn: Connection, tenant_id: str) -> None:
    keys = schema.tenant_api_keys
    conn.execute(delete(keys).where(keys.c.tenant_id == tenant_id))
    conn.execute(delete(schema.tenants).where(schema.tenants.c.id == tenant_id))


# -- regimes ---------------------------------------------------------------------------------


def _read_regime(conn: Connection, regime_id: str) -> Regime | None:
    table, rules = schema.regimes, schema.regime_rules
    row = conn.execute(select(table).where(table.c.id == regime_id)).mappings().first()
    if row is None:
        return None
    rule_rows = conn.execute(
        select(rules).where(rules.c.regime_id == regime_id).order_by(rules.c.position)
    ).mappings()
    return rows.to_regime(row, [rows.to_rule(r) for r in rule_rows])


def _check_regime(conn: Connection, regime: Regime, current: Regime | None) -> None:
    rules = schema.regime_rules
    owners = dict(
        conn.execute(
            select(rules.c.id, rules.c.regime_id).where(
                rules.c.id.in_([r.id for r in regime.rules]), rules.c.regime_id != regime.id
            )
        ).all()
    )
    for i, rule in enumerate(regime.rules):
        if rule.id in owners:
            field = f"rules.{i}.id"
            raise InvalidReference(
                f"{field}: rule id {rule.id!r} belongs to regime {owners[rule.id]!r}", field
            )


def _write_regime(conn: Connection, regime: Regime, current: Regime | None) -> None:
    table, rules = schema.regimes, schema.regime_rules
    position = conn.execute(select(table.c.position).where(table.c.id == regime.id)).scalar()
    row = rows.regime_row(regime, int(position or 0))
    conn.execute(update(table).where(table.c.id == regime.id).values(row))
    conn.execute(delete(rules).where(rules.c.regime_id == regime.id))
    if regime.rules:
        conn.execute(insert(rules), [rows.rule_row(r, i) for i, r in enumerate(regime.rules)])


def _never_remove(conn: Connection, regime_id: str) -> None:
    raise StoreError("regimes cannot be deleted; disable one with enabled: false")


REGIONS: _Kind[Region] = _Kind(
    "region",
    _read_region,
    _no_check,
    _write_region,
    _remove_region,
    _tenants_allowing_region,
    authorise_region_change,
    legal_fact_changes,
)
TENANTS: _Kind[Tenant] = _Kind("tenant", _read_tenant, _check_tenant, _write_tenant, _remove_tenant)
REGIMES: _Kind[Regime] = _Kind("regime", _read_regime, _check_regime, _write_regime, _never_remove)


class AdminOps:
    """Versioned, audited reads and writes of regions, tenants and regimes."""

    def __init__(self, store: PolicyStore) -> None:
        self._store = store

    def get(self, kind: _Kind[V], object_id: str) -> V:
        """The current value; NotFoundError if there is none."""
        with self._store.transaction(write=False) as conn:
            value = kind.read(conn, object_id)
        if value is None:
            raise NotFoundError(f"no {kind.name} {object_id!r}")
        return value

    def put(
        self,
        kind: _Kind[V],
        object_id: str,
        build: Callable[[V | None], V],
        *,
        actor: Principal,
        if_match: str | None = None,
        create: bool = True,
        patch: bool = False,
    ) -> Change[V]:
        """Store `build(current)`; a missing one is created, or 404 with `create=False`.

        `patch` records the change as an update (some fields) rather than a replacement.
        """
        with self._store.transaction(write=True) as conn:
            _lock(conn)
            current = self._current(conn, kind, object_id, if_match)
            if current is None and not create:
                raise NotFoundError(f"no {kind.name} {object_id!r}")
            value = build(current)
            if value == current:
                return Change("unchanged", value, _version(conn))
            kind.authorise(actor, current, value)
            kind.check(conn, value, current)
            kind.write(conn, value, current)
            outcome: Outcome = "updated" if patch else "replaced"
            if current is None:
                outcome = "created"
            action = {"created": "create", "replaced": "replace", "updated": "update"}[outcome]
            version = self._record(conn, kind, object_id, action, actor, current, value)
            return Change(outcome, value, version)

    def delete(
        self, kind: _Kind[V], object_id: str, *, actor: Principal, if_match: str | None = None
    ) -> Change[V]:
        """Remove one; NotFoundError if there is none."""
        with self._store.transaction(write=True) as conn:
            _lock(conn)
            current = self._current(conn, kind, object_id, if_match)
            if current is None:
                raise NotFoundError(f"no {kind.name} {object_id!r}")
            warnings = kind.removal_warnings(conn, object_id)
            kind.remove(conn, object_id)
            version = self._record(conn, kind, object_id, "delete", actor, current, None)
            return Change("deleted", None, version, warnings)

    @staticmethod
    def _current(
        conn: Connection, kind: _Kind[V], object_id: str, if_match: str | None
    ) -> V | None:
        current = kind.read(conn, object_id)
        tag = None if current is None else etag_of(current)
        if not if_match_satisfied(if_match, tag):
            state = f"its ETag is now {tag!r}" if tag else "it does not exist"
            raise PreconditionFailed(
                f"{kind.name} {object_id!r} changed since you read it ({state}); "
                "read it again and retry",
                tag,
            )
        return current

    @staticmethod
    def _record(
        conn: Connection,
        kind: _Kind[V],
        object_id: str,
        action: str,
        actor: Principal,
        before: V | None,
        after: V | None,
    ) -> int:
        version = PolicyStore.bump_version(conn)
        document = None if after is None else document_of(after)
        legal = kind.legal_changes(before, after)
        if document is not None and legal:
            document[LEGAL_FACTS_KEY] = list(legal)
        record_change(
            conn,
            actor=actor.name,
            role=actor.role.value,
            object_type=kind.name,
            object_id=object_id,
            action=action,
            before=None if before is None else document_of(before),
            after=document,
            policy_version=version,
        )
        return version


def keep_keys_unless_given(tenant: Tenant, keys_given: bool) -> Callable[[Tenant | None], Tenant]:
    """A `build` for tenant PUTs: without `api_keys` in the body, the stored keys stay."""

    def build(current: Tenant | None) -> Tenant:
        if keys_given:
            return tenant
        kept = current.api_key_hashes if current else frozenset()
        return dataclasses.replace(tenant, api_key_hashes=kept)

    return build
