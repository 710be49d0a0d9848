"""Limits the HTTP server enforces on every client connection, and the file descriptors they need.

The values come from `Settings`; `install` runs in each worker (from the app factory) before the
server accepts connections, and `gateway.http.protocol` reads them with `current`.
"""

from __future__ import annotations

import logging
import resource
from dataclasses import dataclass

from gateway.settings import Settings

logger = logging.getLogger(__name__)

FD_RESERVE = 256
"""Descriptors kept for all but client and upstream sockets: database, spool, probes, logs."""
REFUSAL_LINGER_SLOTS = 64
"""Refused connections that may linger at once (so that their 503 arrives); beyond, closed."""
LINGER_SECONDS = 2.0
"""How long a rejected connection is read and discarded so that its error answer is not lost to
a TCP reset (closing with unread input sends RST, and a client may then drop the answer)."""
OPEN_FILES_CEILING = 1 << 20


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """What one client connection may cost; the defaults are the settings' defaults."""

    max_header_bytes: int = 60 * 1024
    header_timeout: float = 10.0
    body_idle_timeout: float = 30.0
    max_connections: int = 10_000


_current = HttpLimits()


def current() -> HttpLimits:
    """The limits in force in this process."""
    return _current


def configure(limits: HttpLimits) -> None:
    """Put `limits` in force for connections accepted from now on."""
    global _current
    _current = limits


def raise_open_files_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit; return the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = OPEN_FILES_CEILING if hard == resource.RLIM_INFINITY else hard
    if soft == resource.RLIM_INFINITY or soft >= target:
        return OPEN_FILES_CEILING if soft == resource.RLIM_INFINITY else soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as exc:  # e.g. above fs.nr_open: keep the soft limit
        logger.warning("could not raise the open-files limit from %d to %d: %s", soft, target, exc)
        return soft
    return target


def connection_cap(wanted: int, upstream_connections: int, open_files: int) -> int:
    """The most client connections one worker can hold without running out of descriptors.

    Each client connection may hold one upstream connection (at most `upstream_connections`),
    refused connections may linger briefly, and FD_RESERVE stay free for everything else.
    """
    room = open_files - FD_RESERVE - REFUSAL_LINGER_SLOTS
    fit = room - upstream_connections if room >= 2 * upstream_connections else room // 2
    return max(1, min(wanted, fit))


def install(settings: Settings) -> HttpLimits:
    """Raise the open-files limit and put the settings' HTTP limits in force in this process."""
    open_files = raise_open_files_limit()
    cap = connection_cap(settings.max_connections, settings.upstream_max_connections, open_files)
    if cap < settings.max_connections:
        logger.warning(
            "max_connections lowered from %d to %d: the open-files limit is %d",
            settings.max_connections,
            cap,
            open_files,
        )
    limits = HttpLimits(
        max_header_bytes=settings.max_request_header_bytes,
        header_timeout=settings.request_header_timeout,
        body_idle_timeout=settings.request_body_idle_timeout,
        max_connections=cap,
    )
    configure(limits)
    return limits
