"""Database checks shared by the CLI commands that read the gateway's database directly."""

from __future__ import annotations

from compliance.store.engine import sqlite_file
from compliance.store.migrate import current_revision, head_revision
from gateway.cli_common import CliError
from gateway.settings import Settings


def migrated_database_url(settings: Settings) -> str:
    """The configured database URL, if it exists and is migrated to this gateway's schema."""
    url = settings.resolved_database_url
    path = sqlite_file(url)
    if path is not None and not path.exists():
        raise CliError(f"no database at {path} (set GATEWAY_DATABASE_URL or GATEWAY_DATA_DIR)")
    revision, head = current_revision(url), head_revision()
    if revision != head:
        raise CliError(
            f"database is at revision {revision or 'none'}, this gateway needs {head}: "
            "run 'gateway db upgrade'"
        )
    return url
