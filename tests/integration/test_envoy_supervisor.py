"""The Envoy supervisor: a crashed Envoy comes back, a stop is a clean SIGTERM."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx
import pytest

from gateway.envoy.xds_server import XdsServer
from tests.integration.envoy_support import RunningEnvoy, require_envoy, wait_for

pytestmark = pytest.mark.integration


def _admin_pid(envoy: RunningEnvoy) -> int | None:
    try:
        return envoy.supervisor.pid if envoy.admin("/ready").status_code in (200, 503) else None
    except httpx.HTTPError:
        return None


def test_a_killed_envoy_is_restarted_and_a_stop_is_clean(temp_dir: Path) -> None:
    require_envoy()
    server = XdsServer()
    server.start()
    envoy = RunningEnvoy(temp_dir, server.port, "supervised")
    envoy.supervisor.start()
    try:
        first = wait_for("Envoy's admin interface", lambda: _admin_pid(envoy))
        os.kill(first, signal.SIGKILL)
        second = wait_for(
            "a restarted Envoy answering", lambda: (pid := _admin_pid(envoy)) != first and pid
        )
        assert second != first
        assert envoy.supervisor.restarts == 1
    finally:
        code = envoy.supervisor.stop()
        server.stop()
    assert code == 0, envoy.log()[-2000:]
    assert envoy.supervisor.pid is None
    assert "caught ENVOY_SIGTERM" in envoy.log()
