"""What the audit read endpoints share: filter errors as 400, unknown parameters refused,
blocking reads run off the event loop with store failures as 503."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import Request

from compliance.audit_query.filters import FilterError
from compliance.store.errors import StoreError, StoreUnavailable
from gateway.errors import ApiError

T = TypeVar("T")


def bad_filter(exc: FilterError) -> ApiError:
    """400 naming the filter and the problem."""
    return ApiError(400, str(exc), "invalid_filter", param=exc.field)


def refuse_unknown(request: Request, allowed: frozenset[str]) -> None:
    """400 for a query parameter not in `allowed` (a typo must not widen a search)."""
    unknown = sorted(set(request.query_params) - allowed)
    if unknown:
        raise ApiError(
            400,
            f"unknown query parameter {unknown[0]!r}; expected: {', '.join(sorted(allowed))}",
            "invalid_filter",
            param=unknown[0],
        )


async def read_off_loop(call: Callable[..., T], *args: Any) -> T:
    """Run a blocking database read off the event loop; store failures become 503."""
    try:
        return await asyncio.to_thread(call, *args)
    except FilterError as exc:
        raise bad_filter(exc) from None
    except (StoreUnavailable, StoreError) as exc:
        raise ApiError(503, f"audit database unavailable: {exc}", "store_unavailable") from None
