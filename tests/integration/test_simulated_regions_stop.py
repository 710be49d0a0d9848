"""`gateway demo` and `gateway serve --simulate-regions` stop their region simulators when the
gateway is stopped by SIGTERM (or SIGINT): no simulator process or port outlives it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from regions.simulator.fleet import free_port
from tests.integration.conftest import HTTP, PROJECT_ROOT, TENANTS

pytestmark = pytest.mark.integration

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 20.0
"""Bounds on a hang, not expectations: uvicorn's graceful shutdown plus the simulators'."""
REGIONS = {"eu-frankfurt": ("DE", 50.11, 8.68), "uk-london": ("GB", 51.51, -0.13)}


def _catalog(path: Path) -> tuple[Path, list[int]]:
    ports = [free_port() for _ in REGIONS]
    regions = [
        {
            "id": rid,
            "name": rid,
            "country": country,
            "latitude": lat,
            "longitude": lon,
            "base_url": f"http://127.0.0.1:{port}",
            "models": ["gpt-4o-mini"],
        }
        for (rid, (country, lat, lon)), port in zip(REGIONS.items(), ports, strict=True)
    ]
    # demo: the shared test tenants keep their short keys
    document = {"demo": True, "regions": regions, "tenants": TENANTS}
    path.write_text(yaml.safe_dump(document), "utf-8")
    return path, ports


def _children(pid: int) -> list[int]:
    """The direct child processes of `pid` (Linux /proc)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            found.extend(int(c) for c in (task / "children").read_text().split())
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited (only not yet reaped)


def _refuses(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) != 0


def _wait(predicate: object, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout:g}s")
        time.sleep(0.1)


@pytest.mark.parametrize(
    ("command", "signum"),
    [
        (["demo"], signal.SIGTERM),
        (["serve", "--simulate-regions"], signal.SIGTERM),
        (["demo"], signal.SIGINT),
    ],
    ids=["demo-sigterm", "serve-simulate-sigterm", "demo-sigint"],
)
def test_simulators_stop_with_the_gateway(
    command: list[str], signum: signal.Signals, temp_dir: Path
) -> None:
    catalog, ports = _catalog(temp_dir / "catalog.yaml")
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")},
        "PYTHONPATH": str(PROJECT_ROOT),
        "GATEWAY_DATA_DIR": str(temp_dir / "data"),
        "GATEWAY_SEED_CATALOG": str(catalog),
    }
    log = (temp_dir / "gateway.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", *command, "--port", str(port)],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    simulators: list[int] = []
    try:

        def answering() -> bool:
            assert process.poll() is None, (temp_dir / "gateway.log").read_text()
            try:
                return HTTP.get(f"http://127.0.0.1:{port}/readyz", timeout=1.0).is_success
            except httpx.HTTPError:
                return False

        _wait(answering, "gateway not ready", START_TIMEOUT_S)
        simulators = _children(process.pid)
        assert len(simulators) == len(REGIONS), simulators
        assert not any(_refuses(p) for p in ports)

        process.send_signal(signum)
        process.wait(timeout=STOP_TIMEOUT_S)
        assert process.returncode == -signum  # still ends by the signal, after cleaning up
        _wait(lambda: not any(_alive(pid) for pid in simulators), "simulators alive", 5.0)
        assert all(_refuses(p) for p in ports)
    finally:
        log.close()
        if process.poll() is None:
            process.kill()
            process.wait()
        for pid in simulators:  # only on failure: the simulators this test's gateway started
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
