"""The README documents every setting and the commands it tells users to run exist."""

from __future__ import annotations

import re
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


def test_relative_links_stay_inside_the_repository() -> None:
    """A link to a file outside the clone (e.g. ../shared/) is dead for every other reader."""
    root = Path(__file__).parents[2].resolve()
    checked = 0
    for document in ("README.md", "deploy/README.md"):
        path = root / document
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text("utf-8")):
            if "://" in target or target.startswith("mailto:"):
                continue
            resolved = (path.parent / target).resolve()
            assert resolved.is_relative_to(root), f"{document}: {target} is outside"
            assert resolved.exists(), f"{document}: {target} does not exist"
            checked += 1
    assert checked, "no relative link found (the check would be vacuous)"
