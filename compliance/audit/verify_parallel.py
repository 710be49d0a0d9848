"""A parallel first pass over a large SQLite chain: worker processes hash contiguous ranges.

Only the happy path runs in parallel: every range must be gap-free, linked and correctly hashed,
and the ranges must link to each other. Anything else returns None and the caller walks the
chain serially, which finds and explains the first break.
"""

from __future__ import annotations

import multiprocessing
import sqlite3
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from hashlib import sha256

from compliance.audit.entries import CANONICAL_SELECTS, KINDS, PAGE

MIN_PER_WORKER = 25_000


@dataclass(frozen=True, slots=True)
class RangeResult:
    """What one worker found in [first, last]."""

    regular: bool
    first_prev: str | None
    last_hash: str | None
    count: int
    hashes: dict[int, str]


def _check_range(path: str, first: int, last: int, wanted: Sequence[int]) -> RangeResult:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    wanted_set = set(wanted)
    hashes: dict[int, str] = {}
    first_prev: str | None = None
    prev: str | None = None
    expected, count = first, 0
    try:
        for low in range(first, last + 1, PAGE):
            high = min(low + PAGE, last + 1)
            rows = []
            for kind in KINDS:
                rows.extend(conn.execute(CANONICAL_SELECTS[kind], (low, high)).fetchall())
            rows.sort(key=lambda r: r[0])
            for seq, stored_prev, record_hash, text, _ in rows:
                if seq != expected or text is None or (prev is not None and stored_prev != prev):
                    return RangeResult(False, first_prev, prev, count, hashes)
                if sha256(text.encode("utf-8")).hexdigest() != record_hash:
                    return RangeResult(False, first_prev, prev, count, hashes)
                if first_prev is None:
                    first_prev = stored_prev
                if seq in wanted_set:
                    hashes[seq] = record_hash
                prev = record_hash
                expected += 1
                count += 1
    except sqlite3.Error:
        return RangeResult(False, first_prev, prev, count, hashes)
    finally:
        conn.close()
    return RangeResult(expected == last + 1, first_prev, prev, count, hashes)


def precheck(
    path: str, first: int, last: int, start_prev: str, workers: int, wanted: Sequence[int]
) -> tuple[int, dict[int, str]] | None:
    """(entries, hashes at `wanted` positions) if [first, last] is one intact chain continuing
    from `start_prev`; None if anything is irregular (walk it serially to find out what)."""
    total = last - first + 1
    workers = max(1, min(workers, total // MIN_PER_WORKER))
    if workers < 2:
        return None
    step = -(-total // workers)
    bounds = [(low, min(low + step - 1, last)) for low in range(first, last + 1, step)]
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(len(bounds), mp_context=context) as pool:
        futures = [pool.submit(_check_range, path, lo, hi, wanted) for lo, hi in bounds]
        results = [f.result() for f in futures]
    prev = start_prev
    hashes: dict[int, str] = {}
    for result in results:
        if not result.regular or result.first_prev != prev:
            return None
        prev = result.last_hash or prev
        hashes.update(result.hashes)
    return sum(r.count for r in results), hashes
