"""The manifest's columns: the JSON Schema of one row, the frame's index and attributes, confound declarations.

The columns, their types and allowed values are documented once, in the JSON Schema ``manifest_schema.json``
(draft 2020-12) shipped in ``harmonize/data/`` (see :func:`schema_path`); the reader takes its required
columns, types, ranges and enumerations from that file.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from harmonize.errors import ConfigError
from harmonize.keys import ConfoundKind

__all__ = [
    "CONFOUNDS_ATTR",
    "JSON_BOOLEAN",
    "JSON_NULL",
    "JSON_NUMBER",
    "JSON_STRING",
    "MANIFEST_ATTR",
    "ROW",
    "SCHEMA_FILENAME",
    "format_schema",
    "json_types",
    "load_schema",
    "parse_confounds",
    "schema_path",
]

#: Name of the DataFrame index that holds each row's line number in the CSV (header = line 1).
ROW = "row"
#: File name of the JSON Schema of one manifest row, shipped in ``harmonize/data/``.
SCHEMA_FILENAME = "manifest_schema.json"
#: Key of ``DataFrame.attrs`` holding ``{confound column: ConfoundKind}``.
CONFOUNDS_ATTR = "confounds"
#: Key of ``DataFrame.attrs`` holding the manifest's path.
MANIFEST_ATTR = "manifest"

#: JSON Schema type names used by the schema.
JSON_NUMBER = "number"
JSON_BOOLEAN = "boolean"
JSON_STRING = "string"
JSON_NULL = "null"


def schema_path() -> Path:
    """Return the path of the JSON Schema (draft 2020-12) of one manifest row."""
    return Path(__file__).parent.with_name(SCHEMA_FILENAME)


def load_schema() -> dict[str, Any]:
    """Load the JSON Schema of one manifest row (a fresh dict on every call)."""
    with open(schema_path(), encoding="utf-8") as handle:
        return json.load(handle)


def json_types(spec: Mapping[str, Any]) -> tuple[str, ...]:
    """The JSON types a column's schema entry allows (``type`` may be one name or a list; default string)."""
    kind = spec.get("type", JSON_STRING)
    return (kind,) if isinstance(kind, str) else tuple(kind)


def format_schema() -> str:
    """Describe the manifest columns (from the schema) as text: name, required or optional, type, description.

    Returns:
        A multi-line text starting with the schema's path.
    """
    schema = load_schema()
    required = set(schema.get("required", ()))
    lines = [f"Manifest schema: {schema_path()}", "", "Columns (one row per scan):"]
    for name, spec in schema["properties"].items():
        kinds = [t for t in json_types(spec) if t != JSON_NULL]
        kind = " or ".join(kinds)
        if "enum" in spec:
            kind += " in {" + ", ".join(spec["enum"]) + "}"
        if "minimum" in spec or "maximum" in spec:
            kind += f" in [{spec.get('minimum', '-inf')}, {spec.get('maximum', 'inf')}]"
        status = "required" if name in required else "optional"
        lines.append(f"  {name:<11} {status:<9} {kind}")
        lines.append(f"  {'':<11} {spec.get('description', '')}")
    extra = schema.get("additionalProperties", {})
    if isinstance(extra, Mapping):
        lines.append(f"  {'(other)':<11} {'optional':<9} {extra.get('description', '')}")
    return "\n".join(lines)


def parse_confounds(confounds: Sequence[str] | Mapping[str, str | None]) -> dict[str, ConfoundKind | None]:
    """Parse confound declarations into ``{column: kind or None}`` (None: inferred from the values).

    Args:
        confounds: column names, each optionally with a kind after a colon (``"scanner:categorical"``,
            ``"tiv:continuous"``), or a mapping from column name to kind (or None).

    Returns:
        The declared kinds, in the given order.

    Raises:
        ConfigError: an empty name or an unknown kind.
    """
    items: Iterable[tuple[str, str | None]]
    if isinstance(confounds, Mapping):
        items = confounds.items()
    elif isinstance(confounds, str):
        raise ConfigError(f"confounds must be a list of column names, not the string {confounds!r}")
    else:
        items = ((c.partition(":")[0], c.partition(":")[2] or None) for c in confounds)
    parsed: dict[str, ConfoundKind | None] = {}
    problems = []
    choices = ", ".join(k.value for k in ConfoundKind)
    for name, kind in items:
        name = name.strip()
        if not name:
            problems.append("a confound has an empty column name")
            continue
        if kind is None or not str(kind).strip():
            parsed[name] = None
        elif str(kind).strip().lower() in {k.value for k in ConfoundKind}:
            parsed[name] = ConfoundKind(str(kind).strip().lower())
        else:
            problems.append(f"confound '{name}': kind '{kind}' is not one of {choices}")
    if problems:
        raise ConfigError("invalid confound declarations (write name or name:kind)", problems=problems)
    return parsed
