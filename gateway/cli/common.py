"""Shared pieces of the `gateway` subcommands."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any


class CliError(Exception):
    """A user error: printed as one line, exit status 2."""


def print_table(
    columns: Sequence[tuple[str, str, int]],
    rows: Iterable[dict[str, Any]],
    cell: Callable[[dict[str, Any], str], str],
) -> None:
    """Print a header and one line per row; `columns` are (field, heading, width) triples."""
    print("  ".join(head.ljust(width) for _, head, width in columns).rstrip())
    for row in rows:
        print("  ".join(cell(row, name).ljust(width) for name, _, width in columns).rstrip())
