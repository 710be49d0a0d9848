"""The errors every API of the gateway answers with: data path, admin, audit, explain."""

from __future__ import annotations

from collections.abc import Mapping


class ApiError(Exception):
    """A request refused by any of the gateway's APIs, answered with `status` and an
    OpenAI-style error naming the problem.

    `headers` go out with the answer (e.g. Retry-After on a 429).
    """

    def __init__(
        self,
        status: int,
        message: str,
        code: str,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.headers: Mapping[str, str] = headers or {}


class PolicyNotLoaded(RuntimeError):
    """No policy snapshot yet (not started, or the database down since start, no cache):
    every API answers 503 with Retry-After."""
