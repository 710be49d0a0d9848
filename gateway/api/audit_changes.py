"""GET /audit/changes and /audit/changes/{change_id}: configuration changes in the chain.

Same access as the decision search (operator token, role auditor or admin), same rules:
unknown query parameters are refused, pages continue with `next_cursor`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from compliance.audit_query.changes import (
    FILTER_NAMES,
    ChangeFilter,
    change_document,
    parse_change_filter,
)
from compliance.audit_query.filters import FilterError, parse_limit
from compliance.audit_query.reader import AuditReader
from compliance.store.access_store import Principal
from gateway.api.audit_http import bad_filter, read_off_loop, refuse_unknown
from gateway.errors import ApiError

_PARAMS = frozenset(FILTER_NAMES) | {"limit", "cursor"}


def _spec(request: Request) -> ChangeFilter:
    refuse_unknown(request, _PARAMS)
    params = request.query_params
    try:
        return parse_change_filter(**{name: params.get(name) for name in FILTER_NAMES})
    except FilterError as exc:
        raise bad_filter(exc) from None


def add_routes(api: APIRouter, reader: AuditReader, auditor: Any) -> None:
    """Add the change endpoints to the /audit router (`auditor`: the access dependency)."""

    @api.get("/changes")
    async def changes(request: Request, _: Principal = auditor) -> dict[str, Any]:
        """Configuration changes (regions, tenants, regimes, operator tokens), newest first:
        who, when, which object, which fields; filters since, until, actor, object_type,
        object_id, action."""
        spec = _spec(request)
        try:
            limit = parse_limit(request.query_params.get("limit"))
        except FilterError as exc:
            raise bad_filter(exc) from None
        page = await read_off_loop(
            reader.search_changes, spec, limit, request.query_params.get("cursor")
        )
        return {
            "changes": page.changes,
            "next_cursor": page.next_cursor,
            "limit": limit,
            "filters": spec.as_query(),
        }

    @api.get("/changes/{change_id}")
    async def change(change_id: str, _: Principal = auditor) -> dict[str, Any]:
        """One change: before and after, each changed field, legal facts changed, plain words."""
        if not change_id.isdigit() or len(change_id) > 18:
            raise ApiError(
                400, f"change id {change_id!r}: must be a whole number", "invalid_filter"
            )
        record = await read_off_loop(reader.get_change, int(change_id))
        if record is None:
            raise ApiError(404, f"no configuration change {change_id}", "not_found")
        return change_document(record)
