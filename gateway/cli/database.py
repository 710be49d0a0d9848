"""Database checks shared by the CLI commands that read the gateway's database directly."""

from __future__ import annotations

from compliance.store.engine import sqlite_file
from compliance.store.migrate import current_revision, head_revision
from gateway.cli.common import CliError
from gateway.settings import Settings, setting_origin


def where_from(settings: Settings) -> str:
    """Which setting chose the database, for messages: e.g. 'GATEWAY_DATA_DIR in FILE'."""
    if settings.database_url:
        return f"database from {setting_origin('database_url')}"
    return f"data directory {settings.data_dir} from {setting_origin('data_dir')}"


def migrated_database_url(settings: Settings) -> str:
    """The configured database URL, if it exists and is migrated to this gateway's schema.

    Never creates one: a CLI that quietly made a fresh database in the wrong place printed
    tokens the running gateway rejected and verified an empty chain as intact.
    """
    url = settings.resolved_database_url
    path = sqlite_file(url)
    if path is not None and not path.exists():
        raise CliError(
            f"no gateway database at {path} ({where_from(settings)}): point --data-dir, "
            "GATEWAY_DATA_DIR or the config file at the gateway's data directory, or start the "
            "gateway first ('gateway serve' or 'gateway demo'; 'gateway db upgrade' creates one)"
        )
    revision, head = current_revision(url), head_revision()
    if revision != head:
        raise CliError(
            f"database is at revision {revision or 'none'}, this gateway needs {head}: "
            "run 'gateway db upgrade'"
        )
    return url
