"""Audit read API for auditors and admins: search, one decision explained, period reports,
configuration changes (gateway.api.audit_changes).

Every endpoint requires an operator token with role auditor or admin (gateway.api.access);
tenant API keys are refused. Also serves the auditors' web console (static files).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from starlette.staticfiles import StaticFiles
from starlette.types import Message, Receive, Scope, Send

from compliance.audit_query.explain import decision_document
from compliance.audit_query.filters import (
    DecisionFilter,
    FilterError,
    parse_filter,
    parse_limit,
)
from compliance.audit_query.reader import AuditReader
from compliance.store.access_store import Principal
from gateway.api import audit_changes as audit_changes_api
from gateway.api.access import READ_AUDIT, OperatorGate
from gateway.api.audit_http import bad_filter, read_off_loop, refuse_unknown
from gateway.errors import ApiError

if TYPE_CHECKING:
    from sqlalchemy import Engine

CONSOLE_DIR = Path(__file__).resolve().parents[1] / "console"
FILTER_PARAMS = frozenset(
    {
        "since",
        "until",
        "tenant",
        "client_country",
        "jurisdiction",
        "data_class",
        "region",
        "outcome",
    }
)
_SEARCH_PARAMS = FILTER_PARAMS | {"limit", "cursor"}
_CONSOLE_HEADERS = [
    # The console loads nothing from elsewhere and writes data only as text.
    (b"content-security-policy", b"default-src 'self'; img-src 'self' data:; base-uri 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-cache"),
]


def _spec(request: Request, allowed: frozenset[str]) -> DecisionFilter:
    """Filters from the query string; unknown parameters are refused (a typo must not widen)."""
    refuse_unknown(request, allowed)
    params = request.query_params
    try:
        return parse_filter(**{name: params.get(name) for name in FILTER_PARAMS})
    except FilterError as exc:
        raise bad_filter(exc) from None


def router(engine: Engine, gate: OperatorGate) -> APIRouter:
    """The /audit read endpoints over the gateway's database."""
    reader = AuditReader(engine)
    auditor = gate.requires(READ_AUDIT)
    api = APIRouter(prefix="/audit", tags=["audit"])

    @api.get("/decisions")
    async def decisions(request: Request, _: Principal = auditor) -> dict[str, Any]:
        """Routing records matching the filters, newest first, one page at a time."""
        spec = _spec(request, _SEARCH_PARAMS)
        try:
            limit = parse_limit(request.query_params.get("limit"))
        except FilterError as exc:
            raise bad_filter(exc) from None
        page = await read_off_loop(reader.search, spec, limit, request.query_params.get("cursor"))
        return {
            "decisions": page.records,
            "next_cursor": page.next_cursor,
            "limit": limit,
            "filters": spec.as_query(),
        }

    @api.get("/decisions/{decision_id}")
    async def decision(decision_id: str, _: Principal = auditor) -> dict[str, Any]:
        """One routing record with its explanation in plain words and its trace id."""
        record = await read_off_loop(reader.get, decision_id)
        if record is None:
            raise ApiError(404, f"no routing record with decision id {decision_id!r}", "not_found")
        return decision_document(record)

    @api.get("/reports")
    async def reports(request: Request, _: Principal = auditor) -> dict[str, Any]:
        """Jurisdiction x region matrix, refusals by reason, re-evaluation, for a period."""
        spec = _spec(request, FILTER_PARAMS)
        report = await read_off_loop(reader.report, spec)
        return report.to_dict()

    audit_changes_api.add_routes(api, reader, auditor)
    return api


class _ConsoleFiles:
    """The console's static files with headers that keep the page self-contained."""

    def __init__(self) -> None:
        self._files = StaticFiles(directory=CONSOLE_DIR, html=True)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *_CONSOLE_HEADERS]
            await send(message)

        await self._files(scope, receive, send_with_headers)


def console_app() -> _ConsoleFiles:
    """The auditors' web console, to mount at /console (it needs no token to load)."""
    return _ConsoleFiles()
