"""docs/CATALOG.md documents the catalog schema as it is: its reference tables are the ones
scripts/catalog_table.py generates from the schema, and its example is a valid catalog."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from compliance.jurisdictions import EEA
from compliance.store.catalog_file import CATALOG_SCHEMA, parse_catalog
from scripts.catalog_table import DOC, generated_part, tables

ROOT = Path(__file__).parents[2]


def test_the_reference_tables_match_the_schema() -> None:
    """On failure: `.venv/bin/python scripts/catalog_table.py --write`."""
    assert generated_part(DOC.read_text("utf-8")) == tables()


def test_every_field_has_a_row() -> None:
    text = generated_part(DOC.read_text("utf-8"))
    for model in CATALOG_SCHEMA:
        for name in model.model_fields:
            assert f"| `{name}` |" in text


def test_the_example_is_a_valid_catalog() -> None:
    (example,) = re.findall(r"```yaml\n(.*?)```", DOC.read_text("utf-8"), re.DOTALL)
    regions, tenants = parse_catalog(yaml.safe_load(example), "docs/CATALOG.md")
    assert [r.id for r in regions] == ["eu-frankfurt", "us-oregon"]
    assert tenants[0].allowed_countries == EEA | {"CH"}


def test_the_readme_links_the_catalog_doc() -> None:
    assert "](docs/CATALOG.md)" in (ROOT / "README.md").read_text("utf-8")
