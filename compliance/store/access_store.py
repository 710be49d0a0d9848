"""Operator access tokens (admin, operator, auditor), stored as SHA-256 hashes only.

Creating or revoking a token is a configuration change: it joins the audit chain (who, when,
the token's name and role; never the token or its hash) in the same transaction as the row.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, insert, select, update

from compliance.audit.config_log import record_change
from compliance.store.base import EngineStore
from compliance.store.errors import StoreError, translate_errors
from compliance.store.schema import access_tokens, policy_version

TOKEN_PREFIX = "rgo_"


class Role(StrEnum):
    """What an operator token may do."""

    ADMIN = "admin"
    OPERATOR = "operator"
    AUDITOR = "auditor"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling an admin or audit endpoint."""

    name: str
    role: Role


DIRECT = Principal("cli:tokens", Role.ADMIN)
"""Who the configuration log names by default: someone with the database credentials."""
OBJECT_TYPE = "token"


def hash_token(token: str) -> str:
    """SHA-256 hex of a token (tokens are 256-bit random, so a plain hash is safe)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class AccessStore(EngineStore):
    """Create, look up and revoke operator tokens."""

    def create(self, name: str, role: Role, *, actor: Principal = DIRECT) -> str:
        """Create a token and record the change (by `actor`) in the audit chain, in one
        transaction; returns the plaintext once (it is never stored)."""
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self.transaction(write=True) as conn:
            existing = conn.execute(
                select(access_tokens.c.name).where(access_tokens.c.name == name)
            ).first()
            if existing is not None:
                raise StoreError(f"a token named {name!r} already exists")
            created = datetime.now(UTC)
            conn.execute(
                insert(access_tokens).values(
                    token_hash=hash_token(token),
                    name=name,
                    role=role.value,
                    created_at=created,
                )
            )
            after = _document(name, role.value, created, None)
            _record(conn, actor, name, "create", None, after, created)
        return token

    def authenticate(self, token: str) -> Principal | None:
        """The principal for a live token, or None."""
        with translate_errors(), self.engine.connect() as conn:
            row = conn.execute(
                select(access_tokens.c.name, access_tokens.c.role).where(
                    access_tokens.c.token_hash == hash_token(token),
                    access_tokens.c.revoked_at.is_(None),
                )
            ).first()
        return Principal(row.name, Role(row.role)) if row else None

    def revoke(self, name: str, *, actor: Principal = DIRECT) -> bool:
        """Revoke a token by name and record the change in the audit chain, in one
        transaction; False (nothing written) if there is no live token of that name."""
        with self.transaction(write=True) as conn:
            row = conn.execute(
                select(access_tokens.c.role, access_tokens.c.created_at).where(
                    access_tokens.c.name == name, access_tokens.c.revoked_at.is_(None)
                )
            ).first()
            if row is None:
                return False
            revoked = datetime.now(UTC)
            conn.execute(
                update(access_tokens)
                .where(access_tokens.c.name == name, access_tokens.c.revoked_at.is_(None))
                .values(revoked_at=revoked)
            )
            before = _document(name, row.role, row.created_at, None)
            after = _document(name, row.role, row.created_at, revoked)
            _record(conn, actor, name, "revoke", before, after, revoked)
        return True

    def list(self) -> list[tuple[str, Role, datetime, datetime | None]]:
        """(name, role, created_at, revoked_at) for every token."""
        with translate_errors(), self.engine.connect() as conn:
            rows = conn.execute(
                select(
                    access_tokens.c.name,
                    access_tokens.c.role,
                    access_tokens.c.created_at,
                    access_tokens.c.revoked_at,
                ).order_by(access_tokens.c.name)
            ).all()
        return [(r.name, Role(r.role), r.created_at, r.revoked_at) for r in rows]


def _document(name: str, role: str, created: datetime, revoked: datetime | None) -> dict[str, Any]:
    """What the configuration log keeps of a token: never the token or its hash."""
    return {
        "name": name,
        "role": role,
        "created_at": created.isoformat(),
        "revoked_at": None if revoked is None else revoked.isoformat(),
    }


def _record(
    conn: Connection,
    actor: Principal,
    name: str,
    action: str,
    before: dict[str, Any] | None,
    after: dict[str, Any],
    at: datetime,
) -> None:
    # Tokens are not part of the routing policy: the change names the version in force
    # without bumping it (replicas have nothing to reload).
    version = conn.execute(select(policy_version.c.version)).scalar()
    record_change(
        conn,
        actor=actor.name,
        role=actor.role.value,
        object_type=OBJECT_TYPE,
        object_id=name,
        action=action,
        before=before,
        after=after,
        policy_version=int(version or 0),
        changed_at=at,
    )
