"""Shared pieces of the `gateway` subcommands."""

from __future__ import annotations


class CliError(Exception):
    """A user error: printed as one line, exit status 2."""
