"""Placeholder for `gateway` subcommands (filled in by its own module)."""

from __future__ import annotations

from typing import Any


def register(commands: Any) -> None:
    """Add this module's subcommands (none yet)."""
