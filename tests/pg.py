"""Throwaway PostgreSQL databases for tests (server on 127.0.0.1:5432, trust auth).

    with temporary_database("rg_store") as url:   # postgresql+psycopg://postgres@.../rg_store_x
        ...

Raises PostgresUnavailable (before yielding) when the server cannot be reached, so callers
can skip. Override the server with RG_TEST_PG_HOST / RG_TEST_PG_PORT / RG_TEST_PG_USER.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql

HOST = os.environ.get("RG_TEST_PG_HOST", "127.0.0.1")
PORT = int(os.environ.get("RG_TEST_PG_PORT", "5432"))
USERS = tuple(filter(None, [os.environ.get("RG_TEST_PG_USER"), "postgres", "root"]))
MAINTENANCE_DB = "test"


class PostgresUnavailable(RuntimeError):
    """The test PostgreSQL server cannot be reached."""


def _admin_connection() -> tuple[psycopg.Connection[tuple[object, ...]], str]:
    errors = []
    for user in USERS:
        try:
            conn = psycopg.connect(
                host=HOST,
                port=PORT,
                user=user,
                dbname=MAINTENANCE_DB,
                autocommit=True,
                connect_timeout=3,
            )
        except psycopg.OperationalError as exc:
            errors.append(f"{user}: {str(exc).strip().splitlines()[0]}")
            continue
        return conn, user
    raise PostgresUnavailable(f"PostgreSQL at {HOST}:{PORT} unreachable ({'; '.join(errors)})")


@contextmanager
def temporary_database(prefix: str = "rg_test") -> Iterator[str]:
    """Create a uniquely named database, yield its SQLAlchemy URL, drop it afterwards."""
    admin, user = _admin_connection()
    name = f"{prefix}_{secrets.token_hex(4)}"
    try:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            yield f"postgresql+psycopg://{user}@{HOST}:{PORT}/{name}"
        finally:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
    finally:
        admin.close()
