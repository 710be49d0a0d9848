"""Processes the benchmark starts: pinned with taskset, logged to files, always cleaned up.

Each process gets its own session (process group), so it can be stopped by its own id, with
everything it spawned (uvicorn workers), and never by a name pattern.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only, no proxy


class StartError(RuntimeError):
    """A process did not come up; the message carries the tail of its log."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as handle:
                found += [int(c) for c in handle.read().split()]
    return found


def tree(pid: int) -> list[int]:
    """`pid` and all its descendants."""
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        todo += _children(current)
    return pids


def rss_kib(pid: int) -> int:
    """Resident set size of `pid` plus its descendants, KiB."""
    total = 0
    for member in tree(pid):
        with contextlib.suppress(OSError), open(f"/proc/{member}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


_TICK = os.sysconf("SC_CLK_TCK")


def _stat_cpu(path: str) -> float:
    with open(path) as handle:
        fields = handle.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime


def cpu_seconds(pids: Sequence[int]) -> float:
    """CPU time used so far by these processes and their descendants."""
    total = 0.0
    for pid in pids:
        for member in tree(pid):
            with contextlib.suppress(OSError):
                total += _stat_cpu(f"/proc/{member}/stat")
    return total


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds so far of each thread of `pid`, by thread id."""
    out: dict[int, float] = {}
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                out[int(tid)] = _stat_cpu(f"/proc/{pid}/task/{tid}/stat")
    return out


def cpu_split(pid: int) -> tuple[float, float]:
    """(main threads, all) CPU seconds so far of `pid` and its descendants (e.g. workers)."""
    main = total = 0.0
    for member in tree(pid):
        with contextlib.suppress(OSError):
            total += _stat_cpu(f"/proc/{member}/stat")  # includes threads that have exited
            main += _stat_cpu(f"/proc/{member}/task/{member}/stat")
    return main, total


def settle(
    pids: Sequence[int], busy: float = 0.1, window: float = 0.5, limit: float = 60.0
) -> float:
    """Wait until these processes use under `busy` of a core (a backlog drained); seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        before = cpu_seconds(pids)
        time.sleep(window)
        if (cpu_seconds(pids) - before) / window < busy:
            break
    return round(time.monotonic() - started, 2)


class ProcessSet:
    """Starts processes pinned to cores and stops every one of them on `stop_all`."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._running: dict[str, subprocess.Popen[bytes]] = {}

    def start(
        self,
        name: str,
        argv: Sequence[str],
        cores: str,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start `argv` under `taskset -c cores`, output to `<log_dir>/<name>.log`."""
        with open(self.log_dir / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(
                ["taskset", "-c", cores, *argv],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})},
                cwd=cwd,
                start_new_session=True,
            )
        self._running[name] = proc
        return proc

    def pids(self) -> list[int]:
        """Process ids of everything running now."""
        return [p.pid for p in self._running.values() if p.poll() is None]

    def log_tail(self, name: str, lines: int = 25) -> str:
        """The last lines of a process's log."""
        path = self.log_dir / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, name: str, timeout: float = 60.0) -> int | None:
        """SIGTERM (graceful); after `timeout` s SIGKILL it and the children it had."""
        proc = self._running.pop(name, None)
        if proc is None:
            return None
        members = tree(proc.pid) if proc.poll() is None else []
        if members:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout)
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        for member in members[1:]:  # e.g. uvicorn workers left behind: only our own group
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if os.getpgid(member) == proc.pid:
                    os.kill(member, signal.SIGKILL)
        return proc.returncode

    def stop_all(self) -> None:
        """Stop everything still running (newest first)."""
        for name in reversed(list(self._running)):
            self.stop(name, timeout=15.0)

    def wait_http(self, name: str, url: str, timeout: float = 60.0) -> None:
        """Poll `url` until it answers 200; fail with the log tail if the process exits."""
        proc = self._running[name]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise StartError(f"{name} exited ({proc.returncode}):\n{self.log_tail(name)}")
            with (
                contextlib.suppress(OSError, urllib.error.URLError),
                _DIRECT.open(url, timeout=2) as response,
            ):
                if response.status == 200:
                    return
            time.sleep(0.1)
        raise StartError(f"{name} not ready at {url} in {timeout:g}s:\n{self.log_tail(name)}")
