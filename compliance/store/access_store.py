"""Operator access tokens (admin, operator, auditor), stored as SHA-256 hashes only."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy import insert, select, update

from compliance.store.base import EngineStore
from compliance.store.errors import StoreError, translate_errors
from compliance.store.schema import access_tokens

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


def hash_token(token: str) -> str:
    """SHA-256 hex of a token (tokens are 256-bit random, so a plain hash is safe)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class AccessStore(EngineStore):
    """Create, look up and revoke operator tokens."""

    def create(self, name: str, role: Role) -> str:
        """Create a token; returns the plaintext once (it is never stored)."""
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with translate_errors(), self.engine.begin() as conn:
            existing = conn.execute(
                select(access_tokens.c.name).where(access_tokens.c.name == name)
            ).first()
            if existing is not None:
                raise StoreError(f"a token named {name!r} already exists")
            conn.execute(
                insert(access_tokens).values(
                    token_hash=hash_token(token),
                    name=name,
                    role=role.value,
                    created_at=datetime.now(UTC),
                )
            )
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

    def revoke(self, name: str) -> bool:
        """Revoke a token by name; False if there is no live token of that name."""
        with translate_errors(), self.engine.begin() as conn:
            result = conn.execute(
                update(access_tokens)
                .where(access_tokens.c.name == name, access_tokens.c.revoked_at.is_(None))
                .values(revoked_at=datetime.now(UTC))
            )
        return result.rowcount > 0

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
