"""`gateway envoy translate|bootstrap`: offline output that a real Envoy accepts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gateway.bootstrap import prepare_database
from gateway.envoy.supervisor import envoy_binary
from gateway.settings import Settings
from tests.integration.conftest import PROJECT_ROOT
from tests.integration.envoy_support import require_envoy
from tests.unit.test_envoy_translate import GOLDEN_DATE, GOLDEN_GEOIP, golden_decision_resources

pytestmark = pytest.mark.integration
GOLDEN_CATALOG = PROJECT_ROOT / "tests" / "unit" / "golden" / "envoy" / "catalog.yaml"


def _gateway(
    *args: str, database_url: str | None = None, settings_file: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    env.pop("GATEWAY_DATABASE_URL", None)
    if settings_file is not None:  # only this file's settings (and the defaults)
        env = {k: v for k, v in env.items() if not k.startswith("GATEWAY_")}
        env["GATEWAY_CONFIG"] = str(settings_file)
    if database_url is not None:
        env["GATEWAY_DATABASE_URL"] = database_url
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_the_printed_bootstrap_is_valid_for_envoy(temp_dir: Path) -> None:
    require_envoy()
    result = _gateway("envoy", "bootstrap", "--node-id", "edge-1", "--xds-port", "18001")
    assert result.returncode == 0, result.stderr
    bootstrap = yaml.safe_load(result.stdout)
    assert bootstrap["node"]["id"] == "edge-1"
    assert bootstrap["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
    path = temp_dir / "bootstrap.yaml"
    path.write_text(result.stdout, "utf-8")
    check = subprocess.run(
        [str(envoy_binary()), "--mode", "validate", "-c", str(path), "--disable-hot-restart"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_translate_prints_the_database_policy_and_a_catalog_alike(temp_dir: Path) -> None:
    settings = Settings(data_dir=temp_dir, seed_catalog=GOLDEN_CATALOG, seed_demo_catalog=False)
    prepare_database(settings)
    from_db = _gateway("envoy", "translate", database_url=settings.resolved_database_url)
    from_file = _gateway("envoy", "translate", "--catalog", str(GOLDEN_CATALOG), "--json")
    assert from_db.returncode == 0, from_db.stderr
    assert from_file.returncode == 0, from_file.stderr
    db_resources = yaml.safe_load(from_db.stdout)
    file_resources = yaml.safe_load(from_file.stdout)  # JSON is YAML
    assert db_resources["version"].startswith("1-")
    assert file_resources["version"].startswith("0-")
    assert db_resources["clusters"] == file_resources["clusters"]
    assert {c["name"] for c in db_resources["clusters"] if c["name"].startswith("region_")} == {
        "region_eu-frankfurt",
        "region_uk-london",
        "region_us-oregon",
    }


def test_translate_prints_what_serve_pushes_the_golden_file(temp_dir: Path) -> None:
    """With default settings, the printed resources are the golden translation (decision on)."""
    config = temp_dir / "empty.env"
    config.write_text("", "utf-8")
    result = _gateway(
        "envoy",
        "translate",
        "--catalog",
        str(GOLDEN_CATALOG),
        "--on",
        GOLDEN_DATE.isoformat(),
        "--geoip-database",
        GOLDEN_GEOIP,
        settings_file=config,
    )
    assert result.returncode == 0, result.stderr
    printed = yaml.safe_load(result.stdout)
    assert printed == golden_decision_resources().to_dict()
    lua = printed["routes"][0]["virtual_hosts"][0]["routes"][-1]["typed_per_filter_config"]
    assert f'["on"]="{GOLDEN_DATE.isoformat()}"' in str(lua)  # the decision, as on that date


def test_translate_names_a_bad_catalog_without_a_traceback(temp_dir: Path) -> None:
    bad = temp_dir / "bad.yaml"
    bad.write_text("regions: [{id: x}]\n", "utf-8")
    result = _gateway("envoy", "translate", "--catalog", str(bad))
    assert result.returncode == 2
    assert result.stderr.startswith("gateway: error:")
    assert "Traceback" not in result.stderr
