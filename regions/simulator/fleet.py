"""Launch simulator regions as subprocesses (demo, integration tests, benchmark)."""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from regions.simulator.config import DEFAULT_MODELS

__all__ = [
    "DEFAULT_MODELS",
    "SimulatorFleet",
    "SimulatorSpec",
    "SimulatorStartError",
    "free_port",
]


_PROJECT_ROOT = Path(__file__).resolve().parents[2]


_HANDED_OUT: set[int] = set()
"""Ports `free_port` returned in this process: the kernel may offer a released port again at
once, and two simulators of one fleet were once given the same one."""


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on ``host`` that was free a moment ago, never one returned before."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(1000):
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port: int = sock.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError(f"no fresh free port on {host}")


@dataclass(frozen=True)
class SimulatorSpec:
    """How to launch one simulated region; ``extra_args`` are appended to the CLI."""

    region_id: str
    port: int
    models: tuple[str, ...] = DEFAULT_MODELS
    host: str = "127.0.0.1"
    ttft_ms: float = 0
    tokens_per_second: float = 0
    extra_args: tuple[str, ...] = ()

    @property
    def base_url(self) -> str:
        """``http://host:port`` (no ``/v1`` suffix)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def openai_base_url(self) -> str:
        """``base_url`` + ``/v1``, as the ``openai`` client expects."""
        return f"{self.base_url}/v1"

    def command(self, python: str = sys.executable, instance: str = "") -> list[str]:
        """The argv that starts this simulator (``instance``: see ``--instance``)."""
        return [
            python,
            "-m",
            "regions.simulator",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--region-id",
            self.region_id,
            "--models",
            ",".join(self.models),
            "--ttft-ms",
            repr(float(self.ttft_ms)),
            "--tokens-per-second",
            repr(float(self.tokens_per_second)),
            *(("--instance", instance) if instance else ()),
            *self.extra_args,
        ]


def _exit_reason(code: int, output: str) -> str:
    """Why a simulator exited: its one-line error (exit status 2), else the status."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    prefix = "python -m regions.simulator: error: "
    if code == 2 and last.startswith(prefix):
        return last.removeprefix(prefix)
    return f"exited with code {code}" + (f": {last}" if last else "")


class SimulatorStartError(RuntimeError):
    """A simulator process exited or did not answer ``/healthz`` in time.

    ``reason`` is one line (e.g. ``port 9101 is in use on 127.0.0.1``); the message names the
    region and its address and adds the process output.
    """

    def __init__(self, spec: SimulatorSpec, reason: str, output: str = "") -> None:
        summary = f"simulator {spec.region_id} on {spec.base_url}: {reason}"
        super().__init__(f"{summary}; output:\n{output}" if output else summary)
        self.spec = spec
        self.reason = reason
        self.output = output


@dataclass
class _Running:
    spec: SimulatorSpec
    process: subprocess.Popen[bytes]
    log_path: Path
    instance: str
    final_output: str | None = None

    def output(self) -> str:
        if self.final_output is not None:
            return self.final_output
        return self.log_path.read_text(errors="replace")


class SimulatorFleet:
    """One ``python -m regions.simulator`` subprocess per spec; a context manager.

    ``start()`` (or ``with``) launches all processes and waits until every ``/healthz``
    answers (any status, so ``--down`` regions count as started) from the process this fleet
    started: each gets a random ``--instance`` token that its answers must carry, so a
    simulator someone else left on the port (another demo's) is not mistaken for it. Output
    (stdout and stderr) goes to a temporary log file, readable via :meth:`output` (kept after
    stop).
    """

    def __init__(
        self,
        specs: Iterable[SimulatorSpec],
        *,
        startup_timeout: float = 15.0,
        stop_grace: float = 5.0,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self._specs = tuple(specs)
        regions = [s.region_id for s in self._specs]
        if len(set(regions)) != len(regions):
            raise ValueError(f"duplicate region ids in {regions}")
        endpoints = [(s.host, s.port) for s in self._specs]
        if len(set(endpoints)) != len(endpoints):
            raise ValueError(f"duplicate host:port in {endpoints}")
        self.startup_timeout = startup_timeout
        self.stop_grace = stop_grace
        self._env = dict(os.environ if env is None else env)
        self._running: dict[str, _Running] = {}

    @property
    def specs(self) -> tuple[SimulatorSpec, ...]:
        """The specs this fleet was created with."""
        return self._specs

    def spec(self, region_id: str) -> SimulatorSpec:
        """The spec for ``region_id``."""
        for spec in self._specs:
            if spec.region_id == region_id:
                return spec
        raise KeyError(region_id)

    def process(self, region_id: str) -> subprocess.Popen[bytes]:
        """The process for ``region_id`` (``KeyError`` if never started)."""
        return self._running[region_id].process

    def output(self, region_id: str) -> str:
        """Everything the region's process has printed so far."""
        return self._running[region_id].output()

    def start(self) -> None:
        """Launch all simulators and wait for their health endpoints."""
        if any(item.process.poll() is None for item in self._running.values()):
            raise RuntimeError("fleet already running")
        self._running = {}
        env = dict(self._env)
        env["PYTHONUNBUFFERED"] = "1"
        pythonpath = env.get("PYTHONPATH")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_PROJECT_ROOT), pythonpath]))
        try:
            for spec in self._specs:
                instance = secrets.token_hex(8)
                fd, name = tempfile.mkstemp(prefix=f"simulator-{spec.region_id}-", suffix=".log")
                try:
                    process = subprocess.Popen(
                        spec.command(instance=instance),
                        stdin=subprocess.DEVNULL,
                        stdout=fd,
                        stderr=subprocess.STDOUT,
                        env=env,
                    )
                finally:
                    os.close(fd)
                self._running[spec.region_id] = _Running(spec, process, Path(name), instance)
            deadline = time.monotonic() + self.startup_timeout
            for running in self._running.values():
                self._wait_healthy(running, deadline)
        except BaseException:
            self.stop()
            raise

    def _wait_healthy(self, running: _Running, deadline: float) -> None:
        spec = running.spec
        url = f"{spec.base_url}/healthz"
        while True:
            code = running.process.poll()
            if code is not None:
                output = self.output(spec.region_id)
                raise SimulatorStartError(spec, _exit_reason(code, output), output)
            try:
                with urllib.request.urlopen(url, timeout=1.0) as response:
                    headers = response.headers
            except urllib.error.HTTPError as exc:  # e.g. 503 from a --down region
                headers = exc.headers
                exc.close()
            except OSError:
                headers = None
            instance = None if headers is None else headers.get("x-simulator-instance")
            if instance == running.instance:
                return
            if time.monotonic() > deadline:
                if headers is None:
                    detail = f"{url} did not answer"
                else:
                    region = headers.get("x-simulator-region")
                    detail = f"{url} is answered by another process (region {region!r})"
                raise SimulatorStartError(
                    spec,
                    f"not healthy after {self.startup_timeout:g}s ({detail})",
                    self.output(spec.region_id),
                )
            time.sleep(0.05)

    def stop(self) -> None:
        """Terminate all processes, kill any still alive after ``stop_grace``; idempotent."""
        running = list(self._running.values())
        for item in running:
            if item.process.poll() is None:
                item.process.terminate()
        deadline = time.monotonic() + self.stop_grace
        for item in running:
            try:
                item.process.wait(timeout=max(deadline - time.monotonic(), 0.0))
            except subprocess.TimeoutExpired:
                item.process.kill()
                item.process.wait()
        for item in running:
            if item.final_output is None:
                with contextlib.suppress(OSError):
                    item.final_output = item.output()
                    item.log_path.unlink()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
