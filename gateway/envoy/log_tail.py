"""Reading a growing log file line by line, from a durable position, across rotation.

The position (the file's inode and the offset after the last line handled) is saved with
`commit` only after the caller has stored what it read: a crash re-reads, never skips
(at-least-once). Rotation by rename: the old file is read to its end before the new one is
opened. Truncation in place (copytruncate): reading starts again at offset 0. A file replaced
while no process was reading can have lines after the saved offset that were never read: that
is logged as an error with the old inode and offset, the only place lines can go unread.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import orjson

logger = logging.getLogger(__name__)

MAX_LINE_BYTES = 1 << 20
"""A longer line is handed over cut at this size (the caller rejects it as malformed)."""


@dataclass(frozen=True, slots=True)
class Position:
    """Where reading resumes: a file (by inode) and a byte offset in it."""

    inode: int
    offset: int


def load_position(path: Path) -> Position | None:
    """The saved position, or None (never saved, or unreadable: logged)."""
    try:
        data = orjson.loads(path.read_bytes())
        return Position(int(data["inode"]), int(data["offset"]))
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as exc:
        logger.error("access-log position %s is unreadable (%s): reading from the start", path, exc)
        return None


def save_position(path: Path, position: Position) -> None:
    """Replace the saved position atomically and durably (write, fsync, rename, fsync dir)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    data = orjson.dumps({"inode": position.inode, "offset": position.offset})
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


class LogTail:
    """Complete lines of `path` after a saved position (see the module docstring)."""

    def __init__(self, path: Path, position_path: Path) -> None:
        self.path = path
        self.position_path = position_path
        self._handle: BinaryIO | None = None
        self._inode = 0
        self._offset = 0
        self._saved = load_position(position_path)

    @property
    def position(self) -> Position:
        """The position after the lines returned so far."""
        return Position(self._inode, self._offset)

    def commit(self) -> None:
        """Save `position` durably: the lines before it are handled."""
        save_position(self.position_path, self.position)

    def read(self, max_bytes: int = 4 * MAX_LINE_BYTES) -> list[bytes]:
        """The next complete lines (without their newline), at most about `max_bytes`."""
        if self._handle is None and not self._open():
            return []
        assert self._handle is not None
        if os.fstat(self._handle.fileno()).st_size < self._offset:
            logger.warning("access log %s was truncated: reading it from the start", self.path)
            self._offset = 0
        lines = self._lines(max_bytes)
        if not lines and self._replaced():
            lines = self._finish_old_file()
            self._handle.close()
            self._handle = None
            self._open()
        return lines

    def rewind(self) -> None:
        """Go back to the saved position: the lines read since are read again."""
        self.close()
        self._saved = load_position(self.position_path)

    def close(self) -> None:
        """Close the file (the position is not saved: call `commit` for that)."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def _open(self) -> bool:
        try:
            handle = self.path.open("rb")
        except FileNotFoundError:
            return False
        inode = os.fstat(handle.fileno()).st_ino
        saved, self._saved = self._saved, None
        self._handle, self._inode, self._offset = handle, inode, 0
        if saved is not None and saved.inode == inode:
            self._offset = saved.offset
        elif saved is not None and saved.offset > 0:
            logger.error(
                "access log %s was replaced while no shipper read it: lines after offset %d of "
                "the old file (inode %d) were not read; ship them with 'gateway envoy "
                "ship-records --log <old file>'",
                self.path,
                saved.offset,
                saved.inode,
            )
        return True

    def _lines(self, max_bytes: int) -> list[bytes]:
        assert self._handle is not None
        self._handle.seek(self._offset)
        chunk = self._handle.read(max_bytes)
        end = chunk.rfind(b"\n")
        if end < 0:
            if len(chunk) < MAX_LINE_BYTES:
                return []  # a line still being written
            end = len(chunk) - 1  # an over-long line: handed over cut, rejected by the caller
            chunk = chunk[:end] + b"\n"
        self._offset += end + 1
        return [line for line in chunk[:end].split(b"\n") if line]

    def _replaced(self) -> bool:
        try:
            return self.path.stat().st_ino != self._inode
        except FileNotFoundError:
            return False  # renamed, new file not there yet: keep the old one

    def _finish_old_file(self) -> list[bytes]:
        """What is left in the rotated file after its last complete line (an unfinished line)."""
        assert self._handle is not None
        self._handle.seek(self._offset)
        rest = self._handle.read(MAX_LINE_BYTES)
        self._offset += len(rest)
        return [rest] if rest.strip() else []
