"""Opaque keyset cursors: the (decided_at, seq) position of the last record on a page. Pure."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

from compliance.audit_query.filters import FilterError

_VERSION = 1


@dataclass(frozen=True, slots=True)
class Position:
    """Where a page ended; the next page starts strictly after it (newest first)."""

    decided_at: datetime
    seq: int


def encode_cursor(position: Position) -> str:
    """A URL-safe token for `position` (clients must treat it as opaque)."""
    payload = orjson.dumps(
        {"v": _VERSION, "t": position.decided_at.astimezone(UTC).isoformat(), "s": position.seq}
    )
    return base64.urlsafe_b64encode(payload).rstrip(b"=").decode("ascii")


def decode_cursor(token: str) -> Position:
    """The position in a cursor from `encode_cursor`; FilterError('cursor', ...) otherwise."""
    text = token.strip()
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        data = orjson.loads(raw)
        if not isinstance(data, dict) or data.get("v") != _VERSION:
            raise ValueError("unknown cursor version")
        seq = data["s"]
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
            raise ValueError("bad sequence number")
        decided_at = datetime.fromisoformat(str(data["t"]))
        if decided_at.tzinfo is None:
            raise ValueError("naive time")
    except (binascii.Error, orjson.JSONDecodeError, KeyError, ValueError, TypeError):
        raise FilterError(
            "cursor", "not a cursor returned by this server (use next_cursor as given)"
        ) from None
    return Position(decided_at.astimezone(UTC), seq)
