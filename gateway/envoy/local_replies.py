"""Envoy's own answers (local replies) in the Python data path's words: OpenAI-style JSON errors.

Envoy answers some requests itself: a region it could not reach, a header block over the limit,
a client too slow. Its default bodies are plain text; the connection manager's
`local_reply_config` rewrites each such answer, picked by Envoy's response flags or status, into
the status, JSON body and headers `gateway.http` gives in the same situation. The decision
filter's own refusals (400/401/404/405/451/503 from Lua) carry none of these flags or statuses,
so they pass unchanged. The first matching mapper wins.
"""

from __future__ import annotations

import orjson
from envoy_data_plane.envoy.config.accesslog.v3 import (
    AccessLogFilter,
    AndFilter,
    ComparisonFilter,
    ComparisonFilterOp,
    HeaderFilter,
    OrFilter,
    ResponseFlagFilter,
    StatusCodeFilter,
)
from envoy_data_plane.envoy.config.core.v3 import (
    DataSource,
    HeaderValue,
    HeaderValueOption,
    HeaderValueOptionHeaderAppendAction,
    RuntimeUInt32,
    SubstitutionFormatString,
)
from envoy_data_plane.envoy.config.route.v3 import HeaderMatcher
from envoy_data_plane.envoy.extensions.filters.network.http_connection_manager.v3 import (
    LocalReplyConfig,
    ResponseMapper,
)

from gateway.envoy.limits import EdgeLimits

SELECTOR = "x-residency-region"
"""Set on the request by the decision filter: present once a region was chosen."""
LOCAL_REPLY_HEADER = "x-residency-local-reply"
"""Marks a rewritten upstream failure for the decision filter's response code, which removes it
(and names no region: none served the request)."""
ANSWERED_HEADER = "x-residency-answered"
"""Set on the request by the decision filter when it answers the request itself."""
DECISION_FRAGMENT = "%DYNAMIC_METADATA(envoy.filters.http.lua:explained)%"
"""`,"reasons":[...],"residency":{...}`: the decision's explanation, rendered as JSON members by
the decision filter (empty where no decision was made: `omit_empty_values`)."""
UPSTREAM_FAILURE_FLAGS = ("UF", "UR", "UC", "URX", "UT", "UO", "UMSDR", "UPE", "DF", "LR")
"""Connect failure, reset, termination, retries exhausted, timeout, overflow, ...: the request was
decided but no region gave an answer (a region's own 5xx is relayed as the Python path does)."""


def _text(value: str) -> str:
    """`value` as a JSON string literal, with `%` escaped for Envoy's format strings."""
    return orjson.dumps(value).decode().replace("%", "%%")


def _error_body(message: str, error_type: str, code: str, decided: bool = False) -> str:
    """An OpenAI-style error body as an Envoy format string; `message` may hold %OPERATORS%."""
    extra = ""
    if decided:
        extra = f',"decision_id":"%REQ(X-REQUEST-ID)%"{DECISION_FRAGMENT}'
    return (
        f'{{"error":{{"message":"{message}","type":{_text(error_type)},"param":null,'
        f'"code":{_text(code)}{extra}}}}}'
    )


def _status(code: int) -> AccessLogFilter:
    return AccessLogFilter(
        status_code_filter=StatusCodeFilter(
            comparison=ComparisonFilter(
                op=ComparisonFilterOp.EQ,
                value=RuntimeUInt32(default_value=code, runtime_key="residency.local_reply_status"),
            )
        )
    )


def _flags(*flags: str) -> AccessLogFilter:
    return AccessLogFilter(response_flag_filter=ResponseFlagFilter(flags=list(flags)))


def _decided() -> AccessLogFilter:
    return AccessLogFilter(header_filter=HeaderFilter(header=HeaderMatcher(name=SELECTOR)))


def _not_answered_by_filter() -> AccessLogFilter:
    return AccessLogFilter(
        header_filter=HeaderFilter(
            header=HeaderMatcher(name=ANSWERED_HEADER, present_match=True, invert_match=True)
        )
    )


def _any(*filters: AccessLogFilter) -> AccessLogFilter:
    return AccessLogFilter(or_filter=OrFilter(filters=list(filters)))


def _all(*filters: AccessLogFilter) -> AccessLogFilter:
    return AccessLogFilter(and_filter=AndFilter(filters=list(filters)))


def _header(name: str, value: str) -> HeaderValueOption:
    return HeaderValueOption(
        header=HeaderValue(key=name, value=value),
        append_action=HeaderValueOptionHeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD,
    )


def _mapper(
    when: AccessLogFilter,
    status: int | None,
    body: str,
    headers: tuple[HeaderValueOption, ...] = (),
) -> ResponseMapper:
    return ResponseMapper(
        filter=when,
        status_code=status,
        body_format_override=SubstitutionFormatString(
            text_format_source=DataSource(inline_string=body),
            content_type="application/json",
            omit_empty_values=True,
        ),
        headers_to_add=list(headers),
    )


def _failed_regions() -> str:
    return f"every allowed region failed: %REQ({SELECTOR.upper()})% (%RESPONSE_FLAGS%)"


def local_reply_config(limits: EdgeLimits) -> LocalReplyConfig:
    """The connection manager's local reply rewriting, for these limits."""
    decided_headers = (
        _header("x-residency-decision", "%REQ(X-REQUEST-ID)%"),
        _header(LOCAL_REPLY_HEADER, "1"),
    )
    return LocalReplyConfig(
        mappers=[
            _mapper(
                _status(431),
                431,
                _error_body(
                    "request header block (request line and headers) exceeds the limit of "
                    f"{limits.header_kib * 1024} bytes",
                    "invalid_request_error",
                    "request_headers_too_large",
                ),
            ),
            # A decided request idle past the timeout is waiting for a region, not the client.
            _mapper(
                _all(_flags("SI"), _decided()),
                502,
                _error_body(_failed_regions(), "upstream_error", "all_attempts_failed", True),
                decided_headers,
            ),
            _mapper(
                _all(_status(408), _flags("SI")),
                408,
                _error_body(
                    f"request body stalled: no data for {limits.body_idle_timeout:g} seconds",
                    "invalid_request_error",
                    "request_timeout",
                ),
            ),
            _mapper(
                _status(408),
                408,
                _error_body(
                    f"request header block not received within {limits.header_timeout:g} seconds",
                    "invalid_request_error",
                    "request_timeout",
                ),
            ),
            _mapper(
                _status(413),
                413,
                _error_body(
                    f"request body exceeds the limit of {limits.max_body_bytes} bytes",
                    "invalid_request_error",
                    "request_too_large",
                ),
            ),
            _mapper(
                _flags("UH"),
                503,
                _error_body(
                    f"every allowed region is unavailable (%REQ({SELECTOR.upper()})%: "
                    "no healthy upstream)",
                    "region_unavailable",
                    "no_healthy_region",
                    True,
                ),
                decided_headers,
            ),
            # NC (no cluster): the route names a cluster this Envoy does not run. The ADS server
            # pushes make-before-break so this should not happen; if it does, no region was tried.
            _mapper(
                _flags("NC"),
                503,
                _error_body(
                    f"no allowed region is reachable from this gateway right now "
                    f"(%REQ({SELECTOR.upper()})%: not configured); retry shortly",
                    "region_unavailable",
                    "region_not_configured",
                    True,
                ),
                decided_headers,
            ),
            _mapper(
                _flags(*UPSTREAM_FAILURE_FLAGS),
                502,
                _error_body(_failed_regions(), "upstream_error", "all_attempts_failed", True),
                decided_headers,
            ),
            # HTTP Envoy could not parse (400; 426 for an unknown version); the decision
            # filter marks the requests it answers itself.
            _mapper(
                _all(_any(_status(400), _status(426)), _not_answered_by_filter()),
                400,
                _error_body(
                    "malformed HTTP request: %RESPONSE_CODE_DETAILS%",
                    "invalid_request_error",
                    "invalid_http_request",
                ),
            ),
        ]
    )
