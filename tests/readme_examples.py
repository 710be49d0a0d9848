"""The README's code blocks as runnable examples, and how their shown output is compared.

Rules the README follows so that a test can run it (tests/integration/test_readme_examples.py):
- every ```bash / ```sh / ```python block runs, in document order, unless the line before it is
  `<!-- not run: REASON -->`;
- the output a block shows is either the fenced block right after it (```json, ```text or a
  bare fence) or the comment lines (`# …`) that end a bash block;
- in shown output, `…` stands for text that varies (ids, tokens, times) or is left out.

A shown line matches when each of its `…`-separated pieces occurs in the real output, in order
(after the previous line's match), with all white space removed on both sides (JSON printed
compactly or indented reads the same).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

RUNNABLE = {"bash": "bash", "sh": "bash", "python": "python"}
OUTPUT_LANGUAGES = {"json", "text", ""}
_NOT_RUN = re.compile(r"<!--\s*not run:\s*(?P<reason>[^>]+?)\s*-->")
_FENCE = re.compile(r"^```(?P<lang>[\w-]*)\s*$")


@dataclass(frozen=True)
class Example:
    """One runnable block: where it is, its code, what it shows, or why it is not run."""

    document: str
    line: int
    language: str
    code: str
    shown: tuple[str, ...]
    not_run: str | None

    @property
    def name(self) -> str:
        """`README.md:28` — where a reader finds it."""
        return f"{self.document}:{self.line}"


def _blocks(text: str) -> list[tuple[int, str, str, str]]:
    """(line of the opening fence, language, body, the text between it and the previous block)."""
    blocks: list[tuple[int, str, str, str]] = []
    lines = text.splitlines()
    between: list[str] = []
    index = 0
    while index < len(lines):
        match = _FENCE.match(lines[index])
        if match is None:
            between.append(lines[index])
            index += 1
            continue
        start, body = index, []
        index += 1
        while index < len(lines) and lines[index].rstrip() != "```":
            body.append(lines[index])
            index += 1
        blocks.append((start + 1, match["lang"], "\n".join(body), "\n".join(between)))
        between = []
        index += 1
    return blocks


def _trailing_comments(code: str) -> tuple[str, ...]:
    lines = code.rstrip().splitlines()
    shown: list[str] = []
    while lines and lines[-1].startswith("# "):
        shown.insert(0, lines.pop()[2:])
    return tuple(shown)


def examples(path: Path, document: str) -> list[Example]:
    """The runnable blocks of a Markdown file, each with the output it shows."""
    blocks = _blocks(path.read_text("utf-8"))
    found = []
    for number, (line, lang, body, before) in enumerate(blocks):
        if lang not in RUNNABLE:
            continue
        language = RUNNABLE[lang]
        shown: tuple[str, ...] = ()
        following = blocks[number + 1] if number + 1 < len(blocks) else None
        if following is not None and following[1] in OUTPUT_LANGUAGES and not following[3].strip():
            shown = tuple(following[2].splitlines())
        elif language == "bash":
            shown = _trailing_comments(body)
        tail = before.strip().splitlines()[-1:] if before.strip() else []
        reason = _NOT_RUN.fullmatch(tail[0].strip()) if tail else None
        found.append(
            Example(document, line, language, body, shown, reason["reason"] if reason else None)
        )
    return found


def _squeeze(text: str) -> str:
    return re.sub(r"\s+", "", text)


def unmatched_lines(shown: tuple[str, ...], output: str) -> list[str]:
    """The shown lines that the real output does not bear out (empty: all match)."""
    haystack = _squeeze(output)
    position = 0
    missing = []
    for line in shown:
        pieces = [p for p in (_squeeze(piece) for piece in line.split("…")) if p]
        cursor = position
        for piece in pieces:
            found = haystack.find(piece, cursor)
            if found < 0:
                missing.append(line)
                break
            cursor = found + len(piece)
        else:
            position = cursor
    return missing
