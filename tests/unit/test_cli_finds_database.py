"""The CLI finds the gateway's database the same way wherever it runs, and never creates one
outside serve, demo and db upgrade (flag > GATEWAY_* environment > config file > default)."""

from __future__ import annotations

from pathlib import Path

import pytest

from compliance.store.access_store import AccessStore
from gateway.cli import main

LOCATION_VARIABLES = ("GATEWAY_DATABASE_URL", "GATEWAY_DATA_DIR", "GATEWAY_CONFIG")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A user with nothing set: defaults under tmp_path, run from an unrelated directory."""
    for name in (*LOCATION_VARIABLES, "GATEWAY_AUDIT_SIGNING_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    elsewhere = tmp_path / "somewhere" / "else"
    elsewhere.mkdir(parents=True)
    monkeypatch.chdir(elsewhere)
    return tmp_path


def _token_names(database: Path) -> list[str]:
    store = AccessStore(f"sqlite:///{database}")
    try:
        return [name for name, *_ in store.list()]
    finally:
        store.close()


def test_without_a_database_commands_refuse_and_create_nothing(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for command in (
        ["tokens", "create", "--name", "x", "--role", "admin"],
        ["audit", "verify"],
        ["audit", "public-key"],
        ["explain", "--ip", "8.8.8.8"],
    ):
        assert main(command) == 2, command
        error = capsys.readouterr().err
        assert error.count("\n") == 1, error
        assert "no gateway database at" in error or "no audit signing key at" in error, error
        assert "residency-gateway" in error and "from the default" in error
    assert not any(home.rglob("*.db")) and not any(home.rglob("*.pem"))


def test_the_default_data_dir_is_found_from_any_directory(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["db", "upgrade"]) == 0  # as serve and demo do
    database = home / "data" / "residency-gateway" / "gateway.db"
    assert database.exists()
    capsys.readouterr()
    monkeypatch.chdir(home)
    assert main(["tokens", "create", "--name", "ops", "--role", "admin"]) == 0
    assert capsys.readouterr().out.startswith("rgo_")
    assert _token_names(database) == ["ops"]


def test_config_file_then_environment_then_flag(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    places = {name: home / name for name in ("from-config", "from-env", "from-flag")}
    for place in places.values():
        assert main(["--data-dir", str(place), "db", "upgrade"]) == 0
    config = home / "config" / "residency-gateway" / "gateway.env"
    config.parent.mkdir(parents=True)
    config.write_text(f"GATEWAY_DATA_DIR={places['from-config']}\n")
    assert main(["tokens", "create", "--name", "a", "--role", "auditor"]) == 0
    monkeypatch.setenv("GATEWAY_DATA_DIR", str(places["from-env"]))
    assert main(["tokens", "create", "--name", "b", "--role", "auditor"]) == 0
    flag = ["--data-dir", str(places["from-flag"])]
    assert main([*flag, "tokens", "create", "--name", "c", "--role", "auditor"]) == 0
    assert [_token_names(p / "gateway.db") for p in places.values()] == [["a"], ["b"], ["c"]]
    capsys.readouterr()
    monkeypatch.delenv("GATEWAY_DATA_DIR")
    config.write_text(f"GATEWAY_DATA_DIR={home / 'missing'}\n")
    assert main(["tokens", "list"]) == 2
    assert f"GATEWAY_DATA_DIR in {config}" in capsys.readouterr().err
