"""Evaluate: key integrity, cardinality and column shapes, computed with Spark aggregations.

Scores follow SDMetrics' definitions: 1 - KS statistic for numeric and datetime
columns and for children-per-parent counts, 1 - total variation distance for
categorical and boolean columns. The KS statistic is taken over the grid of real
quantiles (or discrete values) stored in the fitted model, so only per-bin counts
reach the driver. Between two of the default 1,000 quantiles the real CDF moves by
about 0.001, which bounds how far the grid can miss the real side's jumps.
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


def relationship_counts(
    child: DataFrame, columns: list[str], parent: DataFrame, parent_columns: list[str]
) -> tuple[dict[float, float], int, int]:
    """Return children per parent (count -> parents, zeros included), orphan rows and non-null key rows.

    One full outer join of the parent keys with the child key counts yields both:
    child keys with no parent are orphans, parents with no child keys count zero.
    """
    found = "__ss_parent"
    keys = (
        parent.select(*[qcol(p).alias(c) for p, c in zip(parent_columns, columns)])
        .distinct()
        .withColumn(found, F.lit(True))
    )
    counts = child.where(_all_present(columns)).groupBy(*[qcol(c) for c in columns]).count()
    joined = keys.join(counts, on=columns, how="full_outer")
    rows = (
        joined.select(
            F.coalesce(qcol(found), F.lit(False)).alias("has_parent"),
            F.coalesce(F.col("count"), F.lit(0)).alias("children"),
        )
        .groupBy("has_parent", "children")
        .count()
        .collect()
    )
    histogram: dict[float, float] = {}
    orphans = 0
    present = 0
    for row in rows:
        children = int(row["children"])
        present += children * int(row["count"])
        if row["has_parent"]:
            histogram[float(children)] = histogram.get(float(children), 0.0) + float(row["count"])
        else:
            orphans += children * int(row["count"])
    return histogram, orphans, present


def _bin_udf(grid: np.ndarray) -> Any:
    @pandas_udf("int")  # type: ignore[call-overload]
    def _bin(values: pd.Series) -> pd.Series:
        array = values.to_numpy(dtype="float64", na_value=np.nan)
        bins = np.searchsorted(grid, array, side="left").astype("int32")
        bins[np.isnan(array)] = -1
        return pd.Series(bins)

    return _bin


def _stacked_counts(
    frame: DataFrame, numeric: list[ColumnModel], grids: dict[str, np.ndarray], categorical: list[ColumnModel]
) -> tuple[dict[str, np.ndarray], dict[str, dict[Any, float]]]:
    """Count numeric values per grid bin and categorical values per category, all columns in one job.

    Bin ``j`` of a numeric column contains values in (grid[j-1], grid[j]]; nulls are left out.
    For categorical columns null is a category of its own.
    """
    types = {field.name: field.dataType for field in frame.schema.fields}
    entries = [
        F.struct(
            F.lit(i).alias("i"),
            _bin_udf(grids[c.name])(_as_number(c.name, types[c.name])).alias("b"),
            F.lit(None).cast("string").alias("v"),
        )
        for i, c in enumerate(numeric)
    ]
    entries += [
        F.struct(F.lit(len(numeric) + i).alias("i"), F.lit(0).alias("b"), qcol(c.name).cast("string").alias("v"))
        for i, c in enumerate(categorical)
    ]
    rows = (
        frame.select(F.explode(F.array(*entries)).alias("s"))
        .select("s.i", "s.b", "s.v")
        .where(F.col("b") >= 0)
        .groupBy("i", "b", "v")
        .count()
        .collect()
    )
    bins = {c.name: np.zeros(len(grids[c.name]) + 1, dtype="float64") for c in numeric}
    categories: dict[str, dict[Any, float]] = {c.name: {} for c in categorical}
    for row in rows:
        index = int(row["i"])
        if index < len(numeric):
            bins[numeric[index].name][int(row["b"])] += float(row["count"])
        else:
            categories[categorical[index - len(numeric)].name][row["v"]] = float(row["count"])
    shares = {}
    for name, counts in categories.items():
        total = sum(counts.values())
        shares[name] = {k: v / total for k, v in counts.items()} if total else {}
    return bins, shares


def _grid(column: ColumnModel) -> np.ndarray:
    """Return the KS grid of a column: its fitted quantiles or discrete values (real data, already aggregated)."""
    dist = column.distribution
    return np.unique(np.asarray(dist["values"], dtype="float64"))


def column_shapes(real: DataFrame, synthetic: DataFrame, columns: list[ColumnModel]) -> dict[str, dict[str, Any]]:
    """Score each value column: 1 - KS for numeric and datetime, 1 - TV distance for categorical and boolean.

    Key, text, id and all-null columns are skipped, as SDMetrics skips them.
    """
    numeric = [c for c in columns if c.distribution["type"] in _NUMERIC_DISTRIBUTIONS]
    categorical = [c for c in columns if c.distribution["type"] in ("categorical", "boolean")]
    if not numeric and not categorical:
        return {}
    grids = {c.name: _grid(c) for c in numeric}
    real_bins, real_shares = _stacked_counts(real, numeric, grids, categorical)
    synthetic_bins, synthetic_shares = _stacked_counts(synthetic, numeric, grids, categorical)
    scores: dict[str, dict[str, Any]] = {}
    for column in numeric:
        a, b = real_bins[column.name], synthetic_bins[column.name]
        if a.sum() == 0 or b.sum() == 0:
            continue
        statistic = np.max(np.abs(np.cumsum(a) / a.sum() - np.cumsum(b) / b.sum()))
        scores[column.name] = {"metric": "ks_complement", "score": float(1 - statistic)}
    for column in categorical:
        first, second = real_shares[column.name], synthetic_shares[column.name]
        keys = set(first) | set(second)
        distance = 0.5 * sum(abs(first.get(k, 0.0) - second.get(k, 0.0)) for k in keys)
        scores[column.name] = {"metric": "tv_complement", "score": float(1 - min(distance, 1.0))}
    return {c.name: scores[c.name] for c in columns if c.name in scores}


def _relationship_scores(rel: RelationshipModel, synthetic: dict[str, DataFrame]) -> dict[str, Any]:
    # The real histogram is the fitted one: the same source rows, after orphan policies.
    real_histogram = {float(v): float(p) for v, p in zip(rel.count_values, rel.count_parents)}
    synthetic_histogram, orphans, present = relationship_counts(
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
        "foreign_key_validity": (1 - orphans / present) if present else 1.0,
        "orphan_rows": orphans,
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

    ``real`` contains the source tables after orphan policies, the data the model
    was fitted on.
    """
    report: dict[str, Any] = {"tables": {}, "relationships": {}, "overall": {}}
    shape_scores: list[float] = []
    for table in plan.order:
        started = time.monotonic()
        fitted = model.tables[table]
        frame = synthetic[table]
        entry: dict[str, Any] = {"real_rows": fitted.rows, "column_shapes": {}}
        if fitted.primary_key:
            entry["primary_key"] = primary_key_uniqueness(frame, fitted.primary_key)
            entry["rows"] = entry["primary_key"]["rows"]
        else:
            entry["rows"] = frame.count()
        if table in real:
            entry["column_shapes"] = column_shapes(real[table], frame, fitted.columns)
            shape_scores.extend(v["score"] for v in entry["column_shapes"].values())
        scores = [v["score"] for v in entry["column_shapes"].values()]
        entry["column_shapes_mean"] = float(np.mean(scores)) if scores else None
        report["tables"][table] = entry
        if table in real:
            logger.info(
                "evaluate %s: %d rows, column shapes %.3f, %.1f s",
                table, entry["rows"], entry["column_shapes_mean"] or 0.0, time.monotonic() - started,
            )
        else:
            logger.info(
                "integrity check %s: %d rows, keys checked, %.1f s", table, entry["rows"], time.monotonic() - started
            )
    for rel in plan.relationships:
        started = time.monotonic()
        scores = _relationship_scores(model.relationships[rel.name], synthetic)
        report["relationships"][rel.name] = {"relationship": rel.describe(), **scores}
        logger.info(
            "evaluate %s: %d orphan keys, cardinality %.3f, %.1f s",
            rel.describe(), scores["orphan_rows"], scores["cardinality_similarity"], time.monotonic() - started,
        )
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
