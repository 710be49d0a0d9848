"""`gateway serve` and `gateway demo` explain themselves, and differ where they differ."""

from __future__ import annotations

import argparse

import pytest

from gateway.cli import build_parser


def _command(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[name]
    raise AssertionError("no subcommands")


def test_demo_help_is_not_serve_help() -> None:
    demo, serve = _command("demo"), _command("serve")
    assert demo.format_help().replace("demo", "serve") != serve.format_help()
    assert "rg-demo-key" in demo.format_help()
    assert "--simulate-regions" in serve.format_help()
    assert "--simulate-regions" not in demo.format_help()  # the demo always simulates


@pytest.mark.parametrize("command", ["serve", "demo"])
def test_every_option_has_help(command: str) -> None:
    for action in _command(command)._actions:
        assert action.help, f"gateway {command} {action.option_strings} has no help text"
