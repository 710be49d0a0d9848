"""A simulator's mutable state (behaviour, counters) and its OpenAI-style API error."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from typing import Any

from aiohttp import web

from regions.simulator import responses as r
from regions.simulator.config import Behaviour, SimulatorConfig


class ApiError(Exception):
    """Raised by handlers; rendered as an OpenAI-style error response."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str | None = None,
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = r.error_body(
            message, type_=type_ or r.error_type_for_status(status), code=code, param=param
        )


class SimulatorState:
    """Mutable state of one simulator app: current behaviour and request counters.

    ``aborted`` counts /v1 requests whose client (the gateway) closed the connection before
    the answer was complete: the simulator stopped working on them.
    """

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.behaviour = config.behaviour
        self.models = frozenset(config.models)
        self.created = int(time.time())
        self.random = random.Random(config.seed)
        self.requests = 0
        self.by_path: dict[str, int] = {}
        self.in_flight = 0
        self.aborted = 0
        self.closing = False
        self._changed = asyncio.Event()

    def set_behaviour(self, behaviour: Behaviour) -> None:
        """Install new behaviour and wake requests parked by ``hang``."""
        self.behaviour = behaviour
        self._changed.set()
        self._changed = asyncio.Event()

    def reset(self) -> None:
        """Restore startup behaviour and zero the request counters."""
        self.requests = 0
        self.by_path = {}
        self.aborted = 0
        self.set_behaviour(self.config.behaviour)

    async def wait_for_change(self, max_wait: float) -> None:
        """Return when behaviour changes or after ``max_wait`` seconds."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), max_wait)

    def snapshot(self) -> dict[str, Any]:
        """``GET /_sim/state`` payload."""
        return {
            "region": self.config.region_id,
            "models": list(self.config.models),
            **self.behaviour.to_dict(),
        }

    def stats(self) -> dict[str, Any]:
        """``GET /_sim/stats`` payload."""
        return {
            "region": self.config.region_id,
            "instance": self.config.instance,
            "requests": self.requests,
            "by_path": dict(self.by_path),
            "in_flight": self.in_flight,
            "aborted": self.aborted,
        }


STATE_KEY = web.AppKey("simulator_state", SimulatorState)
