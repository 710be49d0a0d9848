"""Tailing Envoy's access log from a durable position: resume, rotation, truncation (real files)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from gateway.envoy.log_tail import MAX_LINE_BYTES, LogTail, load_position


def _tail(directory: Path) -> LogTail:
    return LogTail(directory / "access.log", directory / "access.log.shipped")


def _append(path: Path, data: bytes) -> None:
    with path.open("ab") as handle:
        handle.write(data)


def test_only_complete_lines_are_read(tmp_path: Path) -> None:
    tail = _tail(tmp_path)
    assert tail.read() == []  # no file yet
    _append(tail.path, b"one\ntw")
    assert tail.read() == [b"one"]
    assert tail.read() == []  # "tw" is still being written
    _append(tail.path, b"o\n")
    assert tail.read() == [b"two"]


def test_a_new_tail_resumes_after_the_committed_lines_and_rereads_the_rest(
    tmp_path: Path,
) -> None:
    tail = _tail(tmp_path)
    _append(tail.path, b"one\ntwo\n")
    assert tail.read() == [b"one", b"two"]
    tail.commit()
    assert load_position(tail.position_path) == tail.position
    _append(tail.path, b"three\n")
    assert tail.read() == [b"three"]  # read, never committed: a crash now
    tail.close()
    again = _tail(tmp_path)
    assert again.read() == [b"three"]


def test_a_rotated_file_is_read_to_its_end_before_the_new_one(tmp_path: Path) -> None:
    tail = _tail(tmp_path)
    _append(tail.path, b"one\n")
    assert tail.read() == [b"one"]
    rotated = tmp_path / "access.log.1"
    os.rename(tail.path, rotated)
    _append(rotated, b"two\n")  # Envoy writes on until it reopens its log
    _append(tail.path, b"three\n")  # then into the new file
    assert tail.read() == [b"two"]
    assert tail.read() == []  # the old file's end: the new file is opened
    assert tail.read() == [b"three"]


def test_a_file_truncated_in_place_is_read_from_the_start(tmp_path: Path) -> None:
    tail = _tail(tmp_path)
    _append(tail.path, b"one\ntwo\n")
    assert tail.read() == [b"one", b"two"]
    tail.path.write_bytes(b"new\n")  # copytruncate, then Envoy writes
    assert tail.read() == [b"new"]


def test_a_file_replaced_while_nobody_read_it_is_read_and_the_gap_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tail = _tail(tmp_path)
    _append(tail.path, b"one\n")
    assert tail.read() == [b"one"]
    tail.commit()
    tail.close()
    os.rename(tail.path, tmp_path / "old.log")
    _append(tail.path, b"fresh\n")
    with caplog.at_level(logging.ERROR):
        assert _tail(tmp_path).read() == [b"fresh"]
    assert "were not read" in caplog.text


def test_an_over_long_line_is_handed_over_cut_and_the_next_line_is_read(tmp_path: Path) -> None:
    tail = _tail(tmp_path)
    _append(tail.path, b"x" * (MAX_LINE_BYTES + 10) + b"\nnext\n")
    lines = tail.read(MAX_LINE_BYTES)
    assert len(lines) == 1 and len(lines[0]) < MAX_LINE_BYTES
    rest = tail.read()
    assert rest[-1] == b"next"
