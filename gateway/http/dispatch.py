"""The front door: inference paths go straight to the pure-ASGI proxy, the rest to FastAPI."""

from __future__ import annotations

from collections.abc import Callable

from gateway.http.asgi import ASGIApp, Receive, Scope, Send, openai_error, send_json
from gateway.http.proxy import INFERENCE_PATHS

POLICY_NOT_LOADED = openai_error(
    "policy not loaded: the gateway has not read its policy from the database yet",
    "service_unavailable",
    "policy_not_loaded",
)
"""The body of every 503 answered before the first policy snapshot is loaded."""
RETRY_AFTER = (b"retry-after", b"5")
"""Sent with POLICY_NOT_LOADED."""


class Dispatcher:
    """Sends inference paths to `proxy` and everything else to `api`.

    Until a policy snapshot is loaded (database down since start, no usable cache), inference
    gets 503 here (the API's routes raise PolicyNotLoaded): nothing is decided without one.
    """

    def __init__(self, policy_loaded: Callable[[], bool], proxy: ASGIApp, api: ASGIApp) -> None:
        self._policy_loaded = policy_loaded
        self._proxy = proxy
        self._api = api

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in INFERENCE_PATHS:
            if not self._policy_loaded():
                await send_json(send, 503, POLICY_NOT_LOADED, [RETRY_AFTER])
                return
            await self._proxy(scope, receive, send)
        else:
            await self._api(scope, receive, send)
