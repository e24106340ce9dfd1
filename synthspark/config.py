"""Configuration models: what to read, how keys relate, how to generate and where to write.

A config is YAML validated strictly by pydantic: unknown keys, wrong types and
references to undeclared tables are errors that name the offending path.
Checks that need the data (columns that exist, key uniqueness) live in
:mod:`synthspark.plan` and :mod:`synthspark.fit`.
"""

from __future__ import annotations

import enum
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from synthspark.errors import ConfigError


class ColumnKind(str, enum.Enum):
    """Modelling kind of a column."""

    ID = "id"
    CATEGORICAL = "categorical"
    NUMERICAL = "numerical"
    DATETIME = "datetime"
    BOOLEAN = "boolean"
    TEXT = "text"
    # Personal data: generated in a realistic format, never learned value by value.
    NAME = "name"
    EMAIL = "email"
    PHONE = "phone"
    ADDRESS = "address"


#: Kinds whose values are generated from word lists and never copied from the source.
PERSONAL_KINDS = frozenset({ColumnKind.NAME, ColumnKind.EMAIL, ColumnKind.PHONE, ColumnKind.ADDRESS, ColumnKind.TEXT})


class OrphanPolicy(str, enum.Enum):
    """Policy for child rows whose foreign key has no parent in the source."""

    ERROR = "error"
    DROP = "drop"
    SET_NULL = "set_null"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _as_list(value: Any) -> Any:
    if isinstance(value, str):
        return [value]
    return value


class ColumnSpec(_Strict):
    """One column's kind and, optionally, its Spark type and how to parse it from the source."""

    kind: ColumnKind
    type: str | None = Field(
        default=None,
        description=(
            "Spark SQL type of the column in the source and the output, for example int, decimal(12,2), "
            "date or timestamp. Source values are cast to it; values that do not fit are an error."
        ),
    )
    format: str | None = Field(
        default=None,
        description=(
            "Spark datetime pattern (for example yyyy-MM-dd) of a datetime column stored as text or as an "
            "integer such as 20230105 (pattern yyyyMMdd); an integer column keeps its integer form in the output. "
            "For a string key column, its format as PREFIX[0-9]{n} or PREFIX[0-9]{m,n} (such as ACC-[0-9]{6}): "
            "generated keys never leave it, and a run that needs more keys than it holds stops with an error."
        ),
    )
    on_invalid: Literal["error", "null"] = Field(
        default="error",
        description="What to do with source values that do not match 'type' or 'format': stop, or read them as null.",
    )

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str | None) -> str | None:
        if value is not None:
            parse_type(value)
        return value

    @field_validator("on_invalid", mode="before")
    @classmethod
    def _yaml_null(cls, value: Any) -> Any:
        # YAML reads an unquoted null as None; "on_invalid: null" means the policy named null.
        return "null" if value is None else value

    @model_validator(mode="after")
    def _kind_matches_type(self) -> ColumnSpec:
        if self.type is not None:
            name = parse_type(self.type).typeName()
            allowed = _TYPES_OF_KIND.get(self.kind)
            if allowed is not None and name not in allowed:
                raise ValueError(
                    f"kind '{self.kind.value}' cannot have type '{self.type}'; use one of {sorted(allowed)} "
                    f"or another kind"
                )
        if self.kind == ColumnKind.ID and self.format is not None and parse_key_format(self.format) is None:
            raise ValueError(
                f"key format '{self.format}' is invalid; write it as PREFIX[0-9]{{n}} or PREFIX[0-9]{{m,n}}, "
                f"such as ACC-[0-9]{{6}}"
            )
        return self


_SIMPLE_TYPES = {
    "tinyint": "ByteType", "byte": "ByteType",
    "smallint": "ShortType", "short": "ShortType",
    "int": "IntegerType", "integer": "IntegerType",
    "bigint": "LongType", "long": "LongType",
    "float": "FloatType", "real": "FloatType",
    "double": "DoubleType",
    "boolean": "BooleanType",
    "string": "StringType",
    "date": "DateType",
    "timestamp": "TimestampType",
    "timestamp_ltz": "TimestampType",
    "timestamp_ntz": "TimestampNTZType",
}
_DECIMAL = re.compile(r"^(?:decimal|dec|numeric)\s*(?:\(\s*(\d+)\s*(?:,\s*(\d+)\s*)?\))?$")


def parse_type(name: str) -> Any:
    """Return the PySpark DataType of a flat Spark SQL type name; raise ValueError for others."""
    from pyspark.sql import types as T

    text = name.strip().lower()
    if text in _SIMPLE_TYPES:
        return getattr(T, _SIMPLE_TYPES[text])()
    match = _DECIMAL.match(text)
    if match:
        precision = int(match.group(1) or 10)
        scale = int(match.group(2) or 0)
        if not 1 <= precision <= 38 or scale > precision:
            raise ValueError(f"'{name}': decimal precision must be 1-38 and scale at most the precision")
        return T.DecimalType(precision, scale)
    raise ValueError(
        f"'{name}' is not a supported column type; use one of {sorted(_SIMPLE_TYPES)} or decimal(p,s). "
        f"Arrays, maps, structs and binary columns cannot be modelled"
    )


_KEY_FORMAT = re.compile(r"^([^\[\]{}]*)\[0-9\]\{(\d+)(?:,(\d+))?\}$")


def parse_key_format(text: str) -> tuple[str, int, int] | None:
    """Return (prefix, min digits, max digits) of a key format such as ST-[0-9]{3,4}, or None if it is not one."""
    match = _KEY_FORMAT.match(text)
    if match is None:
        return None
    low = int(match.group(2))
    high = int(match.group(3) or low)
    if not 1 <= low <= high <= 18:
        return None
    return match.group(1), low, high


_NUMBER_TYPES = {"byte", "short", "integer", "long", "float", "double", "decimal"}
# Spark types a declared kind accepts; kinds not listed accept any flat type.
_TYPES_OF_KIND = {
    ColumnKind.NUMERICAL: _NUMBER_TYPES,
    ColumnKind.BOOLEAN: {"boolean"},
    ColumnKind.DATETIME: {"date", "timestamp", "timestamp_ntz", "byte", "short", "integer", "long", "string"},
    ColumnKind.NAME: {"string"},
    ColumnKind.EMAIL: {"string"},
    ColumnKind.PHONE: {"string"},
    ColumnKind.ADDRESS: {"string"},
    ColumnKind.TEXT: {"string"},
}


class SourceSpec(_Strict):
    """Location of a table's rows: a file path with its format, or a catalog table."""

    path: str | None = None
    format: Literal["csv", "parquet", "delta"] = "csv"
    table: str | None = Field(default=None, description="Catalog table name, one to three parts.")
    options: dict[str, str] = Field(default_factory=dict, description="Extra Spark reader options.")

    @model_validator(mode="after")
    def _one_location(self) -> SourceSpec:
        if (self.path is None) == (self.table is None):
            raise ValueError("set exactly one of 'path' (with 'format') or 'table'")
        return self


class ForeignKeySpec(_Strict):
    """A relationship: child columns reference the parent's primary key (or the named parent columns)."""

    columns: list[str]
    parent: str
    parent_columns: list[str] | None = None
    on_orphan: OrphanPolicy = OrphanPolicy.ERROR
    deferred: bool = Field(
        default=False,
        description=(
            "Fill this key after both tables exist. Needed for one foreign key of each cycle between tables, "
            "usually the nullable one (country.Capital -> city while city.CountryCode -> country)."
        ),
    )

    _normalise_columns = field_validator("columns", "parent_columns", mode="before")(_as_list)

    @field_validator("columns")
    @classmethod
    def _non_empty(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("a foreign key needs at least one column")
        if len(set(value)) != len(value):
            raise ValueError(f"columns repeat: {value}")
        return value


class TableSpec(_Strict):
    """One source table: its location, key, column kinds and relationships."""

    source: SourceSpec
    primary_key: list[str] = Field(default_factory=list)
    columns: dict[str, ColumnSpec] = Field(default_factory=dict)
    foreign_keys: list[ForeignKeySpec] = Field(default_factory=list)
    reference: bool = Field(
        default=False,
        description=(
            "A public lookup table (airports, districts, currencies) written as it is instead of synthesized. "
            "It is not scaled; its child tables are still generated, conditioned on its rows."
        ),
    )

    _normalise_key = field_validator("primary_key", mode="before")(
        lambda value: [] if value is None else _as_list(value)
    )

    @field_validator("columns", mode="before")
    @classmethod
    def _short_column_form(cls, value: Any) -> Any:
        # "amount: numerical" is shorthand for "amount: {kind: numerical}".
        if isinstance(value, dict):
            return {name: {"kind": spec} if isinstance(spec, str) else spec for name, spec in value.items()}
        return value


class GenerationSpec(_Strict):
    """How much to generate, and from which seed."""

    scale: float = Field(default=1.0, gt=0, description="Rows of each root table = source rows x scale.")
    rows: dict[str, int] = Field(default_factory=dict, description="Exact row count per root table.")
    seed: int = 0
    key_frames: Literal["checkpoint", "cache"] = Field(
        default="checkpoint",
        description=(
            "How each table's keys and copula scores are kept for its child tables. 'checkpoint' stores them as a "
            "local checkpoint, which cuts the query plans short (fastest; an executor lost during generation fails "
            "the run). 'cache' persists them with their lineage, so Spark recomputes what a lost executor held."
        ),
    )

    @field_validator("rows")
    @classmethod
    def _positive_rows(cls, value: dict[str, int]) -> dict[str, int]:
        for table, count in value.items():
            if count < 0:
                raise ValueError(f"rows for table '{table}' must be >= 0, got {count}")
        return value


class ModelSpec(_Strict):
    """Settings of the fitted model."""

    min_category_count: int = Field(
        default=5,
        ge=1,
        description="Categories seen fewer times than this are never stored in the model.",
    )
    quantiles: int = Field(default=1000, ge=10, le=100_000, description="Quantile points kept per numeric column.")
    locale: str = Field(
        default="en_US",
        description="Faker locale of generated names, e-mails, phone numbers, addresses and free text.",
    )
    discrete_max_values: int = Field(
        default=256,
        ge=0,
        description="A numeric column with at most this many distinct values is modelled by value frequencies.",
    )
    dependence: Literal["copula", "independent"] = Field(
        default="copula",
        description=(
            "'copula' keeps correlations between columns, child counts and parent columns (a Gaussian copula); "
            "'independent' draws every column on its own."
        ),
    )


class EvaluationSpec(_Strict):
    """Switches for the costlier scores of an evaluation. Keys, cardinality, shapes and trends always run."""

    detection: bool = Field(
        default=True,
        description="Train a classifier to tell real from synthetic parent rows enriched with child aggregates.",
    )
    privacy: bool = Field(
        default=True,
        description="Score exact copies of real rows and the distance to the closest real record.",
    )
    max_hops: int = Field(
        default=3,
        ge=1,
        le=3,
        description="Score inter-table trends across chains of up to this many relationships (1 turns chains off).",
    )


class OutputSpec(_Strict):
    """Output location and format of the generated tables."""

    format: Literal["delta", "parquet", "csv"] = "delta"
    path: str | None = None
    catalog_schema: str | None = Field(default=None, description="Catalog schema (one or two parts) for managed tables.")
    mode: Literal["error", "overwrite"] = Field(
        default="error", description="'error' raises when output exists; 'overwrite' replaces it."
    )

    @model_validator(mode="after")
    def _one_target(self) -> OutputSpec:
        if self.path is not None and self.catalog_schema is not None:
            raise ValueError("set only one of 'path' and 'catalog_schema'")
        if self.catalog_schema is not None and self.format != "delta":
            raise ValueError("catalog output is written as Delta tables; set format: delta")
        return self


class TrackingSpec(_Strict):
    """MLflow tracking. The tracking URI comes from MLFLOW_TRACKING_URI or MLflow's local default."""

    enabled: bool = True
    experiment: str = "synthspark"
    run_name: str | None = None


class SynthConfig(_Strict):
    """A whole synthspark job: the source database, the model, generation, output and tracking."""

    name: str = "synthspark"
    source_root: str | None = Field(
        default=None, description="Directory that relative source paths resolve against."
    )
    tables: dict[str, TableSpec]
    generation: GenerationSpec = Field(default_factory=GenerationSpec)
    model: ModelSpec = Field(default_factory=ModelSpec)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    output: OutputSpec = Field(default_factory=OutputSpec)
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)

    @field_validator("tables")
    @classmethod
    def _some_tables(cls, value: dict[str, TableSpec]) -> dict[str, TableSpec]:
        if not value:
            raise ValueError("declare at least one table")
        return value

    @model_validator(mode="after")
    def _references(self) -> SynthConfig:
        problems: list[str] = []
        for name, table in self.tables.items():
            declared = set(table.columns)
            for key_column in table.primary_key:
                if declared and key_column not in declared:
                    problems.append(
                        f"tables.{name}.primary_key: column '{key_column}' is not listed under tables.{name}.columns; "
                        f"add '{key_column}: id' there"
                    )
            for index, fk in enumerate(table.foreign_keys):
                where = f"tables.{name}.foreign_keys[{index}]"
                for column in fk.columns:
                    if declared and column not in declared:
                        problems.append(
                            f"{where}: column '{column}' is not listed under tables.{name}.columns; add '{column}: id' there"
                        )
                if fk.parent not in self.tables:
                    problems.append(
                        f"{where}: parent table '{fk.parent}' is not declared; declared tables: "
                        f"{sorted(self.tables)}. Add it under 'tables' or remove the foreign key."
                    )
                    continue
                parent = self.tables[fk.parent]
                parent_columns = fk.parent_columns or parent.primary_key
                if not parent_columns:
                    problems.append(
                        f"{where}: parent '{fk.parent}' has no primary_key; set parent_columns or give "
                        f"tables.{fk.parent} a primary_key"
                    )
                    continue
                if len(parent_columns) != len(fk.columns):
                    problems.append(
                        f"{where}: {len(fk.columns)} column(s) {fk.columns} reference {len(parent_columns)} "
                        f"parent column(s) {parent_columns}; the counts must match"
                    )
                parent_declared = set(parent.columns)
                for column in parent_columns:
                    if parent_declared and column not in parent_declared:
                        problems.append(
                            f"{where}: parent column '{column}' is not listed under tables.{fk.parent}.columns"
                        )
        problems += self._reference_problems()
        for table in self.generation.rows:
            if table not in self.tables:
                problems.append(f"generation.rows: table '{table}' is not declared; declared: {sorted(self.tables)}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _reference_problems(self) -> list[str]:
        problems = []
        for name, table in self.tables.items():
            if not table.reference:
                continue
            if table.foreign_keys:
                keys = ", ".join(f"{name}.{'+'.join(fk.columns)} -> {fk.parent}" for fk in table.foreign_keys)
                problems.append(
                    f"tables.{name}: a reference table is copied as it is, so it cannot have foreign keys "
                    f"({keys}). Remove 'reference: true' or the foreign_keys"
                )
            personal = [c for c, spec in table.columns.items() if spec.kind in PERSONAL_KINDS]
            if personal:
                kinds = sorted({table.columns[c].kind.value for c in personal})
                problems.append(
                    f"tables.{name}: a reference table is copied as it is, but columns {personal} are declared as "
                    f"personal data or free text (kinds {kinds}). Remove 'reference: true', or declare those "
                    "columns categorical if they hold no personal data"
                )
            if name in self.generation.rows:
                problems.append(
                    f"generation.rows.{name}: a reference table keeps its source rows, so it takes no row count. "
                    "Remove the row count or 'reference: true'"
                )
        return problems

    def foreign_key_parent_columns(self, fk: ForeignKeySpec) -> list[str]:
        """Return the parent columns that ``fk`` references (its parent's primary key by default)."""
        return list(fk.parent_columns or self.tables[fk.parent].primary_key)

    def resolve_source_path(self, path: str) -> str:
        """Resolve a table's source path against ``source_root`` unless it is absolute or a URI."""
        if "://" in path or os.path.isabs(path) or self.source_root is None:
            return path
        return os.path.join(self.source_root, path)


def _describe_validation_error(error: ValidationError, origin: str) -> str:
    lines = [f"invalid configuration in {origin}:"]
    for item in error.errors():
        location = ".".join(str(part) for part in item["loc"]) or "(top level)"
        if item["type"] == "extra_forbidden":
            lines.append(f"  - {location}: unknown key; remove it or check its spelling")
        elif item["type"] == "missing":
            lines.append(f"  - {location}: required key is missing")
        else:
            message = item["msg"].removeprefix("Value error, ")
            value = item.get("input")
            shown = "" if isinstance(value, (dict, list)) else f" (got {value!r})"
            if not item["loc"]:
                # Cross-table checks report several problems joined by "; ".
                lines.extend(f"  - {part}" for part in message.split("; "))
            else:
                lines.append(f"  - {location}: {message}{shown}")
    return "\n".join(lines)


def parse_config(data: dict[str, Any], origin: str = "<dict>") -> SynthConfig:
    """Validate a config given as a dict; raise :class:`ConfigError` listing every problem."""
    if not isinstance(data, dict):
        raise ConfigError(f"invalid configuration in {origin}: expected a mapping at the top level")
    try:
        return SynthConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_describe_validation_error(error, origin)) from None


def load_config(
    path: str | os.PathLike[str],
    *,
    source: str | None = None,
    output: str | None = None,
    seed: int | None = None,
    scale: float | None = None,
) -> SynthConfig:
    """Read and validate a YAML config; the keyword arguments override the file's settings.

    A relative ``source_root`` in the file resolves against the file's directory.
    """
    config_path = Path(path)
    if not config_path.is_file():
        raise ConfigError(f"config file not found: {config_path}; pass the path of a YAML file such as conf/berka.yaml")
    try:
        data = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {config_path} is not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {config_path} must contain a mapping at the top level")
    root = data.get("source_root")
    if isinstance(root, str) and "://" not in root and not os.path.isabs(root):
        data["source_root"] = str((config_path.parent / root).resolve())
    if source is not None:
        data["source_root"] = source
    overrides: dict[str, dict[str, Any]] = {
        "output": {"path": output, "catalog_schema": None} if output is not None else {},
        "generation": {
            **({"seed": seed} if seed is not None else {}),
            **({"scale": scale} if scale is not None else {}),
        },
    }
    for section, values in overrides.items():
        if values:
            current = data.get(section) or {}
            if not isinstance(current, dict):
                raise ConfigError(f"invalid configuration in {config_path}: '{section}' must be a mapping")
            data[section] = {**current, **values}
    return parse_config(data, origin=str(config_path))
