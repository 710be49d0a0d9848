"""Static configuration and runtime-adjustable behaviour of a region simulator."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

DEFAULT_MODELS: tuple[str, ...] = ("gpt-4o-mini", "gpt-4o", "text-embedding-3-small")
"""Models a simulator serves when none are given."""


def _number(name: str, value: object, *, low: float = 0.0, high: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number")
    result = float(value)
    if not low <= result <= high:
        raise ValueError(f"{name} must be between {low:g} and {high:g}")
    return result


def _integer(name: str, value: object, *, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer")
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high}")
    return value


def _boolean(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be a boolean")
    return value


def _optional_count(name: str, value: object) -> int | None:
    if value is None:
        return None
    return _integer(name, value, low=0, high=2**31)


_PARSERS: dict[str, Callable[[object], Any]] = {
    "ttft_ms": lambda v: _number("ttft_ms", v, high=3_600_000),
    "tokens_per_second": lambda v: _number("tokens_per_second", v),
    "completion_tokens": lambda v: _integer("completion_tokens", v, low=1, high=1_000_000),
    "error_rate": lambda v: _number("error_rate", v, high=1.0),
    "error_status": lambda v: _integer("error_status", v, low=400, high=599),
    "hang": lambda v: _boolean("hang", v),
    "drop_after_chunks": lambda v: _optional_count("drop_after_chunks", v),
    "down": lambda v: _boolean("down", v),
}


@dataclass(frozen=True, slots=True)
class Behaviour:
    """Latency and fault knobs; replaced wholesale at runtime via ``POST /_sim/faults``.

    ``tokens_per_second == 0`` means no inter-token delay. ``drop_after_chunks``
    closes a stream after that many SSE events (0 also drops non-streaming requests).
    """

    ttft_ms: float = 0.0
    tokens_per_second: float = 0.0
    completion_tokens: int = 16
    error_rate: float = 0.0
    error_status: int = 500
    hang: bool = False
    drop_after_chunks: int | None = None
    down: bool = False

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            _PARSERS[f.name](getattr(self, f.name))

    @property
    def token_interval(self) -> float:
        """Seconds between consecutive tokens (0 when unthrottled)."""
        return 1.0 / self.tokens_per_second if self.tokens_per_second > 0 else 0.0

    def generation_time(self, tokens: int) -> float:
        """Seconds until the last of ``tokens`` tokens is produced."""
        return self.ttft_ms / 1000.0 + max(tokens - 1, 0) * self.token_interval

    def updated(self, changes: Mapping[str, object]) -> Behaviour:
        """Return a copy with ``changes`` applied; raise ``ValueError`` if any is invalid."""
        unknown = sorted(set(changes) - _PARSERS.keys())
        if unknown:
            raise ValueError(f"unknown field(s): {', '.join(unknown)}")
        parsed = {name: _PARSERS[name](value) for name, value in changes.items()}
        return dataclasses.replace(self, **parsed)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready view of all knobs."""
        return dataclasses.asdict(self)


@dataclass(frozen=True, slots=True)
class SimulatorConfig:
    """Startup configuration of one simulated region; ``behaviour`` is what reset restores."""

    region_id: str
    models: tuple[str, ...] = DEFAULT_MODELS
    host: str = "127.0.0.1"
    port: int = 9101
    behaviour: Behaviour = field(default_factory=Behaviour)
    embedding_dimensions: int = 16
    seed: int | None = None
    instance: str = ""
    """Opaque token of this process (`--instance`), reported so a launcher can recognise it."""

    def __post_init__(self) -> None:
        if not self.region_id:
            raise ValueError("region_id must not be empty")
        if not self.models:
            raise ValueError("at least one model is required")
        _integer("embedding_dimensions", self.embedding_dimensions, low=1, high=4096)
