"""Policy change feed: PostgreSQL LISTEN/NOTIFY wakes a replica's snapshot refresh at once.

Every write that bumps `policy_version` also NOTIFYs `POLICY_CHANNEL` (delivered on commit, see
PolicyStore.bump_version). Each replica keeps one dedicated listening connection and calls
`on_change` for every notification. It also calls `on_change` whenever the connection is
(re)established, because changes committed while nobody listened produce no notification, and
whenever it is lost, so the refresh notices a database outage at once instead of at the next
periodic check. The periodic version check stays as the safety net for anything missed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import psycopg
from sqlalchemy.engine import make_url

logger = logging.getLogger(__name__)

POLICY_CHANNEL = "residency_policy"
"""The NOTIFY channel of policy changes; the payload is the new policy version."""

CONNECT_TIMEOUT_S = 5
APPLICATION_NAME = "residency-gateway-change-feed"
"""How the listening connection shows in pg_stat_activity."""
_FIRST_RETRY_S = 0.1


def supports_notify(database_url: str) -> bool:
    """True for PostgreSQL URLs (any driver): the only backend with LISTEN/NOTIFY."""
    return make_url(database_url).get_backend_name() == "postgresql"


def libpq_conninfo(database_url: str) -> str:
    """The libpq connection string of a SQLAlchemy PostgreSQL URL (password kept)."""
    url = make_url(database_url)
    if url.get_backend_name() != "postgresql":
        raise ValueError(f"not a PostgreSQL URL: {url.render_as_string(hide_password=True)}")
    query = dict(url.query)
    query.setdefault("connect_timeout", str(CONNECT_TIMEOUT_S))
    query.setdefault("application_name", APPLICATION_NAME)
    return url.set(drivername="postgresql", query=query).render_as_string(hide_password=False)


class ChangeFeed:
    """Listens on `POLICY_CHANNEL` over one dedicated connection, reconnecting after failures.

    `on_change` must be cheap and non-blocking (it runs on the event loop): it should only ask
    for a refresh, which checks the version itself, so duplicate calls are harmless.
    """

    def __init__(
        self,
        database_url: str,
        on_change: Callable[[], None],
        *,
        reconnect_max: float = 5.0,
        ping_interval: float = 10.0,
    ) -> None:
        self._conninfo = libpq_conninfo(database_url)
        self._on_change = on_change
        self._reconnect_max = reconnect_max
        self._ping_interval = ping_interval
        self.connected = False
        self.connects = 0
        self.notifications = 0
        self.last_error: str | None = None

    @property
    def state(self) -> str:
        """`listening` or `reconnecting` (for /readyz and metrics)."""
        return "listening" if self.connected else "reconnecting"

    async def run(self) -> None:
        """Listen until cancelled; every failure is logged and followed by a reconnect."""
        delay = _FIRST_RETRY_S
        while True:
            try:
                await self._listen()
            except (psycopg.Error, OSError, TimeoutError) as exc:
                error = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
                if self.connected or self.last_error is None:
                    logger.warning("policy change listener lost: %s; reconnecting", error)
                self.last_error = error
            except Exception as exc:  # a bug must not end listening for good
                logger.exception("policy change listener failed; reconnecting")
                self.last_error = repr(exc)
            was_connected, self.connected = self.connected, False
            if was_connected:
                delay = _FIRST_RETRY_S
                self._on_change()  # let the refresh find out whether the database is gone
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._reconnect_max)

    async def _listen(self) -> None:
        conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
        try:
            await conn.execute(f"LISTEN {POLICY_CHANNEL}")
            self.connected = True
            self.connects += 1
            self.last_error = None
            logger.info("listening for policy changes on channel %s", POLICY_CHANNEL)
            self._on_change()  # catch up with changes committed while nobody listened
            while True:
                async for _ in conn.notifies(timeout=self._ping_interval):
                    self.notifications += 1
                    self._on_change()
                # A quiet connection may be silently dead (no FIN from a lost peer): probe it.
                await asyncio.wait_for(conn.execute("SELECT 1"), self._ping_interval)
        finally:
            await conn.close()
