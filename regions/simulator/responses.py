"""Builders for OpenAI-shaped payloads (chat, completions, embeddings, models, errors)."""

from __future__ import annotations

import base64
import hashlib
import itertools
import math
import os
import struct
from functools import lru_cache
from typing import Any

import orjson

JSON = dict[str, Any]

_ID_PREFIX = os.urandom(4).hex()
_ids = itertools.count(1)

SSE_DONE = b"data: [DONE]\n\n"


def new_id(prefix: str) -> str:
    """Process-unique id such as ``chatcmpl-1a2b3c4d00000001``."""
    return f"{prefix}-{_ID_PREFIX}{next(_ids):08x}"


def sse_event(payload: JSON) -> bytes:
    """One SSE ``data:`` event terminated by a blank line."""
    return b"data: " + orjson.dumps(payload) + b"\n\n"


@lru_cache(maxsize=256)
def completion_words(region_id: str, tokens: int) -> tuple[str, ...]:
    """``tokens`` words cycling through ``Hello from <region>.``; one word per token."""
    sentence = ("Hello", "from", f"{region_id}.")
    return tuple(itertools.islice(itertools.cycle(sentence), tokens))


@lru_cache(maxsize=256)
def completion_text(region_id: str, tokens: int) -> str:
    """The full completion text for ``tokens`` tokens."""
    return " ".join(completion_words(region_id, tokens))


def stream_pieces(region_id: str, tokens: int) -> list[str]:
    """Per-chunk content deltas; their concatenation equals :func:`completion_text`."""
    words = completion_words(region_id, tokens)
    return [word if i == 0 else " " + word for i, word in enumerate(words)]


def count_tokens(value: object) -> int:
    """Rough token count: whitespace words in strings, found recursively; ints count as one."""
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return 1
    if isinstance(value, list):
        return sum(count_tokens(item) for item in value)
    if isinstance(value, dict):
        return count_tokens(value.get("content")) + count_tokens(value.get("text"))
    return 0


def usage(prompt_tokens: int, completion_tokens: int) -> JSON:
    """OpenAI ``usage`` object."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def error_body(
    message: str, *, type_: str, code: str | None = None, param: str | None = None
) -> JSON:
    """OpenAI error envelope ``{"error": {...}}``."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def error_type_for_status(status: int) -> str:
    """OpenAI-style error ``type`` for an HTTP status."""
    if status >= 500:
        return "server_error"
    return {
        401: "authentication_error",
        403: "permission_error",
        404: "not_found_error",
        429: "rate_limit_error",
    }.get(status, "invalid_request_error")


def model_object(model: str, owner: str, created: int) -> JSON:
    """One entry of ``GET /v1/models``."""
    return {"id": model, "object": "model", "created": created, "owned_by": owner}


def models_list(models: tuple[str, ...], owner: str, created: int) -> JSON:
    """``GET /v1/models`` payload."""
    return {"object": "list", "data": [model_object(m, owner, created) for m in models]}


def chat_completion(
    *,
    id_: str,
    created: int,
    model: str,
    region_id: str,
    content: str,
    finish_reason: str,
    usage_: JSON,
) -> JSON:
    """Non-streaming ``chat.completion`` object."""
    return {
        "id": id_,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": f"sim-{region_id}",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
        "usage": usage_,
    }


def chat_chunk(
    *,
    id_: str,
    created: int,
    model: str,
    region_id: str,
    piece: str,
    first: bool,
    finish_reason: str | None,
    with_usage: bool,
) -> JSON:
    """One ``chat.completion.chunk``; the first carries the role, the last the finish reason."""
    delta: JSON = {"role": "assistant", "content": piece} if first else {"content": piece}
    chunk: JSON = {
        "id": id_,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": f"sim-{region_id}",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }
    if with_usage:
        chunk["usage"] = None
    return chunk


def text_completion(
    *, id_: str, created: int, model: str, text: str, finish_reason: str | None, usage_: JSON | None
) -> JSON:
    """Legacy ``text_completion`` object (also used, with ``usage_=None``, as a stream chunk)."""
    payload: JSON = {
        "id": id_,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}],
    }
    if usage_ is not None:
        payload["usage"] = usage_
    return payload


def usage_chunk(*, id_: str, created: int, model: str, object_: str, usage_: JSON) -> JSON:
    """Final stream chunk with empty ``choices`` sent when ``include_usage`` is requested."""
    return {
        "id": id_,
        "object": object_,
        "created": created,
        "model": model,
        "choices": [],
        "usage": usage_,
    }


def embedding_vector(model: str, text: str, dimensions: int) -> list[float]:
    """Deterministic unit vector derived from a hash of ``model`` and ``text``.

    Values are rounded to float32 so the float and base64 encodings agree exactly.
    """
    digest = hashlib.shake_256(f"{model}\x00{text}".encode()).digest(2 * dimensions)
    raw = [v / 32767.5 - 1.0 for v in struct.unpack(f"<{dimensions}H", digest)]
    norm = math.sqrt(sum(v * v for v in raw)) or 1.0
    packed = struct.pack(f"<{dimensions}f", *(v / norm for v in raw))
    return list(struct.unpack(f"<{dimensions}f", packed))


def encode_base64(vector: list[float]) -> str:
    """Little-endian float32 base64, as OpenAI returns for ``encoding_format=base64``."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


def embeddings(
    *, model: str, inputs: list[str], dimensions: int, encoding_format: str, prompt_tokens: int
) -> JSON:
    """``POST /v1/embeddings`` payload for already-normalised string inputs."""
    data = []
    for index, text in enumerate(inputs):
        vector = embedding_vector(model, text, dimensions)
        encoded: list[float] | str = (
            encode_base64(vector) if encoding_format == "base64" else vector
        )
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }
