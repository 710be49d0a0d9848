"""Simulators on a busy port: one-line errors naming the port, and `gateway demo
--simulator-ports` to run the demo's simulated regions elsewhere (real processes throughout)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from compliance.store.policy_store import PolicyStore
from gateway.simulator_ports import loopback_port
from regions.simulator.fleet import SimulatorFleet, SimulatorSpec, SimulatorStartError, free_port
from tests.integration.conftest import CHAT, DEMO_KEY, HTTP, IP_DE, PROJECT_ROOT

pytestmark = pytest.mark.integration

DEMO_PORTS = range(9101, 9106)
"""The ports of the shipped demo catalog (regions/data/demo-catalog.yaml)."""
START_TIMEOUT_S = 30.0
"""A bound on a hang, not an expectation."""


@contextlib.contextmanager
def _occupied(ports: range | list[int]) -> Iterator[None]:
    """Listen on each port that is free; a port someone else holds is taken already."""
    with contextlib.ExitStack() as stack:
        for port in ports:
            sock = stack.enter_context(socket.socket())
            with contextlib.suppress(OSError):
                sock.bind(("127.0.0.1", port))
                sock.listen()
        yield


def _taken(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
        return False


def _demo(temp_dir: Path, port: int, *args: str) -> subprocess.Popen[str]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")},
        "PYTHONPATH": str(PROJECT_ROOT),
        "PYTHONUNBUFFERED": "1",
        "GATEWAY_DATA_DIR": str(temp_dir / "data"),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "demo", "--port", str(port), *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=temp_dir,
    )


def _stop(process: subprocess.Popen[str]) -> str:
    if process.poll() is None:
        process.terminate()
    try:
        _, stderr = process.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        _, stderr = process.communicate()
    return stderr


def test_standalone_simulator_on_a_taken_port_says_so_in_one_line() -> None:
    port = free_port()
    with _occupied([port]):
        result = subprocess.run(
            [sys.executable, "-m", "regions.simulator", "--port", str(port), "--region-id", "x"],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=PROJECT_ROOT,
        )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"python -m regions.simulator: error: port {port} is in use on 127.0.0.1"
    ]


def test_fleet_does_not_take_another_simulator_for_its_own() -> None:
    """Another demo's simulator of the same region on the port answers /healthz at once."""
    port = free_port()
    squatter = SimulatorSpec(region_id="eu-frankfurt", port=port)
    with SimulatorFleet([squatter]), pytest.raises(SimulatorStartError) as excinfo:
        SimulatorFleet([SimulatorSpec(region_id="eu-frankfurt", port=port)]).start()
    assert excinfo.value.reason == f"port {port} is in use on 127.0.0.1"


def test_demo_on_a_taken_simulator_port_fails_in_one_line(temp_dir: Path) -> None:
    with _occupied([DEMO_PORTS[0]]):
        process = _demo(temp_dir, free_port())
        try:
            process.wait(timeout=START_TIMEOUT_S)
        finally:
            stderr = _stop(process)
    assert process.returncode == 2, stderr
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("gateway: error:")]
    assert errors == [
        "gateway: error: simulated region eu-frankfurt did not start: port 9101 is in use on "
        "127.0.0.1 (its port comes from the region's base_url in the catalog; `gateway demo "
        "--simulator-ports auto` seeds a new database with free ports)"
    ], stderr


def test_demo_with_auto_ports_serves_from_its_own_simulators(temp_dir: Path) -> None:
    port = free_port()
    with _occupied(DEMO_PORTS):
        assert all(_taken(p) for p in DEMO_PORTS)
        process = _demo(temp_dir, port, "--simulator-ports", "auto")
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while True:
                assert process.poll() is None, _stop(process)
                with contextlib.suppress(httpx.HTTPError):
                    if HTTP.get(f"http://127.0.0.1:{port}/readyz", timeout=1.0).is_success:
                        break
                assert time.monotonic() < deadline, "demo not ready"
                time.sleep(0.1)
            answer = HTTP.post(
                f"http://127.0.0.1:{port}/v1/chat/completions",
                headers={"authorization": f"Bearer {DEMO_KEY}", "x-forwarded-for": IP_DE},
                json={"model": "gpt-4o-mini", "messages": CHAT},
                timeout=10.0,
            )
            assert answer.status_code == 200, answer.text
            assert answer.headers["x-residency-region"] == "eu-frankfurt"

            store = PolicyStore(f"sqlite:///{temp_dir / 'data' / 'gateway.db'}")
            try:
                regions = store.load_snapshot().regions
            finally:
                store.close()
            ports = {r.id: loopback_port(r.base_url) for r in regions}
            assert len(ports) == 5 and not set(ports.values()) & set(DEMO_PORTS), ports
            stats = HTTP.get(f"http://127.0.0.1:{ports['eu-frankfurt']}/_sim/stats").json()
            assert stats["requests"] == 1
            assert answer.headers["x-simulator-instance"] == stats["instance"]
        finally:
            stderr = _stop(process)
    assert "Traceback" not in stderr
