"""The gateway as a user installs it: the wheel, without extras, in a fresh virtual environment.

Catches a module that imports a dev-only package (httpx was one, mmdb-writer another) and an
undeclared dependency: every CLI command's `--help` runs from the installed wheel, and
`gateway demo` answers its first request.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from gateway.cli import build_parser
from regions.simulator.fleet import free_port

PROJECT_ROOT = Path(__file__).parents[2]
pytestmark = pytest.mark.integration


def _command_paths(
    parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()
) -> Iterator[tuple[str, ...]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*prefix, name)
                yield from _command_paths(sub, (*prefix, name))


def _clean_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "PYTHON"))}
    env["HOME"] = str(home)
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv with only the wheel and its declared dependencies; returns its bin directory."""
    root = tmp_path_factory.mktemp("wheel")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(root), "."],
        cwd=PROJECT_ROOT,
        check=True,
        env=env,
        timeout=600,
    )
    (wheel,) = root.glob("residency_gateway-*.whl")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)],
        check=True,
        env=env,
        timeout=900,
    )
    return venv / "bin"


def test_every_command_helps_from_the_installed_wheel(installed: Path, tmp_path: Path) -> None:
    paths = [(), *_command_paths(build_parser())]
    assert len(paths) > 15  # every subcommand, not just the top level
    failures = {}
    for start in range(0, len(paths), 4):  # a few at a time: a loaded machine is slow
        batch = paths[start : start + 4]
        processes = {
            path: subprocess.Popen(
                [str(installed / "gateway"), *path, "--help"],
                cwd=tmp_path,
                env=_clean_env(tmp_path),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for path in batch
        }
        for path, process in processes.items():
            out, err = process.communicate(timeout=300)
            if process.returncode != 0 or "usage:" not in out:
                failures[" ".join(path)] = err.strip().splitlines()[-1:] or out[:200]
    assert not failures, failures


def test_the_installed_demo_answers_a_request(installed: Path, tmp_path: Path) -> None:
    port = free_port()
    demo = subprocess.Popen(
        # data in cwd/var; free simulator ports: another demo may hold 9101-9105
        [str(installed / "gateway"), "demo", "--port", str(port), "--simulator-ports", "auto"],
        cwd=tmp_path,
        env=_clean_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        data=b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}',
        headers={"Authorization": "Bearer rg-demo-key", "X-Forwarded-For": "193.99.144.80"},
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            assert demo.poll() is None, demo.communicate()[0]
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    assert response.headers["x-residency-region"] == "eu-frankfurt"
                    assert orjson.loads(response.read())["choices"]
                    break
            except (urllib.error.URLError, ConnectionError) as exc:
                if isinstance(exc, urllib.error.HTTPError) and exc.code not in (503,):
                    raise
                assert time.monotonic() < deadline, "the installed demo never answered"
                time.sleep(0.5)
    finally:
        demo.terminate()
        banner = demo.communicate(timeout=30)[0]
    # The banner says how to get the tokens the admin API and the console need.
    assert "--role admin" in banner and "--role auditor" in banner, banner
