"""Storing one batch of spooled routing records in the database (the routing log's sink).

A batch the sink refuses for its content is retried record by record, and a record that still
fails goes to a poison handler, so one bad record cannot block the log; a sink that is down
(StoreUnavailable) fails the whole batch, which stays in the spool for the next try. Spool data
that is not a valid frame is copied aside (`Spool.set_aside`) and the drain goes on past it.
Records are bounded in size before they are spooled (compliance.audit.record_bounds).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar, runtime_checkable

from compliance.audit import record_codec
from compliance.audit.record_bounds import (
    MAX_RECORD_BYTES,
    bound_strings,
    needs_bounds,
    within_size,
)
from compliance.audit.record_codec import Encoded
from compliance.audit.spool import Position, Spool, SpoolDamaged
from compliance.store.errors import StoreUnavailable

logger = logging.getLogger(__name__)

Record = Mapping[str, Any]
T = TypeVar("T")


class RoutingLogSink(Protocol):
    """Where batches of routing records end up (the database store)."""

    def append_batch(self, records: Sequence[Record], *, skip_existing: bool = False) -> int:
        """Persist all records in one transaction (leaving out stored ones) or raise."""
        ...


@runtime_checkable
class EncodedSink(Protocol):
    """A sink that stores `record_codec` payloads as they are (RoutingLogStore)."""

    def append_encoded(self, items: Sequence[Encoded], *, skip_existing: bool = False) -> int:
        """Persist all items in one transaction (leaving out stored ones) or raise."""
        ...


PoisonHandler = Callable[[Record, str], None]


def log_poison(record: Record, error: str) -> None:
    """The default poison handler: log the record's id and the store's reason."""
    logger.error("routing record %s rejected by the store: %s", record.get("decision_id"), error)


def _encode(record: Record) -> bytes:
    try:
        return record_codec.encode_record(record)
    except (TypeError, ValueError):
        return record_codec.legacy_payload(record)


def encode(record: Record) -> bytes:
    """A record as spool bytes: canonical, ready to hash and store (record_codec); a record
    that is not valid is spooled as plain JSON, for the store to reject with its reason.
    Never over MAX_RECORD_BYTES: over-long fields are cut, marked (record_bounds)."""
    if needs_bounds(record):
        record = bound_strings(record)
    payload = _encode(record)
    if len(payload) > MAX_RECORD_BYTES:
        payload = within_size(record, _encode)[1]
    return payload


def _bounded(payload: bytes) -> bytes:
    """A payload spooled before records were bounded, bounded now (if it can be read)."""
    if len(payload) <= MAX_RECORD_BYTES:
        return payload
    try:
        return encode(decode(payload))
    except (TypeError, ValueError):
        return payload  # the poison handler gets it as it is


def decode(payload: bytes) -> dict[str, Any]:
    """The record `encode` wrote (timestamps as datetimes)."""
    return record_codec.decode(payload)


def _readable(payload: bytes) -> Record:
    """A spooled record for an error report, however damaged."""
    try:
        return decode(payload)
    except ValueError:
        return {"spool_payload": payload.decode("utf-8", "replace")}


class SpoolDrain:
    """Reads durable records from a spool, stores them in `sink` and acknowledges them."""

    def __init__(self, sink: RoutingLogSink, on_poison: PoisonHandler = log_poison) -> None:
        self._sink = sink
        self._on_poison = on_poison
        self.written = 0

    def drain(self, spool: Spool, position: Position, limit: int) -> tuple[int, Position]:
        """Store one batch of durable records from `position`; (records read, next position).
        Unreadable spool data there is set aside (counted as one record read)."""
        try:
            payloads, after = spool.read(position, limit)
        except SpoolDamaged as damaged:
            position = Position(damaged.segment, damaged.offset)
            kept, after = spool.set_aside(position)
            logger.error(
                "routing log: spool %s segment %d offset %d is not a valid record; its %d "
                "bytes are kept in %s and the records after it are stored",
                spool.directory,
                position.segment,
                position.offset,
                after.offset - position.offset,
                kept,
            )
            spool.acknowledge(after, 1)
            return 1, after
        if not payloads:
            return 0, position
        if max(map(len, payloads)) > MAX_RECORD_BYTES:
            payloads = [_bounded(p) for p in payloads]
        sink = self._sink
        if isinstance(sink, EncodedSink):
            self.written += self._write(
                sink.append_encoded, self._read(payloads, record_codec.parse)
            )
        else:
            self.written += self._write(sink.append_batch, self._read(payloads, decode))
        spool.acknowledge(after, len(payloads))
        return len(payloads), after

    def store(self, records: Sequence[Record]) -> int:
        """Store `records` in one transaction, leaving out logged ones; a batch the sink
        refuses for its content goes record by record, refused ones to the poison handler."""
        written = self._write(self._sink.append_batch, records)
        self.written += written
        return written

    def _read(self, payloads: list[bytes], read: Callable[[bytes], T]) -> list[T]:
        """`read` of each payload; one it cannot read (ValueError) goes to the poison handler."""
        items: list[T] = []
        for payload in payloads:
            try:
                items.append(read(payload))
            except ValueError as exc:
                self._on_poison(_readable(payload), str(exc))
        return items

    def _write(self, append: Callable[..., int], batch: Sequence[Any]) -> int:
        """`append(batch)`; if the store refuses it for its content, record by record."""
        if not batch:
            return 0
        try:
            return append(batch, skip_existing=True)
        except StoreUnavailable:
            raise
        except Exception:
            pass
        written = 0
        for item in batch:  # isolate the record(s) the store refuses
            try:
                written += append([item], skip_existing=True)
            except StoreUnavailable:
                raise
            except Exception as exc:
                record = _readable(item.payload) if isinstance(item, Encoded) else item
                self._on_poison(record, f"{type(exc).__name__}: {exc}")
        return written
