"""Evaluate: key integrity, cardinality and SDMetrics' quality properties, computed with Spark aggregations.

Cardinality is SDMetrics' CardinalityShapeSimilarity: 1 - KS statistic between the real
and synthetic children per parent, zeros included. Column shapes, column pair trends and
inter-table trends are computed in :mod:`synthspark.quality` with SDMetrics' definitions.
Only aggregates reach the driver: one row per column, pair, side or children count.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Sequence
from functools import reduce
from typing import Any

import numpy as np
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from synthspark.detection import DETECTION_ROWS, ChildTable, detection_score
from synthspark.model import FittedModel, RelationshipModel, TableModel
from synthspark.plan import Plan, Relationship
from synthspark.privacy import DCR_REAL_ROWS, DCR_SYNTHETIC_ROWS, privacy_scores
from synthspark.quality import (
    ASSOCIATION_THRESHOLD,
    CORRELATION_THRESHOLD,
    DISCRETE_BINS,
    MAX_COLUMN_PAIRS,
    chain_trends,
    column_shapes,
    inter_table_trends,
    mean_score,
    score_columns,
    table_pairs,
    value_columns,
)
from synthspark.sampling import qcol
from synthspark.session import tune_session

logger = logging.getLogger(__name__)

__all__ = [
    "column_shapes", "evaluate", "ks_from_histograms", "primary_key_uniqueness", "relationship_chains",
    "relationship_counts",
]

# Chains scored per chain length; schemas with many relationships have many more chains.
MAX_CHAINS = 50


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


def _relationship_scores(
    rel: RelationshipModel, synthetic: dict[str, DataFrame], per_parent: float = 1.0
) -> dict[str, Any]:
    """Return key validity and cardinality; synthetic children per parent are divided by ``per_parent``."""
    # The real histogram is the fitted one: the same source rows, after orphan policies.
    real_histogram = {float(v): float(p) for v, p in zip(rel.count_values, rel.count_parents)}
    synthetic_histogram, orphans, present = relationship_counts(
        synthetic[rel.child], rel.columns, synthetic[rel.parent], rel.parent_columns
    )
    if per_parent != 1.0:
        synthetic_histogram = {k / per_parent: v for k, v in synthetic_histogram.items()}

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


def relationship_chains(plan: Plan, hops: int) -> list[tuple[Relationship, ...]]:
    """Return every chain of ``hops`` relationships from a top parent down to a descendant table.

    In a chain each relationship's parent is the previous relationship's child, so the
    chain reads parent, child, grandchild and so on. Self-references are left out, and no
    table appears twice in a chain. Chains come in the order of ``plan.relationships``.
    """
    below: dict[str, list[Relationship]] = {}
    for rel in plan.relationships:
        if rel.parent != rel.child:
            below.setdefault(rel.parent, []).append(rel)
    chains: list[tuple[Relationship, ...]] = []

    def extend(chain: tuple[Relationship, ...]) -> None:
        if len(chain) == hops:
            chains.append(chain)
            return
        seen = {chain[0].parent, *[rel.child for rel in chain]}
        for rel in below.get(chain[-1].child, []):
            if rel.child not in seen:
                extend((*chain, rel))

    for rel in plan.relationships:
        if rel.parent != rel.child:
            extend((rel,))
    return chains


def chain_name(chain: Sequence[Relationship]) -> str:
    """Return a chain's report key: its relationship names from the top parent down, joined by '/'."""
    return "/".join(rel.name for rel in chain)


def _chain_quality(
    chain: Sequence[Relationship], model: FittedModel, real: dict[str, DataFrame],
    synthetic: dict[str, DataFrame], max_pairs: int,
) -> dict[str, Any]:
    """Return the top table x end table column pair trends of one chain, with their means."""
    tables = [chain[0].parent, *[rel.child for rel in chain]]
    trends = chain_trends(
        [real[t] for t in tables],
        [synthetic[t] for t in tables],
        [(rel.parent_columns, rel.columns) for rel in chain],
        (model.tables[tables[0]].columns, model.tables[tables[-1]].columns),
        max_pairs,
    )
    return {
        "hops": len(chain),
        "tables": tables,
        "relationships": [rel.describe() for rel in chain],
        "inter_table_trends": trends["pairs"],
        "inter_table_trends_mean": trends["mean"],
        "inter_table_trends_thresholded_mean": trends["thresholded_mean"],
        "inter_table_pairs_skipped": trends["skipped"],
    }


def _chain_entries(
    plan: Plan, model: FittedModel, real: dict[str, DataFrame], synthetic: dict[str, DataFrame],
    max_hops: int, max_chains: int, max_pairs: int,
) -> dict[str, dict[str, Any]]:
    """Score the chains of 2 to ``max_hops`` relationships whose tables all have real data."""
    entries: dict[str, dict[str, Any]] = {}
    for hops in range(2, max_hops + 1):
        chains = [
            chain for chain in relationship_chains(plan, hops)
            if all(rel.parent in real and rel.child in real for rel in chain)
        ]
        if len(chains) > max_chains:
            logger.warning(
                "scored the first %d of %d chains of %d relationships; raise evaluate()'s max_chains to score them",
                max_chains, len(chains), hops,
            )
        for chain in chains[:max_chains]:
            started = time.monotonic()
            name = chain_name(chain)
            entries[name] = _chain_quality(chain, model, real, synthetic, max_pairs)
            _warn_skipped(name, entries[name]["inter_table_pairs_skipped"], max_pairs)
            logger.info(
                "evaluate chain %s: inter-table trends %s, %.1f s",
                " <- ".join(entries[name]["tables"]), _format(entries[name]["inter_table_trends_mean"]),
                time.monotonic() - started,
            )
    return entries


def _table_detection(
    table: str, plan: Plan, model: FittedModel, real: dict[str, DataFrame], synthetic: dict[str, DataFrame],
    seed: int, max_rows: int,
) -> dict[str, Any]:
    """Return the detection score of one table, its rows enriched with aggregates of each child table."""
    children = [
        ChildTable(
            rel.name, real[rel.child], synthetic[rel.child], rel.columns, rel.parent_columns,
            value_columns(model.tables[rel.child].columns),
        )
        for rel in plan.relationships
        if rel.parent == table and rel.child in real
    ]
    values = value_columns(model.tables[table].columns)
    return detection_score(real[table], synthetic[table], values, children, seed=seed, max_rows=max_rows)


def _nanmean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def _overall(report: dict[str, Any], scored: bool) -> dict[str, Any]:
    """Combine the per-table and per-relationship scores as SDMetrics' multi-table QualityReport does.

    Shapes and pair trends are averaged over all columns or pairs (not per table),
    cardinality over relationships, and the quality score over the four properties.
    Chain trends pool the pairs of all chains of a length, as the 1-hop trends pool
    those of all relationships. Detection and privacy scores are means over tables.
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
    chains = report.get("chains", {}).values()
    for hops in range(2, max(3, max((c["hops"] for c in chains), default=0)) + 1):
        pooled = [p for c in chains if c["hops"] == hops for p in c["inter_table_trends"]]
        overall[f"inter_table_trends_{hops}hop"] = mean_score(pooled)
        overall[f"inter_table_trends_{hops}hop_thresholded"] = mean_score(pooled, thresholded=True)
    detected = [t["detection"] for t in tables if t.get("detection")]
    overall["detection_accuracy"] = _nanmean([d["accuracy"] for d in detected])
    overall["detection_auc"] = _nanmean([d["auc"] for d in detected])
    private = [t["privacy"] for t in tables if t.get("privacy")]
    copies = [p["exact_copy_share"] for p in private if p["exact_copy_share"] is not None]
    overall["exact_copy_share"] = _nanmean(copies)
    overall["exact_copy_share_max"] = max(copies) if copies else None
    overall["exact_copy_share_holdout"] = _nanmean([p["exact_copy_share_holdout"] for p in private])
    overall["dcr_half_a_share"] = _nanmean([p["dcr_half_a_share"] for p in private])
    overall["dcr_median"] = _nanmean([p["dcr_median"] for p in private])
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
    max_hops: int = 3,
    max_chains: int = MAX_CHAINS,
    detection: bool = True,
    detection_rows: int = DETECTION_ROWS,
    privacy: bool = True,
    privacy_synthetic_rows: int = DCR_SYNTHETIC_ROWS,
    privacy_real_rows: int = DCR_REAL_ROWS,
    seed: int = 0,
    reference: Collection[str] = (),
    scale: float = 1.0,
) -> dict[str, Any]:
    """Score the synthetic tables against the real ones; return a JSON-ready report.

    ``real`` contains the source tables after orphan policies, the data the model
    was fitted on. Without it (an empty dict) only keys and cardinality are checked.
    ``max_column_pairs`` caps the pairs scored per table, relationship and chain; the
    report counts the pairs left out. Chains of 2 to ``max_hops`` relationships are
    scored (1 turns them off), at most ``max_chains`` per length.

    ``detection`` trains a classifier per table on at most ``detection_rows`` rows per
    side (see :mod:`synthspark.detection`). ``privacy`` counts exact copies and compares
    at most ``privacy_synthetic_rows`` synthetic rows with ``privacy_real_rows`` rows of
    each real half (see :mod:`synthspark.privacy`). ``seed`` fixes their samples and splits.

    Tables named in ``reference`` are copies of their source. They get no column
    shapes, pair trends or privacy scores, because those would only measure the
    copy. Their relationships, chains and detection scores are computed as for
    other tables.
    Their children per parent grow with ``scale`` (the generation scale), so the
    cardinality of their relationships divides the synthetic counts by it.
    """
    if synthetic:
        tune_session(next(iter(synthetic.values())).sparkSession)
    report: dict[str, Any] = {
        "tables": {},
        "relationships": {},
        "chains": {},
        "overall": {},
        "settings": {
            "correlation_threshold": CORRELATION_THRESHOLD,
            "association_threshold": ASSOCIATION_THRESHOLD,
            "discrete_bins": DISCRETE_BINS,
            "max_column_pairs": max_column_pairs,
            "max_hops": max_hops,
            "max_chains": max_chains,
            "detection": detection,
            "detection_rows": detection_rows,
            "privacy": privacy,
            "privacy_synthetic_rows": privacy_synthetic_rows,
            "privacy_real_rows": privacy_real_rows,
            "seed": seed,
            "reference": sorted(reference),
            "scale": scale,
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
        if table in reference:
            entry["reference"] = True
            logger.info("evaluate %s: %d rows, a reference table copied from its source", table, entry["rows"])
        elif table in real:
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
        per_parent = scale if rel.parent in reference else 1.0
        scores = _relationship_scores(model.relationships[rel.name], synthetic, per_parent)
        if rel.parent in real and rel.child in real:
            scores.update(_inter_table_quality(rel, model, real, synthetic, max_column_pairs))
            _warn_skipped(rel.describe(), scores["inter_table_pairs_skipped"], max_column_pairs)
        report["relationships"][rel.name] = {"relationship": rel.describe(), **scores}
        logger.info(
            "evaluate %s: %d orphan keys, cardinality %.3f, inter-table trends %s, %.1f s",
            rel.describe(), scores["orphan_rows"], scores["cardinality_similarity"],
            _format(scores.get("inter_table_trends_mean")), time.monotonic() - started,
        )
    report["chains"] = _chain_entries(plan, model, real, synthetic, max_hops, max_chains, max_column_pairs)
    for table in plan.order:
        if table not in real:
            continue
        entry = report["tables"][table]
        if detection:
            started = time.monotonic()
            entry["detection"] = _table_detection(table, plan, model, real, synthetic, seed, detection_rows)
            logger.info(
                "detection %s: accuracy %s, AUC %s on %d held-out rows, %.1f s", table,
                _format(entry["detection"]["accuracy"]), _format(entry["detection"]["auc"]),
                entry["detection"]["test_rows"], time.monotonic() - started,
            )
        if privacy and table not in reference:
            started = time.monotonic()
            entry["privacy"] = privacy_scores(
                real[table], synthetic[table], value_columns(model.tables[table].columns), seed=seed,
                synthetic_rows=privacy_synthetic_rows, real_rows=privacy_real_rows,
            )
            logger.info(
                "privacy %s: exact-copy share %s (real half B against half A %s), DCR half-A share %s, %.1f s",
                table, _format(entry["privacy"]["exact_copy_share"]), _format(entry["privacy"]["exact_copy_share_holdout"]),
                _format(entry["privacy"]["dcr_half_a_share"]), time.monotonic() - started,
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
