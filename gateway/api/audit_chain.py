"""HTTP endpoints of the audit chain: public key, chain status (verify), signed exports.

All need an operator token with role auditor or admin (gateway.api.access.READ_AUDIT).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Query
from fastapi.responses import PlainTextResponse, StreamingResponse

from compliance.audit.export import FORMATS, parse_instant
from compliance.store.access_store import Principal
from compliance.store.errors import StoreError, StoreUnavailable
from gateway.api.access import READ_AUDIT, OperatorGate
from gateway.errors import ApiError

if TYPE_CHECKING:
    from compliance.audit.service import AuditChain

MEDIA_TYPES = {"csv": "text/csv; charset=utf-8", "jsonl": "application/jsonl"}


def _instant(value: str | None, name: str) -> datetime | None:
    try:
        return parse_instant(value, name)
    except ValueError as exc:
        raise ApiError(400, str(exc), "invalid_parameter", param=name) from None


def _unavailable(exc: Exception) -> ApiError:
    return ApiError(503, f"audit database unavailable: {exc}", "store_unavailable")


def _first_chunk(chunks: Iterator[bytes]) -> bytes:
    try:
        return next(chunks)
    except StopIteration:
        return b""


def router(chain: AuditChain, gate: OperatorGate) -> APIRouter:
    """GET /audit/public-key, /audit/chain/status, /audit/chain/receipt and /audit/export."""
    auditor = gate.requires(READ_AUDIT)
    api = APIRouter(prefix="/audit", tags=["audit chain"])

    @api.get("/public-key", response_class=PlainTextResponse)
    async def public_key(_: Principal = auditor) -> PlainTextResponse:
        """The Ed25519 public key (PEM) that verifies checkpoints and export manifests."""
        return PlainTextResponse(
            chain.public_pem,
            media_type="application/x-pem-file",
            headers={"X-Audit-Key-Id": chain.key_id},
        )

    @api.get("/chain/status")
    async def chain_status(
        max_age: float = Query(60.0, ge=0, description="reuse a verify result this recent"),
        _: Principal = auditor,
    ) -> dict[str, Any]:
        """The result of verifying the whole chain (cached up to `max_age` seconds)."""
        try:
            report = await asyncio.to_thread(chain.status, max_age)
        except (StoreUnavailable, StoreError) as exc:
            raise _unavailable(exc) from None
        return report.to_dict()

    @api.get("/chain/receipt")
    async def chain_receipt(_: Principal = auditor) -> dict[str, Any]:
        """The receipt of the newest signed checkpoint, for an auditor to keep outside the
        database (`gateway audit verify --since-checkpoint FILE` detects a rollback past it)."""
        try:
            latest = await asyncio.to_thread(chain.latest_checkpoint)
        except (StoreUnavailable, StoreError) as exc:
            raise _unavailable(exc) from None
        if latest is None:
            raise ApiError(404, "no signed checkpoint yet", "not_found")
        return latest.receipt()

    @api.get("/export")
    async def export(
        format: str = Query(..., description="csv or jsonl"),
        since: str | None = Query(None, description="ISO 8601 date or time (inclusive)"),
        until: str | None = Query(None, description="ISO 8601 date or time (exclusive)"),
        _: Principal = auditor,
    ) -> StreamingResponse:
        """The period's chain entries, streamed, closed by a signed manifest line."""
        if format not in FORMATS:
            raise ApiError(
                400, f"format: must be one of {', '.join(FORMATS)}", "invalid_parameter", "format"
            )
        start, end = _instant(since, "since"), _instant(until, "until")
        chunks = chain.export(format, start, end)  # type: ignore[arg-type]
        try:  # the first chunk opens the read: a database outage is still a clean 503
            first = await asyncio.to_thread(_first_chunk, chunks)
        except (StoreUnavailable, StoreError) as exc:
            raise _unavailable(exc) from None

        def body() -> Iterator[bytes]:
            yield first
            yield from chunks

        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        return StreamingResponse(
            body(),
            media_type=MEDIA_TYPES[format],
            headers={"Content-Disposition": f'attachment; filename="audit-{stamp}.{format}"'},
        )

    return api
