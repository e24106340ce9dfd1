"""SDMetrics quality properties computed with Spark: column shapes, column pair trends, inter-table trends.

The definitions follow SDMetrics 0.32 (``sdmetrics.reports.QualityReport``), so the
scores compare with published ones:

- Column shapes: KSComplement (1 - the two-sample KS statistic on the exact empirical
  CDFs) for numerical and datetime columns, TVComplement (1 - total variation distance
  of the value frequencies) for categorical and boolean columns. Nulls are dropped first.
- Column pair trends: CorrelationSimilarity (1 - |r_real - r_synthetic| / 2, Pearson)
  for two continuous columns, ContingencySimilarity (1 - total variation distance of the
  2-D frequency tables, nulls counted as a category) for two discrete columns. A mixed
  pair uses ContingencySimilarity after cutting the continuous column into 10 equal-width
  bins. As in SDMetrics' report, each side is binned over its own minimum and maximum.
- Inter-table trends: column pair trends of each child table inner-joined to its parent,
  over the parent column x child column pairs.
- A pair meets the threshold when the real |Pearson r| is above 0.5 (continuous pairs)
  or the real Cramér's V is above 0.3 (other pairs). The thresholded mean is what
  SDMetrics 0.32's QualityReport reports by default.

Datetimes are compared as nanoseconds since the epoch, as ``pd.to_numeric`` gives them.
Every result that reaches the driver is one row per column, pair or side.

Known differences: SDMetrics adds 1e-6 to the real count of a category seen only in
the synthetic data (TVComplement), which moves the score by less than 1e-6 per such
category. Where a side has more than 50,000 rows, SDMetrics computes ContingencySimilarity
on a random sample of 50,000 rows per side and pair, and this module on one Bernoulli
sample of about 50,000 rows per side, so there the two agree only up to sampling noise.
"""

from __future__ import annotations

import itertools
import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from functools import reduce
from typing import Any

import numpy as np
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.storagelevel import StorageLevel

from synthspark.model import ColumnModel
from synthspark.sampling import INTERNAL, hash_long, qcol

# SDMetrics' QualityReport thresholds for a pair to count in the thresholded mean.
CORRELATION_THRESHOLD = 0.5
ASSOCIATION_THRESHOLD = 0.3
# SDMetrics' bin count for the continuous column of a mixed pair.
DISCRETE_BINS = 10
# Pairs scored per table or relationship. Pairs grow with the square of the column count
# and each discrete pair multiplies the rows of the contingency query, so wider tables
# score the first pairs in SDMetrics' order and count the rest as skipped.
MAX_COLUMN_PAIRS = 500
# SDMetrics' report computes ContingencySimilarity on a random sample of this many rows
# per side when either side is larger. The same is done here, which also bounds the
# cost of the contingency tables: a Bernoulli sample of about this many rows per side.
CONTINGENCY_SAMPLE_ROWS = 50_000
_SAMPLE_SEED = 0

_CONTINUOUS_DISTRIBUTIONS = ("quantiles", "discrete")
_DISCRETE_DISTRIBUTIONS = ("categorical", "boolean")
# SDMetrics rounds continuous values to this many decimals before the KS test.
_KS_DECIMALS = 14
_NANOS_PER_DAY = 86_400 * 10**9
_SIDE = f"{INTERNAL}side"
_REAL, _SYNTHETIC = 0, 1


@dataclass(frozen=True)
class ValueColumn:
    """A column scored as SDMetrics scores it.

    ``source`` is the column name in the frames, ``name`` the name in the report.
    Continuous columns (numerical, datetime) are compared as numbers, discrete ones
    (categorical, boolean) as strings.
    """

    name: str
    source: str
    continuous: bool


def value_columns(columns: Sequence[ColumnModel]) -> list[ValueColumn]:
    """Return the columns SDMetrics scores, in table order.

    Columns of other distribution types (keys, text, all-null) are skipped, as SDMetrics
    skips id and text columns. A categorical column with no value kept by the model is
    modelled as text, so it is skipped too.
    """
    result = []
    for column in columns:
        kind = column.distribution["type"]
        if kind in _CONTINUOUS_DISTRIBUTIONS or kind in _DISCRETE_DISTRIBUTIONS:
            result.append(ValueColumn(column.name, column.name, kind in _CONTINUOUS_DISTRIBUTIONS))
    return result


def _number(column: Column, data_type: T.DataType) -> Column:
    """Map a numeric, date or timestamp column to a double, with datetimes as nanoseconds since the epoch.

    The products are taken in double precision, which rounds them exactly as pandas
    rounds int64 nanoseconds to float64, and cannot overflow.
    """
    if isinstance(data_type, T.DateType):
        return F.unix_date(column).cast("double") * F.lit(float(_NANOS_PER_DAY))
    if isinstance(data_type, T.TimestampNTZType):
        return F.unix_micros(column.cast("timestamp")).cast("double") * F.lit(1000.0)
    if isinstance(data_type, T.TimestampType):
        return F.unix_micros(column).cast("double") * F.lit(1000.0)
    return column.cast("double")


def _slot(index: int) -> str:
    return f"{INTERNAL}v{index}"


def _bin_slot(index: int) -> str:
    return f"{INTERNAL}bin{index}"


def value_expressions(frame: DataFrame, columns: Sequence[ValueColumn]) -> list[Column]:
    """Return each column of ``frame`` as SDMetrics compares it: continuous ones as doubles, discrete ones as strings."""
    types = {field.name: field.dataType for field in frame.schema.fields}
    return [
        _number(qcol(c.source), types[c.source]) if c.continuous else qcol(c.source).cast("string") for c in columns
    ]


def row_hash(frame: DataFrame, seed: int, purpose: str) -> Column:
    """Return a non-negative 63-bit hash of each whole row, the seed and ``purpose``.

    Sampling and splitting by this hash pick the same rows whatever the partitioning,
    and rows with equal values (keys included) always get the same hash.
    """
    return hash_long(seed, purpose, index=F.struct(*[qcol(c) for c in frame.columns]))


def _union_sides(real: DataFrame, synthetic: DataFrame, columns: Sequence[ValueColumn]) -> DataFrame:
    """Stack both sides under a side flag, with column ``j`` as ``_slot(j)``, a double or a string."""

    def project(frame: DataFrame, side: int) -> DataFrame:
        values = [value.alias(_slot(j)) for j, value in enumerate(value_expressions(frame, columns))]
        return frame.select(F.lit(side).alias(_SIDE), *values)

    return project(real, _REAL).unionByName(project(synthetic, _SYNTHETIC))


def _count_side(side: int) -> Column:
    return F.sum((F.col(_SIDE) == F.lit(side)).cast("long"))


def _ratio(numerator: Column, denominator: Column) -> Column:
    """Divide, or return null for a zero denominator (ANSI mode raises on division by zero)."""
    return F.when(denominator > 0, numerator / denominator)


def _finite(value: Any) -> float | None:
    """Return ``value`` as a float, or None for null and NaN (JSON has no NaN)."""
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _bin_edges(low: float | None, high: float | None) -> np.ndarray:
    """Return the bin edges SDMetrics uses: ``np.histogram_bin_edges`` of a column with this range."""
    span = np.array([], dtype="float64") if low is None else np.array([low, high], dtype="float64")
    return np.histogram_bin_edges(span, bins=DISCRETE_BINS)


def _bin_expr(value: Column, edges: np.ndarray) -> Column:
    """Return ``np.digitize(value, edges)``: how many edges are <= value, and len(edges) for null.

    Like numpy, a null lands in the same bin as the maximum.
    """
    # A few plain comparisons: Spark compiles them, unlike a higher-order filter over the edges.
    at_most = reduce(operator.add, [F.when(value >= F.lit(float(edge)), F.lit(1)).otherwise(F.lit(0)) for edge in edges])
    return F.when(value.isNull(), F.lit(len(edges))).otherwise(at_most)


def _side_statistics(
    union: DataFrame, binned: list[int], correlated: list[tuple[int, int]]
) -> dict[int, dict[str, Any]]:
    """Return per side: row count, minimum and maximum of the binned columns, Pearson r of the continuous pairs."""
    aggregates = [F.count(F.lit(1)).alias("rows")]
    for j in binned:
        aggregates += [F.min(_slot(j)).alias(f"lo_{j}"), F.max(_slot(j)).alias(f"hi_{j}")]
    aggregates += [F.corr(_slot(a), _slot(b)).alias(f"r_{a}_{b}") for a, b in correlated]
    # Pearson r of a constant column divides by zero, which raises under ANSI mode (Spark 4's
    # default). Without ANSI it is NaN, and the scoring treats NaN as undefined.
    session = union.sparkSession
    ansi = session.conf.get("spark.sql.ansi.enabled")
    session.conf.set("spark.sql.ansi.enabled", "false")
    try:
        rows = union.groupBy(_SIDE).agg(*aggregates).collect()
    finally:
        session.conf.set("spark.sql.ansi.enabled", ansi)
    found = {int(row[_SIDE]): row.asDict() for row in rows}
    empty: dict[str, Any] = {"rows": 0}
    return {side: found.get(side, empty) for side in (_REAL, _SYNTHETIC)}


def _cell_counts(
    union: DataFrame,
    columns: Sequence[ValueColumn],
    shaped: Sequence[int],
    tabulated: Sequence[tuple[int, int]],
    edges: dict[int, dict[int, np.ndarray]],
    fractions: dict[int, float],
) -> dict[int, dict[str, Any]]:
    """Compute the KS and TV statistics of single columns and the contingency statistics of pairs, in one query.

    Every row contributes one cell per scored column (key ``k`` = position in ``shaped``),
    and each row of the sample (``fractions`` per side) one per tabulated pair
    (``k`` = len(shaped) + position in ``tabulated``): a stacked group-by. The cells are then partitioned by ``k``, so the window functions
    and the final aggregation need no further shuffle, and the driver receives one
    row per column and pair. Nulls are dropped for single columns and kept as a
    category for pairs, as SDMetrics does.
    """

    binned = sorted(edges[_REAL])

    def bin_code(j: int) -> Column:
        real_bin = _bin_expr(F.col(_slot(j)), edges[_REAL][j])
        synthetic_bin = _bin_expr(F.col(_slot(j)), edges[_SYNTHETIC][j])
        return F.when(F.col(_SIDE) == F.lit(_REAL), real_bin).otherwise(synthetic_bin).cast("string")

    def code(j: int) -> Column:
        return F.col(_bin_slot(j)) if columns[j].continuous else F.col(_slot(j))

    no_number, no_string = F.lit(None).cast("double"), F.lit(None).cast("string")
    shape_entries = [
        F.struct(
            F.lit(k).alias("k"),
            (F.round(F.col(_slot(j)), _KS_DECIMALS) if columns[j].continuous else no_number).alias("x"),
            (no_string if columns[j].continuous else F.col(_slot(j))).alias("a"),
            no_string.alias("b"),
        )
        for k, j in enumerate(shaped)
    ]
    pair_entries = [
        F.struct(F.lit(len(shaped) + p).alias("k"), no_number.alias("x"), code(a).alias("a"), code(b).alias("b"))
        for p, (a, b) in enumerate(tabulated)
    ]

    def stack(frame: DataFrame, entries: list[Column]) -> DataFrame:
        return frame.select(F.col(_SIDE), F.explode(F.array(*entries)).alias("e")).select(_SIDE, "e.k", "e.x", "e.a", "e.b")

    streams = []
    if shape_entries:
        streams.append(stack(union, shape_entries).where(F.col("x").isNotNull() | F.col("a").isNotNull()))
    if pair_entries:
        sampled = union
        if min(fractions.values()) < 1.0:
            threshold = F.when(F.col(_SIDE) == F.lit(_REAL), F.lit(fractions[_REAL])).otherwise(
                F.lit(fractions[_SYNTHETIC])
            )
            sampled = union.where(F.rand(_SAMPLE_SEED) < threshold)
        # Each bin is computed once per row, however many pairs use its column.
        sampled = sampled.select("*", *[bin_code(j).alias(_bin_slot(j)) for j in binned])
        streams.append(stack(sampled, pair_entries))
    cells = (
        reduce(lambda first, second: first.unionByName(second), streams)
        .groupBy("k", "x", "a", "b")
        .agg(_count_side(_REAL).alias("r"), _count_side(_SYNTHETIC).alias("s"))
        .repartition("k")
    )
    key = Window.partitionBy("k")
    # Counts up to and including each distinct value: the right-continuous empirical
    # CDFs at every pooled value, where the KS supremum is reached.
    ordered = key.orderBy("x").rowsBetween(Window.unboundedPreceding, Window.currentRow)
    by_row, by_column = Window.partitionBy("k", "a"), Window.partitionBy("k", "b")
    present = F.col("r") > 0
    cells = cells.select(
        "k", "r", "s",
        F.sum("r").over(key).alias("total_r"),
        F.sum("s").over(key).alias("total_s"),
        F.sum("r").over(ordered).alias("cum_r"),
        F.sum("s").over(ordered).alias("cum_s"),
        F.sum("r").over(by_row).cast("double").alias("row_total"),
        F.count(F.when(present, 1)).over(by_row).alias("row_cells"),
        F.sum("r").over(by_column).cast("double").alias("column_total"),
        F.count(F.when(present, 1)).over(by_column).alias("column_cells"),
    )
    observed = F.col("r").cast("double")
    rows = (
        cells.groupBy("k")
        .agg(
            F.max(F.abs(_ratio(F.col("cum_r"), F.col("total_r")) - _ratio(F.col("cum_s"), F.col("total_s"))))
            .alias("ks"),
            (F.sum(F.abs(_ratio(F.col("r"), F.col("total_r")) - _ratio(F.col("s"), F.col("total_s")))) / 2)
            .alias("tv"),
            F.first("total_r").alias("total_r"),
            F.first("total_s").alias("total_s"),
            # Pearson's chi-squared is n * (sum of O^2 / (row total * column total) - 1).
            F.sum(F.when(present, observed * observed / (F.col("row_total") * F.col("column_total")))).alias("chi_sum"),
            # Summing 1 / (cells in the row) over the cells counts the distinct rows.
            F.sum(F.when(present, 1.0 / F.col("row_cells"))).alias("real_rows"),
            F.sum(F.when(present, 1.0 / F.col("column_cells"))).alias("real_columns"),
        )
        .collect()
    )
    return {int(row["k"]): row.asDict() for row in rows}


def _cramers_v(cells: dict[str, Any]) -> float | None:
    """Return the real side's Cramér's V (no continuity correction, as scipy's ``association``), or None.

    None when the real table has fewer than two distinct values in either column,
    where SDMetrics gives NaN.
    """
    shape = min(round(cells["real_rows"] or 0), round(cells["real_columns"] or 0))
    total = cells["total_r"]
    if shape < 2 or not total:
        return None
    chi_squared = max(total * (float(cells["chi_sum"]) - 1.0), 0.0)
    return math.sqrt(chi_squared / (total * (shape - 1)))


def _shape_score(column: ValueColumn, cells: dict[str, Any] | None) -> dict[str, Any] | None:
    if cells is None or not cells["total_r"] or not cells["total_s"]:
        return None
    if column.continuous:
        return {"metric": "ks_complement", "score": float(1 - cells["ks"])}
    return {"metric": "tv_complement", "score": float(1 - min(cells["tv"], 1.0))}


def _pair_score(
    names: tuple[str, str], real_r: float | None, synthetic_r: float | None, cells: dict[str, Any] | None
) -> dict[str, Any]:
    """Return one pair's entry: CorrelationSimilarity when ``cells`` is None, else ContingencySimilarity."""
    entry: dict[str, Any] = {"column_1": names[0], "column_2": names[1]}
    if cells is None:
        both = real_r is not None and synthetic_r is not None
        entry.update(
            metric="correlation_similarity",
            score=(1 - abs(real_r - synthetic_r) / 2) if both else None,
            real_correlation=real_r,
            synthetic_correlation=synthetic_r,
            meets_threshold=real_r is not None and abs(real_r) > CORRELATION_THRESHOLD,
        )
        return entry
    association = _cramers_v(cells)
    scored = bool(cells["total_r"]) and bool(cells["total_s"])
    entry.update(
        metric="contingency_similarity",
        score=float(1 - cells["tv"]) if scored else None,
        real_association=association,
        meets_threshold=association is not None and association > ASSOCIATION_THRESHOLD,
    )
    return entry


def mean_score(entries: Sequence[dict[str, Any]], thresholded: bool = False) -> float | None:
    """Return the mean score of the entries that have one (and meet the threshold, if asked), or None."""
    scores = [e["score"] for e in entries if e["score"] is not None and (e["meets_threshold"] or not thresholded)]
    return float(np.mean(scores)) if scores else None


def score_columns(
    real: DataFrame,
    synthetic: DataFrame,
    columns: Sequence[ValueColumn],
    pairs: Sequence[tuple[int, int]],
    *,
    shapes: bool = True,
    max_pairs: int = MAX_COLUMN_PAIRS,
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Return column shapes (when ``shapes``) and column pair trends, computed by at most two Spark queries.

    ``pairs`` index ``columns``, and only the first ``max_pairs`` are scored. The trends
    hold ``pairs`` (one entry per scored pair), ``mean`` over the pairs with a score,
    ``thresholded_mean`` over those that meet the threshold, and ``skipped``.
    The first query, run only when there are pairs, takes row counts, correlations and
    bin ranges. The second counts cells.
    """
    scored = list(pairs[:max_pairs])
    trends: dict[str, Any] = {"pairs": [], "mean": None, "thresholded_mean": None, "skipped": len(pairs) - len(scored)}
    shaped = list(range(len(columns))) if shapes else []
    if not shaped and not scored:
        return {}, trends
    union = _union_sides(real, synthetic, columns)
    correlated = [(a, b) for a, b in scored if columns[a].continuous and columns[b].continuous]
    tabulated = [(a, b) for a, b in scored if not (columns[a].continuous and columns[b].continuous)]
    binned = sorted({j for pair in tabulated for j in pair if columns[j].continuous})
    if scored:
        # Two queries read the union: keep it rather than read and join the sources twice.
        union = union.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        return _scores(union, columns, scored, shaped, correlated, tabulated, binned, trends)
    finally:
        if scored:
            union.unpersist()


def _scores(
    union: DataFrame,
    columns: Sequence[ValueColumn],
    scored: list[tuple[int, int]],
    shaped: list[int],
    correlated: list[tuple[int, int]],
    tabulated: list[tuple[int, int]],
    binned: list[int],
    trends: dict[str, Any],
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Run the queries of :func:`score_columns` on the stacked sides and score the columns and pairs."""
    sides: dict[int, dict[str, Any]] = {_REAL: {}, _SYNTHETIC: {}}
    if scored:
        sides = _side_statistics(union, binned, correlated)
    fractions = {side: 1.0 for side in sides}
    if max(int(sides[side].get("rows", 0)) for side in sides) > CONTINGENCY_SAMPLE_ROWS:
        fractions = {side: min(1.0, CONTINGENCY_SAMPLE_ROWS / int(sides[side]["rows"] or 1)) for side in sides}
    edges = {
        side: {j: _bin_edges(sides[side].get(f"lo_{j}"), sides[side].get(f"hi_{j}")) for j in binned}
        for side in sides
    }
    cells = _cell_counts(union, columns, shaped, tabulated, edges, fractions) if shaped or tabulated else {}

    shape_scores = {}
    for k, j in enumerate(shaped):
        score = _shape_score(columns[j], cells.get(k))
        if score is not None:
            shape_scores[columns[j].name] = score
    table_index = {pair: len(shaped) + p for p, pair in enumerate(tabulated)}
    empty_table: dict[str, Any] = {"total_r": 0, "total_s": 0}
    for a, b in scored:
        names = (columns[a].name, columns[b].name)
        key = f"r_{a}_{b}"
        if (a, b) in table_index:
            trends["pairs"].append(_pair_score(names, None, None, cells.get(table_index[(a, b)], empty_table)))
        else:
            real_r, synthetic_r = _finite(sides[_REAL].get(key)), _finite(sides[_SYNTHETIC].get(key))
            trends["pairs"].append(_pair_score(names, real_r, synthetic_r, None))
    trends["mean"] = mean_score(trends["pairs"])
    trends["thresholded_mean"] = mean_score(trends["pairs"], thresholded=True)
    return shape_scores, trends


def column_shapes(real: DataFrame, synthetic: DataFrame, columns: Sequence[ColumnModel]) -> dict[str, dict[str, Any]]:
    """Score each value column with KSComplement or TVComplement, in one Spark query.

    A column without a non-null value on either side has no score, as SDMetrics
    returns NaN for it.
    """
    return score_columns(real, synthetic, value_columns(columns), [])[0]


def table_pairs(count: int) -> list[tuple[int, int]]:
    """Return the column pairs of one table in SDMetrics' order: every combination of two columns."""
    return list(itertools.combinations(range(count), 2))


def inter_table_trends(
    real: tuple[DataFrame, DataFrame],
    synthetic: tuple[DataFrame, DataFrame],
    keys: tuple[Sequence[str], Sequence[str]],
    columns: tuple[Sequence[ColumnModel], Sequence[ColumnModel]],
    max_pairs: int = MAX_COLUMN_PAIRS,
) -> dict[str, Any]:
    """Score parent column x child column pairs on the children inner-joined to their parent.

    Each argument is a ``(parent, child)`` tuple: the frames, the parent's referenced key
    and the child's foreign key, and the column models. This is SDMetrics' InterTableTrends:
    column pair trends of the denormalized table, parent columns first.
    """
    return chain_trends(real, synthetic, [keys], columns, max_pairs)


def chain_trends(
    real: Sequence[DataFrame],
    synthetic: Sequence[DataFrame],
    links: Sequence[tuple[Sequence[str], Sequence[str]]],
    columns: tuple[Sequence[ColumnModel], Sequence[ColumnModel]],
    max_pairs: int = MAX_COLUMN_PAIRS,
) -> dict[str, Any]:
    """Score first-table column x last-table column pairs on a chain of tables joined along foreign keys.

    ``real`` and ``synthetic`` list the chain's frames from the top ancestor down to the
    last descendant. ``links[i]`` is ``(key columns of table i, foreign key columns of table i + 1)``.
    Each row of the last table is inner-joined to its parent, that parent to its own parent,
    and so on up to the first table. The pairs are then scored as :func:`inter_table_trends`
    scores one relationship (which is the chain of one link), first-table columns first.
    """
    if len(real) != len(links) + 1 or len(synthetic) != len(links) + 1:
        raise ValueError(f"a chain of {len(links)} links joins {len(links) + 1} tables, got {len(real)} and {len(synthetic)}")
    top_values, end_values = value_columns(columns[0]), value_columns(columns[1])
    joined_columns = [ValueColumn(c.name, f"{INTERNAL}p{j}", c.continuous) for j, c in enumerate(top_values)]
    joined_columns += [ValueColumn(c.name, f"{INTERNAL}c{j}", c.continuous) for j, c in enumerate(end_values)]

    def key_names(link: int) -> list[str]:
        return [f"{INTERNAL}k{link}_{i}" for i in range(len(links[link][1]))]

    def denormalize(frames: Sequence[DataFrame]) -> DataFrame:
        last = len(links) - 1
        joined = frames[-1].select(
            *[qcol(c).alias(k) for c, k in zip(links[last][1], key_names(last))],
            *[qcol(c.source).alias(f"{INTERNAL}c{j}") for j, c in enumerate(end_values)],
        )
        # Walk up: each middle table contributes its key (to join the rows below) and its foreign key (to go up).
        for link in range(last, 0, -1):
            middle = frames[link].select(
                *[qcol(c).alias(k) for c, k in zip(links[link][0], key_names(link))],
                *[qcol(c).alias(k) for c, k in zip(links[link - 1][1], key_names(link - 1))],
            )
            joined = joined.join(middle, on=key_names(link), how="inner").drop(*key_names(link))
        top = frames[0].select(
            *[qcol(c).alias(k) for c, k in zip(links[0][0], key_names(0))],
            *[qcol(c.source).alias(f"{INTERNAL}p{j}") for j, c in enumerate(top_values)],
        )
        return joined.join(top, on=key_names(0), how="inner")

    offset = len(top_values)
    pairs = [(p, offset + c) for p, c in itertools.product(range(len(top_values)), range(len(end_values)))]
    _, trends = score_columns(
        denormalize(real), denormalize(synthetic), joined_columns, pairs, shapes=False, max_pairs=max_pairs
    )
    return trends
