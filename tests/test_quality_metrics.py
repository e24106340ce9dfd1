"""Detection, privacy and 2- and 3-hop inter-table scores on small frames built here, with real Spark.

Each score is checked where its expected value is known: identical tables cannot be separated
and are all copies, shifted tables are separated and share no row, copies of one real
half sit closer to that half, and a chain whose end tables are correlated scores high
only while the synthetic tables keep that correlation.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from synthspark.config import parse_config
from synthspark.detection import ChildTable, detection_score
from synthspark.evaluate import chain_name, evaluate, relationship_chains
from synthspark.model import ColumnModel, FittedModel, RelationshipModel, TableModel
from synthspark.plan import Plan, build_plan
from synthspark.privacy import privacy_scores, real_half
from synthspark.quality import ValueColumn, chain_trends
from synthspark.sampling import uniform
from synthspark.tracking import flatten_report

VALUES = [ValueColumn("x", "x", True), ValueColumn("w", "w", True), ValueColumn("c", "c", False)]


def draw(seed: int, name: str, index: Column) -> Column:
    return uniform(seed, name, index=index)


def table(spark: SparkSession, rows: int, seed: int, shift: float = 0.0) -> DataFrame:
    """Return ``rows`` rows: key pk, two uniform numbers (x moved by ``shift``) and a category."""
    index = F.col("id")
    return spark.range(rows).select(
        index.alias("pk"),
        (draw(seed, "x", index) + F.lit(shift)).alias("x"),
        draw(seed, "w", index).alias("w"),
        F.when(draw(seed, "c", index) < 0.4, "a").otherwise("b").alias("c"),
    )


def children(spark: SparkSession, parents: int, per_parent: int, seed: int) -> DataFrame:
    """Return ``per_parent`` child rows for each parent key 0 .. parents - 1, each with a uniform number y."""
    index = F.col("id")
    return spark.range(parents * per_parent).select(
        index.alias("cid"), (index % parents).alias("pk"), draw(seed, "y", index).alias("y")
    )


def child_table(real: DataFrame, synthetic: DataFrame) -> ChildTable:
    return ChildTable("kids", real, synthetic, ["pk"], ["pk"], [ValueColumn("y", "y", True)])


# --- detection and privacy on one table ----------------------------------------------


def test_identical_tables_score_chance(spark: SparkSession) -> None:
    real = table(spark, 600, 1)
    kids = children(spark, 600, 2, 1)
    detection = detection_score(real, table(spark, 600, 1), VALUES, [child_table(kids, kids)], seed=3)
    assert detection["features"] == ["x", "w", "c", "kids:count", "kids:mean:y"]
    assert detection["rows_per_side"] == 600
    assert detection["test_rows"] == 360
    # Equal rows get equal hashes, so each real row and its copy fall in the same part and
    # get the same prediction: exactly half of the held-out rows are right.
    assert detection["accuracy"] == 0.5
    assert detection["auc"] == 0.5

    privacy = privacy_scores(real, table(spark, 600, 1), VALUES, seed=3)
    assert privacy["exact_copy_share"] == 1.0
    assert privacy["exact_copy_rows"] == 600
    assert privacy["dcr_median"] == 0.0
    assert privacy["exact_copy_share_holdout"] == 0.0


def test_independent_draws_score_near_chance(spark: SparkSession) -> None:
    detection = detection_score(table(spark, 1000, 1), table(spark, 1000, 2), VALUES, seed=3)
    assert 0.4 <= detection["accuracy"] <= 0.6
    assert 0.4 <= detection["auc"] <= 0.6


def test_shifted_tables_are_detected(spark: SparkSession) -> None:
    real, synthetic = table(spark, 600, 1), table(spark, 600, 2, shift=2.0)
    detection = detection_score(real, synthetic, VALUES, seed=3)
    assert detection["accuracy"] > 0.9
    assert detection["auc"] > 0.95

    privacy = privacy_scores(real, synthetic, VALUES, seed=3)
    assert privacy["exact_copy_share"] == 0.0
    assert privacy["dcr_median"] > 0.3


def test_child_counts_reach_detection(spark: SparkSession) -> None:
    # The parent rows are identical. Only the number of children per parent differs.
    parents = table(spark, 400, 1)
    kids = child_table(children(spark, 400, 2, 1), children(spark, 400, 4, 1))
    detection = detection_score(parents, parents, VALUES, [kids], seed=3)
    assert "kids:count" in detection["features"]
    assert detection["accuracy"] > 0.9


def test_detection_skips_small_tables(spark: SparkSession) -> None:
    detection = detection_score(table(spark, 20, 1), table(spark, 20, 2), VALUES)
    assert detection["accuracy"] is None
    assert detection["skipped"] == "fewer than 50 rows on a side"


def test_dcr_flags_copies_of_one_half(spark: SparkSession) -> None:
    real = table(spark, 800, 1)
    half_a = real.where(real_half(real, 5) == 0)
    copied = privacy_scores(real, half_a, VALUES, seed=5)
    assert copied["dcr_half_a_share"] == 1.0
    assert copied["exact_copy_share"] == 1.0

    fresh = privacy_scores(real, table(spark, 800, 2), VALUES, seed=5, synthetic_rows=400, real_rows=300)
    assert fresh["dcr_synthetic_rows"] == 400
    assert fresh["dcr_real_rows_per_half"] == 300
    assert 0.4 <= fresh["dcr_half_a_share"] <= 0.6
    assert 0.0 < fresh["dcr_median"] < 0.1


# --- chains through evaluate ---------------------------------------------------------

# region <- store <- orders <- line. Orders' y and tier and line's z follow the region's x.
# Region and store are below detection's 50-row minimum, which keeps the module short.
SIZES = {"region": 20, "store": 40, "orders": 800, "line": 1600}
PARENT = {"store": ("region", "region_id"), "orders": ("store", "store_id"), "line": ("orders", "order_id")}
VALUE_KINDS: dict[str, dict[str, bool]] = {
    "region": {"x": True, "zone": False}, "store": {}, "orders": {"y": True, "tier": False}, "line": {"z": True}
}


def chain_plan(folder: Path) -> Plan:
    tables: dict[str, Any] = {}
    for name in SIZES:
        columns: dict[str, Any] = {f"{name}_id": "id"}
        columns.update({c: "numerical" if continuous else "categorical" for c, continuous in VALUE_KINDS[name].items()})
        spec: dict[str, Any] = {"source": {"path": f"{name}.csv", "format": "csv"}, "primary_key": f"{name}_id"}
        if name in PARENT:
            parent, key = PARENT[name]
            columns[key] = "id"
            spec["foreign_keys"] = [{"columns": key, "parent": parent}]
        spec["columns"] = columns
        tables[name] = spec
    config = parse_config({
        "name": "chain", "source_root": str(folder), "tables": tables,
        "output": {"format": "delta", "path": str(folder / "out"), "mode": "error"},
        "tracking": {"enabled": False},
    })
    return build_plan(config)


def chain_model(plan: Plan) -> FittedModel:
    """Return a hand-made model: evaluate reads only the column kinds and the children per parent."""
    def column_model(name: str, role: str, distribution: str) -> ColumnModel:
        kind = "id" if distribution == "key" else "numerical"
        return ColumnModel(name=name, kind=kind, spark_type="double", role=role, null_fraction=0.0,
                           distribution={"type": distribution})

    tables = {}
    for name, rows in SIZES.items():
        columns = [column_model(f"{name}_id", "primary_key", "key")]
        if name in PARENT:
            columns.append(column_model(PARENT[name][1], "foreign_key", "key"))
        for column, continuous in VALUE_KINDS[name].items():
            columns.append(column_model(column, "value", "quantiles" if continuous else "categorical"))
        tables[name] = TableModel(name=name, rows=rows, primary_key=[f"{name}_id"], columns=columns)
    relationships = {
        rel.name: RelationshipModel(
            name=rel.name, child=rel.child, columns=list(rel.columns), parent=rel.parent,
            parent_columns=list(rel.parent_columns), count_values=[SIZES[rel.child] // SIZES[rel.parent]],
            count_parents=[SIZES[rel.parent]], null_fraction=0.0, orphan_policy="error", orphan_rows=0,
        )
        for rel in plan.relationships
    }
    return FittedModel(config={}, tables=tables, relationships=relationships)


def chain_tables(spark: SparkSession, seed: int, preserve: bool) -> dict[str, DataFrame]:
    """Return the four tables; ``seed`` draws the noise, and with ``preserve`` False orders and lines ignore their region.

    The regions are the same for every seed, so a synthetic side differs from the real
    one only below the region table.
    """
    index = F.col("id")

    def region_x(region: Column) -> Column:
        return draw(0, "x", region)

    def follows(region: Column, name: str) -> Column:
        noise = F.lit(0.15) * draw(seed, name, index)
        return (region_x(region) if preserve else draw(seed, f"{name}-free", index)) + noise

    regions = SIZES["region"]
    y = follows(index % regions, "y")
    return {
        "region": spark.range(regions).select(
            index.alias("region_id"), region_x(index).alias("x"),
            F.when(region_x(index) < 0.5, "north").otherwise("south").alias("zone"),
        ),
        "store": spark.range(SIZES["store"]).select(index.alias("store_id"), (index % regions).alias("region_id")),
        "orders": spark.range(SIZES["orders"]).select(
            index.alias("orders_id"), (index % SIZES["store"]).alias("store_id"), y.alias("y"),
            F.when(y < 0.55, "low").otherwise("high").alias("tier"),
        ),
        "line": spark.range(SIZES["line"]).select(
            index.alias("line_id"), (index % SIZES["orders"]).alias("order_id"),
            follows(index % SIZES["orders"] % regions, "z").alias("z"),
        ),
    }


def chain_scores(model: FittedModel, plan: Plan, real: dict[str, DataFrame], synthetic: dict[str, DataFrame],
                 *tables: str) -> dict[str, Any]:
    """Score one chain with :func:`chain_trends` directly, the function evaluate calls per chain."""
    links = [
        (rel.parent_columns, rel.columns)
        for upper, lower in itertools.pairwise(tables)
        for rel in plan.relationships
        if rel.parent == upper and rel.child == lower
    ]
    columns = (model.tables[tables[0]].columns, model.tables[tables[-1]].columns)
    return chain_trends([real[t] for t in tables], [synthetic[t] for t in tables], links, columns)


def fake_detection(
    real: DataFrame, synthetic: DataFrame, values: list[ValueColumn], children: list[ChildTable], **options: Any
) -> dict[str, Any]:
    """Stand in for detection_score: return its arguments, with accuracy 0.5 + 0.1 per child table."""
    accuracy = 0.5 + 0.1 * len(children)
    return {"accuracy": accuracy, "auc": accuracy + 0.05, "test_rows": 0, "values": [v.name for v in values],
            "children": [(c.name, list(c.columns), list(c.parent_columns)) for c in children], **options}


def fake_privacy(real: DataFrame, synthetic: DataFrame, columns: list[ValueColumn], **options: Any) -> dict[str, Any]:
    """Stand in for privacy_scores: return its arguments, with scores that grow with the column count."""
    share = 0.1 * len(columns)
    return {"exact_copy_share": share, "exact_copy_share_holdout": share / 2, "dcr_half_a_share": 0.5,
            "dcr_median": share, "columns": [c.name for c in columns], **options}


@pytest.fixture(scope="module")
def chain(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Evaluate a synthetic side that keeps the chain's correlation, and score the chains of a side that breaks it.

    Detection and privacy, tested on their own above, are replaced by stand-ins that
    return their arguments, which shows what evaluate passes them and where it reports them.
    """
    plan = chain_plan(tmp_path_factory.mktemp("chain"))
    model = chain_model(plan)
    real = chain_tables(spark, 1, preserve=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("synthspark.evaluate.detection_score", fake_detection)
        patch.setattr("synthspark.evaluate.privacy_scores", fake_privacy)
        preserved = evaluate(
            model, plan, real, chain_tables(spark, 2, preserve=True), seed=3, detection_rows=700,
            privacy_synthetic_rows=300, privacy_real_rows=400,
        )
    broken = chain_tables(spark, 2, preserve=False)
    destroyed = {
        hops: chain_scores(model, plan, real, broken, *tables)
        for hops, tables in ((2, ("region", "store", "orders")), (3, ("region", "store", "orders", "line")))
    }
    return {"plan": plan, "preserved": preserved, "destroyed": destroyed}


def chain_entry(report: dict[str, Any], *tables: str) -> dict[str, Any]:
    matches = [entry for entry in report["chains"].values() if entry["tables"] == list(tables)]
    assert len(matches) == 1, f"no single chain {tables} in {list(report['chains'])}"
    return matches[0]


def test_chains_follow_foreign_keys(chain: dict[str, Any]) -> None:
    plan = chain["plan"]
    two = [[rel.child for rel in c] for c in relationship_chains(plan, 2)]
    assert two == [["store", "orders"], ["orders", "line"]]
    three = relationship_chains(plan, 3)
    assert [rel.child for rel in three[0]] == ["store", "orders", "line"]
    assert len(three) == 1
    assert chain_name(three[0]) in chain["preserved"]["chains"]


def test_two_hop_trends_see_lost_correlation(chain: dict[str, Any]) -> None:
    preserved = chain_entry(chain["preserved"], "region", "store", "orders")
    destroyed = chain["destroyed"][2]
    assert preserved["hops"] == 2
    assert len(preserved["inter_table_trends"]) == 4
    assert len(destroyed["pairs"]) == 4
    assert preserved["inter_table_trends_thresholded_mean"] > 0.95
    assert destroyed["thresholded_mean"] < 0.75
    assert destroyed["mean"] < 0.75


def test_three_hop_trends_see_lost_correlation(chain: dict[str, Any]) -> None:
    preserved = chain_entry(chain["preserved"], "region", "store", "orders", "line")
    destroyed = chain["destroyed"][3]
    assert preserved["hops"] == 3
    assert len(preserved["inter_table_trends"]) == 2
    assert preserved["inter_table_trends_thresholded_mean"] > 0.95
    assert destroyed["thresholded_mean"] < 0.75
    # This is the only 3-hop chain with pairs, so the overall score is this chain's score.
    assert chain["preserved"]["overall"]["inter_table_trends_3hop_thresholded"] > 0.95


def test_detection_gets_child_tables(chain: dict[str, Any]) -> None:
    tables = chain["preserved"]["tables"]
    assert tables["store"]["detection"]["values"] == []
    assert tables["store"]["detection"]["children"] == [("orders.store_id->store.store_id", ["store_id"], ["store_id"])]
    assert tables["orders"]["detection"]["values"] == ["y", "tier"]
    assert tables["orders"]["detection"]["children"] == [("line.order_id->orders.orders_id", ["order_id"], ["orders_id"])]
    assert tables["line"]["detection"]["children"] == []
    assert tables["line"]["detection"]["seed"] == 3
    assert tables["line"]["detection"]["max_rows"] == 700


def test_privacy_gets_value_columns(chain: dict[str, Any]) -> None:
    tables = chain["preserved"]["tables"]
    assert tables["region"]["privacy"]["columns"] == ["x", "zone"]
    assert tables["store"]["privacy"]["columns"] == []
    assert tables["orders"]["privacy"]["synthetic_rows"] == 300
    assert tables["orders"]["privacy"]["real_rows"] == 400
    assert tables["orders"]["privacy"]["seed"] == 3


def test_overall_averages_new_scores(chain: dict[str, Any]) -> None:
    overall = chain["preserved"]["overall"]
    # Region, store and orders have one child table each, line none.
    assert overall["detection_accuracy"] == pytest.approx((0.6 * 3 + 0.5) / 4)
    assert overall["detection_auc"] == pytest.approx((0.65 * 3 + 0.55) / 4)
    # Two value columns in region and orders, none in store, one in line.
    assert overall["exact_copy_share"] == pytest.approx((0.2 + 0.0 + 0.2 + 0.1) / 4)
    assert overall["exact_copy_share_max"] == pytest.approx(0.2)
    assert overall["dcr_half_a_share"] == 0.5


def test_report_logs_every_new_score(chain: dict[str, Any]) -> None:
    metrics = flatten_report(chain["preserved"])
    three = chain_name(relationship_chains(chain["plan"], 3)[0]).replace("->", "__to__")
    for key in (
        "detection_accuracy/orders", "detection_auc/line", "exact_copy_share/orders", "exact_copy_share_holdout/line",
        "dcr_half_a_share/line", "dcr_median/region", f"inter_table_trends_3hop/{three}",
        f"inter_table_trends_3hop_thresholded/{three}", "overall/detection_accuracy", "overall/detection_auc",
        "overall/exact_copy_share", "overall/dcr_half_a_share", "overall/dcr_median",
        "overall/inter_table_trends_2hop", "overall/inter_table_trends_2hop_thresholded",
        "overall/inter_table_trends_3hop", "overall/inter_table_trends_3hop_thresholded",
    ):
        assert key in metrics, key
    assert metrics["detection_accuracy/orders"] == pytest.approx(0.6)
