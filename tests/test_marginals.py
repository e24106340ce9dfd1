"""Marginals under the copula: kept extremes of discrete columns, category order, uniforms of the scores."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from scipy import stats

from synthspark.config import parse_config
from synthspark.dependence import (
    COUNT_PREFIX,
    PARENT_Z,
    SCORE_BINS,
    SCORE_RANGE,
    U_RANKED,
    Z,
    count_below,
    expected_score_histograms,
    normal_cdf_numpy,
    with_normal_scores,
    with_score_uniforms,
)
from synthspark.fit import fit
from synthspark.generate import generate
from synthspark.sampling import ROW_INDEX, choose_index, uniform
from tests.conftest import write_csv


def _config(source: Path, output: Path, columns: dict[str, str]) -> dict:
    return {
        "name": "marginals",
        "source_root": str(source),
        "tables": {
            "item": {
                "source": {"path": "item.csv", "format": "csv"},
                "primary_key": "item_id",
                "columns": {"item_id": "id", **columns},
            },
        },
        "generation": {"scale": 4.0, "seed": 2},
        "output": {"format": "delta", "path": str(output)},
        "tracking": {"enabled": False},
    }


def test_discrete_column_keeps_rare_extremes(spark: SparkSession, tmp_path: Path) -> None:
    # 300 twos, 20 ones, one three and two fours: 3 and 4 are rarer than min_category_count (5).
    engines = [2] * 300 + [1] * 20 + [3] + [4] * 2
    write_csv(tmp_path / "src", "item.csv", ["item_id", "engines"], [(i, e) for i, e in enumerate(engines)])
    config = parse_config(_config(tmp_path / "src", tmp_path / "out", {"engines": "numerical"}))
    model = fit(spark, config)
    distribution = model.tables["item"].column("engines").distribution
    assert distribution["type"] == "discrete"
    # The minimum and maximum stay, so generated values span the source's range. The rare
    # middle value does not.
    assert distribution["values"] == [1.0, 2.0, 4.0]
    database = generate(spark, model, config)
    try:
        generated = database.tables["item"].agg(F.min("engines"), F.max("engines")).first()
    finally:
        database.unpersist()
    assert generated[0] == 1
    assert generated[1] == 4


def test_categories_ordered_along_their_link(spark: SparkSession, tmp_path: Path) -> None:
    """A category link that is not monotone in frequency order survives the copula after reordering.

    The most frequent category sits in the middle of the numeric range. In frequency order
    (mid, low, high) the copula could not place it between the two others.
    """
    rng = random.Random(5)
    centres = {"mid": 50.0, "low": 10.0, "high": 90.0}
    labels = ["mid"] * 600 + ["low"] * 250 + ["high"] * 150
    rows = [(i, label, round(rng.gauss(centres[label], 4.0), 3)) for i, label in enumerate(labels)]
    write_csv(tmp_path / "src", "item.csv", ["item_id", "grade", "score"], rows)
    columns = {"grade": "categorical", "score": "numerical"}
    config = parse_config(_config(tmp_path / "src", tmp_path / "out", columns))
    model = fit(spark, config)
    order = model.tables["item"].column("grade").distribution["values"]
    assert order in (["low", "mid", "high"], ["high", "mid", "low"])
    database = generate(spark, model, config)
    try:
        means = {
            row["grade"]: row["mean"]
            for row in database.tables["item"].groupBy("grade").agg(F.avg("score").alias("mean")).collect()
        }
    finally:
        database.unpersist()
    assert means["low"] < 30, means
    assert 35 < means["mid"] < 65, means
    assert means["high"] > 70, means


def test_small_table_follows_fitted_distribution(spark: SparkSession, tmp_path: Path) -> None:
    """A table of 80 rows takes evenly spread uniforms, so its columns show no sampling noise.

    80 independent draws miss the distribution by a KS distance of about 0.1 (0.05 with this seed).
    """
    rng = random.Random(8)
    rows = [(i, round(rng.lognormvariate(3, 1), 2), rng.choice("aab")) for i in range(80)]
    write_csv(tmp_path / "src", "item.csv", ["item_id", "price", "grade"], rows)
    data = _config(tmp_path / "src", tmp_path / "out", {"price": "numerical", "grade": "categorical"})
    data["generation"]["scale"] = 1.0
    config = parse_config(data)
    model = fit(spark, config)
    database = generate(spark, model, config)
    try:
        generated = database.tables["item"].toPandas()
    finally:
        database.unpersist()
    statistic = stats.ks_2samp([r[1] for r in rows], generated["price"]).statistic
    assert statistic <= 0.03, f"item.price: KS statistic {statistic:.3f}"
    real_a = sum(1 for r in rows if r[2] == "a")
    assert abs(int((generated["grade"] == "a").sum()) - real_a) <= 1


def measured_histograms(frame, dependence: dict) -> dict[int, list[int]]:
    """Count, per value dimension, the rows of ``frame`` whose score ``z`` falls in each bin."""
    value_dims = [k for k, d in enumerate(dependence["dimensions"]) if not d.startswith(COUNT_PREFIX)]
    width = 2 * SCORE_RANGE / SCORE_BINS
    cells = F.array(*[
        F.lit(k * SCORE_BINS)
        + F.least(F.greatest(F.floor((F.element_at(Z, k + 1) + F.lit(SCORE_RANGE)) / F.lit(width)), F.lit(0)),
                  F.lit(SCORE_BINS - 1)).cast("int")
        for k in value_dims
    ])
    histograms = {k: [0] * SCORE_BINS for k in value_dims}
    for row in frame.select(F.explode(cells).alias("cell")).groupBy("cell").count().collect():
        histograms[int(row["cell"]) // SCORE_BINS][int(row["cell"]) % SCORE_BINS] = int(row["count"])
    return histograms


def test_expected_histograms_match_generated_children(spark: SparkSession) -> None:
    """The histograms computed from the parents match the scores of the children generated from them.

    Parents with a high first score get more children, and the children's first score follows it
    closely, so the children's scores are not N(0, 1). Children without a parent are added too.
    """
    dependence = {
        "dimensions": ["x", "y", f"{COUNT_PREFIX}rel"],
        "parent_dimensions": ["pa", "pb"],
        "correlation": [
            [1.0, 0.2, 0.0, 0.9, 0.1],
            [0.2, 1.0, 0.0, 0.1, 0.3],
            [0.0, 0.0, 1.0, 0.0, 0.0],
            [0.9, 0.1, 0.0, 1.0, 0.2],
            [0.1, 0.3, 0.0, 0.2, 1.0],
        ],
    }
    parents = spark.range(4_000).select(
        F.col("id").alias("pid"), F.array(F.randn(3), F.randn(4)).alias(PARENT_Z),
    ).withColumn("n", (F.lit(1) + F.floor(F.lit(20.0) / (F.lit(1.0) + F.exp(-F.lit(2.0) * F.element_at(PARENT_Z, 1))))).cast("long"))
    # Cached, so that the random scores are drawn once for both uses.
    parents = parents.cache()
    unknown = 2_000
    expected = expected_score_histograms(parents, "n", dependence, unknown)
    assert sorted(expected) == [0, 1]
    children = parents.select(
        "pid", PARENT_Z, F.explode(F.sequence(F.lit(0).cast("long"), F.col("n") - 1)).alias("j"),
    ).select((F.col("pid") * 100 + F.col("j")).alias(ROW_INDEX), PARENT_Z).unionByName(spark.range(10**7, 10**7 + unknown).select(
        F.col("id").alias(ROW_INDEX), F.lit(None).cast("array<double>").alias(PARENT_Z),
    ))
    scored = with_normal_scores(children, dependence, 5, "child").cache()
    try:
        rows = scored.count()
        measured = measured_histograms(scored, dependence)
        result = with_score_uniforms(scored, dependence, expected).select(
            F.element_at(Z, 1).alias("z"), F.element_at(U_RANKED, 1).alias("u"), F.element_at(U_RANKED, 2).alias("v"),
        ).toPandas()
    finally:
        scored.unpersist()
        parents.unpersist()
    for k in (0, 1):
        assert abs(sum(expected[k]) - rows) < 1e-6 * rows
        distance = np.max(np.abs(np.cumsum(expected[k]) - np.cumsum(measured[k]))) / rows
        assert distance < 0.01, f"dimension {k}: CDF distance {distance:.4f}"
    assert stats.kstest(result["u"], "uniform").statistic < 0.015
    assert stats.kstest(result["v"], "uniform").statistic < 0.015
    # The children's scores are far from N(0, 1), so the uniforms above are not uniform by chance.
    assert stats.kstest(normal_cdf_numpy(result["z"].to_numpy()), "uniform").statistic > 0.1


def test_score_uniforms_flatten_a_drifted_mixture(spark: SparkSession) -> None:
    # Conditioned scores of a large table: a two-humped mixture instead of N(0, 1), so Phi(z)
    # piles up near 0.05 and 0.95. The histogram CDF must spread them evenly and keep their order.
    frame = spark.range(60_000).select(
        F.col("id"),
        F.array(
            F.when(F.col("id") % 2 == 0, F.lit(-2.0)).otherwise(F.lit(2.0)) + F.randn(7) * F.lit(0.5),
            F.randn(8),
            F.lit(0.0),
        ).alias(Z),
    )
    dependence = {"dimensions": ["a", "b", f"{COUNT_PREFIX}rel"]}
    histograms = measured_histograms(frame, dependence)
    assert sorted(histograms) == [0, 1]
    assert sum(histograms[0]) == 60_000
    result = with_score_uniforms(frame, dependence, histograms).select(
        F.element_at(Z, 1).alias("z"),
        F.element_at(U_RANKED, 1).alias("u"),
        F.element_at(U_RANKED, 2).alias("v"),
        F.element_at(U_RANKED, 3).alias("count_u"),
    ).toPandas()
    assert stats.kstest(result["u"], "uniform").statistic < 0.01
    assert stats.kstest(result["v"], "uniform").statistic < 0.01
    # Phi(z) of the same mixture is far from uniform: the check above is not vacuous.
    assert stats.kstest(stats.norm.cdf(result["z"]), "uniform").statistic > 0.1
    assert stats.spearmanr(result["z"], result["u"]).statistic > 0.9999
    assert result["count_u"].isna().all()


def test_choose_index_exact_inverse_cdf(spark: SparkSession) -> None:
    """choose_index returns numpy's searchsorted index on every row, in sparse and crowded lookup buckets."""
    rng = np.random.default_rng(5)
    shapes = {
        "few": [3.0, 1.0, 0.5, 2.0, 1.0, 0.1, 0.2, 4.0, 1.0],
        "long tail": list(rng.pareto(1.5, 400) + 0.01),
        # Weights this small share one bucket even at the finest resolution, so the scan path runs.
        "crowded": [1e-9] * 30 + [1.0] + [1e-9] * 30 + [1.0],
        "with zeros": [0.0, 1.0, 0.0, 0.0, 2.0, 0.0, 1.0, 0.0, 0.0, 3.0],
    }
    rows = spark.range(20_000).withColumnRenamed("id", ROW_INDEX)
    u = uniform(11, "choose", "index")
    for name, weights in shapes.items():
        got = rows.select(u.alias("u"), choose_index(u, weights).alias("index")).toPandas()
        cumulative = np.cumsum(weights) / np.cumsum(weights)[-1]
        expected = np.minimum(np.searchsorted(cumulative, got["u"].to_numpy(), side="right"), len(weights) - 1)
        assert (got["index"].to_numpy() == expected).all(), name
    # Random rows almost never land among the tiny weights, so draw u inside them (between two sums).
    crowded = shapes["crowded"]
    cumulative = np.cumsum(crowded) / np.cumsum(crowded)[-1]
    for point in (5.25e-9, 1.225e-8, 0.5 + 7.25e-9):
        inside = spark.range(1).select(choose_index(F.lit(point), crowded).alias("index")).first()["index"]
        assert inside == np.searchsorted(cumulative, point, side="right")


def test_count_below_matches_searchsorted(spark: SparkSession) -> None:
    """count_below returns numpy's searchsorted count for spread grids and grids with long runs of ties."""
    rng = np.random.default_rng(8)
    grids = {
        "spread": np.sort(rng.normal(size=201)),
        # 120 equal points fall in one lookup bucket, so the scan path runs there.
        "tied": np.sort(np.r_[rng.uniform(0, 10, 81), np.full(120, 3.0)]),
    }
    rows = spark.range(20_000).withColumnRenamed("id", ROW_INDEX)
    for name, grid in grids.items():
        # Values from just below the grid to just above it, with exact hits on the tied point.
        x = F.when(uniform(3, "x", "tie") < F.lit(0.1), F.lit(3.0)).otherwise(
            F.lit(float(grid[0]) - 1.0) + uniform(3, "x", name) * F.lit(float(grid[-1] - grid[0]) + 2.0)
        )
        got = rows.select(
            x.alias("x"),
            count_below(x, list(grid), strict=True).alias("below"),
            count_below(x, list(grid), strict=False).alias("at_most"),
        ).toPandas()
        values = got["x"].to_numpy()
        assert (got["below"].to_numpy() == np.searchsorted(grid, values, side="left")).all(), name
        assert (got["at_most"].to_numpy() == np.searchsorted(grid, values, side="right")).all(), name
