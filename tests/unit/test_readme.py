"""The README documents every setting and the commands it tells users to run exist."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli import build_parser
from gateway.settings import Settings
from scripts.settings_table import environment_name

README = (Path(__file__).parents[2] / "README.md").read_text("utf-8")


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_every_setting_is_documented(name: str) -> None:
    assert f"`{environment_name(name)}`" in README


def test_readme_starts_with_the_two_commands() -> None:
    head = README[: README.index("## Try it")]
    assert "./dev serve" in head and "./dev test" in head


@pytest.mark.parametrize(
    "command",
    [
        ["explain", "--ip", "8.8.8.8"],
        ["tokens", "create", "--name", "n", "--role", "auditor"],
        ["regions", "list"],
        ["audit", "verify"],
        ["audit", "search"],
        ["db", "upgrade"],
    ],
)
def test_documented_commands_parse(command: list[str]) -> None:
    assert f"gateway {command[0]}" in README
    build_parser().parse_args(command)
