"""The `gateway` command: one module per command group."""

from gateway.cli.commands import build_parser, main

__all__ = ["build_parser", "main"]
