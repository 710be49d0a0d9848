"""Starting and stopping `gateway serve|demo --data-plane envoy`: SIGTERM and SIGINT stop the
Envoy child and the simulators, a `kill -9` of the gateway leaves no Envoy behind, and a taken
port is one line of error."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from regions.simulator.fleet import free_port
from tests.integration.conftest import CHAT, DEMO_KEY, HTTP, IP_DE, PROJECT_ROOT
from tests.integration.envoy_support import require_envoy, wait_for
from tests.integration.test_simulated_regions_stop import _alive, _catalog, _children, _refuses

pytestmark = pytest.mark.integration
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30.0
"""Bounds on a hang, not expectations: a busy 2-core machine starts Envoy slowly."""


@dataclass
class Started:
    """A gateway process, its public port and the Envoy it runs."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path
    simulator_ports: list[int]

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def envoy(self) -> dict[str, Any]:
        report: dict[str, Any] = HTTP.get(f"http://127.0.0.1:{self.port}/readyz").json()["envoy"]
        return report


def _environment(directory: Path, catalog: Path) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")},
        "PYTHONPATH": str(PROJECT_ROOT),
        "GATEWAY_DATA_DIR": str(directory / "data"),
        "GATEWAY_SEED_CATALOG": str(catalog),
    }


@pytest.fixture
def launch(temp_dir: Path) -> Iterator[Any]:
    """Start `gateway <command> --port P` (demo catalog with free simulator ports); on the way
    out kill whatever the test left running: the gateway, its Envoy, its simulators."""
    started: list[tuple[Started, list[int]]] = []
    catalog, simulator_ports = _catalog(temp_dir / "catalog.yaml")

    def start(*command: str) -> tuple[Started, list[int]]:
        port = free_port()
        log = temp_dir / f"gateway-{port}.log"
        with log.open("wb") as output:
            process = subprocess.Popen(
                [sys.executable, "-m", "gateway.cli", *command, "--port", str(port)],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                env=_environment(temp_dir, catalog),
            )
        gateway = Started(process, port, log, simulator_ports)
        children: list[int] = []
        started.append((gateway, children))

        def ready() -> bool:
            assert process.poll() is None, gateway.output()
            try:
                return HTTP.get(f"http://127.0.0.1:{port}/readyz", timeout=1.0).is_success
            except httpx.HTTPError:
                return False

        wait_for("the gateway ready through Envoy", ready, START_TIMEOUT_S)
        children.extend(_children(process.pid))
        return gateway, children

    yield start
    for gateway, children in started:
        if gateway.process.poll() is None:
            gateway.process.kill()
            gateway.process.wait()
        for pid in children:  # only on failure: this test's own child processes
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize(
    ("command", "signum"),
    [
        (["demo", "--data-plane", "envoy"], signal.SIGTERM),
        (["demo", "--data-plane", "envoy"], signal.SIGINT),
        (
            ["serve", "--data-plane", "envoy", "--simulate-regions", "--trust-proxy", "127.0.0.1"],
            signal.SIGTERM,
        ),
    ],
    ids=["demo-sigterm", "demo-sigint", "serve-sigterm"],
)
def test_a_signal_stops_envoy_and_everything_else(
    launch: Any, command: list[str], signum: signal.Signals
) -> None:
    require_envoy()
    gateway, children = launch(*command)
    envoy_pid = gateway.envoy()["pid"]
    assert envoy_pid in children  # Envoy is the gateway's own child
    response = HTTP.post(
        f"http://127.0.0.1:{gateway.port}/v1/chat/completions",
        json={"model": "gpt-4o-mini", "messages": CHAT},
        headers={"Authorization": f"Bearer {DEMO_KEY}", "X-Forwarded-For": IP_DE},
    )
    assert response.status_code == 200, response.text
    assert response.headers["server"] == "envoy"

    gateway.process.send_signal(signum)
    gateway.process.wait(timeout=STOP_TIMEOUT_S)
    assert gateway.process.returncode == -signum, gateway.output()
    wait_for("every child gone", lambda: not any(_alive(pid) for pid in children), 10.0)
    assert _refuses(gateway.port)


@pytest.mark.parametrize("trust", [[], ["--trust-proxy", "10.0.0.0/8"]], ids=["none", "other"])
def test_x_forwarded_for_is_believed_only_from_trusted_proxies(
    launch: Any, trust: list[str]
) -> None:
    require_envoy()
    gateway, _ = launch("serve", "--data-plane", "envoy", *trust)
    posing = {"Authorization": f"Bearer {DEMO_KEY}", "X-Forwarded-For": IP_DE}
    base = f"http://127.0.0.1:{gateway.port}"
    # Loopback is no trusted proxy here: the client is 127.0.0.1, whatever it claims.
    refused = HTTP.post(
        f"{base}/v1/chat/completions",
        json={"model": "gpt-4o-mini", "messages": CHAT},
        headers=posing,
    )
    assert refused.status_code == 451, refused.text
    assert "country is unknown" in refused.json()["error"]["message"]
    # The Python app behind Envoy sees the client Envoy saw, not the header it was sent.
    explain = HTTP.post(f"{base}/v1/residency/explain", json={}, headers=posing)
    assert explain.json()["outcome"] == "refused", explain.text


def test_a_stream_in_flight_finishes_when_the_gateway_stops(launch: Any) -> None:
    require_envoy()
    gateway, _ = launch("demo", "--data-plane", "envoy")
    for port in gateway.simulator_ports:  # 16 tokens at 8/s: a stream of about 2 s
        HTTP.post(f"http://127.0.0.1:{port}/_sim/faults", json={"tokens_per_second": 8})
    body = {"model": "gpt-4o-mini", "messages": CHAT, "stream": True}
    headers = {"Authorization": f"Bearer {DEMO_KEY}", "X-Forwarded-For": IP_DE}
    url = f"http://127.0.0.1:{gateway.port}/v1/chat/completions"
    with HTTP.stream("POST", url, json=body, headers=headers, timeout=30.0) as response:
        assert response.status_code == 200
        lines = response.iter_lines()
        received = [next(line for line in lines if line.startswith("data:"))]
        gateway.process.send_signal(signal.SIGTERM)  # mid-stream
        received.extend(line for line in lines if line.startswith("data:"))
    assert received[-1] == "data: [DONE]", received
    assert len(received) > 3
    gateway.process.wait(timeout=STOP_TIMEOUT_S)
    assert gateway.process.returncode == -signal.SIGTERM, gateway.output()


def test_a_killed_gateway_leaves_no_envoy(launch: Any) -> None:
    require_envoy()
    gateway, _ = launch("demo", "--data-plane", "envoy")
    envoy_pid = gateway.envoy()["pid"]
    gateway.process.kill()  # SIGKILL: no clean-up code runs in the gateway
    gateway.process.wait()
    # The kernel tells Envoy its parent died (PR_SET_PDEATHSIG); it stops by itself.
    wait_for("Envoy gone with its parent", lambda: not _alive(envoy_pid), 10.0)
    assert _refuses(gateway.port)


def test_a_taken_port_is_one_line_of_error(temp_dir: Path) -> None:
    require_envoy()
    catalog, _ = _catalog(temp_dir / "catalog.yaml")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "gateway.cli", "serve", "--data-plane=envoy", f"--port={port}"],
            capture_output=True,
            text=True,
            env=_environment(temp_dir, catalog),
            timeout=60,
            check=False,
        )
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("gateway: error")]
    assert lines == [
        f"gateway: error: cannot listen on 127.0.0.1:{port}: the address is already in use "
        "(choose another with --port / GATEWAY_PORT)"
    ], result.stderr
    assert "Traceback" not in result.stderr
    assert not (temp_dir / "data").exists()  # refused before anything was created
