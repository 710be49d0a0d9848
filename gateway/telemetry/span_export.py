"""OTLP/HTTP span export with a cheaper encoder for the data path's spans.

The SDK's encoder builds a protobuf message tree per span (a fresh `KeyValue` for every
attribute) and re-hashes the resource (a JSON dump) per span: ~42 µs per span on this hardware,
which at a few thousand requests a second is a large share of one core. This encoder writes the
OTLP wire bytes of a batch directly, from pieces that protobuf itself encoded once and that are
kept: the `attributes` field of each repeated (key, value) pair (method, path, region, tenant,
outcome, policy version...), each (name, kind), status and flags field, and each resource and
scope. Per span it only joins those pieces with the ids and timestamps and frames the result
(tag and length). The bytes decode to messages equal to the SDK's (tests compare them). Sending
(endpoint, headers, compression, retries) is the SDK exporter's own; a batch the encoder does
not cover (events, links, trace state) is exported by the SDK as it is.

Encoding runs in the export thread and holds the GIL. Python hands the GIL to a waiting thread
only after a 5 ms switch interval, so the event loop waited that long, again and again, while a
batch of hundreds of spans was encoded; that was the largest source of the p99 latency at
moderate rates. The encoder therefore offers the GIL (`time.sleep(0)`) every few spans.
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, cast

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    ArrayValue,
    InstrumentationScope,
    KeyValue,
    KeyValueList,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult

logger = logging.getLogger(__name__)

_HAS_IS_REMOTE = 0x100  # SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK
_IS_REMOTE = 0x200  # SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK
_CACHE_LIMIT = 4096
# Tags (field number << 3 | wire type) of the fields framed here rather than by protobuf.
_REQUEST_RESOURCE_SPANS = b"\x0a"  # ExportTraceServiceRequest.resource_spans = 1, bytes
_SCOPE_SPANS = b"\x12"  # ResourceSpans.scope_spans = 2, bytes
_SPANS = b"\x12"  # ScopeSpans.spans = 2, bytes
_TRACE_ID = b"\x0a\x10"  # Span.trace_id = 1, 16 bytes
_SPAN_ID = b"\x12\x08"  # Span.span_id = 2, 8 bytes
_PARENT_SPAN_ID = b"\x22\x08"  # Span.parent_span_id = 4, 8 bytes
_TIMES = struct.Struct("<BQBQ")  # Span.start_time_unix_nano = 7, end_time_unix_nano = 8 (fixed64)
_START_TAG, _END_TAG = 0x39, 0x41
_ATTRIBUTES = b"\x4a"  # Span.attributes = 9, bytes
_INT64_MIN, _INT64_MAX, _UINT64_MASK = -(1 << 63), (1 << 63) - 1, (1 << 64) - 1
YIELD_EVERY = 8  # spans encoded between offers of the GIL (~130 µs of work here)


def encode_value(value: Any) -> AnyValue:
    """An attribute value as OTLP `AnyValue` (the SDK's mapping)."""
    if value is None:
        return AnyValue()
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, str):
        return AnyValue(string_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, bytes):
        return AnyValue(bytes_value=value)
    if isinstance(value, Mapping):
        return AnyValue(
            kvlist_value=KeyValueList(
                values=[KeyValue(key=str(k), value=encode_value(v)) for k, v in value.items()]
            )
        )
    if isinstance(value, Sequence):
        return AnyValue(array_value=ArrayValue(values=[encode_value(v) for v in value]))
    raise TypeError(f"attribute value of type {type(value).__name__} cannot be exported")


def key_values(attributes: Mapping[str, Any] | None) -> list[KeyValue]:
    """Attributes as OTLP `KeyValue` messages."""
    return [KeyValue(key=k, value=encode_value(v)) for k, v in (attributes or {}).items()]


def _varint(number: int) -> bytes:
    """A non-negative `number` as a protobuf varint (lengths, and int64 as two's complement)."""
    if number < 0x80:
        return _SMALL_VARINTS[number]
    out = bytearray()
    while number >= 0x80:
        out.append((number & 0x7F) | 0x80)
        number >>= 7
    out.append(number)
    return bytes(out)


_SMALL_VARINTS = [bytes([n]) for n in range(0x80)]


def _framed(tag: bytes, payload: bytes) -> bytes:
    return tag + _varint(len(payload)) + payload


class SpanEncoder:
    """Encodes batches of finished spans as the bytes of one `ExportTraceServiceRequest`.

    `unique_keys` name attributes whose values rarely repeat (ids, durations): they are encoded
    each time instead of filling the cache of repeated pairs.
    """

    def __init__(self, unique_keys: Iterable[str] = ()) -> None:
        self._unique = frozenset(unique_keys)
        self._pairs: dict[tuple[str, Any], bytes] = {}
        self._fields: dict[tuple[Any, ...], bytes] = {}  # name+kind, status, flags, dropped
        self._holders: dict[int, tuple[object, bytes]] = {}  # resource / scope -> its fields

    @staticmethod
    def covers(span: ReadableSpan) -> bool:
        """True if this encoder encodes `span` completely (no events, links or trace state)."""
        return not (span.events or span.links or span.context.trace_state)

    def attributes(self, attributes: Mapping[str, Any] | None) -> list[bytes]:
        """A span's attributes as encoded `Span.attributes` fields, reusing repeated pairs."""
        if not attributes:
            return []
        pairs, unique = self._pairs, self._unique
        encoded = []
        for key, value in attributes.items():
            if key in unique:
                encoded.append(self._unique_attribute(key, value))
                continue
            # str values need no type in the key: no other type compares equal to a str
            marker = (key, value if value.__class__ is str else _typed(value))
            try:
                pair = pairs.get(marker)
            except TypeError:  # an unhashable value: not cached
                encoded.append(_attribute(key, value))
                continue
            if pair is None:
                pair = _attribute(key, value)
                if len(pairs) >= _CACHE_LIMIT:
                    pairs.clear()
                pairs[marker] = pair
            encoded.append(pair)
        return encoded

    def _unique_attribute(self, key: str, value: Any) -> bytes:
        """An attribute not worth caching; str and int values are framed here directly."""
        if value.__class__ is str:
            data = value.encode()
            any_value = b"\x0a" + _varint(len(data)) + data  # AnyValue.string_value = 1
        elif value.__class__ is int and _INT64_MIN <= value <= _INT64_MAX:
            any_value = b"\x18" + _varint(value & _UINT64_MASK)  # AnyValue.int_value = 3
        else:
            return _attribute(key, value)
        key_value = self._field(("key", key)) + _framed(b"\x12", any_value)  # KeyValue.value
        return _framed(_ATTRIBUTES, key_value)

    def span(self, span: ReadableSpan) -> bytes:
        """One finished span as the bytes of an OTLP `Span` message."""
        context = span.context
        parent = span.parent
        status = span.status
        parts = [_TRACE_ID, context.trace_id.to_bytes(16, "big")]
        parts += (_SPAN_ID, context.span_id.to_bytes(8, "big"))
        if parent is not None:
            parts += (_PARENT_SPAN_ID, parent.span_id.to_bytes(8, "big"))
        parts.append(self._field(("head", span.name, span.kind.value)))
        parts.append(_TIMES.pack(_START_TAG, span.start_time or 0, _END_TAG, span.end_time or 0))
        parts += self.attributes(span.attributes)
        if span.dropped_attributes:
            parts.append(self._field(("dropped", span.dropped_attributes)))
        parts.append(self._field(("status", status.status_code.value, status.description or "")))
        remote = parent is not None and parent.is_remote
        parts.append(self._field(("flags", remote)))
        return b"".join(parts)

    def request(self, spans: Sequence[ReadableSpan]) -> bytes:
        """A batch as one export request, grouped by resource and instrumentation scope."""
        groups: dict[int, tuple[Any, dict[int, tuple[Any, list[bytes]]]]] = {}
        for number, span in enumerate(spans, start=1):
            if number % YIELD_EVERY == 0:
                time.sleep(0)  # let a waiting event loop run (see the module docstring)
            resource, scope = span.resource, span.instrumentation_scope
            scopes = groups.setdefault(id(resource), (resource, {}))[1]
            framed = _framed(_SPANS, self.span(span))
            scopes.setdefault(id(scope), (scope, []))[1].append(framed)
        out = []
        for resource, scopes in groups.values():
            parts = [self._holder(resource, _resource_fields)]
            for scope, encoded in scopes.values():
                scope_spans = self._holder(scope, _scope_fields) + b"".join(encoded)
                parts.append(_framed(_SCOPE_SPANS, scope_spans))
            out.append(_framed(_REQUEST_RESOURCE_SPANS, b"".join(parts)))
        return b"".join(out)

    def _field(self, key: tuple[Any, ...]) -> bytes:
        """The encoded span field(s) `key` names, encoded by protobuf once and kept."""
        encoded = self._fields.get(key)
        if encoded is None:
            if len(self._fields) >= _CACHE_LIMIT:
                self._fields.clear()
            encoded = self._fields[key] = _span_field(key)
        return encoded

    def _holder(self, holder: Any, encode: Any) -> bytes:
        """The fields of a resource or scope (immutable objects, kept by identity)."""
        cached = self._holders.get(id(holder))
        if cached is None or cached[0] is not holder:
            if len(self._holders) >= _CACHE_LIMIT:
                self._holders.clear()
            cached = self._holders[id(holder)] = (holder, encode(holder))
        return cached[1]


def _serialized(message: Any) -> bytes:
    """A protobuf message's wire bytes (the generated classes are untyped)."""
    data: bytes = message.SerializeToString()
    return data


def _attribute(key: str, value: Any) -> bytes:
    return _serialized(Span(attributes=[KeyValue(key=key, value=encode_value(value))]))


def _span_field(key: tuple[Any, ...]) -> bytes:
    kind, *values = key
    if kind == "key":
        return _serialized(KeyValue(key=values[0]))
    if kind == "head":
        name, span_kind = values
        return _serialized(Span(name=name, kind=cast(Any, span_kind + 1)))  # OTLP kinds
    if kind == "dropped":
        return _serialized(Span(dropped_attributes_count=values[0]))
    if kind == "status":
        code, message = values
        return _serialized(Span(status=Status(code=cast(Any, code), message=message)))
    flags = _HAS_IS_REMOTE | (_IS_REMOTE if values[0] else 0)
    return _serialized(Span(flags=flags))


def _resource_fields(resource: Any) -> bytes:
    """`ResourceSpans.resource` and `schema_url`."""
    message = ResourceSpans(
        resource=Resource(attributes=key_values(resource.attributes)),
        schema_url=resource.schema_url,
    )
    return _serialized(message)


def _scope_fields(scope: Any) -> bytes:
    """`ScopeSpans.scope` and `schema_url`."""
    if scope is None:
        return _serialized(ScopeSpans(scope=InstrumentationScope()))
    message = ScopeSpans(
        scope=InstrumentationScope(
            name=scope.name, version=scope.version, attributes=key_values(scope.attributes)
        ),
        schema_url=scope.schema_url or "",
    )
    return _serialized(message)


def _typed(value: Any) -> Any:
    """A cache key for an attribute value that keeps apart values Python finds equal but OTLP
    encodes differently (True, 1 and 1.0)."""
    if isinstance(value, list | tuple):
        return tuple((item.__class__, item) for item in value)
    return value.__class__, value


class DataPathSpanExporter(OTLPSpanExporter):
    """The SDK's OTLP/HTTP exporter (OTEL_EXPORTER_OTLP_* settings) with `SpanEncoder`."""

    def __init__(self, unique_keys: Iterable[str] = (), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._encoder = SpanEncoder(unique_keys)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Encode `spans` with `SpanEncoder` and send them with the SDK's HTTP client."""
        client = getattr(self, "_client", None)
        if self._shutdown or client is None or not all(map(SpanEncoder.covers, spans)):
            return super().export(spans)  # the SDK's own path (and its logging)
        try:
            data = self._encoder.request(spans)
        except (TypeError, ValueError, OverflowError) as exc:
            logger.error("could not encode %d spans: %s", len(spans), exc)
            return SpanExportResult.FAILURE
        result = client.export(data)
        return SpanExportResult.SUCCESS if result.success else SpanExportResult.FAILURE
