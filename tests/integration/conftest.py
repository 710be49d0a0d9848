"""Real processes for integration tests: a simulated region fleet and gateway subprocesses."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self

import httpx
import openai
import pytest
import yaml

from compliance.store.routing_log_store import RoutingLogStore
from regions.simulator.fleet import SimulatorFleet, SimulatorSpec, free_port

PROJECT_ROOT = Path(__file__).resolve().parents[2]

# Public addresses the bundled GeoIP database places in these countries.
IP_DE = "80.128.0.1"
IP_GB = "81.2.69.142"
IP_IN = "117.192.0.1"
IP_US = "8.8.8.8"
IP_CN = "114.114.114.114"

DEMO_KEY = "rg-demo-key"
ACME_KEY = "rg-acme-eu-key"
BROKER_KEY = "rg-in-broker-key"

COMMON_MODELS = ("gpt-4o-mini", "gpt-4o", "text-embedding-3-small")
INDIA_ONLY_MODEL = "indic-gpt"
"""Served only in in-mumbai: lets /v1/models show a per-caller list."""

REGIONS: dict[str, dict[str, Any]] = {
    "eu-frankfurt": {"country": "DE", "latitude": 50.11, "longitude": 8.68},
    "uk-london": {"country": "GB", "latitude": 51.51, "longitude": -0.13},
    "in-mumbai": {
        "country": "IN",
        "latitude": 19.08,
        "longitude": 72.88,
        "models": [*COMMON_MODELS, INDIA_ONLY_MODEL],
    },
    "us-virginia": {"country": "US", "latitude": 38.95, "longitude": -77.45},
    "us-oregon": {
        "country": "US",
        "latitude": 45.60,
        "longitude": -121.18,
        "attestations": ["eu_us_dpf", "uk_extension_dpf", "swiss_us_dpf"],
    },
}
GDPR_ALLOWED = frozenset({"eu-frankfurt", "uk-london", "us-oregon"})
"""Regions that may process personal data of a German client (EEA, GB, US with eu_us_dpf)."""

TENANTS: list[dict[str, Any]] = [
    {"id": "demo", "name": "Demo tenant", "api_keys": [DEMO_KEY]},
    {
        "id": "acme-eu",
        "name": "ACME GmbH (EU controller)",
        "home_jurisdiction": "DE",
        "api_keys": [ACME_KEY],
    },
    {
        "id": "in-broker",
        "name": "Indian stock broker (SEBI-regulated)",
        "flags": ["sebi_regulated"],
        "api_keys": [BROKER_KEY],
    },
]


def region_models(region_id: str) -> tuple[str, ...]:
    """The models a region of the test catalog serves."""
    return tuple(REGIONS[region_id].get("models", COMMON_MODELS))


def fleet_specs() -> list[SimulatorSpec]:
    """One simulator spec per test region, each on a fresh free port."""
    return [
        SimulatorSpec(region_id=rid, port=free_port(), models=region_models(rid)) for rid in REGIONS
    ]


def write_catalog(path: Path, fleet: SimulatorFleet) -> Path:
    """Write a catalog YAML whose regions point at `fleet`'s simulators."""
    regions = []
    for rid, extra in REGIONS.items():
        spec = fleet.spec(rid)
        regions.append(
            {
                "id": rid,
                "name": f"{rid} (simulated)",
                "base_url": spec.base_url,
                "models": list(region_models(rid)),
                **{k: v for k, v in extra.items() if k != "models"},
            }
        )
    path.write_text(yaml.safe_dump({"demo": True, "regions": regions, "tenants": TENANTS}), "utf-8")
    return path


HTTP = httpx.Client(timeout=5.0, trust_env=False)
"""One shared plain HTTP client (creating one per call costs an SSL context each time)."""


class GatewayStartError(RuntimeError):
    """The gateway process exited or never became ready."""


class GatewayProcess:
    """`python -m gateway.cli serve` as a subprocess on a free port; a context manager."""

    def __init__(
        self,
        catalog: Path,
        data_dir: Path,
        overrides: Mapping[str, str] | None = None,
        *,
        startup_timeout: float = 20.0,
    ) -> None:
        self.catalog = catalog
        self.data_dir = data_dir
        self.port = free_port()
        self.startup_timeout = startup_timeout
        self.env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join(
                filter(None, [str(PROJECT_ROOT), os.getenv("PYTHONPATH")])
            ),
            "GATEWAY_DATA_DIR": str(data_dir),
            "GATEWAY_SEED_CATALOG": str(catalog),
            "GATEWAY_SEED_DEMO_CATALOG": "false",
            "GATEWAY_TRUSTED_PROXIES": "127.0.0.0/8,::1/128",
            "GATEWAY_HEALTH_INTERVAL": "0.2",
            "GATEWAY_SNAPSHOT_REFRESH_INTERVAL": "0.2",
            "GATEWAY_UPSTREAM_FIRST_BYTE_TIMEOUT": "2",
            **(overrides or {}),
        }
        self.env.pop("GATEWAY_DATABASE_URL", None)
        self.process: subprocess.Popen[bytes] | None = None
        self._log_path: Path | None = None
        self._log_store: RoutingLogStore | None = None

    @property
    def base_url(self) -> str:
        """`http://127.0.0.1:<port>` (no `/v1`)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def database_path(self) -> Path:
        """The gateway's SQLite file."""
        return (self.data_dir / "gateway.db").resolve()

    @property
    def database_url(self) -> str:
        """SQLAlchemy URL of the gateway's database."""
        return f"sqlite:///{self.database_path}"

    @property
    def routing_log(self) -> RoutingLogStore:
        """A reader of the gateway's routing log."""
        if self._log_store is None:
            self._log_store = RoutingLogStore(self.database_url)
        return self._log_store

    def record(self, decision_id: str, timeout: float = 20.0) -> dict[str, Any]:
        """The routing record of `decision_id`, waiting for the batched writer.

        The bound is generous: the writer runs at idle CPU priority, so on a machine busy with
        other work (a loaded CI host) a record can take seconds to reach the database."""
        deadline = time.monotonic() + timeout
        while (row := self.routing_log.get(decision_id)) is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"no routing record for {decision_id} after {timeout}s")
            time.sleep(0.05)
        return row

    def output(self) -> str:
        """Everything the process printed so far (stdout and stderr)."""
        if self._log_path is None or not self._log_path.exists():
            return ""
        return self._log_path.read_text(errors="replace")

    def start(self) -> None:
        """Launch the process and wait until /readyz answers 200."""
        self.launch()
        self._wait_ready()

    def launch(self) -> None:
        """Launch the process without waiting for it."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._log_path = self.data_dir / f"gateway-{self.port}.log"
        with self._log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gateway.cli", "serve", "--port", str(self.port)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.data_dir,
            )

    def _wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + self.startup_timeout
        last = "no answer"
        while True:
            code = self.process.poll()
            if code is not None:
                raise GatewayStartError(
                    f"gateway exited with code {code} before becoming ready; "
                    f"output:\n{self.output()}"
                )
            try:
                response = HTTP.get(f"{self.base_url}/readyz", timeout=1.0)
                if response.status_code == 200:
                    return
                last = f"HTTP {response.status_code}: {response.text}"
            except httpx.HTTPError as exc:
                last = repr(exc)
            if time.monotonic() > deadline:
                self.stop()
                raise GatewayStartError(
                    f"gateway not ready after {self.startup_timeout:g}s ({last}); "
                    f"output:\n{self.output()}"
                )
            time.sleep(0.05)

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after `grace` seconds; idempotent."""
        if self._log_store is not None:
            self._log_store.close()
            self._log_store = None
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# -- helpers ------------------------------------------------------------------------------


def sim_post(spec: SimulatorSpec, path: str, body: Mapping[str, Any] | None = None) -> Any:
    """POST to a simulator control endpoint and return its JSON."""
    response = HTTP.post(f"{spec.base_url}{path}", json=dict(body or {}))
    response.raise_for_status()
    return response.json()


def set_faults(fleet: SimulatorFleet, region_id: str, **faults: Any) -> None:
    """Change a simulator's behaviour (POST /_sim/faults)."""
    sim_post(fleet.spec(region_id), "/_sim/faults", faults)


def sim_requests(fleet: SimulatorFleet, region_id: str) -> int:
    """How many /v1 requests a simulator received since its last reset."""
    response = HTTP.get(f"{fleet.spec(region_id).base_url}/_sim/stats")
    response.raise_for_status()
    return int(response.json()["requests"])


def reset_fleet(fleet: SimulatorFleet) -> None:
    """Restore every live simulator's startup behaviour (dead ones are skipped)."""
    for spec in fleet.specs:
        if fleet.process(spec.region_id).poll() is not None:
            continue
        with contextlib.suppress(httpx.HTTPError):
            sim_post(spec, "/_sim/reset")


def readiness(gateway: GatewayProcess) -> dict[str, Any]:
    """The gateway's /readyz report."""
    result: dict[str, Any] = HTTP.get(f"{gateway.base_url}/readyz").json()
    return result


def wait_all_healthy(gateway: GatewayProcess, timeout: float = 5.0) -> None:
    """Wait until the gateway's prober sees every region healthy again."""
    deadline = time.monotonic() + timeout
    while True:
        report = readiness(gateway)
        if report["regions_healthy"] == report["regions_total"]:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"regions still unhealthy after {timeout}s: {report}")
        time.sleep(0.05)


class Served(Protocol):
    """Anything serving the gateway's API at `base_url`."""

    @property
    def base_url(self) -> str: ...


def openai_client(
    gateway: Served,
    ip: str | None = None,
    *,
    api_key: str = DEMO_KEY,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
) -> openai.OpenAI:
    """An OpenAI client talking to `gateway`, posing as a client at `ip` via X-Forwarded-For."""
    default_headers = dict(headers or {})
    if ip is not None:
        default_headers["X-Forwarded-For"] = ip
    return openai.OpenAI(
        base_url=f"{gateway.base_url}/v1",
        api_key=api_key,
        max_retries=0,
        timeout=timeout,
        default_headers=default_headers,
    )


def trace_id_of(traceparent: str) -> str:
    """The trace id part of a W3C traceparent value."""
    version, trace_id, span_id, flags = traceparent.split("-")
    assert (version, len(trace_id), len(span_id), len(flags)) == ("00", 32, 16, 2), traceparent
    return trace_id


CHAT = [{"role": "user", "content": "Where are you?"}]


# -- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def fleet() -> Iterator[SimulatorFleet]:
    """Five simulated regions (the demo region ids) on free ports, for the whole session."""
    with SimulatorFleet(fleet_specs()) as running:
        yield running


@pytest.fixture(scope="session")
def catalog(fleet: SimulatorFleet, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A catalog YAML pointing the test regions at the session fleet."""
    return write_catalog(tmp_path_factory.mktemp("catalog") / "catalog.yaml", fleet)


@pytest.fixture(scope="session")
def gateway(catalog: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """One gateway process shared by the tests that do not change its configuration."""
    with GatewayProcess(catalog, tmp_path_factory.mktemp("gateway")) as running:
        yield running


@pytest.fixture(autouse=True)
def _reset_simulators(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each test using the session fleet: reset faults, wait for health to recover."""
    yield
    if "fleet" not in request.fixturenames:
        return
    reset_fleet(request.getfixturevalue("fleet"))
    if "gateway" in request.fixturenames:
        wait_all_healthy(request.getfixturevalue("gateway"))


@pytest.fixture(autouse=True)
def _one_outcome_per_exchange(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each test using the shared gateway: no exchange was finished twice (a bug the
    gateway logs and survives, so only its output shows it)."""
    yield
    if "gateway" in request.fixturenames:
        output = request.getfixturevalue("gateway").output()
        assert "finished twice" not in output, output


@pytest.fixture
def temp_dir() -> Iterator[Path]:
    """A temporary directory removed after the test."""
    with tempfile.TemporaryDirectory(prefix="rg-it-") as name:
        yield Path(name)
