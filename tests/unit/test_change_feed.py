"""Change feed configuration: which databases can NOTIFY, and the listener's connection string."""

from __future__ import annotations

import pytest

from compliance.store.change_feed import (
    APPLICATION_NAME,
    CONNECT_TIMEOUT_S,
    libpq_conninfo,
    supports_notify,
)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql+psycopg://postgres@127.0.0.1:5432/test", True),
        ("postgresql://u:p@db/gateway", True),
        ("sqlite:////var/lib/gateway/gateway.db", False),
        ("sqlite://", False),
    ],
)
def test_only_postgresql_supports_notify(url: str, expected: bool) -> None:
    assert supports_notify(url) is expected


def test_conninfo_keeps_credentials_and_adds_defaults() -> None:
    conninfo = libpq_conninfo("postgresql+psycopg://gw:s%40cret@db.internal:6432/policy")
    assert conninfo.startswith("postgresql://gw:s%40cret@db.internal:6432/policy?")
    assert f"connect_timeout={CONNECT_TIMEOUT_S}" in conninfo
    assert f"application_name={APPLICATION_NAME}" in conninfo


def test_conninfo_respects_options_in_the_url() -> None:
    conninfo = libpq_conninfo(
        "postgresql+psycopg://gw@db/policy?connect_timeout=1&sslmode=require&application_name=x"
    )
    assert "connect_timeout=1" in conninfo
    assert "sslmode=require" in conninfo
    assert "application_name=x" in conninfo
    assert f"connect_timeout={CONNECT_TIMEOUT_S}" not in conninfo


def test_conninfo_refuses_other_databases() -> None:
    with pytest.raises(ValueError, match="not a PostgreSQL URL"):
        libpq_conninfo("sqlite:///gateway.db")
