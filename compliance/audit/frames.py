"""Spool record framing: payload length, CRC-32, payload (pure)."""

from __future__ import annotations

import struct
import zlib

FRAME = struct.Struct("<II")  # payload length (never 0), CRC-32 of the payload


def parse_frames(data: bytes, max_records: int) -> tuple[list[bytes], int, bool]:
    """Complete, valid frames at the start of `data`: (payloads, bytes used, hit_bad_frame).

    A zero length marks the unwritten (preallocated) end; a bad CRC or impossible length marks
    a torn write: both stop the parse.
    """
    payloads: list[bytes] = []
    pos, size = 0, len(data)
    header = FRAME.size
    while len(payloads) < max_records and pos + header <= size:
        length, crc = FRAME.unpack_from(data, pos)
        if length == 0:
            return payloads, pos, False
        end = pos + header + length
        if end > size:
            break
        payload = data[pos + header : end]
        if zlib.crc32(payload) != crc:
            return payloads, pos, True
        payloads.append(payload)
        pos = end
    return payloads, pos, False


def frame_size(data: bytes) -> int | None:
    """Header plus payload length of the frame starting `data` (None: no header, or the
    zero length of the unwritten end)."""
    if len(data) < FRAME.size:
        return None
    length, _ = FRAME.unpack_from(data, 0)
    return FRAME.size + length if length else None


def frame(payload: bytes) -> bytes:
    """One framed record."""
    if not payload:
        raise ValueError("spool records must not be empty")
    return FRAME.pack(len(payload), zlib.crc32(payload)) + payload
