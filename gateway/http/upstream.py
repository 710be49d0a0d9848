"""The upstream port: one small interface to send a request to a region, aiohttp behind it.

aiohttp errors are translated here, once, into `UpstreamError`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

import aiohttp

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
_REPLACED_BY_SERVER = frozenset({b"date", b"server"})
DROPPED_RESPONSE_HEADERS = HOP_BY_HOP | _REPLACED_BY_SERVER


class FailureKind(StrEnum):
    """Why an upstream attempt failed."""

    CONNECT = "connect_error"
    TIMEOUT = "timeout"
    PROTOCOL = "protocol_error"


class UpstreamError(Exception):
    """A region could not be reached or broke the exchange."""

    def __init__(self, kind: FailureKind, detail: str) -> None:
        super().__init__(f"{kind.value}: {detail}")
        self.kind = kind
        self.detail = detail


class UpstreamResponse(Protocol):
    """A response whose headers have arrived; the body is read chunk by chunk."""

    @property
    def status(self) -> int:
        """HTTP status from the region."""
        ...

    @property
    def headers(self) -> Sequence[tuple[bytes, bytes]]:
        """Response headers, hop-by-hop ones removed."""
        ...

    async def read(self) -> bytes:
        """The next body bytes as they arrive, b"" at the end; UpstreamError if it breaks off.

        (A coroutine, not an async generator: an abandoned generator costs a thread-safe
        loop wake-up when it is finalised, on every request.)
        """
        ...

    def release(self) -> None:
        """Give the connection back (or drop it if the body was not read)."""
        ...


class UpstreamClient(Protocol):
    """Sends one request to a region and returns once response headers arrive."""

    async def send(
        self, url: str, headers: Sequence[tuple[str, str]], body: bytes
    ) -> UpstreamResponse:
        """POST/GET `body` to `url` (GET when body is empty); raise UpstreamError on failure."""
        ...

    async def close(self) -> None:
        """Close pooled connections."""
        ...


@dataclass(frozen=True, slots=True)
class UpstreamTimeouts:
    """Connect, time-to-headers and between-chunks limits, in seconds."""

    connect: float = 2.0
    first_byte: float = 60.0
    read: float = 120.0


class _AiohttpResponse:
    __slots__ = ("_headers", "_response", "_timeout")

    def __init__(self, response: aiohttp.ClientResponse, read_timeout: float) -> None:
        self._response = response
        self._timeout = read_timeout
        self._headers = [
            (k.lower(), v)
            for k, v in response.raw_headers
            if k.lower() not in DROPPED_RESPONSE_HEADERS
        ]

    @property
    def status(self) -> int:
        return self._response.status

    @property
    def headers(self) -> Sequence[tuple[bytes, bytes]]:
        return self._headers

    async def read(self) -> bytes:
        try:
            async with asyncio.timeout(self._timeout):
                return await self._response.content.readany()
        except TimeoutError:
            raise UpstreamError(FailureKind.TIMEOUT, "no body bytes within read timeout") from None
        except (aiohttp.ClientError, ConnectionError) as exc:
            raise UpstreamError(FailureKind.PROTOCOL, str(exc) or type(exc).__name__) from None

    def release(self) -> None:
        if self._response.content.at_eof():
            self._response.release()
        else:
            self._response.close()  # an unfinished answer: the connection is not reused


class AiohttpUpstream:
    """UpstreamClient over one long-lived aiohttp session with a bounded connection pool.

    aiohttp never resends a POST (only idempotent methods are retried on a stale connection),
    and waiting for a pooled connection counts against the connect timeout.
    """

    def __init__(
        self, timeouts: UpstreamTimeouts, max_connections: int = 1024, per_region: int = 1024
    ) -> None:
        self._timeouts = timeouts
        self._max_connections = max_connections
        self._per_region = min(per_region, max_connections)
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections,
                limit_per_host=self._per_region,
                keepalive_timeout=30,
                ttl_dns_cache=300,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept", "Content-Type"),
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    sock_connect=self._timeouts.connect,
                    connect=self._timeouts.connect,
                ),
            )
        return self._session

    async def send(
        self, url: str, headers: Sequence[tuple[str, str]], body: bytes
    ) -> UpstreamResponse:
        method = "POST" if body else "GET"
        session = self._get_session()
        try:
            async with asyncio.timeout(self._timeouts.first_byte):
                response = await session.request(
                    method, url, data=body or None, headers=headers, allow_redirects=False
                )
        except aiohttp.ConnectionTimeoutError as exc:  # connecting, or waiting for a free slot
            raise UpstreamError(FailureKind.CONNECT, str(exc) or "connect timed out") from None
        except TimeoutError:
            raise UpstreamError(FailureKind.TIMEOUT, "no response headers in time") from None
        except aiohttp.ClientConnectorError as exc:
            raise UpstreamError(FailureKind.CONNECT, str(exc)) from None
        except (aiohttp.ClientError, ConnectionError) as exc:
            raise UpstreamError(FailureKind.PROTOCOL, str(exc) or type(exc).__name__) from None
        return _AiohttpResponse(response, self._timeouts.read)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
