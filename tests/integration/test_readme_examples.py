"""Executable documentation: every example in README.md and deploy/README.md runs against a real
`gateway demo`, in document order, and must show what the README says it shows.

How blocks are found and compared: tests/readme_examples.py. A block that cannot run here says
why, in a `<!-- not run: … -->` line the reader sees in the source.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from regions.simulator.fleet import free_port
from tests.readme_examples import Example, examples, unmatched_lines

PROJECT_ROOT = Path(__file__).parents[2]
DOCUMENTED_URL = "http://127.0.0.1:8080"
DOCUMENTS = ("README.md", "deploy/README.md")
EXAMPLES = [e for doc in DOCUMENTS for e in examples(PROJECT_ROOT / doc, doc)]
pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Ran:
    """What one example printed and how it ended."""

    returncode: int
    output: str


def _wait_until_answering(url: str, demo: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        assert demo.poll() is None, log.read_text()
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError):
            pass
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.3)


AUTO_PORTS = ("--simulator-ports", "auto")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Ran]]:
    """Start the demo, run every example in order in one working directory, keep the output."""
    work = tmp_path_factory.mktemp("readme")
    (work / "dev").symlink_to(PROJECT_ROOT / "dev")  # `./dev …` as in a clone
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update(
        {
            "GATEWAY_VENV": str(Path(sys.executable).parents[1]),
            "GATEWAY_DATA_DIR": str(work / "var"),
            "GATEWAY_ADMIN_URL": url,
            "PYTHONPATH": str(PROJECT_ROOT),
        }
    )
    log = work / "demo.log"
    with log.open("wb") as sink:
        demo = subprocess.Popen(
            # free simulator ports: another demo (a parallel test run) may hold 9101-9105
            [sys.executable, "-m", "gateway.cli", "demo", "--port", str(port), *AUTO_PORTS],
            cwd=work,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_until_answering(url, demo, log)
        state = work / ".state"
        state.write_text("")
        results = {}
        for example in EXAMPLES:
            if example.not_run is None:
                results[example.name] = _run(example, work, env, state, url)
        yield results
    finally:
        demo.terminate()
        demo.wait(timeout=30)


def _run(example: Example, work: Path, env: dict[str, str], state: Path, url: str) -> Ran:
    code = example.code.replace(DOCUMENTED_URL, url)
    if example.language == "python":
        script = work / "example.py"
        script.write_text(code)
        code = f'"{sys.executable}" {script}'
    wrapped = f"set -euo pipefail\nsource {state}\n{code}\nexport -p > {state}\n"
    process = subprocess.Popen(
        ["bash", "-c", wrapped],
        cwd=work,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # so a block that never ends is stopped with all it started
    )
    try:
        output, _ = process.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        return Ran(-1, f"{output}\n[still running after 300 s: stopped]")
    return Ran(process.returncode, output)


def test_there_are_examples_to_run() -> None:
    assert sum(1 for e in EXAMPLES if e.not_run is None) >= 6


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e.name)
def test_example_runs_and_shows_what_the_readme_says(
    example: Example, runs: dict[str, Ran]
) -> None:
    if example.not_run is not None:
        assert len(example.not_run) > 10, f"{example.name}: say why it is not run"
        return
    ran = runs[example.name]
    assert ran.returncode == 0, f"{example.name} failed:\n{example.code}\n---\n{ran.output}"
    missing = unmatched_lines(example.shown, ran.output)
    assert not missing, f"{example.name}: not in the output: {missing}\n---\n{ran.output}"
