"""Opaque keyset cursors: the (time, seq) position of the last record on a page. Pure.

A cursor names the list it belongs to (routing decisions or configuration changes), so one
list's cursor is refused by the other instead of silently positioning it.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

from compliance.audit_query.filters import FilterError

_VERSION = 1
DECISIONS = "decisions"
CHANGES = "changes"


@dataclass(frozen=True, slots=True)
class Position:
    """Where a page ended; the next page starts strictly after it (newest first).

    `decided_at` is the list's time column (decided_at, or changed_at for changes)."""

    decided_at: datetime
    seq: int
    rank: int = 1
    """1: a routing record; 0: a write-ahead decision without an outcome (ranked after the
    records of the same instant, compliance.audit_query.open_intents)."""


def encode_cursor(position: Position, scope: str = DECISIONS) -> str:
    """A URL-safe token for `position` in list `scope` (clients must treat it as opaque)."""
    data: dict[str, object] = {
        "v": _VERSION,
        "t": position.decided_at.astimezone(UTC).isoformat(),
        "s": position.seq,
    }
    if scope != DECISIONS:  # decision cursors stay as they were (no list name)
        data["k"] = scope
    if position.rank != 1:
        data["r"] = position.rank
    payload = orjson.dumps(data)
    return base64.urlsafe_b64encode(payload).rstrip(b"=").decode("ascii")


def decode_cursor(token: str, scope: str = DECISIONS) -> Position:
    """The position in a cursor `encode_cursor` made for `scope`; FilterError('cursor', ...)
    otherwise."""
    text = token.strip()
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        data = orjson.loads(raw)
        if not isinstance(data, dict) or data.get("v") != _VERSION:
            raise ValueError("unknown cursor version")
        if data.get("k", DECISIONS) != scope:
            raise ValueError("a cursor of another list")
        seq = data["s"]
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
            raise ValueError("bad sequence number")
        rank = data.get("r", 1)
        if rank not in (0, 1) or isinstance(rank, bool):
            raise ValueError("bad rank")
        decided_at = datetime.fromisoformat(str(data["t"]))
        if decided_at.tzinfo is None:
            raise ValueError("naive time")
    except (binascii.Error, orjson.JSONDecodeError, KeyError, ValueError, TypeError):
        raise FilterError(
            "cursor", "not a cursor returned by this server (use next_cursor as given)"
        ) from None
    return Position(decided_at.astimezone(UTC), seq, rank)
