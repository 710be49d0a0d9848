"""Bounds on what one routing record can hold (pure).

A routing record repeats client-chosen text (the model name is in the `model` column, the
explanation's facts and the reasons), so without a bound one request could make a record of
many megabytes. Records are bounded before they are spooled, never dropped:

- the model name (wherever it appears under a `model` key) is cut to MAX_MODEL_CHARS (the
  `routing_decisions.model` column width), every other string to MAX_STRING_CHARS; a cut
  string ends with a marker giving its full length and SHA-256, and the explanation lists the
  cut fields under `truncated`;
- if the record is still over MAX_RECORD_BYTES (very long lists), its largest JSON fields are
  replaced, largest first, by their length and SHA-256 under `explanation.oversized`.

The result is always a record of at most MAX_RECORD_BYTES (see `compliance.routing_batches`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from hashlib import sha256
from typing import Any

import orjson

from compliance.audit.canonical import JSON_FIELDS, Kind

MAX_MODEL_CHARS = 255
"""Longest model name a record keeps (the width of the `routing_decisions.model` column)."""
MAX_STRING_CHARS = 1024
"""Longest other string a record keeps."""
MAX_RECORD_BYTES = 1024 * 1024
"""Largest spool payload of one routing record."""
MAX_LISTED = 16
"""Most cut fields `explanation.truncated` names (it always gives the count)."""

_JSON_NAMES = tuple(sorted(JSON_FIELDS[Kind.DECISION]))
_KEEP = ("decision_id", "decided_at", "outcome", "status_code")


def needs_bounds(record: Mapping[str, Any]) -> bool:
    """True if the record's model name is over the bound (cheap: checked on every record)."""
    model = record.get("model")
    return isinstance(model, str) and len(model) > MAX_MODEL_CHARS


def digest(text: str | bytes) -> str:
    """SHA-256 (hex) of a string's UTF-8 bytes, or of bytes."""
    data = text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass")
    return sha256(data).hexdigest()


def cut(text: str, limit: int) -> str:
    """`text` if it fits in `limit` characters, else its start and a marker (same bound)."""
    if len(text) <= limit:
        return text
    marker = f"…[truncated: {len(text)} chars, sha256 {digest(text)}]"
    return text[: max(limit - len(marker), 0)] + marker


def bound_strings(record: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of `record` with every over-long string cut (see the module docstring)."""
    cuts: list[str] = []

    def walk(value: Any, path: str, limit: int) -> Any:
        if isinstance(value, str):
            if len(value) > limit:
                cuts.append(path)
                return cut(value, limit)
            return value
        if isinstance(value, Mapping):
            return {
                key: walk(item, f"{path}.{key}" if path else str(key), _limit(key))
                for key, item in value.items()
            }
        if isinstance(value, list | tuple):
            return [walk(item, f"{path}[{i}]", MAX_STRING_CHARS) for i, item in enumerate(value)]
        return value

    bounded: dict[str, Any] = walk(record, "", MAX_STRING_CHARS)
    if cuts:
        note = {"fields": cuts[:MAX_LISTED], "count": len(cuts)}
        _explanation(bounded)["truncated"] = note
    return bounded


def _limit(key: object) -> int:
    return MAX_MODEL_CHARS if key == "model" else MAX_STRING_CHARS


def _explanation(record: dict[str, Any]) -> dict[str, Any]:
    """The record's explanation dict (made one if it is missing or not a dict)."""
    explanation = record.get("explanation")
    if not isinstance(explanation, dict):
        explanation = {} if explanation is None else {"original": explanation}
        record["explanation"] = explanation
    return explanation


def _json(value: Any) -> bytes:
    return orjson.dumps(value, default=str, option=orjson.OPT_SORT_KEYS)


def within_size(
    record: Mapping[str, Any], encode: Callable[[Mapping[str, Any]], bytes]
) -> tuple[dict[str, Any], bytes]:
    """`record` bounded to MAX_RECORD_BYTES as `encode` writes it: (record, its payload)."""
    bounded = bound_strings(record)
    payload = encode(bounded)
    if len(payload) <= MAX_RECORD_BYTES:
        return bounded, payload
    texts = {name: _json(bounded[name]) for name in _JSON_NAMES if name in bounded}
    oversized: dict[str, Any] = {}
    for name in sorted(texts, key=lambda n: len(texts[n]), reverse=True):
        oversized[name] = {"bytes": len(texts[name]), "sha256": digest(texts[name])}
        if name == "explanation":
            truncated = _explanation(bounded).get("truncated")
            bounded["explanation"] = {} if truncated is None else {"truncated": truncated}
        else:
            bounded[name] = []
        _explanation(bounded)["oversized"] = oversized
        payload = encode(bounded)
        if len(payload) <= MAX_RECORD_BYTES:
            return bounded, payload
    # Still too large (many unknown fields: a record the store will refuse anyway): keep its
    # identity and the size and hash of the whole.
    whole = _json(bounded)
    minimal = {key: bounded[key] for key in _KEEP if key in bounded}
    whole_size = {"bytes": len(whole), "sha256": digest(whole)}
    minimal["explanation"] = {"oversized": {"record": whole_size}}
    return minimal, encode(minimal)
