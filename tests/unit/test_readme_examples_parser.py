"""How README examples are found and their shown output compared (tests/readme_examples.py)."""

from __future__ import annotations

from pathlib import Path

from tests.readme_examples import examples, unmatched_lines

DOCUMENT = """\
# Title

```bash
./dev serve
```

<!-- not run: starts a server -->
```bash
./dev forever
```

```bash
curl -s localhost/x | grep region
# region: eu
# region: in
```

```python
print({"a": 1})
```

```json
{"a": …}
```

```yaml
a: 1
```
"""


def test_blocks_their_shown_output_and_reasons(tmp_path: Path) -> None:
    path = tmp_path / "README.md"
    path.write_text(DOCUMENT)
    found = examples(path, "README.md")
    assert [(e.line, e.language, e.not_run) for e in found] == [
        (3, "bash", None),
        (8, "bash", "starts a server"),
        (12, "bash", None),
        (18, "python", None),
    ]
    assert found[2].shown == ("region: eu", "region: in")
    assert found[3].shown == ('{"a": …}',)
    assert found[0].shown == ()


def test_shown_lines_match_in_order_ignoring_white_space() -> None:
    output = 'HTTP/1.1 451 Unavailable\n{"error":{"type":"residency_violation","id":"abc123"}}\n'
    assert unmatched_lines(("HTTP/1.1 451 Unavailable", '{"error": {"type": …}}'), output) == []
    assert unmatched_lines(('{"error": {"type": "residency_violation", …',), output) == []
    assert unmatched_lines(("HTTP/1.1 200 OK",), output) == ["HTTP/1.1 200 OK"]
    # Order counts: a line shown after another must come after it.
    assert unmatched_lines(('"id": "abc123"', "HTTP/1.1 451"), output) == ["HTTP/1.1 451"]
    assert unmatched_lines(('"type": "other"',), output) == ['"type": "other"']
