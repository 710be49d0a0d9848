"""Routing records survive kill -9 and database outages: spooled first, stored exactly once,
and the audit chain still verifies (gateway processes, SQLite and PostgreSQL)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from compliance.store.engine import BEGIN_OPTION, create_store_engine
from tests.integration.conftest import (
    CHAT,
    DEMO_KEY,
    IP_DE,
    IP_US,
    PROJECT_ROOT,
    GatewayProcess,
    readiness,
)
from tests.integration.replicas_support import (
    PgGatewayProcess,
    cut_off,
    pg_database_or_skip,
    reconnect,
    wait_for,
)

pytestmark = pytest.mark.integration


class Load:
    """Client threads sending chat completions; keeps the decision id of every full answer."""

    def __init__(self, gateway: GatewayProcess, threads: int = 4) -> None:
        self.base_url = gateway.base_url
        self.answered: list[str] = []
        self.failed = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(i,)) for i in range(threads)]

    def _run(self, index: int) -> None:
        ip = IP_US if index % 4 == 3 else IP_DE  # some refusals (451) among the answers
        headers = {"Authorization": f"Bearer {DEMO_KEY}", "X-Forwarded-For": ip}
        if index % 4 == 3:
            headers["X-Data-Class"] = "health"
        body = {"model": "gpt-4o-mini", "messages": CHAT}
        with httpx.Client(base_url=self.base_url, timeout=5.0, trust_env=False) as client:
            while not self._stop.is_set():
                try:
                    response = client.post("/v1/chat/completions", json=body, headers=headers)
                    response.read()  # a complete answer: the whole body arrived
                except httpx.HTTPError:
                    with self._lock:
                        self.failed += 1
                    continue
                with self._lock:
                    self.answered.append(response.headers["x-residency-decision"])

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def wait_answers(self, count: int, timeout: float = 20.0) -> None:
        wait_for(lambda: len(self.answered), lambda n: n >= count, timeout, "answers")


def stored_ids(url: str) -> list[str]:
    engine = create_store_engine(url)
    try:
        with engine.connect() as conn:
            return list(
                conn.execute(sa.text("SELECT decision_id FROM routing_decisions")).scalars()
            )
    finally:
        engine.dispose()


@contextmanager
def write_locked(url: str) -> Iterator[None]:
    """Hold SQLite's write lock: the gateway's log writes fail while reads go on."""
    engine = create_store_engine(url)
    with engine.connect() as conn:
        conn.execution_options(**{BEGIN_OPTION: "BEGIN IMMEDIATE"})
        transaction = conn.begin()
        try:
            yield
        finally:
            transaction.rollback()
    engine.dispose()


def audit_cli(
    data_dir: Path, *args: str, database_url: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update(PYTHONPATH=str(PROJECT_ROOT), GATEWAY_DATA_DIR=str(data_dir))
    if database_url:
        env["GATEWAY_DATABASE_URL"] = database_url
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "audit", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def assert_all_stored_once(url: str, answered: list[str]) -> None:
    ids = stored_ids(url)
    assert len(ids) == len(set(ids)), "duplicate routing records"
    missing = set(answered) - set(ids)
    assert not missing, f"{len(missing)} answered requests have no routing record"


def test_kill_9_under_load_loses_no_answered_request(catalog: Path, temp_dir: Path) -> None:
    data_dir = temp_dir / "gw"
    overrides = {"GATEWAY_AUDIT_CHECKPOINT_RECORDS": "40"}
    gateway = GatewayProcess(catalog, data_dir, overrides)
    gateway.start()
    try:
        with Load(gateway) as load:
            load.wait_answers(60)  # stored as usual, checkpointed
            with write_locked(gateway.database_url):
                before = len(load.answered)
                load.wait_answers(before + 80)  # answered while the log cannot reach the DB
                assert gateway.process is not None
                gateway.process.kill()  # SIGKILL under load
                gateway.process.wait()
        answered = list(load.answered)
        unstored = set(answered) - set(stored_ids(gateway.database_url))
        assert len(unstored) >= 80  # these exist only in the spool now
    finally:
        gateway.stop()

    with GatewayProcess(catalog, data_dir, overrides) as restarted:
        wait_for(
            lambda: readiness(restarted)["routing_log_pending"], lambda n: n == 0, 20, "replay"
        )
        assert_all_stored_once(restarted.database_url, answered)
    result = audit_cli(data_dir, "verify")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("chain intact: ")
    assert int(result.stdout.split()[2]) >= len(answered)


def test_database_outage_spools_then_drains_exactly_once(catalog: Path, temp_dir: Path) -> None:
    with pg_database_or_skip("rg_audit_outage") as url:
        data_dir = temp_dir / "gw"
        gateway = PgGatewayProcess(
            catalog, data_dir, url, {"GATEWAY_AUDIT_CHECKPOINT_SECONDS": "0.5"}
        )
        with gateway:
            with Load(gateway, threads=2) as load:
                load.wait_answers(20)
                cut_off(url)
                try:
                    during = len(load.answered)
                    load.wait_answers(during + 40)
                    pending = readiness(gateway)["routing_log_pending"]
                    assert pending >= 40  # spooled, not stored: the database is unreachable
                    assert readiness(gateway)["database_ok"] is False
                finally:
                    reconnect(url)
                load.wait_answers(len(load.answered) + 20)
            wait_for(
                lambda: readiness(gateway)["routing_log_pending"], lambda n: n == 0, 30, "drain"
            )
            answered = list(load.answered)
            assert_all_stored_once(url, answered)

            # a second outage ends in kill -9: the restarted gateway replays the spool
            with Load(gateway, threads=2) as load:
                load.wait_answers(10)
                cut_off(url)
                try:
                    load.wait_answers(len(load.answered) + 30)
                    assert gateway.process is not None
                    gateway.process.kill()
                    gateway.process.wait()
                finally:
                    reconnect(url)
            answered += load.answered
        time.sleep(0.1)
        with PgGatewayProcess(catalog, data_dir, url) as restarted:
            wait_for(
                lambda: readiness(restarted)["routing_log_pending"], lambda n: n == 0, 30, "replay"
            )
            assert_all_stored_once(url, answered)
        result = audit_cli(data_dir, "verify", database_url=url)
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.startswith("chain intact: ")
