"""Background health probing of regions (aiohttp), feeding the pure HealthTracker.

A probe that fails because this process cannot open a socket (out of file descriptors) says
nothing about the region: its verdict is unknown and the region's health is left as it was.
Probes keep their connection to each region alive, so a process short of descriptors can still
probe over the connections it holds.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import time
from collections.abc import Callable, Sequence

import aiohttp

from regions.catalog import Region
from regions.health import HealthTracker, HealthView

logger = logging.getLogger(__name__)

_LOCAL_SHORTAGE = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
"""Errors of this process or host (no descriptor or buffer for a socket), not of the region."""

Verdict = tuple[bool | None, str]
"""(healthy, detail); healthy is None when the probe could not tell."""


def _local_shortage(exc: BaseException) -> bool:
    """True if `exc` (or what it wraps) is this process being unable to open a socket."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _LOCAL_SHORTAGE:
            return True
        stack += [getattr(current, "os_error", None), current.__cause__, current.__context__]
        if isinstance(current, ExceptionGroup):
            stack += current.exceptions
    return "Too many open files" in str(exc)


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

    async def _probe(self, session: aiohttp.ClientSession, region: Region) -> Verdict:
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
            if _local_shortage(exc):
                return None, f"cannot open a socket: {exc}"
            return False, f"health check failed: {type(exc).__name__}"

    async def probe_once(self, session: aiohttp.ClientSession) -> bool:
        """Probe all regions once; publish and return True if any verdict changed."""
        regions = list(self._regions())
        results = await asyncio.gather(*(self._probe(session, r) for r in regions))
        checked_at = time.time()  # shown to operators, never used to decide
        changed = False
        for region, (ok, detail) in zip(regions, results, strict=True):
            if ok is None:
                logger.warning("region %s not probed, health unchanged: %s", region.id, detail)
                continue
            if self._tracker.observe(region.id, ok, detail, checked_at):
                changed = True
                logger.warning(
                    "region %s is now %s %s", region.id, "healthy" if ok else "unhealthy", detail
                )
        self._tracker.forget({r.id for r in regions})
        if changed:
            self._publish(self._tracker.view())
        return changed

    def connector(self) -> aiohttp.TCPConnector:
        """The probes' connection pool: kept-alive connections need no new descriptor per probe."""
        return aiohttp.TCPConnector(limit=64, keepalive_timeout=max(30.0, 3 * self._interval))

    async def run(self) -> None:
        """Probe forever (until cancelled)."""
        async with aiohttp.ClientSession(connector=self.connector()) as session:
            while True:
                try:
                    await self.probe_once(session)
                except Exception:  # a probe bug must not stop probing
                    logger.exception("health probing failed")
                await asyncio.sleep(self._interval)
