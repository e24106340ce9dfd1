"""Fit: learn per-column marginals and per-relationship child counts with Spark aggregations.

Only aggregates reach the driver: counts, quantiles, value frequencies capped at
``MAX_STORED_VALUES`` and child-count histograms whose size is the number of
distinct child counts, never the number of rows.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from functools import reduce
from importlib import metadata
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from synthspark.config import ColumnKind, OrphanPolicy, SynthConfig
from synthspark.errors import SourceDataError, format_examples
from synthspark.model import ColumnModel, FittedModel, RelationshipModel, TableModel
from synthspark.plan import Plan, Relationship, build_plan
from synthspark.sampling import qcol
from synthspark.sources import read_table

logger = logging.getLogger(__name__)

# Upper bound on distinct values stored per categorical or text column, so that the
# model size does not grow with the row count.
MAX_STORED_VALUES = 10_000
# Relative accuracy knob of percentile_approx (larger is more exact and slower).
PERCENTILE_ACCURACY = 20_000
# A string id column is generated as prefix + number when at least this share of values has that shape.
FORMAT_MATCH_SHARE = 0.9

_INTEGER_TYPES = (T.ByteType, T.ShortType, T.IntegerType, T.LongType)
_NUMERIC_TYPES = (*_INTEGER_TYPES, T.FloatType, T.DoubleType, T.DecimalType)
_PREFIXED_NUMBER = r"^([^0-9]*)([0-9]+)$"


@dataclass(frozen=True)
class OrphanReport:
    """Rows of a child table whose non-null foreign key has no parent in the source."""

    relationship: str
    rows: int
    examples: list[str]
    policy: str


@dataclass
class PreparedSources:
    """Source tables after key checks and orphan policies, cached for the stages that read them."""

    frames: dict[str, DataFrame]
    orphans: dict[str, OrphanReport]

    def unpersist(self) -> None:
        """Release the cached source tables."""
        for frame in self.frames.values():
            frame.unpersist()


def _any_null(columns: list[str] | tuple[str, ...]) -> Column:
    return reduce(lambda a, b: a | b, [qcol(c).isNull() for c in columns])


def _all_present(columns: list[str] | tuple[str, ...]) -> Column:
    return reduce(lambda a, b: a & b, [qcol(c).isNotNull() for c in columns])


def _key_text(columns: list[str] | tuple[str, ...]) -> Column:
    if len(columns) == 1:
        return qcol(columns[0]).cast("string")
    return F.concat_ws("|", *[qcol(c).cast("string") for c in columns])


def check_primary_key(table: str, frame: DataFrame, key: list[str]) -> None:
    """Raise :class:`SourceDataError` when the declared primary key has nulls or duplicates."""
    if not key:
        return
    where = f"{table}.{key[0]}" if len(key) == 1 else f"{table}.({', '.join(key)})"
    nulls = frame.where(_any_null(key))
    null_count = nulls.count()
    if null_count:
        raise SourceDataError(
            f"primary key {where} has {null_count} row(s) with a null key value; a primary key must be "
            f"non-null. Fill or drop those rows, or declare another primary key"
        )
    duplicates = frame.groupBy(*key).count().where(qcol("count") > 1)
    stats = duplicates.agg(F.count(F.lit(1)).alias("keys"), F.sum(qcol("count") - 1).alias("surplus")).first()
    if stats is not None and stats["keys"]:
        examples = [row[0] for row in duplicates.select(_key_text(key)).orderBy(1).limit(5).collect()]
        raise SourceDataError(
            f"primary key {where} is not unique: {stats['keys']} key value(s) occur more than once "
            f"({stats['surplus']} surplus row(s)), for example {format_examples(examples)}. "
            f"De-duplicate the source or declare a key that is unique"
        )


def apply_orphan_policy(
    rel: Relationship, child: DataFrame, parent: DataFrame
) -> tuple[DataFrame, OrphanReport]:
    """Find child rows whose non-null key has no parent and apply the relationship's orphan policy."""
    found = "__ss_found"
    keys = (
        parent.select(*[qcol(p).alias(c) for p, c in zip(rel.parent_columns, rel.columns)])
        .distinct()
        .withColumn(found, F.lit(True))
    )
    marked = child.join(keys, on=list(rel.columns), how="left").select(*child.columns, found)
    is_orphan = _all_present(rel.columns) & qcol(found).isNull()
    orphans = marked.where(is_orphan)
    count = orphans.count()
    policy = rel.spec.on_orphan
    examples: list[str] = []
    if count:
        examples = [
            row[0] for row in orphans.select(_key_text(rel.columns)).distinct().orderBy(1).limit(5).collect()
        ]
    report = OrphanReport(rel.describe(), count, examples, policy.value)
    if count == 0:
        return child, report
    if policy == OrphanPolicy.ERROR:
        raise SourceDataError(
            f"foreign key {rel.describe()}: {count} row(s) of '{rel.child}' reference no existing "
            f"'{rel.parent}' row, for example {format_examples(examples)}. Choose what to do with them in "
            f"tables.{rel.child}.foreign_keys: 'on_orphan: drop' removes those rows, 'on_orphan: set_null' "
            f"sets their key to null; or fix the source"
        )
    if policy == OrphanPolicy.DROP:
        logger.warning("dropping %d orphan row(s) of %s (on_orphan: drop)", count, rel.describe())
        cleaned = marked.where(~is_orphan).drop(found)
    else:
        logger.warning("setting %d orphan key(s) of %s to null (on_orphan: set_null)", count, rel.describe())
        cleaned = marked
        for column in rel.columns:
            cleaned = cleaned.withColumn(column, F.when(is_orphan, F.lit(None)).otherwise(qcol(column)))
        cleaned = cleaned.drop(found)
    return cleaned, report


def prepare_sources(spark: SparkSession, config: SynthConfig, plan: Plan) -> PreparedSources:
    """Read every source, check primary keys and apply orphan policies, parents first."""
    frames: dict[str, DataFrame] = {}
    orphans: dict[str, OrphanReport] = {}
    try:
        for table in plan.order:
            frame = read_table(spark, config, table)
            check_primary_key(table, frame, config.tables[table].primary_key)
            for rel in plan.relationships:
                if rel.child != table:
                    continue
                frame, report = apply_orphan_policy(rel, frame, frames[rel.parent])
                orphans[rel.name] = report
            frames[table] = frame.persist(StorageLevel.MEMORY_AND_DISK)
    except BaseException:
        for frame in frames.values():
            frame.unpersist()
        raise
    return PreparedSources(frames, orphans)


def fit_relationship(rel: Relationship, child: DataFrame, parent: DataFrame, report: OrphanReport) -> RelationshipModel:
    """Learn the distribution of children per parent (zeros included) and the null-key share."""
    counts = child.where(_all_present(rel.columns)).groupBy(*rel.columns).count()
    per_parent = parent.select(*[qcol(p).alias(c) for p, c in zip(rel.parent_columns, rel.columns)]).join(
        counts, on=list(rel.columns), how="left"
    )
    histogram = (
        per_parent.select(F.coalesce(qcol("count"), F.lit(0)).alias("children"))
        .groupBy("children")
        .count()
        .orderBy("children")
        .collect()
    )
    totals = child.agg(F.count(F.lit(1)).alias("rows"), F.sum(_any_null(rel.columns).cast("int")).alias("nulls")).first()
    rows = totals["rows"] if totals else 0
    nulls = (totals["nulls"] or 0) if totals else 0
    return RelationshipModel(
        name=rel.name,
        child=rel.child,
        columns=list(rel.columns),
        parent=rel.parent,
        parent_columns=list(rel.parent_columns),
        count_values=[int(row["children"]) for row in histogram],
        count_parents=[int(row["count"]) for row in histogram],
        null_fraction=(nulls / rows) if rows else 0.0,
        orphan_policy=report.policy,
        orphan_rows=report.rows,
    )


def _default_kind(data_type: T.DataType) -> ColumnKind:
    if isinstance(data_type, T.BooleanType):
        return ColumnKind.BOOLEAN
    if isinstance(data_type, _NUMERIC_TYPES):
        return ColumnKind.NUMERICAL
    if isinstance(data_type, (T.DateType, T.TimestampType, T.TimestampNTZType)):
        return ColumnKind.DATETIME
    return ColumnKind.CATEGORICAL


def _as_number(column: str, data_type: T.DataType) -> Column:
    """Map a numeric, date or timestamp column to a double (days for dates, microseconds for timestamps)."""
    if isinstance(data_type, T.DateType):
        return F.unix_date(qcol(column)).cast("double")
    if isinstance(data_type, T.TimestampType):
        return F.unix_micros(qcol(column)).cast("double")
    if isinstance(data_type, T.TimestampNTZType):
        return F.unix_micros(qcol(column).cast("timestamp")).cast("double")
    return qcol(column).cast("double")


def _frequencies(frame: DataFrame, expression: Column, min_count: int) -> tuple[list[Any], list[int]]:
    """Return values seen at least ``min_count`` times with their counts, most frequent first, capped."""
    rows = (
        frame.select(expression.alias("value"))
        .where(qcol("value").isNotNull())
        .groupBy("value")
        .count()
        .where(qcol("count") >= min_count)
        .orderBy(F.desc("count"), F.asc("value"))
        .limit(MAX_STORED_VALUES)
        .collect()
    )
    return [row["value"] for row in rows], [int(row["count"]) for row in rows]


def _string_format(frame: DataFrame, column: str, non_null: int) -> dict[str, Any]:
    """Learn how string ids look: prefix + digits (with zero padding), or fixed-length codes."""
    value = qcol(column)
    shape = frame.where(value.isNotNull()).select(
        F.regexp_extract(value, _PREFIXED_NUMBER, 1).alias("prefix"),
        F.regexp_extract(value, _PREFIXED_NUMBER, 2).alias("digits"),
        value.rlike(_PREFIXED_NUMBER).alias("matches"),
        F.length(value).alias("length"),
        value.rlike("^[A-Z]+$").alias("upper"),
        value.rlike("^[A-Z0-9]+$").alias("upper_digits"),
        value.rlike("^[a-z]+$").alias("lower"),
    )
    stats = shape.agg(
        F.sum(qcol("matches").cast("int")).alias("matches"),
        F.min(F.when(qcol("matches"), F.length("digits"))).alias("min_digits"),
        F.max(F.when(qcol("matches"), F.length("digits"))).alias("max_digits"),
        F.sum(qcol("upper").cast("int")).alias("upper"),
        F.sum(qcol("upper_digits").cast("int")).alias("upper_digits"),
        F.sum(qcol("lower").cast("int")).alias("lower"),
        F.min("length").alias("min_length"),
        F.max("length").alias("max_length"),
    ).first()
    assert stats is not None
    if non_null and (stats["matches"] or 0) >= FORMAT_MATCH_SHARE * non_null:
        top = (
            shape.where(qcol("matches")).groupBy("prefix").count().orderBy(F.desc("count"), "prefix").first()
        )
        fixed = stats["min_digits"] == stats["max_digits"]
        return {
            "type": "string_format",
            "style": "prefixed_number",
            "prefix": top["prefix"] if top else "",
            "width": int(stats["min_digits"]) if fixed else 0,
            "min_digits": int(stats["min_digits"] or 1),
            "max_digits": int(stats["max_digits"] or 1),
        }
    if non_null and stats["upper"] == non_null:
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    elif non_null and stats["lower"] == non_null:
        alphabet = "abcdefghijklmnopqrstuvwxyz"
    elif non_null and stats["upper_digits"] == non_null:
        alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    else:
        alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    return {
        "type": "string_format",
        "style": "code",
        "alphabet": alphabet,
        "length": int(stats["max_length"] or 1),
    }


class _TableFitter:
    """Fits the columns of one table; the batching of aggregations lives here."""

    def __init__(self, config: SynthConfig, table: str, frame: DataFrame, key_roles: dict[str, str]):
        self.config = config
        self.table = table
        self.frame = frame
        self.key_roles = key_roles
        self.spec = config.tables[table]
        self.schema = {field.name: field.dataType for field in frame.schema.fields}

    def kind_of(self, column: str) -> ColumnKind:
        declared = self.spec.columns.get(column)
        if declared is not None:
            return declared.kind
        if column in self.key_roles:
            return ColumnKind.ID
        return _default_kind(self.schema[column])

    def fit(self) -> TableModel:
        frame = self.frame
        columns = frame.columns
        for column in columns:
            if column not in self.spec.columns and column not in self.key_roles:
                logger.info(
                    "column %s.%s is not in the config; modelling it as %s",
                    self.table,
                    column,
                    self.kind_of(column).value,
                )
        for column in columns:
            data_type = self.schema[column]
            if isinstance(data_type, (T.ArrayType, T.MapType, T.StructType, T.BinaryType)):
                raise SourceDataError(
                    f"column {self.table}.{column} has type {data_type.simpleString()}, which synthspark cannot "
                    f"model; drop the column from the source (a view without it works) or convert it to a string"
                )
        basics = frame.agg(
            F.count(F.lit(1)).alias("__rows"),
            *[F.count(qcol(c)).alias(f"n_{i}") for i, c in enumerate(columns)],
            *[F.approx_count_distinct(qcol(c)).alias(f"d_{i}") for i, c in enumerate(columns)],
        ).first()
        assert basics is not None
        rows = int(basics["__rows"])
        non_null = {c: int(basics[f"n_{i}"]) for i, c in enumerate(columns)}
        distinct = {c: int(basics[f"d_{i}"]) for i, c in enumerate(columns)}

        numeric_columns = [
            c
            for c in columns
            if c not in self.key_roles
            and non_null[c] > 0
            and self.kind_of(c) in (ColumnKind.NUMERICAL, ColumnKind.DATETIME)
            and isinstance(self.schema[c], (*_NUMERIC_TYPES, T.DateType, T.TimestampType, T.TimestampNTZType))
        ]
        ranges = self._ranges(numeric_columns)
        quantiles = self._quantiles(
            [c for c in numeric_columns if distinct[c] > self.config.model.discrete_max_values]
        )
        models = []
        for column in columns:
            models.append(self._fit_column(column, rows, non_null[column], distinct[column], ranges, quantiles))
        return TableModel(
            name=self.table,
            rows=rows,
            primary_key=list(self.spec.primary_key),
            columns=models,
            key_group_max=self._key_group_max(rows),
        )

    def _key_group_max(self, rows: int) -> int:
        key = self.spec.primary_key
        if len(key) < 2:
            return 1
        fk_part = [c for c in key if self.key_roles.get(c) == "foreign_key"]
        if not fk_part:
            return max(rows, 1)
        row = self.frame.groupBy(*fk_part).count().agg(F.max("count")).first()
        return int(row[0]) if row and row[0] else 1

    def _ranges(self, columns: list[str]) -> dict[str, tuple[float, float]]:
        if not columns:
            return {}
        row = self.frame.agg(
            *[F.min(_as_number(c, self.schema[c])).alias(f"lo_{i}") for i, c in enumerate(columns)],
            *[F.max(_as_number(c, self.schema[c])).alias(f"hi_{i}") for i, c in enumerate(columns)],
        ).first()
        assert row is not None
        return {c: (float(row[f"lo_{i}"]), float(row[f"hi_{i}"])) for i, c in enumerate(columns)}

    def _quantiles(self, columns: list[str]) -> dict[str, list[float]]:
        if not columns:
            return {}
        points = self.config.model.quantiles
        probabilities = [i / points for i in range(points + 1)]
        row = self.frame.agg(
            *[
                F.percentile_approx(_as_number(c, self.schema[c]), probabilities, PERCENTILE_ACCURACY).alias(f"q_{i}")
                for i, c in enumerate(columns)
            ]
        ).first()
        assert row is not None
        return {c: [float(v) for v in row[f"q_{i}"]] for i, c in enumerate(columns)}

    def _fit_column(
        self,
        column: str,
        rows: int,
        non_null: int,
        distinct: int,
        ranges: dict[str, tuple[float, float]],
        quantiles: dict[str, list[float]],
    ) -> ColumnModel:
        data_type = self.schema[column]
        kind = self.kind_of(column)
        null_fraction = (1 - non_null / rows) if rows else 0.0
        role = self.key_roles.get(column, "value")

        def model(distribution: dict[str, Any]) -> ColumnModel:
            return ColumnModel(column, kind.value, data_type.json(), role, null_fraction, distribution)

        min_count = self.config.model.min_category_count
        if role == "foreign_key":
            return model({"type": "key"})
        if role == "primary_key":
            return model(self._key_distribution(column, data_type, non_null))
        if non_null == 0:
            return model({"type": "all_null"})
        if kind == ColumnKind.BOOLEAN or isinstance(data_type, T.BooleanType):
            row = self.frame.agg(F.sum(qcol(column).cast("boolean").cast("int"))).first()
            trues = int(row[0] or 0) if row else 0
            return model({"type": "boolean", "true_fraction": trues / non_null})
        if column in ranges:
            low, high = ranges[column]
            integer = isinstance(data_type, (*_INTEGER_TYPES, T.DateType))
            if column not in quantiles:
                values, counts = _frequencies(self.frame, _as_number(column, data_type), min_count)
                kept = sum(counts) / non_null
                if values and kept >= 0.95:
                    return model(
                        {"type": "discrete", "values": values, "weights": counts, "min": low, "max": high,
                         "integer": integer}
                    )
                # Too many rare values to keep them one by one: fall back to quantiles.
                quantiles = {**quantiles, **self._quantiles([column])}
            return model(
                {"type": "quantiles", "values": quantiles[column], "min": low, "max": high, "integer": integer}
            )
        if kind == ColumnKind.ID:
            if isinstance(data_type, _INTEGER_TYPES):
                row = self.frame.agg(F.min(column), F.max(column)).first()
                assert row is not None
                return model({"type": "uniform_int", "min": int(row[0]), "max": int(row[1])})
            return model(self._key_distribution(column, data_type, non_null))
        values, counts = _frequencies(self.frame, qcol(column), min_count)
        kept = sum(counts) / non_null if non_null else 0.0
        if kind == ColumnKind.TEXT or not values:
            lengths = self.frame.where(qcol(column).isNotNull()).agg(
                F.percentile_approx(F.length(qcol(column).cast("string")), [i / 20 for i in range(21)], 1000)
            ).first()
            assert lengths is not None
            return model(
                {"type": "text", "values": values, "weights": counts, "kept_fraction": kept,
                 "length_quantiles": [float(v) for v in lengths[0]]}
            )
        return model({"type": "categorical", "values": values, "weights": counts, "kept_fraction": kept})

    def _key_distribution(self, column: str, data_type: T.DataType, non_null: int) -> dict[str, Any]:
        if isinstance(data_type, _INTEGER_TYPES):
            row = self.frame.agg(F.min(column), F.max(column)).first()
            assert row is not None
            return {"type": "uniform_int", "min": int(row[0] or 0), "max": int(row[1] or 0)}
        if isinstance(data_type, T.StringType):
            return _string_format(self.frame, column, non_null)
        if isinstance(data_type, (T.DateType, T.TimestampType, T.TimestampNTZType, *_NUMERIC_TYPES)):
            row = self.frame.agg(F.min(_as_number(column, data_type)), F.max(_as_number(column, data_type))).first()
            assert row is not None
            return {"type": "ordinal", "min": float(row[0] or 0.0), "max": float(row[1] or 0.0)}
        raise SourceDataError(
            f"key column {self.table}.{column} has type {data_type.simpleString()}; keys must be integers, "
            f"strings, numbers, dates or timestamps"
        )


def _key_roles(config: SynthConfig, table: str) -> dict[str, str]:
    roles: dict[str, str] = {}
    for column in config.tables[table].primary_key:
        roles[column] = "primary_key"
    for fk in config.tables[table].foreign_keys:
        for column in fk.columns:
            roles[column] = "foreign_key"
    return roles


def fit_prepared(config: SynthConfig, plan: Plan, sources: PreparedSources) -> FittedModel:
    """Fit every table and relationship on sources that :func:`prepare_sources` returned."""
    tables: dict[str, TableModel] = {}
    for table in plan.order:
        started = time.monotonic()
        logger.info("fit %s: start", table)
        fitted = _TableFitter(config, table, sources.frames[table], _key_roles(config, table)).fit()
        tables[table] = fitted
        logger.info(
            "fit %s: done, %d rows, %d columns, %.1f s", table, fitted.rows, len(fitted.columns),
            time.monotonic() - started,
        )
    relationships: dict[str, RelationshipModel] = {}
    for rel in plan.relationships:
        started = time.monotonic()
        relationships[rel.name] = fit_relationship(
            rel, sources.frames[rel.child], sources.frames[rel.parent], sources.orphans[rel.name]
        )
        logger.info(
            "fit relationship %s: mean %.2f children per parent, %.1f s",
            rel.describe(), relationships[rel.name].mean_children(), time.monotonic() - started,
        )
    return FittedModel(
        config=config.model_dump(mode="json"),
        tables=tables,
        relationships=relationships,
        versions=_versions(),
    )


def _versions() -> dict[str, str]:
    versions = {}
    for package in ("synthspark", "pyspark", "delta-spark", "mlflow", "numpy", "pandas", "pyarrow"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def fit(spark: SparkSession, config: SynthConfig) -> FittedModel:
    """Read the sources, check them and fit a model."""
    plan = build_plan(config)
    sources = prepare_sources(spark, config, plan)
    try:
        return fit_prepared(config, plan, sources)
    finally:
        sources.unpersist()
