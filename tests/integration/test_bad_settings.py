"""An invalid setting stops `gateway serve` (and a uvicorn worker's app factory) with one line on
stderr naming the environment variable and the problem, exit status 2: no traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from regions.simulator.fleet import free_port
from tests.integration.conftest import PROJECT_ROOT

pytestmark = pytest.mark.integration

EXIT_TIMEOUT_S = 30.0
"""Bound on a hang: the process must exit by itself."""

CASES = [
    ("GATEWAY_TRUSTED_PROXIES", "10.0.0.0/33", "'10.0.0.0/33' is not an IP address or CIDR"),
    ("GATEWAY_TRUSTED_PROXIES", "127.0.0.1, not-a-network", "'not-a-network' is not an IP"),
    ("GATEWAY_PORT", "abc", "valid integer"),
    ("GATEWAY_UPSTREAM_CLIENT", "curl", "'h1' or 'aiohttp'"),
    ("GATEWAY_WORKERS", "0", "greater than or equal to 1"),
]


def _run(
    argv: list[str], name: str, value: str, tmp_path: Path
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update({"PYTHONPATH": str(PROJECT_ROOT), "GATEWAY_DATA_DIR": str(tmp_path), name: value})
    return subprocess.run(
        [sys.executable, *argv],
        env=env,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=EXIT_TIMEOUT_S,
    )


@pytest.mark.parametrize(("name", "value", "problem"), CASES)
def test_serve_names_the_bad_variable_in_one_line(
    name: str, value: str, problem: str, tmp_path: Path
) -> None:
    argv = ["-m", "gateway.cli", "serve"]
    if name != "GATEWAY_PORT":  # --port would override the variable under test
        argv += ["--port", str(free_port())]
    done = _run(argv, name, value, tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and done.stdout == "", done.stderr
    assert done.stderr.startswith(f"gateway: error: {name}: "), done.stderr
    assert problem in done.stderr


def test_worker_app_factory_names_the_bad_variable_in_one_line(tmp_path: Path) -> None:
    argv = ["-m", "uvicorn", "--factory", "gateway.server:app_factory"]
    done = _run([*argv, "--port", str(free_port())], "GATEWAY_TRUSTED_PROXIES", "bogus", tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "gateway: error: GATEWAY_TRUSTED_PROXIES: 'bogus' is not an IP address or CIDR network"
    ]
