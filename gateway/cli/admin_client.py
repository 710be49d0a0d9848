"""A small HTTP client of the admin API, for the `gateway regions` commands."""

from __future__ import annotations

from typing import Any

import httpx

from gateway.cli.common import CliError
from gateway.settings import Settings

TIMEOUT_S = 10.0


class AdminError(CliError):
    """The admin API refused a request (`status`) or could not be reached (`status` 0)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


def _message(response: httpx.Response) -> str:
    try:
        error = response.json()["error"]
        text = str(error["message"])
    except (ValueError, KeyError, TypeError):
        text = response.text.strip()[:200] or response.reason_phrase
    return f"{text} (HTTP {response.status_code})"


class AdminClient:
    """Sends JSON requests with the operator token; errors become one-line AdminErrors."""

    def __init__(self, base_url: str, token: str) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=TIMEOUT_S,
        )

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> AdminClient:
        """A client for GATEWAY_ADMIN_URL with GATEWAY_ADMIN_TOKEN (required)."""
        settings = settings or Settings()
        if settings.admin_token is None or not settings.admin_token.get_secret_value():
            raise CliError(
                "no admin token: set GATEWAY_ADMIN_TOKEN to an operator or admin token "
                "(create one with `gateway tokens create --name NAME --role operator`)"
            )
        return cls(settings.admin_url, settings.admin_token.get_secret_value())

    def request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        if_match: str | None = None,
    ) -> Any:
        """The decoded JSON answer of a 2xx response."""
        headers = {"If-Match": f'"{if_match.strip(chr(34))}"'} if if_match else {}
        try:
            response = self._http.request(method, path, json=body, headers=headers)
        except httpx.HTTPError as exc:
            raise AdminError(f"cannot reach the admin API at {self.base_url}: {exc}") from None
        if response.status_code >= 400:
            raise AdminError(_message(response), response.status_code)
        try:
            return response.json()
        except ValueError:
            raise AdminError(
                f"{method} {path}: the answer is not JSON (is {self.base_url} a gateway?)",
                response.status_code,
            ) from None
