"""Background health probing of regions (aiohttp), feeding the pure HealthTracker."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

import aiohttp

from regions.catalog import Region
from regions.health import HealthTracker, HealthView

logger = logging.getLogger(__name__)


class HealthProber:
    """Probes every region's health endpoint each `interval` seconds.

    `regions()` gives the current catalog; `publish(view)` is called whenever a verdict changes.
    """

    def __init__(
        self,
        regions: Callable[[], Sequence[Region]],
        publish: Callable[[HealthView], None],
        tracker: HealthTracker,
        interval: float = 2.0,
        timeout: float = 1.0,
        path: str = "/healthz",
    ) -> None:
        self._regions = regions
        self._publish = publish
        self._tracker = tracker
        self._interval = interval
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._path = path

    async def _probe(self, session: aiohttp.ClientSession, region: Region) -> tuple[bool, str]:
        url = region.base_url.rstrip("/") + self._path
        try:
            async with session.get(url, timeout=self._timeout) as response:
                await response.read()
                if response.status == 200:
                    return True, ""
                return False, f"health check answered HTTP {response.status}"
        except TimeoutError:
            return False, "health check timed out"
        except (aiohttp.ClientError, OSError) as exc:
            return False, f"health check failed: {type(exc).__name__}"

    async def probe_once(self, session: aiohttp.ClientSession) -> bool:
        """Probe all regions once; publish and return True if any verdict changed."""
        regions = list(self._regions())
        results = await asyncio.gather(*(self._probe(session, r) for r in regions))
        changed = False
        for region, (ok, detail) in zip(regions, results, strict=True):
            if self._tracker.observe(region.id, ok, detail):
                changed = True
                logger.warning(
                    "region %s is now %s %s", region.id, "healthy" if ok else "unhealthy", detail
                )
        self._tracker.forget({r.id for r in regions})
        if changed:
            self._publish(self._tracker.view())
        return changed

    async def run(self) -> None:
        """Probe forever (until cancelled)."""
        connector = aiohttp.TCPConnector(limit=64, force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session:
            while True:
                try:
                    await self.probe_once(session)
                except Exception:  # a probe bug must not stop probing
                    logger.exception("health probing failed")
                await asyncio.sleep(self._interval)
