"""Idle CPU priority for background work that can wait, so it never delays request handling.

On Linux a thread put in the SCHED_IDLE class runs only when nothing else wants its core: a
request that arrives while it runs takes the core at once, instead of waiting for the
scheduler to give the background thread its share. No privilege is needed to lower a thread's
own priority (raising it back would need one, so such a thread stays idle for its life).
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor

logger = logging.getLogger(__name__)


def lower_current_thread() -> bool:
    """Put the calling thread in the SCHED_IDLE class; False where that is not available."""
    idle = getattr(os, "SCHED_IDLE", None)
    if idle is None:
        return False
    try:
        os.sched_setscheduler(0, idle, os.sched_param(0))  # 0: the calling thread
    except OSError as exc:
        logger.info("idle CPU priority refused (%s); background thread stays at normal", exc)
        return False
    return True


def is_idle_thread() -> bool:
    """True if the calling thread runs in the SCHED_IDLE class."""
    idle = getattr(os, "SCHED_IDLE", None)
    return idle is not None and os.sched_getscheduler(0) == idle


def idle_executor(name: str) -> ThreadPoolExecutor:
    """A one-thread executor whose thread runs at idle CPU priority (where available)."""
    return ThreadPoolExecutor(1, thread_name_prefix=name, initializer=lower_current_thread)
