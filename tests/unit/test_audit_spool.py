"""The local spool: group-committed appends, replay after a real kill -9, torn tails, segments,
slots, and exactly-once storage through the routing log store."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from compliance.audit.frames import frame, parse_frames
from compliance.audit.spool import Position, Spool, SpoolError
from compliance.routing_batches import decode, encode
from compliance.routing_log import RoutingLogWriter
from compliance.store.migrate import upgrade
from compliance.store.routing_log_store import RoutingLogStore
from tests.audit_chain_support import decision

PROJECT = Path(__file__).resolve().parents[2]


def drain(spool: Spool, batch: int = 1000) -> tuple[list[bytes], Position]:
    """Everything durable from the acknowledged position on."""
    position, payloads = spool.ack_position, []
    while True:
        got, position = spool.read(position, batch)
        if not got:
            return payloads, position
        payloads.extend(got)


def test_frames_round_trip_and_stop_at_torn_or_unwritten_data() -> None:
    data = frame(b"one") + frame(b"two")
    assert parse_frames(data + b"\0" * 16, 10) == ([b"one", b"two"], len(data), False)
    torn = data + frame(b"three")[:-1]
    assert parse_frames(torn, 10) == ([b"one", b"two"], len(data), False)
    corrupt = data + frame(b"four")[:-1] + b"X"
    assert parse_frames(corrupt, 10) == ([b"one", b"two"], len(data), True)
    with pytest.raises(ValueError):
        frame(b"")


def test_append_flush_read_acknowledge_and_clean_reopen(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    flushed: list[int] = []
    spool.open(lambda count, error: flushed.append(count))
    numbers = [spool.append(f"r{i}".encode()) for i in range(100)]
    spool.flush()
    assert numbers == list(range(1, 101)) and spool.durable_count == 100
    assert flushed[-1] == 100 and len(flushed) <= 100  # group commit: one flush, many records
    payloads, end = drain(spool, batch=30)
    assert payloads == [f"r{i}".encode() for i in range(100)]
    assert spool.pending == 100
    spool.acknowledge(end, 100)
    assert spool.pending == 0
    spool.close()
    with pytest.raises(SpoolError):
        spool.append(b"late")
    again = Spool(tmp_path)
    again.open()
    assert again.pending == 0 and drain(again)[0] == []
    again.close()


CRASH = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from compliance.audit.spool import Spool
    spool = Spool(Path(sys.argv[1]), segment_bytes=int(sys.argv[2]))
    spool.open()
    for i in range(int(sys.argv[3])):
        if len(sys.argv) > 6:  # real routing records
            from compliance.routing_batches import encode
            from tests.audit_chain_support import decision
            spool.append(encode(decision(i)))
        else:
            spool.append(f"record-{i}".encode())
        if sys.argv[5] == "each":
            spool.flush()  # one write group per record
    spool.flush()
    done, wanted, position = 0, int(sys.argv[4]), spool.ack_position
    while done < wanted:
        got, position = spool.read(position, wanted - done)
        done += len(got)
    spool.acknowledge(position, done)
    print(spool.directory, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def crash(
    root: Path,
    records: int,
    acknowledged: int,
    segment_bytes: int = 1 << 20,
    flush: str = "end",
    *extra: str,
) -> Path:
    """A real process spools `records`, acknowledges the first ones, then is SIGKILLed."""
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            CRASH,
            str(root),
            str(segment_bytes),
            str(records),
            str(acknowledged),
            flush,
            *extra,
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(PROJECT)},
        timeout=60,
        check=False,
    )
    assert result.returncode == -9, result.stderr
    return Path(result.stdout.strip())


def test_a_damaged_ack_file_is_refused_by_name_and_loses_nothing(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.open()
    for i in range(5):
        spool.append(f"r{i}".encode())
    spool.flush()
    first_two, after_two = spool.read(spool.ack_position, 2)
    assert first_two == [b"r0", b"r1"]
    spool.acknowledge(after_two, 2)
    slot = spool.directory
    assert slot is not None
    spool.close()
    (slot / "ack").write_text("not a position\n", "ascii")
    with pytest.raises(SpoolError, match=r"unreadable ack file"):
        Spool(tmp_path).open(slot=slot)
    (slot / "ack").unlink()  # an operator removes it: all replayed (the database skips stored ones)
    again = Spool(tmp_path)
    again.open(slot=slot)
    assert drain(again)[0] == [f"r{i}".encode() for i in range(5)]
    again.close()


def test_kill_9_replays_exactly_the_unacknowledged_records(tmp_path: Path) -> None:
    slot = crash(tmp_path, records=50, acknowledged=20)
    spool = Spool(tmp_path)
    spool.open()
    assert spool.directory == slot  # the dead process's lock went with it
    assert spool.pending == 30
    payloads, end = drain(spool)
    assert payloads == [f"record-{i}".encode() for i in range(20, 50)]
    spool.append(b"new")
    spool.flush()
    more, end = spool.read(end, 10)
    assert more == [b"new"]
    spool.acknowledge(end, 31)
    spool.close()
    assert list(slot.glob("*.spool")) == []  # everything stored: nothing kept


def test_torn_tail_is_ignored(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    slot = crash(tmp_path, records=5, acknowledged=0)
    segment = next(slot.glob("*.spool"))
    valid_end = len(b"".join(frame(f"record-{i}".encode()) for i in range(5)))
    with segment.open("r+b") as handle:  # half a frame, as a write cut short would leave
        handle.seek(valid_end)
        handle.write(frame(b"record-5")[:-1] + b"!")
    spool = Spool(tmp_path)
    spool.open()
    assert drain(spool)[0] == [f"record-{i}".encode() for i in range(5)]
    spool.close()
    assert "torn record" in caplog.text


def test_segments_rotate_and_acknowledged_ones_are_deleted(tmp_path: Path) -> None:
    slot = crash(tmp_path, records=400, acknowledged=100, segment_bytes=1024, flush="each")
    assert len(list(slot.glob("*.spool"))) > 5
    spool = Spool(tmp_path, segment_bytes=1024)
    spool.open()
    assert spool.pending == 300
    payloads, end = drain(spool, batch=7)
    assert payloads == [f"record-{i}".encode() for i in range(100, 400)]
    spool.acknowledge(end, 300)
    assert [p for p in slot.glob("*.spool") if p.stem != f"{end.segment:012d}"] == []
    spool.close()


def test_each_process_gets_its_own_slot(tmp_path: Path) -> None:
    first, second = Spool(tmp_path), Spool(tmp_path)
    first.open()
    second.open()
    assert first.directory != second.directory
    first.close()
    third = Spool(tmp_path)
    third.open()
    assert third.directory == first.directory
    second.close()
    third.close()


def test_replayed_records_are_stored_exactly_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/log.db"
    upgrade(url)
    log = RoutingLogStore(url)
    spool = Spool(tmp_path / "spool")
    spool.open()
    for n in range(1, 6):
        spool.append(encode(decision(n)))
    spool.flush()
    payloads, _ = drain(spool)
    records = [decode(p) for p in payloads]
    assert records == [decision(n) for n in range(1, 6)]  # timestamps round-trip
    assert log.append_batch(records, skip_existing=True) == 5
    spool.close()  # stored but never acknowledged: as if killed right after the commit
    again = Spool(tmp_path / "spool")
    again.open()
    replay = [decode(p) for p in drain(again)[0]]
    assert len(replay) == 5
    assert log.append_batch([*replay, decision(6)], skip_existing=True) == 1
    assert log.count() == 6
    again.close()
    log.close()


async def test_a_spool_left_by_a_dead_process_is_stored(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/log.db"
    upgrade(url)
    live = Spool(tmp_path / "spool")
    live.open()  # holds slot-0, so the crashing process spools into slot-1
    orphan = crash(tmp_path / "spool", 30, 10, 1 << 20, "end", "records")
    live.close()
    assert orphan.name == "slot-1"
    log = RoutingLogStore(url)
    writer = RoutingLogWriter(log, Spool(tmp_path / "spool"))
    writer.start()  # takes slot-0 again and adopts slot-1
    await writer.record(decision(100))
    await writer.close()
    assert log.count() == 21
    assert log.get("dec-000010") is not None and log.get("dec-000009") is None
    assert list(orphan.glob("*.spool")) == []
    log.close()


def test_a_frame_larger_than_a_read_chunk_is_read_back_whole(tmp_path: Path) -> None:
    big = os.urandom(5 * 1024 * 1024)  # over the reader's 4 MiB chunk
    spool = Spool(tmp_path)
    spool.open()
    for payload in (b"before", big, b"after"):
        spool.append(payload)
    spool.flush()
    assert drain(spool, batch=10)[0] == [b"before", big, b"after"]
    spool.close()
    again = Spool(tmp_path)  # and after a restart (replayed from the segment files)
    again.open()
    payloads, end = drain(again, batch=1)
    assert payloads == [b"before", big, b"after"]
    again.acknowledge(end, 3)
    again.close()


def test_a_record_over_the_spool_limit_is_refused_not_written(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.open()
    with pytest.raises(SpoolError, match="refused"):
        spool.append(b"x" * (16 * 1024 * 1024 + 1))
    spool.append(b"next")
    spool.flush()
    assert drain(spool)[0] == [b"next"]
    spool.close()


def test_damaged_spool_data_is_kept_aside_and_the_drain_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from compliance.routing_batches import SpoolDrain

    url = f"sqlite:///{tmp_path}/log.db"
    upgrade(url)
    log = RoutingLogStore(url)
    spool = Spool(tmp_path / "spool")
    spool.open()
    payloads = [encode(decision(n)) for n in range(1, 6)]
    for payload in payloads:
        spool.append(payload)
    spool.flush()
    assert spool.directory is not None
    segment = next(spool.directory.glob("*.spool"))
    start = len(frame(payloads[0]) + frame(payloads[1]))
    damaged = bytearray(frame(payloads[2]))
    damaged[-5] ^= 0xFF  # bit rot in the third record: its CRC no longer matches
    with segment.open("r+b") as handle:
        handle.seek(start)
        handle.write(damaged)
    position, stored = spool.ack_position, 0
    sink = SpoolDrain(log)
    for _ in range(10):
        count, position = sink.drain(spool, position, 100)
        stored += count
        if not count:
            break
    assert [log.get(f"dec-00000{n}") is not None for n in range(1, 6)] == [
        True,
        True,
        False,
        True,
        True,
    ]
    assert spool.pending == 0
    kept = tmp_path / "spool" / "damaged" / f"{spool.directory.name}-{segment.stem}-{start}.bin"
    assert kept.read_bytes() == bytes(damaged)  # nothing lost: the bytes are kept
    assert f"offset {start}" in caplog.text and str(kept) in caplog.text
    spool.close()
    log.close()
