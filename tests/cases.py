"""Translate the failure cases in ../shared/cases (their own metadata format) into synthspark configs.

The case folders are read in place; nothing from them is copied into the project.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import SHARED

CASES = SHARED / "cases"

_STRFTIME = {"%Y": "yyyy", "%m": "MM", "%d": "dd", "%H": "HH", "%M": "mm", "%S": "ss"}
_REF = re.compile(r"^\s*(\w+)\.(\(([^)]*)\)|\w+)\s*->\s*(\w+)\.(\(([^)]*)\)|\w+)\s*$")


def spark_pattern(strftime: str) -> str:
    """Return the Spark datetime pattern of a strftime pattern such as %Y-%m-%d."""
    pattern = strftime
    for directive, spark in _STRFTIME.items():
        pattern = pattern.replace(directive, spark)
    if "%" in pattern:
        raise ValueError(f"strftime pattern {strftime!r} has a directive this translation does not know")
    return pattern


def _column(spec: dict[str, Any]) -> dict[str, Any]:
    kind = spec["kind"]
    decimal = re.fullmatch(r"decimal\((\d+),\s*(\d+)\)", kind)
    if decimal:
        return {"kind": "numerical", "type": f"decimal({decimal.group(1)},{decimal.group(2)})"}
    if kind.startswith("pii."):
        return {"kind": kind.removeprefix("pii.")}
    if kind in ("date", "datetime"):
        column: dict[str, Any] = {"kind": "datetime"}
        text_format = spec.get("format", "")
        if spec.get("storage") == "integer":
            column["format"] = spark_pattern(text_format)
        elif text_format.startswith("%"):
            column["format"] = spark_pattern(text_format)
            column["type"] = "date" if kind == "date" else "timestamp"
        else:
            # ISO-8601 text, with or without offsets, casts to an instant directly.
            column["type"] = "date" if kind == "date" else "timestamp"
        return column
    simple = {
        "id": {"kind": "id"},
        "integer": {"kind": "numerical", "type": "bigint"},
        "float": {"kind": "numerical", "type": "double"},
        "boolean": {"kind": "boolean", "type": "boolean"},
        "categorical": {"kind": "categorical"},
        "text": {"kind": "text", "type": "string"},
    }
    if kind not in simple:
        raise ValueError(f"unknown case column kind {kind!r}")
    column = dict(simple[kind])
    if kind == "id" and spec.get("type") == "string":
        column["type"] = "string"
    return column



def _columns(part: str, inner: str | None) -> list[str]:
    if inner is not None:
        return [name.strip() for name in inner.split(",")]
    return [part]


def case_config(
    name: str, output: Path, *, scale: float = 1.0, seed: int = 1, **foreign_key_options: dict[str, Any]
) -> dict[str, Any]:
    """Return the synthspark config (as a dict) of case ``name``, writing Delta to ``output``.

    ``foreign_key_options`` maps ``child.column`` (the first FK column) to extra
    foreign-key settings such as ``{"on_orphan": "drop"}``.
    """
    folder = CASES / name
    metadata = yaml.safe_load((folder / "metadata.yaml").read_text(encoding="utf-8"))
    tables: dict[str, Any] = {}
    for table, spec in metadata["tables"].items():
        tables[table] = {
            "source": {"path": spec["file"], "format": "csv"},
            "primary_key": spec["primary_key"],
            "columns": {column: _column(column_spec) for column, column_spec in spec["columns"].items()},
            "foreign_keys": [],
        }
    for fk in metadata.get("foreign_keys", []):
        match = _REF.match(fk["ref"])
        if match is None:
            raise ValueError(f"cannot read foreign key {fk['ref']!r}")
        child, child_part, child_inner, parent, parent_part, parent_inner = match.groups()
        columns = _columns(child_part, child_inner)
        entry: dict[str, Any] = {
            "columns": columns,
            "parent": parent,
            "parent_columns": _columns(parent_part, parent_inner),
        }
        entry.update(foreign_key_options.get(f"{child}.{columns[0]}", {}))
        tables[child]["foreign_keys"].append(entry)
    return {
        "name": name,
        "source_root": str(folder),
        "tables": tables,
        "generation": {"scale": scale, "seed": seed},
        "output": {"path": str(output), "format": "delta"},
        "tracking": {"enabled": False},
    }
