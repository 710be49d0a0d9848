"""Envoy's access log of residency decisions: one JSON line per request, written by Envoy.

The decision filter (decision.lua) puts the routing record's facts into dynamic metadata
(namespace `residency`); the listener's file access log writes them with Envoy's own account of
the outcome (the region that served, attempts, status, bytes, durations). The records shipper
(gateway.envoy.records_shipper) turns each line into a routing record in the audit chain.

Envoy's file logger buffers lines and writes them out every `--file-flush-interval-msec`
(Envoy's default: 10 s) or once `--file-flush-min-size-kb` (64 KiB) are buffered, and never
fsyncs: a `kill -9` of Envoy loses the lines of at most one flush interval, a host crash also
what the page cache held. `flush_args` shortens the interval.
"""

from __future__ import annotations

from envoy_data_plane.envoy.config.accesslog.v3 import AccessLog
from envoy_data_plane.envoy.config.core.v3 import SubstitutionFormatString
from envoy_data_plane.envoy.extensions.access_loggers.file.v3 import FileAccessLog
from envoy_data_plane.google.protobuf import Any, Struct

RECORD_NAMESPACE = "residency"
"""Dynamic metadata namespace of the record's facts (decision.lua's RECORD; the model comes from
json_to_metadata into the same namespace)."""

RECORD_FACTS = (
    "tenant",
    "data_class",
    "model",
    "client_country",
    "subject_country",
    "jurisdictions",
    "policy_version",
    "allowed",
    "order",
    "refusal",
)
"""Keys decision.lua sets (lists as comma-separated text; jurisdictions as COUNTRY:source)."""

MAX_FACT_CHARS = 4096
"""Longest value Envoy writes for one fact: the model comes from the client's body before it is
checked (a decision needs one of at most 256 characters), the region lists grow with the
catalog. Client-sent headers in the line are cut shorter still, so a line stays small."""

OUTCOME_FIELDS = {
    "decision_id": "%REQ(X-REQUEST-ID)%",
    "start_time": "%START_TIME(%Y-%m-%dT%H:%M:%S.%6fZ)%",
    "client_ip": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
    "method": "%REQ(:METHOD):16%",
    "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH):512%",
    "status": "%RESPONSE_CODE%",
    "flags": "%RESPONSE_FLAGS%",
    "details": "%RESPONSE_CODE_DETAILS%",
    "served_region": "%UPSTREAM_METADATA(residency:region)%",
    "upstream_cluster": "%UPSTREAM_CLUSTER%",
    "upstream_host": "%UPSTREAM_HOST%",
    "attempts": "%UPSTREAM_REQUEST_ATTEMPT_COUNT%",
    "bytes_received": "%BYTES_RECEIVED%",
    "bytes_sent": "%BYTES_SENT%",
    "duration_ms": "%DURATION%",
    "first_byte_ms": "%RESPONSE_DURATION%",
    "traceparent": "%REQ(TRACEPARENT):64%",
}
"""Envoy's outcome of the request, next to the decision's facts."""


def log_format() -> dict[str, str]:
    """The JSON line's fields: name -> Envoy command operator."""
    facts = {
        key: f"%DYNAMIC_METADATA({RECORD_NAMESPACE}:{key}):{MAX_FACT_CHARS}%"
        for key in RECORD_FACTS
    }
    return {**OUTCOME_FIELDS, **facts}


def file_access_log(path: str) -> AccessLog:
    """The listener's access log: one JSON object per line, for every request (refusals too)."""
    logger = FileAccessLog(
        path=path,
        log_format=SubstitutionFormatString(json_format=Struct.from_dict(log_format())),
    )
    return AccessLog(name="envoy.access_loggers.file", typed_config=Any.pack(logger))


def flush_args(flush_interval_ms: int) -> list[str]:
    """Envoy command-line flags making the file logger write its buffer every interval.

    Envoy has no per-logger setting: the interval is process-wide (`--file-flush-interval-msec`)."""
    return ["--file-flush-interval-msec", str(flush_interval_ms)]
