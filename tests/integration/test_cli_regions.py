"""`gateway regions` as users run it, against a real gateway process.

The paths Terraform and operators depend on (apply with its plan, put) run the CLI as its own
process; error formatting and the rest call the same entry point in-process (starting Python
per case costs seconds on a loaded machine).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from regions.simulator.fleet import SimulatorFleet
from tests.integration.admin_support import Admin, call_cli, create_tokens, run_cli
from tests.integration.conftest import (
    CHAT,
    IP_GB,
    GatewayProcess,
    free_port,
    openai_client,
    set_faults,
    sim_requests,
)

pytestmark = pytest.mark.integration

Cli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def cli_gateway(
    catalog: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    """A gateway of its own: these tests add and delete regions."""
    with GatewayProcess(catalog, tmp_path_factory.mktemp("cli-gw")) as running:
        yield running


@pytest.fixture(scope="module")
def tokens(cli_gateway: GatewayProcess) -> dict[str, str]:
    return create_tokens(cli_gateway)


@pytest.fixture(scope="module")
def admin(cli_gateway: GatewayProcess, tokens: dict[str, str]) -> Admin:
    return Admin(cli_gateway, tokens["admin"])


@pytest.fixture
def cli(
    cli_gateway: GatewayProcess,
    tokens: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Cli:
    """In-process `gateway` as `who` (a role, or None for no token, or a literal token)."""

    def run(who: str | None, *args: str, admin_url: str | None = None) -> Any:
        token = None if who is None else tokens.get(who, who)
        return call_cli(monkeypatch, capsys, cli_gateway, token, *args, admin_url=admin_url)

    return run


def regions_now(admin: Admin) -> dict[str, dict[str, Any]]:
    """The regions' documents without their live health (which changes with every probe)."""
    data = admin("GET", "/regions").json()["data"]
    return {r["id"]: {k: v for k, v in r.items() if k != "health"} for r in data}


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def test_apply_prints_a_plan_and_dry_run_changes_nothing(
    cli_gateway: GatewayProcess,
    tokens: dict[str, str],
    admin: Admin,
    cli: Cli,
    catalog: Path,
    tmp_path: Path,
) -> None:
    document = yaml.safe_load(catalog.read_text())
    regions = {r["id"]: r for r in document["regions"]}
    regions["eu-frankfurt"]["weight"] = 40
    del regions["us-virginia"]
    paris = {**regions["eu-frankfurt"], "id": "eu-paris", "name": "Paris", "country": "FR"}
    regions["eu-paris"] = paris | {"latitude": 48.85, "longitude": 2.35, "weight": 100}
    path = tmp_path / "regions.yaml"
    path.write_text(yaml.safe_dump({"regions": list(regions.values())}))
    before = regions_now(admin)
    apply = ["regions", "apply", "-f", str(path)]

    dry = run_cli(cli_gateway, tokens["operator"], *apply, "--prune", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines() == [
        "  ~ update eu-frankfurt: weight: 100 -> 40",
        "  = unchanged uk-london",
        "  = unchanged in-mumbai",
        "  = unchanged us-oregon",
        "  + create eu-paris",
        "  - delete us-virginia",
        "Plan: 1 to create, 1 to update, 1 to delete, 3 unchanged.",
        "Dry run: nothing changed.",
    ]
    assert regions_now(admin) == before

    applied = run_cli(cli_gateway, tokens["admin"], *apply)  # creates: needs admin
    assert applied.returncode == 0, applied.stderr
    lines = applied.stdout.splitlines()
    assert "  ! not managed us-virginia: not in the file; kept (use --prune to delete)" in lines
    plan_end = lines.index("Plan: 1 to create, 1 to update, 0 to delete, 3 unchanged.")
    assert lines[plan_end + 1 :] == [
        "updated eu-frankfurt",
        "created eu-paris",
        "Apply complete: 2 changed.",
    ]
    now = regions_now(admin)
    assert now["eu-frankfurt"]["weight"] == 40 and "eu-paris" in now and "us-virginia" in now

    again = cli("operator", *apply)
    assert again.stdout.splitlines()[-1] == "Nothing to change."
    assert regions_now(admin) == now

    pruned = cli("operator", *apply, "--prune")
    assert pruned.returncode == 0, pruned.stderr
    assert pruned.stdout.splitlines()[-2:] == ["deleted us-virginia", "Apply complete: 1 changed."]
    assert set(regions_now(admin)) == set(regions)


def test_put_list_delete(
    cli_gateway: GatewayProcess, tokens: dict[str, str], admin: Admin, cli: Cli
) -> None:
    put = [
        "regions", "put", "sa-riyadh", "--name", "Riyadh", "--country", "SA",
        "--latitude", "24.71", "--longitude", "46.68", "--base-url", "http://127.0.0.1:9",
        "--models", "gpt-4o,gpt-4o-mini", "--attestations", "", "--weight", "10",
    ]  # fmt: skip
    created = run_cli(cli_gateway, tokens["admin"], *put)  # creates: needs admin
    assert created.returncode == 0, created.stderr
    assert created.stdout.startswith("created region sa-riyadh (etag ")
    assert cli("operator", *put).stdout.startswith("unchanged region sa-riyadh")
    region = admin("GET", "/regions/sa-riyadh").json()
    assert (region["models"], region["weight"]) == (["gpt-4o", "gpt-4o-mini"], 10)
    replaced = cli("operator", *put[:-2], "--longitude", "-46.68")
    assert replaced.stdout.startswith("replaced region sa-riyadh")
    assert admin("GET", "/regions/sa-riyadh").json()["longitude"] == -46.68

    listed = cli("auditor", "regions", "list")
    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.splitlines()
    assert header.split() == [
        "ID", "STATUS", "WEIGHT", "COUNTRY", "IN-FLIGHT", "BASE", "URL", "HEALTH"
    ]  # fmt: skip
    row = next(line for line in rows if line.startswith("sa-riyadh "))
    assert row.split()[:6] == ["sa-riyadh", "active", "100", "SA", "0", "http://127.0.0.1:9"]
    assert row.split()[6] in ("unknown", "up", "down")  # nothing listens there: probed down

    deleted = cli("operator", "regions", "delete", "sa-riyadh")
    assert (deleted.returncode, deleted.stdout) == (0, "deleted region sa-riyadh\n")
    again = cli("operator", "regions", "delete", "sa-riyadh")
    assert again.returncode == 2
    assert one_error_line(again.stderr) == "gateway: error: no region 'sa-riyadh' (HTTP 404)"
    assert cli("operator", "regions", "delete", "sa-riyadh", "--missing-ok").returncode == 0
    assert admin("GET", "/regions/sa-riyadh").status_code == 404


def test_deleting_a_region_a_tenant_allows_warns(admin: Admin, cli: Cli) -> None:
    put = [
        "regions", "put", "sa-jeddah", "--name", "Jeddah", "--country", "SA",
        "--latitude", "21.54", "--longitude", "39.17", "--base-url", "http://127.0.0.1:9",
        "--models", "gpt-4o",
    ]  # fmt: skip
    assert cli("admin", *put).returncode == 0
    tenant = {"name": "Jeddah only", "allowed_regions": ["sa-jeddah"]}
    assert admin("PUT", "/tenants/jeddah-only", tenant).status_code == 201
    try:
        deleted = cli("operator", "regions", "delete", "sa-jeddah")
        assert (deleted.returncode, deleted.stdout) == (0, "deleted region sa-jeddah\n")
        assert deleted.stderr == (
            "warning: tenant 'jeddah-only' lists 'sa-jeddah' in allowed_regions and no other "
            "region: every request of this tenant will be refused until its allowed_regions is "
            "changed\n"
        )
        assert admin("GET", "/tenants/jeddah-only").json()["allowed_regions"] == ["sa-jeddah"]
        assert cli("admin", *put).returncode == 0
        reply = admin("DELETE", "/regions/sa-jeddah").json()
        assert reply["deleted"] is True and len(reply["warnings"]) == 1
    finally:
        admin("DELETE", "/tenants/jeddah-only")


PUT_X = ["regions", "put", "x-1", "--name", "X", "--latitude", "1", "--longitude", "1"]


@pytest.mark.parametrize(
    ("who", "args", "message"),
    [
        ("operator", [*PUT_X, "--country", "XX", "--base-url", "http://h", "--models", "m"],
         "gateway: error: country: 'XX' is not an ISO 3166-1 alpha-2 country code (HTTP 400)"),
        ("operator", [*PUT_X, "--country", "DE", "--base-url", "file:///etc", "--models", "m"],
         "gateway: error: base_url: 'file:///etc' is not an http(s) URL with a host (HTTP 400)"),
        ("operator",
         [*PUT_X, "--country", "DE", "--base-url", "http://h", "--models", "m", "--status", "on"],
         "gateway: error: status: 'on' is not a known region status "
         "(known: active, disabled, draining) (HTTP 400)"),
        ("operator",
         [*PUT_X, "--country", "DE", "--base-url", "http://h", "--models", "m", "--weight", "900"],
         "gateway: error: weight: must be between 0 and 100 (HTTP 400)"),
        ("auditor", ["regions", "drain", "eu-frankfurt"],
         "gateway: error: role auditor may not do this (needs one of: admin, operator) (HTTP 403)"),
        (None, ["regions", "list"],
         "gateway: error: no admin token: set GATEWAY_ADMIN_TOKEN to an operator or admin token "
         "(create one with `gateway tokens create --name NAME --role operator`)"),
        ("rgo_bogus", ["regions", "list"],
         "gateway: error: invalid or revoked operator token (HTTP 401)"),
        ("rg-demo-key", ["regions", "list"],
         "gateway: error: tenant API keys cannot use admin or audit endpoints (HTTP 403)"),
        ("operator", ["regions", "drain", "mars-1"],
         "gateway: error: no region 'mars-1' (HTTP 404)"),
        ("operator", ["regions", "resume", "mars-1"],
         "gateway: error: no region 'mars-1' (HTTP 404)"),
        ("operator", ["regions", "patch", "eu-frankfurt"],
         "gateway: error: nothing to change: give --status, --weight or both"),
        ("operator", ["regions", "patch", "eu-frankfurt", "--status", "on"],
         "gateway: error: status: 'on' is not a known region status "
         "(known: active, disabled, draining) (HTTP 400)"),
    ],
)  # fmt: skip
def test_errors_are_one_clear_line(
    cli: Cli, who: str | None, args: list[str], message: str
) -> None:
    result = cli(who, *args)
    assert (result.returncode, one_error_line(result.stderr)) == (2, message)


def test_file_and_connection_errors(cli: Cli, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "regions:\n"
        "  - {id: eu-x, name: X, country: DE, latitude: 95, longitude: 0, base_url: http://h}\n"
    )
    result = cli("operator", "regions", "apply", "-f", str(bad))
    assert (result.returncode, one_error_line(result.stderr)) == (
        2,
        f"gateway: error: {bad}: regions[0].latitude: must be between -90 and 90",
    )
    url = f"http://127.0.0.1:{free_port()}"
    result = cli("operator", "regions", "list", admin_url=url)
    assert result.returncode == 2
    assert one_error_line(result.stderr).startswith(
        f"gateway: error: cannot reach the admin API at {url}: "
    )


def _served_from(gateway: GatewayProcess, fleet: SimulatorFleet, region_id: str) -> bool:
    """Send one chat request from a British client; True if `region_id`'s simulator got it."""
    before = sim_requests(fleet, region_id)
    with openai_client(gateway, IP_GB) as client:
        client.chat.completions.create(model="gpt-4o-mini", messages=CHAT)
    return sim_requests(fleet, region_id) == before + 1


def test_drain_then_resume_brings_traffic_back(
    cli_gateway: GatewayProcess, fleet: SimulatorFleet, admin: Admin, cli: Cli
) -> None:
    assert _served_from(cli_gateway, fleet, "uk-london")  # the nearest allowed region
    assert cli("operator", "regions", "drain", "uk-london").returncode == 0
    assert not _served_from(cli_gateway, fleet, "uk-london")  # served elsewhere meanwhile
    resumed = cli("operator", "regions", "resume", "uk-london")
    assert (resumed.returncode, resumed.stdout) == (
        0,
        "region uk-london is active: it takes new requests\n",
    )
    assert admin("GET", "/regions/uk-london").json()["serving_status"] == "active"
    assert _served_from(cli_gateway, fleet, "uk-london")


def test_patch_changes_only_status_and_weight(admin: Admin, cli: Cli) -> None:
    before = admin("GET", "/regions/uk-london").json()
    patched = cli("operator", "regions", "patch", "uk-london", "--weight", "60")
    assert patched.returncode == 0, patched.stderr
    assert patched.stdout.startswith("updated region uk-london: weight 60 (etag ")
    after = admin("GET", "/regions/uk-london").json()
    assert after["weight"] == 60 and after["status"] == before["status"]
    restored = cli(
        "operator", "regions", "patch", "uk-london", "--weight", "100", "--status", "active",
        "--if-match", after["etag"],
    )  # fmt: skip
    assert restored.stdout.startswith("updated region uk-london: status active, weight 100")
    stale = cli("operator", "regions", "patch", "uk-london", "--weight", "5", "--if-match", "x")
    assert stale.returncode == 2 and "(HTTP 412)" in one_error_line(stale.stderr)


def _listed_health(cli: Cli, region_id: str, want: str, bound: float = 15.0) -> str:
    """The HEALTH cell of `region_id` in `regions list`, once it starts with `want`."""
    deadline = time.monotonic() + bound
    while True:
        listed = cli("auditor", "regions", "list")
        assert listed.returncode == 0, listed.stderr
        row = next(r for r in listed.stdout.splitlines() if r.startswith(f"{region_id} "))
        cell = row.split("  ")[-1].strip()
        if cell.startswith(want) or time.monotonic() > deadline:
            return cell
        time.sleep(0.1)


def test_list_shows_live_health(fleet: SimulatorFleet, cli: Cli) -> None:
    assert _listed_health(cli, "in-mumbai", "up") == "up"
    set_faults(fleet, "in-mumbai", down=True)
    try:
        assert _listed_health(cli, "in-mumbai", "down") == ("down (health check answered HTTP 503)")
    finally:
        set_faults(fleet, "in-mumbai", down=False)
    assert _listed_health(cli, "in-mumbai", "up") == "up"
