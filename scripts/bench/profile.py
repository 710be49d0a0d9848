"""py-spy sampling of the gateway under load, summarised as self and inclusive time by function."""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

_FRAME = re.compile(r"^(?P<func>.+?) \((?P<file>[^()]*?)(?::\d+)?\)$")
REPO_PACKAGES = ("gateway", "compliance", "regions")
# Frames under which everything runs: they say nothing about where the time goes.
_ROOT_FRAMES = (
    "<frozen runpy>:",
    "gateway/cli/commands.py:",
    "gateway/server.py:serve",
    "uvicorn/main.py:run",
    "uvicorn/server.py:Server.run",
    "uvicorn/_compat.py:asyncio_run",
    "asyncio/runners.py:Runner.run",
    "threading.py:Thread._bootstrap",
    "threading.py:Thread.run",
    "concurrent/futures/thread.py:_worker",
)


def py_spy_argv(pid: int, out: Path, duration: float, rate: int) -> list[str]:
    """`py-spy record` writing raw collapsed stacks of `pid` (and children) to `out`."""
    return [
        str(Path(sys.executable).parent / "py-spy"),  # installed in the project's venv
        "record",
        *("-p", str(pid), "-d", str(int(duration)), "-r", str(rate)),
        *("-f", "raw", "-o", str(out), "--nolineno", "--full-filenames", "--subprocesses"),
        # Only the GIL holder: the gateway is pinned to one core, so threads waiting for the
        # core or the GIL look "active" to py-spy's idle check; the GIL holder is real work.
        "--gil",
    ]


def _label(frame: str, repo_root: str) -> tuple[str, str]:
    """(`module:function`, area) for one py-spy frame."""
    match = _FRAME.match(frame)
    if match is None:
        return frame, "other"
    func, path = match["func"], match["file"]
    if "site-packages/" in path:
        rel = path.split("site-packages/", 1)[1]
        area = rel.split("/", 1)[0].removesuffix(".py")
    elif path.startswith(repo_root):
        rel = path[len(repo_root) :].lstrip("/")
        area = rel.split("/", 1)[0]
    elif "/python3" in path:
        rel = re.sub(r"^.*/python3[.\d]*/", "", path)
        area = "stdlib:" + rel.split("/", 1)[0].removesuffix(".py")
    else:
        rel, area = path, "other"
    return f"{rel}:{func}", area


def _thread_role(names: list[str]) -> str:
    """Which thread a stack ran on: the event loop, or a background thread by its job."""
    runs = [i for i, n in enumerate(names) if n.endswith("threading.py:Thread.run")]
    if not runs:
        return "main thread (event loop)"
    rest = names[runs[0] + 1 :]
    items = [i for i, n in enumerate(rest) if n.endswith(":_WorkItem.run")]
    if items:  # asyncio.to_thread / run_in_executor: name the function it runs
        rest = rest[items[0] + 1 :]
    return "thread: " + (rest[0] if rest else "pool worker")


def summarise(raw: Path, repo_root: Path, top: int = 15) -> dict[str, Any]:
    """Self and inclusive shares (% of samples) by function, and self share by package."""
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    by_area: Counter[str] = Counter()
    by_thread: Counter[str] = Counter()
    total = 0
    root = str(repo_root)
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        labels = [_label(f, root) for f in stack.split(";") if f.endswith(")")]
        if not labels:
            continue
        total += count
        by_thread[_thread_role([name for name, _ in labels])] += count
        self_time[labels[-1][0]] += count
        by_area[labels[-1][1]] += count
        for name in {name for name, _ in labels if not name.startswith(_ROOT_FRAMES)}:
            inclusive[name] += count

    def share(counter: Counter[str], only_repo: bool = False) -> list[dict[str, Any]]:
        rows = [
            (name, n)
            for name, n in counter.most_common()
            if not only_repo or name.split("/", 1)[0] in REPO_PACKAGES
        ]
        return [{"function": k, "percent": round(100 * n / total, 1)} for k, n in rows[:top]]

    if total == 0:
        return {"samples": 0}
    return {
        "samples": total,
        "self": share(self_time),
        "inclusive": share(inclusive),
        "inclusive_repo_code": share(inclusive, only_repo=True),
        "by_thread": [
            {"thread": k, "percent": round(100 * n / total, 1)} for k, n in by_thread.most_common(8)
        ],
        "self_by_package": [
            {"package": k, "percent": round(100 * n / total, 1)} for k, n in by_area.most_common(12)
        ],
    }


def format_report(summary: dict[str, Any]) -> str:
    """A short plain-text top-N report."""
    if not summary.get("samples"):
        return "profile: no samples"
    out = [f"profile: {summary['samples']} samples holding the GIL"]
    for key, title in (
        ("by_thread", "GIL-holding samples by thread"),
        ("self_by_package", "self time by package"),
        ("self", "self time by function"),
        ("inclusive", "inclusive time by function"),
        ("inclusive_repo_code", "inclusive time, gateway/compliance/regions code"),
    ):
        out.append(f"  {title}:")
        for row in summary[key]:
            name = row.get("function") or row.get("package") or row.get("thread")
            out.append(f"    {row['percent']:5.1f}%  {name}")
    return "\n".join(out)
