"""HealthProber: a probe this process cannot make (no file descriptor) leaves health unchanged."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import resource
from collections.abc import AsyncIterator, Iterator

import aiohttp
from aiohttp import web

from regions.health import HealthTracker, HealthView
from regions.prober import HealthProber
from tests.factories import region


@contextlib.asynccontextmanager
async def _region_server() -> AsyncIterator[str]:
    """A real HTTP server answering 200 on /healthz; yields its base URL."""

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@contextlib.contextmanager
def _no_free_descriptors() -> Iterator[None]:
    """Every file descriptor this process may open is taken (EMFILE) until the block ends."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    highest = max(int(fd) for fd in os.listdir("/proc/self/fd"))
    taken: list[int] = []
    limit = highest + 32
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    try:
        with contextlib.suppress(OSError):
            for _ in range(limit + 1):  # at most `limit` can be open: the loop ends in EMFILE
                taken.append(os.dup(0))
        yield
    finally:
        for fd in taken:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _prober(base_url: str, tracker: HealthTracker, views: list[HealthView]) -> HealthProber:
    target = dataclasses.replace(region("eu-frankfurt", "DE"), base_url=base_url)
    return HealthProber(lambda: [target], views.append, tracker, timeout=2.0)


async def test_a_probe_without_a_free_descriptor_leaves_health_unchanged() -> None:
    tracker = HealthTracker(fall=1, rise=1)
    views: list[HealthView] = []
    async with _region_server() as url, aiohttp.ClientSession() as session:
        prober = _prober(url, tracker, views)
        with _no_free_descriptors():
            for _ in range(3):
                assert await prober.probe_once(session) is False
        assert views == []
        assert tracker.view() == {}  # never judged: counts as healthy
        await prober.probe_once(session)
        assert tracker.view()["eu-frankfurt"].healthy


async def test_a_kept_alive_probe_connection_still_probes_without_free_descriptors() -> None:
    tracker = HealthTracker(fall=1, rise=1)
    views: list[HealthView] = []
    async with _region_server() as url:
        prober = _prober(url, tracker, views)
        connector = prober.connector()
        async with aiohttp.ClientSession(connector=connector) as session:
            await prober.probe_once(session)
            with _no_free_descriptors():
                await prober.probe_once(session)
                await prober.probe_once(session)
    assert views == []
    assert tracker.view()["eu-frankfurt"].healthy
