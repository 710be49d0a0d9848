"""Recovering a spool slot at start: what a previous process wrote and the database has not
acknowledged yet (the records to replay), and where the next segment starts."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from compliance.audit.frames import parse_frames
from compliance.audit.spool_files import Position, keep_damaged

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Recovered:
    """Segments left to replay (number -> end of their valid data), how many records they hold,
    and the number of the segment to write next."""

    sealed: dict[int, int]
    records: int
    next_number: int


def recover_segments(root: Path, directory: Path, ack: Position, suffix: str) -> Recovered:
    """Scan the slot's segments after `ack`: delete those fully acknowledged or empty, keep a
    torn tail's bytes under `root` (keep_damaged), count the records to replay."""
    numbers = sorted(int(p.stem) for p in directory.glob(f"*{suffix}") if p.stem.isdigit())
    sealed: dict[int, int] = {}
    records = 0
    for number in numbers:
        path = directory / f"{number:012d}{suffix}"
        if number < ack.segment:
            path.unlink()
            continue
        start = ack.offset if number == ack.segment else 0
        with path.open("rb") as handle:
            handle.seek(start)
            data = handle.read()
        payloads, used, torn = parse_frames(data, len(data))
        if torn:
            kept = keep_damaged(
                root, directory, Position(number, start + used), data[used:].rstrip(b"\0")
            )
            logger.error(
                "audit spool %s: torn record at offset %d ignored (written, never "
                "acknowledged); its bytes are kept in %s",
                path,
                start + used,
                kept,
            )
        if not payloads:
            path.unlink()  # nothing left to replay in it
            continue
        sealed[number] = start + used
        records += len(payloads)
    return Recovered(sealed, records, max([*numbers, ack.segment, 0]) + 1)
