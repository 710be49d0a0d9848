"""LISTEN/NOTIFY on the real PostgreSQL: the change feed, its reconnects, and the runtime's use
of it (immediate reload, immediate outage detection, catch-up after a reconnect) next to the
periodic version check that stays as the safety net.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import psycopg
import pytest

from compliance.pack import load_pack
from compliance.store.catalog_file import load_catalog
from compliance.store.change_feed import APPLICATION_NAME, ChangeFeed
from compliance.store.migrate import upgrade
from compliance.store.policy_store import PolicyStore
from gateway.runtime import GatewayRuntime
from gateway.settings import Settings
from regions.catalog import RegionStatus
from tests.integration.replicas_support import (
    RELOAD_BOUND_S,
    cut_off,
    database_name,
    pg_database_or_skip,
    reconnect,
)

pytestmark = [pytest.mark.integration, pytest.mark.postgres]


@pytest.fixture
def url() -> Iterator[str]:
    """A migrated, seeded throwaway database."""
    with pg_database_or_skip("rg_feed") as database_url:
        upgrade(database_url)
        store = PolicyStore(database_url)
        try:
            label, regimes = load_pack()
            store.seed_if_empty(label, regimes, *load_catalog())
        finally:
            store.close()
        try:
            yield database_url
        finally:
            reconnect(database_url)


async def eventually(predicate: Callable[[], bool], within: float, what: str) -> float:
    """Wait on the event loop until `predicate()` holds; returns the seconds it took."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > within:
            raise AssertionError(f"{what}: not within {within:g}s")
        await asyncio.sleep(0.01)
    return time.monotonic() - started


def _drain(url: str, region: str = "eu-frankfurt") -> int:
    store = PolicyStore(url)
    try:
        return store.set_region_status(region, RegionStatus.DRAINING)
    finally:
        store.close()


def _kill_listener(url: str) -> int:
    with psycopg.connect(url.replace("postgresql+psycopg", "postgresql"), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND application_name = %s",
            (database_name(url), APPLICATION_NAME),
        ).fetchall()
    return len(rows)


async def test_feed_delivers_commits_and_reconnects(url: str) -> None:
    calls: list[float] = []
    feed = ChangeFeed(
        url, lambda: calls.append(time.monotonic()), reconnect_max=0.2, ping_interval=0.1
    )
    task = asyncio.create_task(feed.run())
    try:
        await eventually(lambda: feed.connected, 5.0, "listener connected")
        assert calls, "no catch-up call after connecting"
        await asyncio.sleep(0.3)  # a few quiet periods, each ending in a probe
        assert feed.connects == 1, feed.last_error
        before = len(calls)
        await asyncio.to_thread(_drain, url, "eu-frankfurt")
        await eventually(lambda: feed.notifications == 1, RELOAD_BOUND_S, "NOTIFY delivered")
        assert len(calls) > before

        assert await asyncio.to_thread(_kill_listener, url) == 1
        await eventually(lambda: feed.connects == 2 and feed.connected, 5.0, "reconnected")
        await asyncio.to_thread(_drain, url, "uk-london")
        await eventually(lambda: feed.notifications == 2, RELOAD_BOUND_S, "NOTIFY after reconnect")
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


@asynccontextmanager
async def running(url: str, data_dir: Path, **settings: object) -> AsyncIterator[GatewayRuntime]:
    """A started GatewayRuntime on `url` (no HTTP server: the refresh machinery is the subject)."""
    runtime = GatewayRuntime(
        Settings(
            database_url=url,
            data_dir=data_dir,
            health_interval=60,
            change_feed_reconnect_max=0.2,
            **settings,  # type: ignore[arg-type]
        )
    )
    await runtime.start()
    try:
        yield runtime
    finally:
        await runtime.stop()


async def test_notify_reloads_and_detects_outage_without_polling(url: str, temp_dir: Path) -> None:
    async with running(url, temp_dir, snapshot_refresh_interval=600) as runtime:
        feed = runtime.change_feed
        assert feed is not None
        await eventually(lambda: feed.connected, 5.0, "listener connected")
        version = await asyncio.to_thread(_drain, url)
        latency = await eventually(
            lambda: runtime.snapshot.policy.version == version, RELOAD_BOUND_S, "reloaded"
        )
        print(f"PostgreSQL NOTIFY reload {latency * 1000:.1f} ms after commit")

        await asyncio.to_thread(cut_off, url)
        await eventually(lambda: not runtime.database_ok, 2.0, "outage noticed by the listener")
        assert runtime.snapshot.policy.version == version  # last good snapshot kept
        await asyncio.to_thread(reconnect, url)
        await eventually(lambda: runtime.database_ok and feed.connected, 5.0, "recovered")


async def test_periodic_check_is_the_safety_net(url: str, temp_dir: Path) -> None:
    async with running(url, temp_dir, change_feed=False, snapshot_refresh_interval=0.2) as runtime:
        assert runtime.change_feed is None
        assert runtime.readiness()["policy_updates"] == "polling"
        version = await asyncio.to_thread(_drain, url)
        await eventually(
            lambda: runtime.snapshot.policy.version == version, RELOAD_BOUND_S, "polled reload"
        )
