"""kill -9 under load on the Envoy access-log path: every answer keeps its record, none twice.

Envoy's file logger writes its buffer every FLUSH_MS and never fsyncs, so a kill -9 of Envoy
loses the lines of requests answered within the last flush interval before the kill: that is
the stated crash window. The Envoy test therefore requires records for every answer completed
more than WINDOW_MARGIN (20 flush intervals, for a busy machine) before the kill and for every
answer after the restart, and only prints how many answers inside the window lost theirs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from regions.simulator.fleet import SimulatorFleet
from tests.integration.conftest import DEMO_KEY, IP_DE, REGIONS
from tests.integration.envoy_records_support import (
    FLUSH_MS,
    RecordsPlane,
    cli_env,
    gateway_cli,
    logged_decisions,
    records_plane,
    rejected_lines,
    ship_once,
    stored_records,
)
from tests.integration.envoy_support import wait_for

pytestmark = pytest.mark.integration
WINDOW_MARGIN = 20 * FLUSH_MS / 1000


class Load:
    """Client threads through Envoy; keeps (decision id, status, monotonic completion time) of
    answers, and the ids of those sent after `mark` was set (only a later Envoy can answer them)."""

    def __init__(self, plane: RecordsPlane, threads: int = 3) -> None:
        self.url = f"http://127.0.0.1:{plane.plane.options.listener_port}/v1/chat/completions"
        self.answered: list[tuple[str, int, float]] = []
        self.sent_after_mark: set[str] = set()
        self.mark = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(i,)) for i in range(threads)]

    def _run(self, index: int) -> None:
        headers = {"Authorization": f"Bearer {DEMO_KEY}", "X-Forwarded-For": IP_DE}
        if index == 2:  # refusals (451) among the answers
            headers.update({"X-Data-Subject-Country": "IN", "X-Data-Class": "payment"})
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
        with httpx.Client(timeout=5.0, trust_env=False) as client:
            while not self._stop.is_set():
                marked = self.mark.is_set()
                try:
                    response = client.post(self.url, json=body, headers=headers)
                    response.read()
                except httpx.HTTPError:
                    time.sleep(0.01)  # Envoy is down: try again
                    continue
                decision = response.headers.get("x-residency-decision")
                if decision:
                    with self._lock:
                        self.answered.append((decision, response.status_code, time.monotonic()))
                        if marked:
                            self.sent_after_mark.add(decision)

    def count(self) -> int:
        with self._lock:
            return len(self.answered)

    def wait_more(self, more: int) -> None:
        target = self.count() + more
        wait_for(f"{more} more answers", lambda: self.count() >= target, timeout=60)

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()


def _start_shipper(data_dir: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "envoy", "ship-records"],
        env=cli_env(data_dir),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _stop(plane: RecordsPlane, shipper: subprocess.Popen[bytes]) -> None:
    """SIGTERM the shipper once it has caught up (so it has started: on a busy machine a new
    Python process can take seconds to install its handler)."""
    wait_for(
        "the running shipper",
        lambda: len(stored_records(plane.settings)) >= logged_decisions(plane.log),
        timeout=60,
    )
    shipper.send_signal(signal.SIGTERM)
    assert shipper.wait(60) == 0


def _ship_all(plane: RecordsPlane) -> dict[str, int]:
    """Ship until every decision line Envoy wrote is in the chain; decision id -> times stored."""
    lines = logged_decisions(plane.log)

    def shipped() -> Counter[str] | None:
        ship_once(plane.settings.data_dir)
        ids = Counter(r["decision_id"] for r in stored_records(plane.settings))
        return ids if sum(ids.values()) >= lines else None

    return dict(wait_for("every logged decision in the chain", shipped, timeout=60))


def _assert_chain_intact(plane: RecordsPlane, stored: dict[str, int]) -> None:
    assert [d for d, n in stored.items() if n > 1] == [], "records stored twice"
    assert rejected_lines(plane.settings) == []
    verified = gateway_cli(plane.settings.data_dir, "audit", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_kill_9_of_the_shipper_under_load_loses_and_repeats_no_record(
    fleet: SimulatorFleet, catalog: Path, temp_dir: Path
) -> None:
    with records_plane(catalog, temp_dir, "kill-shipper", tuple(REGIONS)) as plane:
        data_dir = plane.settings.data_dir
        shipper = _start_shipper(data_dir)
        with Load(plane) as load:
            for _ in range(4):
                load.wait_more(150)
                wait_for("records shipped", lambda: len(stored_records(plane.settings)) > 0)
                shipper.send_signal(signal.SIGKILL)
                shipper.wait()
                shipper = _start_shipper(data_dir)
            load.wait_more(100)
        # Every answered request's line reaches the file within a flush interval.
        answered = {d for d, _, _ in load.answered}
        wait_for("Envoy's log lines", lambda: logged_decisions(plane.log) >= len(answered))
        _stop(plane, shipper)
        stored = _ship_all(plane)
    assert answered - set(stored) == set(), "answered requests without a record"
    assert any(status == 451 for _, status, _ in load.answered)
    _assert_chain_intact(plane, stored)


def test_kill_9_of_envoy_under_load_loses_only_the_unflushed_window(
    fleet: SimulatorFleet, catalog: Path, temp_dir: Path
) -> None:
    with records_plane(catalog, temp_dir, "kill-envoy", tuple(REGIONS)) as plane:
        shipper = _start_shipper(plane.settings.data_dir)
        supervisor = plane.plane.envoy.supervisor
        with Load(plane) as load:
            load.wait_more(300)
            wait_for(  # answers older than the crash window exist
                "answers before the window",
                lambda: load.answered[0][2] < time.monotonic() - 2 * WINDOW_MARGIN,
            )
            pid = supervisor.pid
            assert pid is not None
            killed_at = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            load.mark.set()
            wait_for("Envoy restarted", lambda: supervisor.restarts == 1 and supervisor.pid)
            load.wait_more(200)
        _stop(plane, shipper)
        after = load.sent_after_mark
        wait_for("the restarted Envoy's lines", lambda: logged_decisions(plane.log) >= len(after))
        stored = _ship_all(plane)
    before = {d for d, _, t in load.answered if t < killed_at - WINDOW_MARGIN}
    window = {d for d, _, t in load.answered if t >= killed_at - WINDOW_MARGIN} - after
    assert before and after
    assert before - set(stored) == set(), "answers older than the crash window lost records"
    assert after - set(stored) == set(), "answers after the restart lost records"
    lost = window - set(stored)
    ages = [killed_at - t for d, _, t in load.answered if d in lost]
    print(
        f"crash window ({FLUSH_MS} ms flush): {len(lost)} of {len(window)} answers lost, "
        f"answered at most {max(ages, default=0) * 1000:.0f} ms before the kill"
    )
    _assert_chain_intact(plane, stored)
