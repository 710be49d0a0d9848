"""The files under a spool: slot directories a process claims, the segments it writes, and
the acknowledged position (what the database already holds).

Each process claims its own slot directory with an exclusive `flock` on the slot's lock file,
released by the kernel even on `kill -9`. A segment is preallocated and its creation fsynced
(file and directory), so the spool's later `fdatasync`s need not grow the file.
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from pathlib import Path

MAX_SLOTS = 1024
LOCK_FILE = "lock"
ACK_FILE = "ack"
DAMAGED_DIR = "damaged"
"""Under the spool root: bytes the drain could not read as records, kept for an operator."""


class SpoolError(Exception):
    """The spool cannot accept records (closed, or a write or fsync failed)."""


class SpoolBusy(SpoolError):
    """Another live process holds this slot."""


class SpoolDamaged(SpoolError):
    """Durable spool data that is not a valid frame (`Spool.set_aside` moves it out of the way)."""

    def __init__(self, segment: int, offset: int) -> None:
        super().__init__(f"audit spool segment {segment} unreadable at {offset}")
        self.segment = segment
        self.offset = offset


@dataclass(frozen=True, order=True, slots=True)
class Position:
    """A place in the spool: segment number and byte offset (a frame boundary)."""

    segment: int
    offset: int


def claim_free_slot(root: Path) -> tuple[Path, int]:
    """The first slot under `root` no live process holds, and its lock's descriptor."""
    root.mkdir(parents=True, exist_ok=True)
    for index in range(MAX_SLOTS):
        directory = root / f"slot-{index}"
        try:
            return directory, claim_slot(directory)
        except SpoolBusy:
            continue
    raise SpoolError(f"audit spool {root}: all {MAX_SLOTS} slots are in use")


def claim_slot(directory: Path) -> int:
    """Lock `directory` as this process's slot; the lock's descriptor (closing it releases
    the slot). SpoolBusy if another process holds it."""
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise SpoolBusy(f"audit spool slot {directory} is in use") from None
    return fd


def slots(root: Path) -> list[Path]:
    """Every slot directory under `root` (live or abandoned)."""
    return sorted(p for p in root.glob("slot-*") if p.is_dir())


def read_ack(directory: Path) -> Position:
    """The slot's acknowledged position (the start if none was written)."""
    try:
        segment, offset = (directory / ACK_FILE).read_text("ascii").split()
        return Position(int(segment), int(offset))
    except FileNotFoundError:
        return Position(0, 0)
    except ValueError:
        raise SpoolError(f"audit spool {directory}: unreadable {ACK_FILE} file") from None


def write_ack(directory: Path, position: Position) -> None:
    """Replace the slot's acknowledged position (atomically: a crash leaves old or new)."""
    temporary = directory / f"{ACK_FILE}.tmp"
    temporary.write_text(f"{position.segment} {position.offset}\n", "ascii")
    os.replace(temporary, directory / ACK_FILE)


def keep_damaged(root: Path, slot: Path, position: Position, data: bytes) -> Path:
    """Keep bytes that cannot be read as records in `<root>/damaged/`, durably; the file.

    Named after the slot, segment and offset they came from, so nothing is lost: an operator
    can inspect them (each record is a frame: little-endian length, CRC-32, payload)."""
    directory = root / DAMAGED_DIR
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{slot.name}-{position.segment:012d}-{position.offset}.bin"
    temporary = path.with_suffix(".tmp")
    with temporary.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    fsync_dir(directory)
    return path


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (a created or renamed file) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Segment:
    """A new, preallocated segment file being written."""

    def __init__(self, path: Path, number: int, size: int) -> None:
        self.path = path
        self.number = number
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.posix_fallocate(self.fd, 0, size)  # later fdatasyncs need not grow the file
        except OSError:
            os.ftruncate(self.fd, size)
        os.fsync(self.fd)
        fsync_dir(path.parent)
        self.size = size
        self.end = 0
