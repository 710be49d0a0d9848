"""Print the README's configuration table from gateway.settings.Settings (the source of truth)."""

from __future__ import annotations

from pydantic import AliasChoices

from gateway.settings import ENV_PREFIX, Settings


def environment_name(name: str) -> str:
    """The environment variable a settings field is read from."""
    alias = Settings.model_fields[name].validation_alias
    if isinstance(alias, AliasChoices) and isinstance(alias.choices[0], str):
        return alias.choices[0]
    return ENV_PREFIX + name.upper()


def table() -> str:
    """The markdown table: variable, default, meaning."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = field.default_factory() if field.default_factory else field.default  # type: ignore[call-arg]
        shown = "—" if default in (None, [], "") else f"`{default}`"
        rows.append(f"| `{environment_name(name)}` | {shown} | {field.description} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(table())
