"""Reference tables: a lookup table is written as it is, and its children are generated conditioned on its rows."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from synthspark.config import parse_config
from synthspark.dependence import normal_quantile
from synthspark.errors import ConfigError
from synthspark.output import read_tables
from synthspark.pipeline import run_pipeline
from tests.conftest import write_csv

STORES = 80


def write_shop(folder: Path) -> Path:
    """Write store (the lookup table) and sale, where larger stores have more and larger sales."""
    rng = random.Random(5)
    stores, sales = [], []
    for i in range(1, STORES + 1):
        size = round(rng.lognormvariate(3, 0.6), 1)
        stores.append((f"S{i:03d}", rng.choice(["mall", "street", "outlet"]), size, f"2019{rng.randint(1, 12):02d}01"))
        for _ in range(max(0, int(rng.gauss(size, 3)))):
            sales.append((len(sales) + 1, f"S{i:03d}", round(size * 10 + rng.gauss(0, 40), 2)))
    write_csv(folder, "store.csv", ["store_id", "kind", "size", "opened"], stores)
    write_csv(folder, "sale.csv", ["sale_id", "store_id", "amount"], sales)
    return folder


def shop_config(source: Path, output: Path, **generation: Any) -> dict[str, Any]:
    return {
        "name": "shop",
        "source_root": str(source),
        "tables": {
            "store": {
                "source": {"path": "store.csv", "format": "csv"},
                "primary_key": "store_id",
                "reference": True,
                "columns": {
                    "store_id": "id",
                    "kind": "categorical",
                    "size": "numerical",
                    # An integer date (20190301): written back in this form.
                    "opened": {"kind": "datetime", "format": "yyyyMMdd"},
                },
            },
            "sale": {
                "source": {"path": "sale.csv", "format": "csv"},
                "primary_key": "sale_id",
                "columns": {"sale_id": "id", "store_id": "id", "amount": "numerical"},
                "foreign_keys": [{"columns": "store_id", "parent": "store"}],
            },
        },
        "generation": {"seed": 3, **generation},
        "evaluation": {"detection": False, "privacy": True, "max_hops": 1},
        "output": {"format": "delta", "path": str(output), "mode": "error"},
        "tracking": {"enabled": False},
    }


@pytest.fixture(scope="module")
def shop(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory):
    tmp_path = tmp_path_factory.mktemp("shop")
    source = write_shop(tmp_path / "src")
    config = parse_config(shop_config(source, tmp_path / "out"))
    result = run_pipeline(spark, config)
    return config, result, tmp_path


def test_reference_table_copied_exactly(spark: SparkSession, shop) -> None:
    config, result, tmp_path = shop
    tables = read_tables(spark, config.output, ["store", "sale"])
    source = spark.read.options(header=True, inferSchema=True).csv(str(tmp_path / "src" / "store.csv"))
    assert dict(tables["store"].dtypes) == dict(source.dtypes)
    assert tables["store"].count() == STORES
    assert tables["store"].exceptAll(source).count() == 0
    assert source.exceptAll(tables["store"]).count() == 0
    entry = result.report["tables"]["store"]
    assert entry["reference"] is True
    assert entry["column_shapes"] == {}
    assert "privacy" not in entry
    assert "privacy" in result.report["tables"]["sale"]
    assert result.report["overall"]["foreign_key_validity"] == 1.0


def test_children_follow_reference_rows(spark: SparkSession, shop) -> None:
    config, result, _ = shop
    tables = read_tables(spark, config.output, ["store", "sale"])
    per_store = tables["sale"].groupBy("store_id").agg(F.count(F.lit(1)).alias("n"), F.avg("amount").alias("mean"))
    joined = tables["store"].join(per_store, "store_id", "left").fillna({"n": 0})
    # The source has sales ~ size per store and amount ~ 10 x size: generated children keep both links.
    count_link = joined.stat.corr("size", "n")
    amount_link = joined.where("n > 0").stat.corr("size", "mean")
    assert count_link > 0.6, count_link
    assert amount_link > 0.6, amount_link
    assert result.report["overall"]["cardinality_similarity"] >= 0.85
    assert result.report["overall"]["inter_table_trends"] >= 0.8


def test_scale_grows_children_only(spark: SparkSession, shop) -> None:
    config, result, tmp_path = shop
    scaled = parse_config(shop_config(tmp_path / "src", tmp_path / "scaled", scale=3.0))
    model_dir = str(Path(config.output.path) / "_synthspark_model")
    scaled_result = run_pipeline(spark, scaled, model_dir=model_dir, stages=("generate", "evaluate"))
    tables = read_tables(spark, scaled.output, ["store", "sale"])
    assert tables["store"].count() == STORES
    base = result.report["tables"]["sale"]["rows"]
    assert abs(tables["sale"].count() / base - 3.0) < 0.1
    # Children per store are compared with the real ones divided by the scale.
    assert scaled_result.report["overall"]["cardinality_similarity"] >= 0.85


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c["tables"]["sale"].update(reference=True), "cannot have foreign keys"),
        (lambda c: c["tables"]["store"]["columns"].update(kind="name"), "personal data"),
        (lambda c: c["generation"].update(rows={"store": 10}), "generation.rows.store"),
    ],
    ids=["foreign_keys", "personal_column", "row_count"],
)
def test_invalid_reference_tables_rejected(tmp_path: Path, change, message: str) -> None:
    data = shop_config(tmp_path, tmp_path / "out")
    change(data)
    with pytest.raises(ConfigError, match=message):
        parse_config(data)


def test_normal_quantile_matches_inverse_cdf(spark: SparkSession) -> None:
    from statistics import NormalDist

    points = [1e-10, 1e-6, 0.001, 0.02, 0.02425, 0.1, 0.3, 0.5, 0.77, 0.97576, 0.999, 1 - 1e-9]
    frame = spark.createDataFrame([(p,) for p in points], "p double")
    rows = frame.select("p", normal_quantile(F.col("p")).alias("z")).collect()
    for row in rows:
        expected = NormalDist().inv_cdf(row["p"])
        assert math.isclose(row["z"], expected, rel_tol=1e-8, abs_tol=1e-9), (row["p"], row["z"], expected)
