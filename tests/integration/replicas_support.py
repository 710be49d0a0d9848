"""Helpers for replica, hot-reload and outage tests: gateways on PostgreSQL, polling, DB control."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TypeVar

import openai
import psycopg
import pytest
from psycopg import sql
from sqlalchemy.engine import make_url

from tests.integration.conftest import CHAT, DEMO_KEY, GatewayProcess, Served, openai_client
from tests.pg import HOST, MAINTENANCE_DB, PORT, PostgresUnavailable, temporary_database

T = TypeVar("T")

RELOAD_BOUND_S = 2.0
"""The spec's bound: every replica serves a committed change within this many seconds."""


class PgGatewayProcess(GatewayProcess):
    """A gateway process whose database is a PostgreSQL URL instead of its own SQLite file."""

    def __init__(
        self,
        catalog: Path,
        data_dir: Path,
        database_url: str,
        overrides: Mapping[str, str] | None = None,
        *,
        startup_timeout: float = 20.0,
    ) -> None:
        super().__init__(catalog, data_dir, overrides, startup_timeout=startup_timeout)
        self._pg_url = database_url
        self.env["GATEWAY_DATABASE_URL"] = database_url

    @property
    def database_url(self) -> str:
        """The shared PostgreSQL URL."""
        return self._pg_url


@contextmanager
def pg_database_or_skip(prefix: str) -> Iterator[str]:
    """A throwaway PostgreSQL database URL; skips the test if the server is unreachable."""
    with ExitStack() as stack:
        try:
            url = stack.enter_context(temporary_database(prefix))
        except PostgresUnavailable as exc:
            pytest.skip(str(exc))
        yield url


def wait_for(
    probe: Callable[[], T], accept: Callable[[T], bool], timeout: float, what: str
) -> tuple[T, float]:
    """Call `probe` until `accept` holds; returns the value and the seconds it took.

    Raises AssertionError with the last value if `timeout` passes first.
    """
    started = time.monotonic()
    while True:
        value = probe()
        elapsed = time.monotonic() - started
        if accept(value):
            return value, elapsed
        if elapsed > timeout:
            raise AssertionError(f"{what}: not within {timeout:g}s; last value {value!r}")
        time.sleep(0.02)


def chat(gateway: Served, ip: str, api_key: str = DEMO_KEY) -> tuple[str, str]:
    """One chat completion through `gateway` from `ip`: (served region, decision id)."""
    with openai_client(gateway, ip, api_key=api_key) as client:
        raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=CHAT)
    return raw.headers["x-residency-region"], raw.headers["x-residency-decision"]


def refused_status(gateway: Served, ip: str) -> tuple[int, str]:
    """Status and decision id of a request the gateway must refuse."""
    with openai_client(gateway, ip) as client:
        try:
            client.chat.completions.create(model="gpt-4o-mini", messages=CHAT)
        except openai.APIStatusError as exc:
            return exc.status_code, exc.response.headers["x-residency-decision"]
    raise AssertionError(f"request from {ip} was not refused")


def _admin(url: str) -> psycopg.Connection[tuple[object, ...]]:
    """A connection to the maintenance database as the user of `url`."""
    user = make_url(url).username
    return psycopg.connect(host=HOST, port=PORT, user=user, dbname=MAINTENANCE_DB, autocommit=True)


def database_name(url: str) -> str:
    """The database name of a SQLAlchemy URL."""
    name = make_url(url).database
    assert name, url
    return name


def cut_off(url: str) -> None:
    """Make the database unreachable without stopping the shared server.

    New connections are refused (ALLOW_CONNECTIONS false) and existing ones terminated.
    """
    name = database_name(url)
    with _admin(url) as conn:
        conn.execute(
            sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(sql.Identifier(name))
        )
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )


def reconnect(url: str) -> None:
    """Undo `cut_off`."""
    with _admin(url) as conn:
        conn.execute(
            sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(
                sql.Identifier(database_name(url))
            )
        )
