"""The fitted model: plain data saved as JSON, from which data can be generated without the source."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from synthspark.errors import ModelError

MODEL_FORMAT_VERSION = 1
MODEL_FILE = "model.json"


@dataclass(frozen=True)
class ColumnModel:
    """What was learned about one column.

    ``role`` is ``primary_key``, ``foreign_key`` or ``value``. ``distribution`` is
    a JSON-ready dict whose ``type`` names how values are drawn: ``quantiles``,
    ``discrete``, ``categorical``, ``boolean``, ``text``, ``uniform_int``,
    ``string_format``, ``personal`` (names, e-mails, phones, addresses, free text
    generated from word lists), ``all_null``, or ``key`` for columns filled from relationships.
    """

    name: str
    kind: str
    spark_type: str  # DataType.json(), for example "integer" or "decimal(12,2)"
    role: str
    null_fraction: float
    distribution: dict[str, Any]
    # How the source stores the values, when that differs from ``spark_type``: for example
    # {"type": "\"integer\"", "format": "yyyyMMdd"} for dates written as 20230105.
    stored_as: dict[str, str] | None = None


@dataclass(frozen=True)
class RelationshipModel:
    """Children per parent for one foreign key, zeros included, and how its source rows were cleaned."""

    name: str
    child: str
    columns: list[str]
    parent: str
    parent_columns: list[str]
    count_values: list[int]
    count_parents: list[int]
    null_fraction: float
    orphan_policy: str
    orphan_rows: int

    def mean_children(self) -> float:
        """Return the mean number of children per parent."""
        parents = sum(self.count_parents)
        if parents == 0:
            return 0.0
        return sum(v * p for v, p in zip(self.count_values, self.count_parents)) / parents


@dataclass(frozen=True)
class TableModel:
    """One table: its row count in the source, its key and its columns in source order."""

    name: str
    rows: int
    primary_key: list[str]
    columns: list[ColumnModel]
    # For a composite primary key: the largest number of rows that share the key's foreign-key part.
    key_group_max: int = 1
    # Gaussian copula of the table's columns and child counts, conditioned on its parent's
    # (see synthspark.dependence); None when columns are drawn independently.
    dependence: dict[str, Any] | None = None
    # Joint categorical columns: each stands for the combinations of several categorical columns
    # (its distribution's "members"), which then take their values from it (see synthspark.dependence).
    joint: list[ColumnModel] = field(default_factory=list)

    def column(self, name: str) -> ColumnModel:
        """Return the model of column ``name``, a source column or a joint column."""
        for column in [*self.columns, *self.joint]:
            if column.name == name:
                return column
        raise KeyError(name)

    def joint_of(self, name: str) -> ColumnModel | None:
        """Return the joint column that column ``name`` takes its values from, or None."""
        for joint in self.joint:
            if name in joint.distribution["members"]:
                return joint
        return None


@dataclass(frozen=True)
class FittedModel:
    """Everything generation needs: the config it was fitted with, tables and relationships."""

    config: dict[str, Any]
    tables: dict[str, TableModel]
    relationships: dict[str, RelationshipModel]
    versions: dict[str, str] = field(default_factory=dict)
    format_version: int = MODEL_FORMAT_VERSION

    def save(self, directory: str) -> str:
        """Write the model as ``model.json`` into ``directory`` (created if needed); return the file path."""
        os.makedirs(directory, exist_ok=True)
        target = os.path.join(directory, MODEL_FILE)
        temporary = target + ".tmp"
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump(asdict(self), handle, indent=1, sort_keys=False, default=str)
        os.replace(temporary, target)
        return target

    @classmethod
    def load(cls, directory: str) -> FittedModel:
        """Read a model written by :meth:`save`."""
        target = os.path.join(directory, MODEL_FILE)
        if not os.path.isfile(target):
            raise ModelError(f"no fitted model at {directory}: {MODEL_FILE} is missing; run 'synthspark fit' first")
        with open(target, encoding="utf-8") as handle:
            data = json.load(handle)
        version = data.get("format_version")
        if version != MODEL_FORMAT_VERSION:
            raise ModelError(
                f"model at {directory} has format version {version}, this synthspark reads version "
                f"{MODEL_FORMAT_VERSION}; fit the model again"
            )
        tables = {
            name: TableModel(
                name=table["name"],
                rows=table["rows"],
                primary_key=table["primary_key"],
                columns=[ColumnModel(**column) for column in table["columns"]],
                key_group_max=table.get("key_group_max", 1),
                dependence=table.get("dependence"),
                joint=[ColumnModel(**column) for column in table.get("joint", [])],
            )
            for name, table in data["tables"].items()
        }
        relationships = {name: RelationshipModel(**rel) for name, rel in data["relationships"].items()}
        return cls(
            config=data["config"],
            tables=tables,
            relationships=relationships,
            versions=data.get("versions", {}),
            format_version=version,
        )
