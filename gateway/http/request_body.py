"""Reading a request body within a size limit, for the data path and the APIs alike."""

from __future__ import annotations

from gateway.errors import ApiError
from gateway.http.asgi import Receive, Scope


def _declared_length(scope: Scope) -> int | None:
    for key, value in scope["headers"]:
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _too_large(limit: int) -> ApiError:
    return ApiError(413, f"request body exceeds the limit of {limit} bytes", "request_too_large")


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The whole request body; 413 if it is longer than `limit` bytes (before a byte is read
    when Content-Length says so), 400 if the client leaves before sending it all."""
    declared = _declared_length(scope)
    if declared is not None and declared > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ApiError(400, "client disconnected before sending the body", "disconnected")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)
