"""Evaluate: key integrity, cardinality and column shapes, computed with Spark aggregations.

Scores follow SDMetrics' definitions: 1 - KS statistic for numeric and datetime
columns and for children-per-parent counts, 1 - total variation distance for
categorical and boolean columns. The KS statistic is taken over a grid of up to
``GRID_POINTS`` real quantiles (exact when a column has fewer distinct values),
so only per-bin counts reach the driver.
"""

from __future__ import annotations

import logging
import time
from functools import reduce
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.functions import pandas_udf

from synthspark.fit import _as_number
from synthspark.model import ColumnModel, FittedModel, RelationshipModel
from synthspark.plan import Plan
from synthspark.sampling import qcol

logger = logging.getLogger(__name__)

GRID_POINTS = 2000
_NUMERIC_DISTRIBUTIONS = ("quantiles", "discrete")


def _all_present(columns: list[str]) -> Column:
    return reduce(lambda a, b: a & b, [qcol(c).isNotNull() for c in columns])


def ks_from_histograms(first: dict[float, float], second: dict[float, float]) -> float:
    """Return the KS statistic between two discrete distributions given as value -> weight."""
    values = sorted(set(first) | set(second))
    if not values:
        return 0.0
    a = np.array([first.get(v, 0.0) for v in values], dtype="float64")
    b = np.array([second.get(v, 0.0) for v in values], dtype="float64")
    if a.sum() == 0 or b.sum() == 0:
        return 0.0 if a.sum() == b.sum() else 1.0
    return float(np.max(np.abs(np.cumsum(a) / a.sum() - np.cumsum(b) / b.sum())))


def primary_key_uniqueness(frame: DataFrame, key: list[str]) -> dict[str, float]:
    """Return row count, duplicate and null key counts, and the share of rows with a unique non-null key."""
    row = frame.agg(
        F.count(F.lit(1)).alias("rows"),
        F.count_distinct(*[qcol(c) for c in key]).alias("distinct"),
        F.sum((~_all_present(key)).cast("int")).alias("nulls"),
    ).first()
    assert row is not None
    rows = int(row["rows"])
    nulls = int(row["nulls"] or 0)
    distinct = int(row["distinct"])
    return {
        "rows": rows,
        "null_keys": nulls,
        "duplicate_keys": rows - nulls - distinct,
        "score": (distinct / rows) if rows else 1.0,
    }


def foreign_key_validity(child: DataFrame, columns: list[str], parent: DataFrame, parent_columns: list[str]) -> dict[str, float]:
    """Count non-null child keys without a parent (an anti join); score = share of valid non-null keys."""
    present = child.where(_all_present(columns)).select(*columns)
    keys = parent.select(*[qcol(p).alias(c) for p, c in zip(parent_columns, columns)]).distinct()
    row = present.agg(F.count(F.lit(1))).first()
    non_null = int(row[0]) if row else 0
    orphans = present.join(keys, on=columns, how="left_anti").count()
    return {
        "non_null_rows": non_null,
        "orphan_rows": orphans,
        "score": (1 - orphans / non_null) if non_null else 1.0,
    }


def children_histogram(child: DataFrame, columns: list[str], parent: DataFrame, parent_columns: list[str]) -> dict[float, float]:
    """Return children-per-parent counts (zeros included) as count -> number of parents."""
    counts = child.where(_all_present(columns)).groupBy(*columns).count()
    per_parent = parent.select(*[qcol(p).alias(c) for p, c in zip(parent_columns, columns)]).join(
        counts, on=columns, how="left"
    )
    rows = (
        per_parent.select(F.coalesce(qcol("count"), F.lit(0)).alias("children"))
        .groupBy("children")
        .count()
        .collect()
    )
    return {float(r["children"]): float(r["count"]) for r in rows}


def _bin_udf(grid: np.ndarray) -> Any:
    @pandas_udf("int")  # type: ignore[call-overload]
    def _bin(values: pd.Series) -> pd.Series:
        array = values.to_numpy(dtype="float64", na_value=np.nan)
        bins = np.searchsorted(grid, array, side="left").astype("int32")
        bins[np.isnan(array)] = -1
        return pd.Series(bins)

    return _bin


def _numeric_bins(frame: DataFrame, columns: list[ColumnModel], grids: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Count, per column, the values in each grid bin (bin j holds values in (grid[j-1], grid[j]]), in one job."""
    types = {field.name: field.dataType for field in frame.schema.fields}
    entries = [
        F.struct(F.lit(i).alias("i"), _bin_udf(grids[c.name])(_as_number(c.name, types[c.name])).alias("b"))
        for i, c in enumerate(columns)
    ]
    rows = (
        frame.select(F.explode(F.array(*entries)).alias("s"))
        .select("s.i", "s.b")
        .where(F.col("b") >= 0)
        .groupBy("i", "b")
        .count()
        .collect()
    )
    counts = {c.name: np.zeros(len(grids[c.name]) + 1, dtype="float64") for c in columns}
    for row in rows:
        counts[columns[int(row["i"])].name][int(row["b"])] += float(row["count"])
    return counts


def _category_shares(frame: DataFrame, columns: list[ColumnModel]) -> dict[str, dict[Any, float]]:
    """Return each column's category shares (null is a category), from one job."""
    entries = [
        F.struct(F.lit(i).alias("i"), qcol(c.name).cast("string").alias("v")) for i, c in enumerate(columns)
    ]
    rows = (
        frame.select(F.explode(F.array(*entries)).alias("s"))
        .select("s.i", "s.v")
        .groupBy("i", "v")
        .count()
        .collect()
    )
    counts: dict[str, dict[Any, float]] = {c.name: {} for c in columns}
    for row in rows:
        counts[columns[int(row["i"])].name][row["v"]] = float(row["count"])
    result = {}
    for name, values in counts.items():
        total = sum(values.values())
        result[name] = {k: v / total for k, v in values.items()} if total else {}
    return result


def column_shapes(real: DataFrame, synthetic: DataFrame, columns: list[ColumnModel]) -> dict[str, dict[str, Any]]:
    """Score each value column: 1 - KS for numeric and datetime, 1 - TV distance for categorical and boolean.

    Key, text, id and all-null columns are skipped, as SDMetrics skips them.
    """
    numeric = [c for c in columns if c.distribution["type"] in _NUMERIC_DISTRIBUTIONS]
    categorical = [c for c in columns if c.distribution["type"] in ("categorical", "boolean")]
    scores: dict[str, dict[str, Any]] = {}
    if numeric:
        real_types = {field.name: field.dataType for field in real.schema.fields}
        probabilities = np.linspace(0, 1, GRID_POINTS + 1).tolist()
        row = real.agg(
            *[F.percentile_approx(_as_number(c.name, real_types[c.name]), probabilities, 20_000) for c in numeric]
        ).first()
        assert row is not None
        grids = {c.name: np.unique(np.asarray(row[i] or [0.0], dtype="float64")) for i, c in enumerate(numeric)}
        real_counts = _numeric_bins(real, numeric, grids)
        synthetic_counts = _numeric_bins(synthetic, numeric, grids)
        for column in numeric:
            a, b = real_counts[column.name], synthetic_counts[column.name]
            if a.sum() == 0 or b.sum() == 0:
                continue
            statistic = np.max(np.abs(np.cumsum(a) / a.sum() - np.cumsum(b) / b.sum()))
            scores[column.name] = {"metric": "ks_complement", "score": float(1 - statistic)}
    if categorical:
        real_shares = _category_shares(real, categorical)
        synthetic_shares = _category_shares(synthetic, categorical)
        for column in categorical:
            first, second = real_shares[column.name], synthetic_shares[column.name]
            keys = set(first) | set(second)
            distance = 0.5 * sum(abs(first.get(k, 0.0) - second.get(k, 0.0)) for k in keys)
            scores[column.name] = {"metric": "tv_complement", "score": float(1 - min(distance, 1.0))}
    return {c.name: scores[c.name] for c in columns if c.name in scores}


def _relationship_scores(
    rel: RelationshipModel, real_frames: dict[str, DataFrame], synthetic: dict[str, DataFrame]
) -> dict[str, Any]:
    validity = foreign_key_validity(synthetic[rel.child], rel.columns, synthetic[rel.parent], rel.parent_columns)
    real_histogram = {float(v): float(p) for v, p in zip(rel.count_values, rel.count_parents)}
    if rel.child in real_frames and rel.parent in real_frames:
        real_histogram = children_histogram(
            real_frames[rel.child], rel.columns, real_frames[rel.parent], rel.parent_columns
        )
    synthetic_histogram = children_histogram(
        synthetic[rel.child], rel.columns, synthetic[rel.parent], rel.parent_columns
    )

    def summary(histogram: dict[float, float]) -> dict[str, float]:
        parents = sum(histogram.values())
        if not parents:
            return {"mean": 0.0, "max": 0.0, "zero_share": 0.0}
        return {
            "mean": sum(k * v for k, v in histogram.items()) / parents,
            "max": max((k for k, v in histogram.items() if v > 0), default=0.0),
            "zero_share": histogram.get(0.0, 0.0) / parents,
        }

    return {
        "foreign_key_validity": validity["score"],
        "orphan_rows": validity["orphan_rows"],
        "cardinality_similarity": 1 - ks_from_histograms(real_histogram, synthetic_histogram),
        "children_real": summary(real_histogram),
        "children_synthetic": summary(synthetic_histogram),
    }


def evaluate(
    model: FittedModel,
    plan: Plan,
    real: dict[str, DataFrame],
    synthetic: dict[str, DataFrame],
) -> dict[str, Any]:
    """Score the synthetic tables against the real ones; return a JSON-ready report.

    ``real`` holds the source tables after orphan policies, the data the model
    was fitted on.
    """
    report: dict[str, Any] = {"tables": {}, "relationships": {}, "overall": {}}
    shape_scores: list[float] = []
    for table in plan.order:
        started = time.monotonic()
        fitted = model.tables[table]
        frame = synthetic[table]
        entry: dict[str, Any] = {"rows": frame.count(), "real_rows": fitted.rows, "column_shapes": {}}
        if fitted.primary_key:
            entry["primary_key"] = primary_key_uniqueness(frame, fitted.primary_key)
        if table in real:
            entry["column_shapes"] = column_shapes(real[table], frame, fitted.columns)
            shape_scores.extend(v["score"] for v in entry["column_shapes"].values())
        scores = [v["score"] for v in entry["column_shapes"].values()]
        entry["column_shapes_mean"] = float(np.mean(scores)) if scores else None
        report["tables"][table] = entry
        logger.info(
            "evaluate %s: %d rows, column shapes %s, %.1f s",
            table, entry["rows"], entry["column_shapes_mean"], time.monotonic() - started,
        )
    for rel in plan.relationships:
        report["relationships"][rel.name] = {
            "relationship": rel.describe(),
            **_relationship_scores(model.relationships[rel.name], real, synthetic),
        }
    key_scores = [t["primary_key"]["score"] for t in report["tables"].values() if "primary_key" in t]
    fk_scores = [r["foreign_key_validity"] for r in report["relationships"].values()]
    cardinality = [r["cardinality_similarity"] for r in report["relationships"].values()]
    report["overall"] = {
        "primary_key_uniqueness": min(key_scores) if key_scores else 1.0,
        "foreign_key_validity": min(fk_scores) if fk_scores else 1.0,
        "cardinality_similarity": float(np.mean(cardinality)) if cardinality else None,
        "column_shapes": float(np.mean(shape_scores)) if shape_scores else None,
    }
    return report
