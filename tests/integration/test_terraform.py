"""Real `terraform init/apply/destroy` of deploy/terraform against a running gateway.

Terraform registers, updates and removes regions through the `gateway regions` CLI, and
routing follows: clients in France land in the new Paris regions, then back in Frankfurt.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from regions.simulator.fleet import SimulatorFleet, SimulatorSpec, free_port
from tests.integration.conftest import (
    CHAT,
    DEMO_KEY,
    HTTP,
    IP_DE,
    PROJECT_ROOT,
    GatewayProcess,
    openai_client,
    reset_fleet,
    set_faults,
    sim_requests,
)
from tests.integration.envoy_support import require_envoy

pytestmark = pytest.mark.integration

TERRAFORM = shutil.which("terraform") or "/usr/local/bin/terraform"
IP_FR = "90.0.0.1"
IP_JP = "133.0.0.1"
MODELS = ["gpt-4o-mini", "gpt-4o"]
PARIS = {"country": "FR", "latitude": 48.86, "longitude": 2.35}

# Simulators: one per upstream the test points regions at (labels, not region ids).
SIMULATORS = ("eu-frankfurt", "paris-a", "paris-b", "paris-canary", "tokyo")


@dataclass
class World:
    """A gateway with one seeded region (Frankfurt), simulators, and an admin token."""

    fleet: SimulatorFleet
    gateway: GatewayProcess
    token: str
    root: Path

    def url(self, simulator: str) -> str:
        """Base URL of one simulator."""
        return self.fleet.spec(simulator).base_url


def _gateway_command() -> list[str]:
    script = Path(sys.executable).parent / "gateway"
    return [str(script)] if script.exists() else [sys.executable, "-m", "gateway.cli"]


def _write_catalog(path: Path, fleet: SimulatorFleet) -> Path:
    frankfurt = {
        "id": "eu-frankfurt",
        "name": "Frankfurt (seeded)",
        "country": "DE",
        "latitude": 50.11,
        "longitude": 8.68,
        "base_url": fleet.spec("eu-frankfurt").base_url,
        "models": MODELS,
    }
    tenants = [{"id": "demo", "name": "Demo tenant", "api_keys": [DEMO_KEY]}]
    path.write_text(
        yaml.safe_dump({"demo": True, "regions": [frankfurt], "tenants": tenants}), "utf-8"
    )
    return path


def _admin_token(gateway: GatewayProcess) -> str:
    env = {k: v for k, v in gateway.env.items() if k != "GATEWAY_DATABASE_URL"}
    done = subprocess.run(
        [*_gateway_command(), "tokens", "create", "--name", "tf", "--role", "admin"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture(scope="module", params=["python", "envoy"])
def world(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[World]:
    """Simulators + a gateway seeded with Frankfurt only + an admin token, on each data plane:
    the same Terraform runs unchanged against Envoy, which forwards the admin API."""
    if not Path(TERRAFORM).exists():
        pytest.fail(f"terraform binary not found (looked for {TERRAFORM})")
    if request.param == "envoy":
        require_envoy()
    root = tmp_path_factory.mktemp("terraform")
    specs = [SimulatorSpec(region_id=s, port=free_port(), models=tuple(MODELS)) for s in SIMULATORS]
    with SimulatorFleet(specs) as fleet:
        catalog = _write_catalog(root / "catalog.yaml", fleet)
        # Patient health checks: a loaded CI machine must not flap regions during the test.
        overrides = {
            "GATEWAY_HEALTH_TIMEOUT": "5",
            "GATEWAY_HEALTH_FALL": "5",
            "GATEWAY_DATA_PLANE": request.param,
        }
        with GatewayProcess(catalog, root / "gateway", overrides, startup_timeout=90.0) as gateway:
            yield World(fleet, gateway, _admin_token(gateway), root)


@pytest.fixture(autouse=True)
def _clean_slate(world: World) -> Iterator[None]:
    """After each test: only the seeded region is left, and simulators behave normally."""
    yield
    reset_fleet(world.fleet)
    headers = {"Authorization": f"Bearer {world.token}"}
    listing = HTTP.get(f"{world.gateway.base_url}/admin/regions", headers=headers)
    listing.raise_for_status()
    for region in listing.json()["data"]:
        if region["id"] != "eu-frankfurt":
            url = f"{world.gateway.base_url}/admin/regions/{region['id']}"
            HTTP.delete(url, headers=headers).raise_for_status()


# -- terraform ----------------------------------------------------------------------------


class Workspace:
    """A temp copy of deploy/terraform; runs terraform in its multi-region example."""

    def __init__(self, world: World, name: str) -> None:
        self.world = world
        self.root = world.root / name
        shutil.copytree(
            PROJECT_ROOT / "deploy" / "terraform",
            self.root,
            ignore=shutil.ignore_patterns(".terraform*", "*.tfstate*", "terraform.tfvars"),
        )
        self.example = self.root / "examples" / "multi-region"
        self.env = {**os.environ, "TF_IN_AUTOMATION": "1", "CHECKPOINT_DISABLE": "1"}
        self.env.pop("TF_CLI_CONFIG_FILE", None)  # may name a missing file: noisy warning
        self.env.pop("GATEWAY_ADMIN_TOKEN", None)
        self.timings: dict[str, float] = {}

    def write_vars(self, regions: dict[str, dict[str, Any]], **extra: Any) -> None:
        """terraform.tfvars (JSON values are valid HCL expressions)."""
        values = {
            "admin_url": self.world.gateway.base_url,
            "gateway_command": _gateway_command(),
            "drain_timeout": 30,
            "regions": regions,
            **extra,
        }
        lines = [f"{name} = {json.dumps(value)}" for name, value in values.items()]
        (self.example / "terraform.tfvars").write_text("\n".join(lines) + "\n", "utf-8")

    def command(self, *args: str) -> list[str]:
        """argv of one terraform command."""
        interactive = args[0] in {"init", "plan", "apply", "destroy"}
        return [TERRAFORM, *args, *(["-input=false"] if interactive else []), "-no-color"]

    def run(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        """Run terraform to completion; by default require success."""
        started = time.monotonic()
        done = subprocess.run(
            self.command(*args),
            cwd=self.example,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        self.timings[args[0]] = time.monotonic() - started
        if ok:
            assert done.returncode == 0, f"terraform {args[0]} failed:\n{done.stdout}{done.stderr}"
        return done

    def init(self) -> None:
        """`terraform init` (offline: only built-in providers)."""
        self.run("init")

    def apply(self) -> str:
        """`terraform apply -auto-approve`; returns its output."""
        return self.run("apply", "-auto-approve").stdout

    def destroy(self) -> str:
        """`terraform destroy -auto-approve`; returns its output."""
        return self.run("destroy", "-auto-approve").stdout

    def output(self) -> dict[str, Any]:
        """`terraform output -json` values."""
        done = self.run("output", "-json")
        return {k: v["value"] for k, v in json.loads(done.stdout).items()}


def _region(simulator_url: str, *, weight: int = 100, **place: Any) -> dict[str, Any]:
    return {
        "name": "Paris (Terraform)",
        **PARIS,
        **place,
        "base_url": simulator_url,
        "models": MODELS,
        "weight": weight,
    }


# -- routing ------------------------------------------------------------------------------


def served_region(gateway: GatewayProcess, ip: str) -> str | None:
    """The region a chat completion from `ip` was served by, or None if refused."""
    with openai_client(gateway, ip) as client:
        try:
            raw = client.chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=CHAT
            )
        except Exception:  # refused: no allowed region (the point of some checks)
            return None
    region: str = raw.headers["x-residency-region"]
    return region


def wait_for(check: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    """Poll until `check()` (hot reload takes up to a refresh interval or two)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g}s: {what}")
        time.sleep(0.1)


def routes_to(gateway: GatewayProcess, ip: str, region: str | None) -> None:
    """Wait until requests from `ip` land in `region`, then require it for 5 more requests."""
    wait_for(lambda: served_region(gateway, ip) == region, f"{ip} served by {region}")
    seen = {served_region(gateway, ip) for _ in range(5)}
    assert seen == {region}


def region_document(world: World, region_id: str) -> dict[str, Any] | None:
    """The admin API's view of one region (None if it does not exist)."""
    response = HTTP.get(
        f"{world.gateway.base_url}/admin/regions/{region_id}",
        headers={"Authorization": f"Bearer {world.token}"},
    )
    if response.status_code == 404:
        return None
    response.raise_for_status()
    document: dict[str, Any] = response.json()
    return document


# -- tests --------------------------------------------------------------------------------


def test_apply_update_destroy_and_routing_follows(world: World) -> None:
    gateway = world.gateway
    routes_to(gateway, IP_FR, "eu-frankfurt")
    routes_to(gateway, IP_JP, "eu-frankfurt")
    tf = Workspace(world, "lifecycle")
    regions = {
        "eu-paris": _region(world.url("paris-a")),
        "eu-paris-canary": _region(world.url("paris-canary"), weight=0),
        "ap-tokyo": {
            **_region(world.url("tokyo")),
            "name": "Tokyo (Terraform)",
            "country": "JP",
            "latitude": 35.68,
            "longitude": 139.69,
        },
    }
    tf.write_vars(regions, admin_token=world.token)
    tf.init()
    assert "terraform.io/builtin/terraform" in tf.run("providers").stdout

    # apply: three regions registered; French clients land in Paris, Japanese in Tokyo.
    applied = tf.apply()
    assert "Apply complete! Resources: 6 added" in applied
    assert world.token not in applied
    routes_to(gateway, IP_FR, "eu-paris")
    routes_to(gateway, IP_JP, "ap-tokyo")
    routes_to(gateway, IP_DE, "eu-frankfurt")
    assert set(tf.output()["regions"]) == set(regions)
    paris = region_document(world, "eu-paris")
    assert paris is not None and paris["weight"] == 100

    # Unchanged inputs: nothing to do.
    assert "No changes." in tf.run("plan").stdout

    # Change the base URL: same region id, new upstream, no drain.
    before = sim_requests(world.fleet, "paris-b")
    regions["eu-paris"]["base_url"] = world.url("paris-b")
    tf.write_vars(regions, admin_token=world.token)
    updated = tf.apply()
    assert "drain" not in updated, "an update must not drain the region"
    wait_for(
        lambda: (
            (served_region(gateway, IP_FR) == "eu-paris")
            and sim_requests(world.fleet, "paris-b") > before
        ),
        "eu-paris served by the paris-b simulator",
    )

    # Swap weights: the canary takes all French traffic.
    regions["eu-paris"]["weight"] = 0
    regions["eu-paris-canary"]["weight"] = 100
    tf.write_vars(regions, admin_token=world.token)
    tf.apply()
    routes_to(gateway, IP_FR, "eu-paris-canary")
    canary = region_document(world, "eu-paris-canary")
    assert canary is not None and canary["weight"] == 100

    # Disable the canary: French traffic falls back to the (weight 0) main Paris region.
    regions["eu-paris-canary"]["status"] = "disabled"
    tf.write_vars(regions, admin_token=world.token)
    tf.apply()
    routes_to(gateway, IP_FR, "eu-paris")
    canary = region_document(world, "eu-paris-canary")
    assert canary is not None and canary["status"] == "disabled"

    # destroy: each region drained, then removed; traffic moves back.
    destroyed = tf.destroy()
    assert destroyed.index('"drain"') < destroyed.index('"delete"'), destroyed
    assert "Destroy complete! Resources: 6 destroyed." in destroyed
    for region_id in regions:
        assert region_document(world, region_id) is None
    routes_to(gateway, IP_FR, "eu-frankfurt")
    routes_to(gateway, IP_JP, "eu-frankfurt")
    print(f"\nterraform timings (s): { {k: round(v, 2) for k, v in tf.timings.items()} }")


def _known_envoy_drain_gap(world: World, request: pytest.FixtureRequest, *, strict: bool) -> None:
    """Known gap on the Envoy data plane: the drain's in-flight count is the Python runtime's,
    which Envoy's requests bypass, so `regions drain --wait` does not wait for them."""
    if world.gateway.env["GATEWAY_DATA_PLANE"] == "envoy":
        reason = "`regions drain --wait` does not yet see requests in flight in Envoy"
        request.applymarker(pytest.mark.xfail(strict=strict, reason=reason))


def test_destroy_waits_for_a_stream_in_flight(world: World, request: pytest.FixtureRequest) -> None:
    # Not strict: a destroy slower than the ~4 s stream passes without waiting for it.
    _known_envoy_drain_gap(world, request, strict=False)
    gateway = world.gateway
    tf = Workspace(world, "drain")
    tf.env["GATEWAY_ADMIN_TOKEN"] = world.token  # token from the environment, not the state
    tf.write_vars({"eu-paris": _region(world.url("paris-a"))}, drain_timeout=60)
    tf.init()
    tf.apply()
    routes_to(gateway, IP_FR, "eu-paris")
    set_faults(world.fleet, "paris-a", tokens_per_second=8, completion_tokens=32)  # ~4 s

    with openai_client(gateway, IP_FR) as client:
        stream = client.chat.completions.create(model="gpt-4o-mini", messages=CHAT, stream=True)
        chunks = iter(stream)
        first = next(chunks)
        assert first.choices is not None
        destroy = subprocess.Popen(
            tf.command("destroy", "-auto-approve"),
            cwd=tf.example,
            env=tf.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            # Draining: new French requests go to Frankfurt while the stream goes on.
            wait_for(
                lambda: (
                    (doc := region_document(world, "eu-paris")) is not None
                    and doc["status"] == "draining"
                ),
                "eu-paris draining",
            )
            routes_to(gateway, IP_FR, "eu-frankfurt")
            rest = list(chunks)
            assert rest[-1].choices[0].finish_reason == "stop"
            assert destroy.poll() is None, "destroy finished before the stream in flight"
            output, _ = destroy.communicate(timeout=120)
        finally:
            if destroy.poll() is None:
                destroy.kill()
                destroy.wait()
    assert destroy.returncode == 0, output
    assert world.token not in output
    assert world.token not in (tf.example / "terraform.tfstate").read_text("utf-8")
    assert region_document(world, "eu-paris") is None


def test_destroy_wait_is_bounded(world: World, request: pytest.FixtureRequest) -> None:
    _known_envoy_drain_gap(world, request, strict=True)  # it never waits: always fails
    tf = Workspace(world, "bounded")
    tf.write_vars(
        {"eu-paris": _region(world.url("paris-canary"))}, admin_token=world.token, drain_timeout=1
    )
    tf.init()
    tf.apply()
    routes_to(world.gateway, IP_FR, "eu-paris")
    set_faults(world.fleet, "paris-canary", tokens_per_second=2, completion_tokens=1200)
    with openai_client(world.gateway, IP_FR, timeout=60) as client:
        stream = client.chat.completions.create(model="gpt-4o-mini", messages=CHAT, stream=True)
        try:
            chunks = iter(stream)
            next(chunks)
            destroyed = tf.destroy()  # returns although the 10-minute stream is in flight
            assert "still has 1 request(s) in flight after 1s" in destroyed, destroyed
            next(chunks)  # the stream is still flowing: destroy did not wait for its end
        finally:
            stream.close()
    assert region_document(world, "eu-paris") is None
    routes_to(world.gateway, IP_FR, "eu-frankfurt")


def test_gateway_rejection_fails_apply_with_its_message(world: World) -> None:
    tf = Workspace(world, "rejected")
    bad = {**_region(world.url("paris-a")), "attestations": ["made_up_attestation"]}
    tf.write_vars({"eu-bad": bad}, admin_token=world.token)
    tf.init()
    done = tf.run("apply", "-auto-approve", ok=False)
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert "made_up_attestation" in output, output
    assert world.token not in output
    assert region_document(world, "eu-bad") is None
    # The half-created module destroys cleanly although the region never existed.
    assert "region eu-bad does not exist; nothing to do" in tf.destroy()


def test_invalid_inputs_are_rejected_before_anything_runs(world: World) -> None:
    tf = Workspace(world, "invalid")
    bad = {
        "name": "x",
        "country": "fr",
        "latitude": 91,
        "longitude": -181,
        "base_url": "ftp://gpu.example.com",
        "models": ["gpt-4o-mini"],
        "weight": 101,
    }
    tf.write_vars({"Bad_Id": bad}, admin_url="gateway.example.com", drain_timeout=-1)
    tf.init()
    done = tf.run("plan", ok=False)
    assert done.returncode != 0
    for message in (
        "region_id: must be",
        "country: must be an ISO 3166-1 alpha-2 code",
        "latitude: must be between -90 and 90",
        "longitude: must be between -180 and 180",
        "base_url: must be an http:// or https:// URL",
        "weight: must be a whole number from 0 to 100",
        "admin_url: must be an http:// or https:// URL",
        "drain_timeout: must be a whole number",
    ):
        assert message in done.stderr, f"missing {message!r} in:\n{done.stderr}"
