"""A real Envoy deciding and writing its access log, a seeded gateway database, the shipper."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from compliance.store.engine import create_store_engine
from compliance.store.policy_store import PolicyStore
from gateway.bootstrap import prepare_database
from gateway.envoy.access_log import flush_args
from gateway.envoy.xds_server import XdsServer
from gateway.settings import Settings
from tests.integration.conftest import PROJECT_ROOT
from tests.integration.envoy_decision_support import DecidingEnvoy, decision_options
from tests.integration.envoy_support import (
    RunningEnvoy,
    accepted,
    publish,
    require_envoy,
    wait_for,
)

FLUSH_MS = 100
"""Envoy's access-log flush interval in these tests: the crash window of a kill -9 of Envoy."""


@dataclass
class RecordsPlane:
    """Envoy (supervised: restarted after a kill) logging to the gateway data dir's access log."""

    settings: Settings
    plane: DecidingEnvoy

    @property
    def log(self) -> Path:
        """Envoy's access log."""
        return self.settings.resolved_envoy_access_log

    def post(self, headers: dict[str, str], body: object | None = None) -> httpx.Response:
        """A chat completion through Envoy."""
        chat = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
        return self.plane.post(chat if body is None else body, headers)


def _answers(envoy: RunningEnvoy) -> bool:
    try:
        return envoy.admin("/server_info").status_code == 200
    except httpx.HTTPError:
        return False


@contextmanager
def records_plane(
    catalog: Path, directory: Path, node: str, regions: tuple[str, ...]
) -> Iterator[RecordsPlane]:
    """Seed a database from `catalog`, push its policy (with the access log) to a new Envoy."""
    require_envoy()
    settings = Settings(data_dir=directory / "gw", seed_catalog=catalog)
    prepare_database(settings)
    store = PolicyStore(settings.resolved_database_url)
    try:
        policy = store.load_snapshot()
    finally:
        store.close()
    options = replace(decision_options(), access_log_path=str(settings.resolved_envoy_access_log))
    server = XdsServer()
    server.start()
    resources = publish(server, policy, options)
    envoy = RunningEnvoy(directory, server.port, node, extra_args=flush_args(FLUSH_MS))
    envoy.supervisor.start()
    try:
        wait_for("Envoy's admin interface", partial(_answers, envoy))
        wait_for("the ACK of every type", lambda: accepted(server, node, resources.version))
        plane = DecidingEnvoy(server, envoy, options)
        for region in regions:
            wait_for(f"{region} healthy in Envoy", partial(plane.healthy, region))
        yield RecordsPlane(settings, plane)
    finally:
        envoy.supervisor.stop()
        server.stop()


def gateway_cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`gateway <args>` in a new process on `data_dir` (the environment's GATEWAY_* left out)."""
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        capture_output=True,
        text=True,
        env=cli_env(data_dir),
        timeout=120,
        check=False,
    )


def cli_env(data_dir: Path) -> dict[str, str]:
    """The environment of a gateway CLI process on `data_dir`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update(PYTHONPATH=str(PROJECT_ROOT), GATEWAY_DATA_DIR=str(data_dir))
    return env


def ship_once(data_dir: Path) -> str:
    """Run `gateway envoy ship-records --once`; its summary line."""
    result = gateway_cli(data_dir, "envoy", "ship-records", "--once")
    assert result.returncode == 0, result.stderr
    return result.stdout


def stored_records(settings: Settings) -> list[dict[str, Any]]:
    """Every routing record in the database, in chain order."""
    engine = create_store_engine(settings.resolved_database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT * FROM routing_decisions ORDER BY chain_seq"))
            return [dict(r) for r in rows.mappings()]
    finally:
        engine.dispose()


def rejected_lines(settings: Settings) -> list[str]:
    """What the shipper set aside."""
    path = settings.data_dir / "routing-log-rejected.jsonl"
    return path.read_text().splitlines() if path.exists() else []


def logged_decisions(log: Path) -> int:
    """Lines of the access log that carry a decision (a tenant)."""
    return sum('"tenant":"' in line for line in log.read_text().splitlines())
