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
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        if "documented_default" in extra:
            default = extra["documented_default"]
        elif field.default_factory:
            default = field.default_factory()  # type: ignore[call-arg]
        else:
            default = field.default
        shown = "—" if default in (None, [], "") else f"`{default}`"
        rows.append(f"| `{environment_name(name)}` | {shown} | {field.description} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(table())
