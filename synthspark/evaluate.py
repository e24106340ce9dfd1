"""Evaluate: key integrity, cardinality and SDMetrics' quality properties, computed with Spark aggregations.

Cardinality is SDMetrics' CardinalityShapeSimilarity: 1 - KS statistic between the real
and synthetic children per parent, zeros included. Column shapes, column pair trends and
inter-table trends are computed in :mod:`synthspark.quality` with SDMetrics' definitions.
Only aggregates reach the driver: one row per column, pair, side or children count.
"""

from __future__ import annotations

import logging
import time
from functools import reduce
from typing import Any

import numpy as np
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from synthspark.model import FittedModel, RelationshipModel, TableModel
from synthspark.plan import Plan, Relationship
from synthspark.quality import (
    ASSOCIATION_THRESHOLD,
    CORRELATION_THRESHOLD,
    DISCRETE_BINS,
    MAX_COLUMN_PAIRS,
    column_shapes,
    inter_table_trends,
    mean_score,
    score_columns,
    table_pairs,
    value_columns,
)
from synthspark.sampling import qcol

logger = logging.getLogger(__name__)

__all__ = ["column_shapes", "evaluate", "ks_from_histograms", "primary_key_uniqueness", "relationship_counts"]


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


def _table_quality(real: DataFrame, synthetic: DataFrame, fitted: TableModel, max_pairs: int) -> dict[str, Any]:
    """Return a table's column shapes and column pair trends, with their means."""
    values = value_columns(fitted.columns)
    shapes, trends = score_columns(real, synthetic, values, table_pairs(len(values)), max_pairs=max_pairs)
    scores = [v["score"] for v in shapes.values()]
    return {
        "column_shapes": shapes,
        "column_shapes_mean": float(np.mean(scores)) if scores else None,
        "column_pair_trends": trends["pairs"],
        "column_pair_trends_mean": trends["mean"],
        "column_pair_trends_thresholded_mean": trends["thresholded_mean"],
        "column_pairs_skipped": trends["skipped"],
    }


def _inter_table_quality(
    rel: Relationship, model: FittedModel, real: dict[str, DataFrame], synthetic: dict[str, DataFrame], max_pairs: int
) -> dict[str, Any]:
    """Return the parent x child column pair trends of one relationship, with their means."""
    trends = inter_table_trends(
        (real[rel.parent], real[rel.child]),
        (synthetic[rel.parent], synthetic[rel.child]),
        (rel.parent_columns, rel.columns),
        (model.tables[rel.parent].columns, model.tables[rel.child].columns),
        max_pairs,
    )
    return {
        "inter_table_trends": trends["pairs"],
        "inter_table_trends_mean": trends["mean"],
        "inter_table_trends_thresholded_mean": trends["thresholded_mean"],
        "inter_table_pairs_skipped": trends["skipped"],
    }


def _nanmean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def _overall(report: dict[str, Any], scored: bool) -> dict[str, Any]:
    """Combine the per-table and per-relationship scores as SDMetrics' multi-table QualityReport does.

    Shapes and pair trends are averaged over all columns or pairs (not per table),
    cardinality over relationships, and the quality score over the four properties.
    """
    tables = report["tables"].values()
    relationships = report["relationships"].values()
    key_scores = [t["primary_key"]["score"] for t in tables if "primary_key" in t]
    fk_scores = [r["foreign_key_validity"] for r in relationships]
    cardinality = [r["cardinality_similarity"] for r in relationships]
    shapes = [v["score"] for t in tables for v in t["column_shapes"].values()]
    pairs = [p for t in tables for p in t.get("column_pair_trends", [])]
    cross = [p for r in relationships for p in r.get("inter_table_trends", [])]
    overall: dict[str, Any] = {
        "primary_key_uniqueness": min(key_scores) if key_scores else 1.0,
        "foreign_key_validity": min(fk_scores) if fk_scores else 1.0,
        "cardinality_similarity": float(np.mean(cardinality)) if cardinality else None,
        "column_shapes": float(np.mean(shapes)) if shapes else None,
        "column_pair_trends": mean_score(pairs),
        "column_pair_trends_thresholded": mean_score(pairs, thresholded=True),
        "inter_table_trends": mean_score(cross),
        "inter_table_trends_thresholded": mean_score(cross, thresholded=True),
        "quality_score": None,
        "quality_score_all_pairs": None,
    }
    if scored:
        # SDMetrics 0.32's QualityReport score: the mean of its four properties, pair trends thresholded.
        overall["quality_score"] = _nanmean([
            overall["column_shapes"], overall["column_pair_trends_thresholded"],
            overall["cardinality_similarity"], overall["inter_table_trends_thresholded"],
        ])
        overall["quality_score_all_pairs"] = _nanmean([
            overall["column_shapes"], overall["column_pair_trends"],
            overall["cardinality_similarity"], overall["inter_table_trends"],
        ])
    return overall


def _as_modelled(fitted: TableModel, frame: DataFrame) -> DataFrame:
    """Convert columns written in their source's form (dates as 20230105) back to the modelled type."""
    for column in fitted.columns:
        if column.stored_as is not None and column.name in frame.columns:
            text = F.col(f"`{column.name}`").cast("string")
            frame = frame.withColumn(column.name, F.to_date(text, column.stored_as["format"]))
    return frame


def evaluate(
    model: FittedModel,
    plan: Plan,
    real: dict[str, DataFrame],
    synthetic: dict[str, DataFrame],
    *,
    max_column_pairs: int = MAX_COLUMN_PAIRS,
) -> dict[str, Any]:
    """Score the synthetic tables against the real ones; return a JSON-ready report.

    ``real`` contains the source tables after orphan policies, the data the model
    was fitted on. Without it (an empty dict) only keys and cardinality are checked.
    ``max_column_pairs`` caps the pairs scored per table and per relationship; the
    report counts the pairs left out.
    """
    report: dict[str, Any] = {
        "tables": {},
        "relationships": {},
        "overall": {},
        "settings": {
            "correlation_threshold": CORRELATION_THRESHOLD,
            "association_threshold": ASSOCIATION_THRESHOLD,
            "discrete_bins": DISCRETE_BINS,
            "max_column_pairs": max_column_pairs,
        },
    }
    synthetic = {name: _as_modelled(model.tables[name], frame) for name, frame in synthetic.items()}
    for table in plan.order:
        started = time.monotonic()
        fitted = model.tables[table]
        frame = synthetic[table]
        entry: dict[str, Any] = {"real_rows": fitted.rows, "column_shapes": {}, "column_shapes_mean": None}
        if fitted.primary_key:
            entry["primary_key"] = primary_key_uniqueness(frame, fitted.primary_key)
            entry["rows"] = entry["primary_key"]["rows"]
        else:
            entry["rows"] = frame.count()
        if table in real:
            entry.update(_table_quality(real[table], frame, fitted, max_column_pairs))
            _warn_skipped(table, entry["column_pairs_skipped"], max_column_pairs)
            logger.info(
                "evaluate %s: %d rows, column shapes %s, column pair trends %s, %.1f s",
                table, entry["rows"], _format(entry["column_shapes_mean"]),
                _format(entry["column_pair_trends_mean"]), time.monotonic() - started,
            )
        else:
            logger.info(
                "integrity check %s: %d rows, keys checked, %.1f s", table, entry["rows"], time.monotonic() - started
            )
        report["tables"][table] = entry
    for rel in plan.relationships:
        started = time.monotonic()
        scores = _relationship_scores(model.relationships[rel.name], synthetic)
        if rel.parent in real and rel.child in real:
            scores.update(_inter_table_quality(rel, model, real, synthetic, max_column_pairs))
            _warn_skipped(rel.describe(), scores["inter_table_pairs_skipped"], max_column_pairs)
        report["relationships"][rel.name] = {"relationship": rel.describe(), **scores}
        logger.info(
            "evaluate %s: %d orphan keys, cardinality %.3f, inter-table trends %s, %.1f s",
            rel.describe(), scores["orphan_rows"], scores["cardinality_similarity"],
            _format(scores.get("inter_table_trends_mean")), time.monotonic() - started,
        )
    report["overall"] = _overall(report, scored=bool(real))
    return report


def _format(score: float | None) -> str:
    return "n/a" if score is None else f"{score:.3f}"


def _warn_skipped(where: str, skipped: int, max_pairs: int) -> None:
    if skipped:
        logger.warning(
            "%s: scored the first %d column pairs and skipped %d; raise evaluate()'s max_column_pairs to score them",
            where, max_pairs, skipped,
        )
