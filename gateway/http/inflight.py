"""How many upstream attempts (including streams being relayed) each region has right now.

Kept by the data path of this process; `gateway regions drain --wait` reads it through
`GET /admin/regions/{id}` to know when a draining region has finished its work. One event loop
per process touches it, so plain integers need no lock.
"""

from __future__ import annotations

from types import TracebackType


class InFlight:
    """Per-region counters of requests being forwarded."""

    __slots__ = ("_counts",)

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}

    def increment(self, region_id: str) -> None:
        """One more request forwarded to `region_id`."""
        self._counts[region_id] = self._counts.get(region_id, 0) + 1

    def decrement(self, region_id: str) -> None:
        """A request to `region_id` finished (answered, failed or aborted)."""
        left = self._counts.get(region_id, 0) - 1
        if left > 0:
            self._counts[region_id] = left
        else:
            self._counts.pop(region_id, None)

    def count(self, region_id: str) -> int:
        """Requests to `region_id` in flight now."""
        return self._counts.get(region_id, 0)

    def track(self, region_id: str) -> _Tracked:
        """A context manager counting one request for the duration of the block."""
        return _Tracked(self, region_id)


class _Tracked:
    __slots__ = ("_counter", "_region_id")

    def __init__(self, counter: InFlight, region_id: str) -> None:
        self._counter = counter
        self._region_id = region_id

    def __enter__(self) -> None:
        self._counter.increment(self._region_id)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._counter.decrement(self._region_id)
