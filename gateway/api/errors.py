"""Error mapping: whatever an API raises is answered as an OpenAI-style JSON error, never a
stack trace."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway.errors import ApiError, PolicyNotLoaded
from gateway.http.asgi import JsonResponse, openai_error
from gateway.http.dispatch import POLICY_NOT_LOADED, RETRY_AFTER


async def _api_error(_: Request, exc: ApiError) -> JsonResponse:
    body = openai_error(exc.message, "invalid_request_error", exc.code, param=exc.param)
    return JsonResponse(body, status_code=exc.status, headers=dict(exc.headers))


async def _not_loaded(_: Request, exc: PolicyNotLoaded) -> JsonResponse:
    headers = {RETRY_AFTER[0].decode(): RETRY_AFTER[1].decode()}
    return JsonResponse(POLICY_NOT_LOADED, status_code=503, headers=headers)


async def _http_error(_: Request, exc: StarletteHTTPException) -> JsonResponse:
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    body = openai_error(str(exc.detail), "invalid_request_error", code)
    return JsonResponse(body, status_code=exc.status_code, headers=exc.headers)


async def _invalid(_: Request, exc: RequestValidationError) -> JsonResponse:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"] if p != "body")
    message = f"{where}: {first['msg']}" if where else str(first["msg"])
    given = first.get("input")
    if isinstance(given, str | int | float) and len(str(given)) <= 200:
        message += f" (got {given!r})"
    return JsonResponse(openai_error(message, "invalid_request_error", "invalid_body"), 400)


def install_error_handlers(api: FastAPI) -> None:
    """Answer ApiError, PolicyNotLoaded, routing errors (404/405) and invalid bodies."""
    api.add_exception_handler(ApiError, _api_error)  # type: ignore[arg-type]
    api.add_exception_handler(PolicyNotLoaded, _not_loaded)  # type: ignore[arg-type]
    api.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    api.add_exception_handler(RequestValidationError, _invalid)  # type: ignore[arg-type]
