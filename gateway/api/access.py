"""Role checks for the admin and audit APIs: 401 without a valid operator token, 403 otherwise.

Tenant API keys never reach these endpoints: they are recognised and refused explicitly.
Every refusal is logged (with the path and reason, never the token). A wrong token counts
against the caller's address (gateway.auth_throttle); a throttled address gets 429. When the
database cannot be asked about a token, the answer is 503, never 500.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Depends, Request

from compliance.store.access_store import AccessStore, Principal, Role
from compliance.store.errors import StoreError, StoreUnavailable
from gateway.auth_throttle import AuthGuard
from gateway.errors import ApiError
from gateway.intake import bearer_token
from gateway.routing.snapshot import RoutingSnapshot

logger = logging.getLogger("gateway.api.access")

READ_AUDIT = frozenset({Role.AUDITOR, Role.ADMIN})
WRITE_REGIONS = frozenset({Role.ADMIN, Role.OPERATOR})
READ_CONFIG = frozenset({Role.ADMIN, Role.OPERATOR, Role.AUDITOR})
WRITE_POLICY = frozenset({Role.ADMIN})


def _refuse(request: Request, status: int, message: str, code: str) -> ApiError:
    client = request.client.host if request.client else "-"
    logger.warning(
        "access refused: %s %s from %s: %s", request.method, request.url.path, client, message
    )
    return ApiError(status, message, code)


def require(
    roles: frozenset[Role],
    store: Callable[[], AccessStore],
    snapshot: Callable[[], RoutingSnapshot],
    guard: Callable[[], AuthGuard | None] = lambda: None,
) -> Callable[[Request], Awaitable[Principal]]:
    """A FastAPI dependency admitting operator tokens whose role is in `roles`."""
    allowed = ", ".join(sorted(r.value for r in roles))

    async def dependency(request: Request) -> Principal:
        throttle = guard()
        if throttle is not None:
            throttle.check(request.scope)
        token = bearer_token(request.scope)
        if token is None:
            raise _refuse(
                request,
                401,
                "missing operator token: send 'Authorization: Bearer <token>'",
                "missing_token",
            )
        if snapshot().policy.tenant_for_key(token) is not None:
            raise _refuse(
                request,
                403,
                "tenant API keys cannot use admin or audit endpoints",
                "tenant_key_refused",
            )
        try:
            principal = await asyncio.to_thread(store().authenticate, token)
        except (StoreUnavailable, StoreError) as exc:
            # Unknown whether the token is good: not counted as a failure.
            raise _refuse(
                request,
                503,
                f"policy database unavailable, cannot check the operator token: {exc}",
                "database_unavailable",
            ) from None
        if principal is None:
            if throttle is not None:
                throttle.failed(request.scope, token)
            raise _refuse(request, 401, "invalid or revoked operator token", "invalid_token")
        if principal.role not in roles:
            raise _refuse(
                request,
                403,
                f"role {principal.role.value} may not do this (needs one of: {allowed})",
                "forbidden",
            )
        request.state.principal = principal
        return principal

    return dependency


class OperatorGate:
    """Role checks over one token store, the routing snapshot (to recognise tenant keys) and
    the failed-authentication throttle."""

    def __init__(
        self,
        store: AccessStore,
        snapshot: Callable[[], RoutingSnapshot],
        guard: AuthGuard | None = None,
    ) -> None:
        self._store = store
        self._snapshot = snapshot
        self._guard = guard

    def requires(self, roles: frozenset[Role]) -> Any:
        """`Depends(...)` admitting operator tokens whose role is in `roles`."""
        return Depends(require(roles, lambda: self._store, self._snapshot, lambda: self._guard))
