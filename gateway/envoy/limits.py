"""What one client may cost the Envoy listener: the Python data path's limits, in Envoy's terms.

The values are the settings the Python path enforces (`gateway.http.limits`); the answers to
breaking them (the JSON bodies) come from `gateway.envoy.local_replies`:

- request body over `max_body_bytes` -> 413 (the `buffer` filter, which also holds the body
  for the decision's model lookup);
- header block over `max_header_bytes` -> 431 (`max_request_headers_kb`: Envoy counts whole KiB,
  so the limit is rounded up to the next KiB);
- headers not complete within `header_timeout` -> 408 (`request_headers_timeout`);
- no body bytes for `body_idle_timeout` -> 408 (the connection manager's stream idle timeout;
  routes to regions put the upstream read timeout in its place once the request is decided);
- more than `max_connections` open client connections -> the new one is closed at once
  (`connection_limit` network filter: a TCP-level refusal, no HTTP answer).
"""

from __future__ import annotations

from dataclasses import dataclass

from envoy_data_plane.envoy.config.listener.v3 import Filter
from envoy_data_plane.envoy.extensions.filters.http.buffer.v3 import Buffer
from envoy_data_plane.envoy.extensions.filters.network.connection_limit.v3 import ConnectionLimit
from envoy_data_plane.envoy.extensions.filters.network.http_connection_manager.v3 import (
    HttpFilter,
)
from envoy_data_plane.google.protobuf import Any

from gateway.settings import Settings

KIB = 1024
MAX_HEADERS_KB = 8192
"""Envoy's ceiling for `max_request_headers_kb` (8 MiB)."""


@dataclass(frozen=True, slots=True)
class EdgeLimits:
    """The client-facing limits of the Envoy listener; the defaults are the settings' defaults."""

    max_body_bytes: int = 4 * 1024 * 1024
    max_header_bytes: int = 60 * 1024
    header_timeout: float = 10.0
    body_idle_timeout: float = 30.0
    max_connections: int = 10_000

    @classmethod
    def from_settings(cls, settings: Settings) -> EdgeLimits:
        """The limits the Python data path enforces with these settings."""
        return cls(
            max_body_bytes=settings.max_body_bytes,
            max_header_bytes=settings.max_request_header_bytes,
            header_timeout=settings.request_header_timeout,
            body_idle_timeout=settings.request_body_idle_timeout,
            max_connections=settings.max_connections,
        )

    @property
    def header_kib(self) -> int:
        """`max_header_bytes` in Envoy's unit, whole KiB (rounded up, within Envoy's range)."""
        return max(1, min(MAX_HEADERS_KB, -(-self.max_header_bytes // KIB)))


def body_limit_filter(limits: EdgeLimits) -> HttpFilter:
    """The HTTP filter that answers 413 to a body over the limit (and buffers the rest)."""
    return HttpFilter(
        name="envoy.filters.http.buffer",
        typed_config=Any.pack(Buffer(max_request_bytes=limits.max_body_bytes)),
    )


def connection_limit_filter(limits: EdgeLimits) -> Filter:
    """The listener's first network filter: beyond `max_connections`, a new one is closed."""
    return Filter(
        name="envoy.filters.network.connection_limit",
        typed_config=Any.pack(
            ConnectionLimit(
                stat_prefix="residency_connections", max_connections=limits.max_connections
            )
        ),
    )
