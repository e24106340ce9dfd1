"""Fit: learn per-column marginals and per-relationship child counts with Spark aggregations.

Only aggregates reach the driver: counts, quantiles, value frequencies capped at
``MAX_STORED_VALUES`` and child-count histograms whose size is the number of
distinct child counts, never the number of rows.
"""

from __future__ import annotations

import dataclasses
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

from synthspark.config import (
    PERSONAL_KINDS,
    ColumnKind,
    OrphanPolicy,
    SynthConfig,
    parse_key_format,
)
from synthspark.dependence import fit_dependence, fit_joint_columns
from synthspark.errors import ConfigError, SourceDataError, format_examples
from synthspark.model import ColumnModel, FittedModel, RelationshipModel, TableModel
from synthspark.plan import Plan, Relationship, build_plan
from synthspark.sampling import double_array, qcol
from synthspark.session import tune_session
from synthspark.sources import STORED_AS, read_table

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
_NUMBER_LIKE_TYPES = (*_NUMERIC_TYPES, T.DateType, T.TimestampType, T.TimestampNTZType)
_PREFIXED_NUMBER = r"^([^0-9]*)([0-9]+)$"


@dataclass(frozen=True)
class _FittedStats:
    """Aggregates of one table from which each column's model is built."""

    rows: int
    non_null: dict[str, int]
    ranges: dict[str, tuple[float, float]]
    trues: dict[str, int]
    frequencies: dict[str, tuple[list[Any], list[int]]]
    discrete: set[str]
    quantiles: dict[str, list[float]]


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
    """Raise :class:`SourceDataError` when the declared primary key has nulls or duplicates (one Spark job)."""
    if not key:
        return
    where = f"{table}.{key[0]}" if len(key) == 1 else f"{table}.({', '.join(key)})"
    groups = frame.groupBy(*[qcol(c) for c in key]).count().withColumn("__ss_null", _any_null(key))
    duplicated = ~qcol("__ss_null") & (F.col("count") > 1)
    stats = groups.agg(
        F.sum(F.when(qcol("__ss_null"), F.col("count")).otherwise(0)).alias("null_rows"),
        F.sum(F.when(duplicated, 1).otherwise(0)).alias("keys"),
        F.sum(F.when(duplicated, F.col("count") - 1).otherwise(0)).alias("surplus"),
    ).first()
    assert stats is not None
    if stats["null_rows"]:
        raise SourceDataError(
            f"primary key {where} has {stats['null_rows']} row(s) with a null key value; a primary key must be "
            f"non-null. Fill or drop those rows, or declare another primary key"
        )
    if stats["keys"]:
        examples = [row[0] for row in groups.where(duplicated).select(_key_text(key)).orderBy(1).limit(5).collect()]
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
    tune_session(spark)
    frames: dict[str, DataFrame] = {}
    orphans: dict[str, OrphanReport] = {}
    try:
        raw: dict[str, DataFrame] = {}
        for table in plan.order:
            raw[table] = read_table(spark, config, table)
            check_primary_key(table, raw[table], config.tables[table].primary_key)
        for table in plan.order:
            frame = raw[table]
            for rel in plan.relationships:
                if rel.child != table:
                    continue
                # Parents earlier in the order are already cleaned; a self-reference or a deferred
                # key (which closes a cycle) checks against the parent as read.
                parent = frame if rel.parent == table else frames.get(rel.parent, raw[rel.parent])
                frame, report = apply_orphan_policy(rel, frame, parent)
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
            data_type = self.schema[column]
            if isinstance(data_type, (T.ArrayType, T.MapType, T.StructType, T.BinaryType)):
                raise SourceDataError(
                    f"column {self.table}.{column} has type {data_type.simpleString()}, which synthspark cannot "
                    f"model; drop the column from the source (a view without it works) or convert it to a string"
                )
        number_like = [c for c in columns if isinstance(self.schema[c], _NUMBER_LIKE_TYPES)]
        booleans = [
            c for c in columns
            if c not in self.key_roles
            and (self.kind_of(c) == ColumnKind.BOOLEAN or isinstance(self.schema[c], T.BooleanType))
        ]
        # One job for counts, distinct counts, ranges and true counts of every column.
        basics = frame.agg(
            F.count(F.lit(1)).alias("__rows"),
            *[F.count(qcol(c)).alias(f"n_{i}") for i, c in enumerate(columns)],
            *[F.approx_count_distinct(qcol(c)).alias(f"d_{i}") for i, c in enumerate(columns)],
            *[F.min(_as_number(c, self.schema[c])).alias(f"lo_{i}") for i, c in enumerate(number_like)],
            *[F.max(_as_number(c, self.schema[c])).alias(f"hi_{i}") for i, c in enumerate(number_like)],
            *[F.sum(qcol(c).cast("boolean").cast("int")).alias(f"t_{i}") for i, c in enumerate(booleans)],
        ).first()
        assert basics is not None
        rows = int(basics["__rows"])
        non_null = {c: int(basics[f"n_{i}"]) for i, c in enumerate(columns)}
        distinct = {c: int(basics[f"d_{i}"]) for i, c in enumerate(columns)}
        ranges = {
            c: (float(basics[f"lo_{i}"]), float(basics[f"hi_{i}"]))
            for i, c in enumerate(number_like)
            if basics[f"lo_{i}"] is not None
        }
        trues = {c: int(basics[f"t_{i}"] or 0) for i, c in enumerate(booleans)}

        values = [
            c for c in columns
            if c not in self.key_roles and c not in booleans and non_null[c] > 0
            and self.kind_of(c) not in PERSONAL_KINDS
        ]
        numeric = [
            c for c in values
            if self.kind_of(c) in (ColumnKind.NUMERICAL, ColumnKind.DATETIME) and c in number_like
        ]
        categorical = [
            c for c in values
            if c not in numeric and self.kind_of(c) in (ColumnKind.CATEGORICAL, ColumnKind.TEXT, ColumnKind.NUMERICAL)
        ]
        discrete_candidates = [c for c in numeric if distinct[c] <= self.config.model.discrete_max_values]
        frequencies = self._frequencies(discrete_candidates, categorical)
        discrete = {
            c for c in discrete_candidates
            if frequencies[c][0] and sum(frequencies[c][1]) >= 0.95 * non_null[c]
        }
        text = [
            c for c in categorical
            if (self.kind_of(c) == ColumnKind.TEXT or not frequencies[c][0]) and c not in number_like
        ]
        quantiles = self._quantiles([c for c in numeric if c not in discrete], text)

        fitted = _FittedStats(rows, non_null, ranges, trues, frequencies, discrete, quantiles)
        models = [self._fit_column(column, fitted) for column in columns]
        _warn_uninformative(self.table, models, rows)
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
        row = self.frame.groupBy(*[qcol(c) for c in fk_part]).count().agg(F.max("count")).first()
        return int(row[0]) if row and row[0] else 1

    def _frequencies(self, numeric: list[str], categorical: list[str]) -> dict[str, tuple[list[Any], list[int]]]:
        """Return, per column, values seen at least min_category_count times with their counts (one job).

        Numeric columns also keep their minimum and maximum values, whatever their counts.

        Numeric values are returned as floats; other values as strings, cast back to the
        column type at generation. At most MAX_STORED_VALUES values per column, most frequent first.
        """
        columns = numeric + categorical
        result: dict[str, tuple[list[Any], list[int]]] = {c: ([], []) for c in columns}
        if not columns:
            return result
        entries = [
            F.struct(F.lit(i).alias("i"), _as_number(c, self.schema[c]).cast("string").alias("v"))
            for i, c in enumerate(numeric)
        ] + [
            F.struct(F.lit(len(numeric) + i).alias("i"), qcol(c).cast("string").alias("v"))
            for i, c in enumerate(categorical)
        ]
        from pyspark.sql import Window

        rank = Window.partitionBy("i").orderBy(F.desc("count"), F.asc("v"))
        column_window = Window.partitionBy("i")
        number = F.when(F.col("i") < F.lit(len(numeric)), F.col("v").cast("double"))
        # A numeric column's minimum and maximum are kept however rare: the fitted range names
        # them anyway, and without them generated values would span a narrower range than the source's.
        extreme = (number == F.min(number).over(column_window)) | (number == F.max(number).over(column_window))
        rows = (
            self.frame.select(F.explode(F.array(*entries)).alias("s"))
            .select("s.i", "s.v")
            .where(F.col("v").isNotNull())
            .groupBy("i", "v")
            .count()
            .withColumn("extreme", F.coalesce(extreme, F.lit(False)))
            .where((F.col("count") >= self.config.model.min_category_count) | F.col("extreme"))
            .withColumn("rank", F.row_number().over(rank))
            .where(F.col("rank") <= MAX_STORED_VALUES)
            .orderBy("i", "rank")
            .collect()
        )
        for row in rows:
            column = columns[int(row["i"])]
            value = float(row["v"]) if column in numeric else row["v"]
            result[column][0].append(value)
            result[column][1].append(int(row["count"]))
        return result

    def _quantiles(self, numeric: list[str], text: list[str]) -> dict[str, list[float]]:
        """Return quantiles of numeric columns and of the string lengths of text columns (one job)."""
        if not numeric and not text:
            return {}
        points = self.config.model.quantiles
        probabilities = double_array([i / points for i in range(points + 1)])
        lengths = double_array([i / 20 for i in range(21)])
        row = self.frame.agg(
            *[
                F.percentile_approx(_as_number(c, self.schema[c]), probabilities, PERCENTILE_ACCURACY).alias(f"q_{i}")
                for i, c in enumerate(numeric)
            ],
            *[
                F.percentile_approx(F.length(qcol(c).cast("string")), lengths, 1000).alias(f"l_{i}")
                for i, c in enumerate(text)
            ],
        ).first()
        assert row is not None
        result = {c: [float(v) for v in row[f"q_{i}"]] for i, c in enumerate(numeric)}
        result.update({f"length:{c}": [float(v) for v in row[f"l_{i}"]] for i, c in enumerate(text)})
        return result

    def _fit_column(self, column: str, stats: _FittedStats) -> ColumnModel:
        data_type = self.schema[column]
        kind = self.kind_of(column)
        non_null = stats.non_null[column]
        null_fraction = (1 - non_null / stats.rows) if stats.rows else 0.0
        role = self.key_roles.get(column, "value")

        stored_as = self.frame.schema[column].metadata.get(STORED_AS)

        def model(distribution: dict[str, Any]) -> ColumnModel:
            return ColumnModel(column, kind.value, data_type.json(), role, null_fraction, distribution, stored_as)

        if role == "foreign_key":
            return model({"type": "key"})
        if role == "primary_key":
            return model(self._key_distribution(column, data_type, non_null, stats.ranges.get(column)))
        if non_null == 0:
            return model({"type": "all_null"})
        if kind in PERSONAL_KINDS:
            # Never learned value by value: generated from word lists in the column's format.
            return model({"type": "personal", "kind": kind.value})
        if column in stats.trues:
            return model({"type": "boolean", "true_fraction": stats.trues[column] / non_null})
        if column in stats.quantiles or column in stats.discrete:
            low, high = stats.ranges[column]
            integer = isinstance(data_type, (*_INTEGER_TYPES, T.DateType))
            if column in stats.discrete:
                # In value order: the copula ranks values, so the draw must be monotone in them.
                pairs = sorted(zip(*stats.frequencies[column]))
                values, counts = [v for v, _ in pairs], [c for _, c in pairs]
                return model(
                    {"type": "discrete", "values": values, "weights": counts, "min": low, "max": high,
                     "integer": integer}
                )
            return model(
                {"type": "quantiles", "values": stats.quantiles[column], "min": low, "max": high, "integer": integer}
            )
        if kind == ColumnKind.ID or column not in stats.frequencies:
            return model(self._key_distribution(column, data_type, non_null, stats.ranges.get(column)))
        values, counts = stats.frequencies[column]
        if not values:
            logger.warning(
                "column %s.%s: high cardinality, no value occurs %d times or more (model.min_category_count), so "
                "no source value is kept; it is generated %s",
                self.table, column, self.config.model.min_category_count,
                "uniformly between its minimum and maximum" if column in stats.ranges else "as random text",
            )
            if column in stats.ranges:
                low, high = stats.ranges[column]
                if isinstance(data_type, _INTEGER_TYPES):
                    return model({"type": "uniform_int", "min": int(low), "max": int(high)})
                integer = isinstance(data_type, T.DateType)
                return model({"type": "quantiles", "values": [low, high], "min": low, "max": high, "integer": integer})
        kept = sum(counts) / non_null
        lengths = stats.quantiles.get(f"length:{column}")
        if lengths is not None:
            return model(
                {"type": "text", "values": values, "weights": counts, "kept_fraction": kept,
                 "length_quantiles": lengths}
            )
        return model({"type": "categorical", "values": values, "weights": counts, "kept_fraction": kept})

    def _key_distribution(
        self, column: str, data_type: T.DataType, non_null: int, span: tuple[float, float] | None
    ) -> dict[str, Any]:
        low, high = span if span is not None else (0.0, 0.0)
        if isinstance(data_type, _INTEGER_TYPES):
            return {"type": "uniform_int", "min": int(low), "max": int(high)}
        if isinstance(data_type, T.StringType):
            declared = self.spec.columns.get(column)
            if declared is not None and declared.format is not None:
                parsed = parse_key_format(declared.format)
                if parsed is None:
                    raise ConfigError(
                        f"tables.{self.table}.columns.{column}.format: '{declared.format}' is not a key format; "
                        f"write it as PREFIX[0-9]{{n}} or PREFIX[0-9]{{m,n}}, such as ACC-[0-9]{{6}}"
                    )
                prefix, low, high = parsed
                return {"type": "string_format", "style": "prefixed_number", "prefix": prefix,
                        "width": low if low == high else 0, "min_digits": low, "max_digits": high, "strict": True}
            return _string_format(self.frame, column, non_null)
        if isinstance(data_type, _NUMBER_LIKE_TYPES):
            return {"type": "ordinal", "min": low, "max": high}
        raise SourceDataError(
            f"key column {self.table}.{column} has type {data_type.simpleString()}; keys must be integers, "
            f"strings, numbers, dates or timestamps"
        )


def _is_constant(column: ColumnModel) -> bool:
    dist = column.distribution
    if column.null_fraction > 0:
        return False
    if dist["type"] == "boolean":
        return dist["true_fraction"] in (0.0, 1.0)
    if dist["type"] in ("categorical", "discrete"):
        return len(dist["values"]) == 1 and dist.get("kept_fraction", 1.0) == 1.0
    if dist["type"] == "quantiles":
        return dist["min"] == dist["max"]
    return False


def _warn_uninformative(table: str, models: list[ColumnModel], rows: int) -> None:
    """Log one warning naming the all-null and constant columns, which are generated as they are."""
    if rows == 0:
        return
    all_null = [m.name for m in models if m.role == "value" and m.distribution["type"] == "all_null"]
    constant = [m.name for m in models if m.role == "value" and _is_constant(m)]
    if all_null or constant:
        logger.warning(
            "table %s: all-null column(s) %s and constant column(s) %s carry no information; they are "
            "generated all null and constant, in their source types",
            table, all_null or "none", constant or "none",
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
    if config.model.dependence == "copula":
        started = time.monotonic()
        tables = {
            name: dataclasses.replace(
                table, joint=fit_joint_columns(table, sources.frames[name], config.model.min_category_count)
            )
            for name, table in tables.items()
        }
        copulas = fit_dependence(plan, tables, relationships, sources.frames, config.generation.seed)
        tables = {name: dataclasses.replace(table, dependence=copulas.get(name)) for name, table in tables.items()}
        logger.info("fit dependence: %d table(s), %.1f s", len(copulas), time.monotonic() - started)
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
