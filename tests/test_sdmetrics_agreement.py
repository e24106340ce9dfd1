"""synthspark's Spark-computed quality scores against the sdmetrics package on the same data.

A small database is generated with synthspark and scored both ways: the made-up bank
tables (booleans, nulls, dates, timestamps, three relationships) and, when
../shared/datasets is present, berka's district table, whose strongly correlated columns
give the thresholded pair trends pairs to average. Every column, pair and relationship
score must agree within 0.01.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T

from synthspark.config import SynthConfig, parse_config
from synthspark.evaluate import evaluate
from synthspark.fit import fit_prepared, prepare_sources
from synthspark.generate import generate
from synthspark.model import FittedModel
from synthspark.plan import Plan, build_plan
from synthspark.quality import ValueColumn, score_columns, table_pairs
from tests.bank import bank_config, write_bank
from tests.conftest import DATASETS

sdmetrics_reports = pytest.importorskip("sdmetrics.reports")

TOLERANCE = 0.01
BERKA_DISTRICT = DATASETS / "berka" / "district.csv"


@dataclass
class Scored:
    """One database scored twice: synthspark's report and SDMetrics' reports without and with thresholds."""

    report: dict[str, Any]
    all_pairs: Any
    thresholded: Any
    plan: Plan


def agreement_config(folder: Path) -> SynthConfig:
    """Return the bank database without its composite-key table, plus berka's district table when present.

    SDMetrics' metadata takes one-column keys only, hence no account_note. The district
    table (77 rows, 13 strongly correlated numbers and a region) is read in place and has
    no relationship to the bank tables.
    """
    data = bank_config(write_bank(folder / "src"), folder / "out", tracking={"enabled": False})
    del data["tables"]["account_note"]
    if BERKA_DISTRICT.is_file():
        columns: dict[str, Any] = {"district_id": "id", "A2": "categorical", "A3": "categorical"}
        columns.update({f"A{i}": "numerical" for i in range(4, 17)})
        data["tables"]["district"] = {
            "source": {"path": str(BERKA_DISTRICT), "format": "csv"},
            "primary_key": "district_id",
            "columns": columns,
        }
    return parse_config(data)


def sdtype(model: FittedModel, table: str, column: str, data_type: T.DataType) -> str:
    """Return the SDMetrics sdtype matching how synthspark scores the column."""
    kind = model.tables[table].column(column).distribution["type"]
    if kind in ("quantiles", "discrete"):
        return "datetime" if isinstance(data_type, (T.DateType, T.TimestampType, T.TimestampNTZType)) else "numerical"
    if kind in ("categorical", "boolean"):
        return kind
    return "id" if kind in ("key", "uniform_int", "string_format", "ordinal") else "text"


def sdmetrics_metadata(model: FittedModel, plan: Plan, frames: dict[str, DataFrame]) -> dict[str, Any]:
    """Describe the database in SDMetrics' multi-table metadata format."""
    tables = {}
    for name, fitted in model.tables.items():
        types = {field.name: field.dataType for field in frames[name].schema.fields}
        columns = {c.name: {"sdtype": sdtype(model, name, c.name, types[c.name])} for c in fitted.columns}
        entry: dict[str, Any] = {"columns": columns}
        if len(fitted.primary_key) == 1:
            entry["primary_key"] = fitted.primary_key[0]
        tables[name] = entry
    relationships = [
        {
            "parent_table_name": rel.parent,
            "parent_primary_key": rel.parent_columns[0],
            "child_table_name": rel.child,
            "child_foreign_key": rel.columns[0],
        }
        for rel in plan.relationships
    ]
    return {"tables": tables, "relationships": relationships}


def to_pandas(frame: DataFrame) -> pd.DataFrame:
    """Collect a small test table, with datetimes as datetime64[ns] and decimals as floats, as SDV loads them."""
    data = frame.toPandas()
    for field in frame.schema.fields:
        if isinstance(field.dataType, (T.DateType, T.TimestampType, T.TimestampNTZType)):
            data[field.name] = pd.to_datetime(data[field.name]).astype("datetime64[ns]")
        elif isinstance(field.dataType, T.DecimalType):
            data[field.name] = data[field.name].astype("float64")
    return data


def score_both_ways(spark: SparkSession, config: SynthConfig) -> Scored:
    """Fit and generate in memory, then score with synthspark and with SDMetrics' QualityReport."""
    plan = build_plan(config)
    sources = prepare_sources(spark, config, plan)
    try:
        model = fit_prepared(config, plan, sources)
        database = generate(spark, model, config)
        try:
            # Materialized once, so that scoring does not generate the tables again.
            tables = {name: frame.localCheckpoint() for name, frame in database.tables.items()}
            # Detection, privacy and chains have no SDMetrics counterpart here, so they are left out.
            report = evaluate(model, plan, sources.frames, tables, detection=False, privacy=False, max_hops=1)
            real = {name: to_pandas(frame) for name, frame in sources.frames.items()}
            synthetic = {name: to_pandas(tables[name]) for name in real}
        finally:
            database.unpersist()
    finally:
        sources.unpersist()
    metadata = sdmetrics_metadata(model, plan, sources.frames)
    reports = []
    for correlation, association in ((0.0, 0.0), (0.5, 0.3)):
        quality = sdmetrics_reports.QualityReport()
        quality.real_correlation_threshold = correlation
        quality.real_association_threshold = association
        quality.generate(real, synthetic, metadata, verbose=False)
        reports.append(quality)
    return Scored(report, reports[0], reports[1], plan)


@pytest.fixture(scope="module")
def scored(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> Scored:
    return score_both_ways(spark, agreement_config(tmp_path_factory.mktemp("agreement")))


def differs(ours: float | None, theirs: Any) -> bool:
    """Check whether two scores disagree: beyond the tolerance, or only one of them defined."""
    theirs_missing = theirs is None or (isinstance(theirs, float) and math.isnan(theirs)) or pd.isna(theirs)
    if ours is None or theirs_missing:
        return (ours is None) != theirs_missing
    return abs(ours - float(theirs)) > TOLERANCE


def pair_scores(details: pd.DataFrame, *keys: str) -> dict[tuple, Any]:
    """Index SDMetrics' pair details by the given key columns plus the unordered column pair."""
    result = {}
    for row in details.to_dict("records"):
        result[(*[row[k] for k in keys], frozenset((row["Column 1"], row["Column 2"])))] = row
    return result


def test_column_shapes_agree_per_column(scored: Scored) -> None:
    details = scored.all_pairs.get_details("Column Shapes")
    theirs = {(row["Table"], row["Column"]): row["Score"] for row in details.to_dict("records")}
    ours = {
        (table, column): shape["score"]
        for table, entry in scored.report["tables"].items()
        for column, shape in entry["column_shapes"].items()
    }
    assert set(ours) <= set(theirs), f"columns SDMetrics does not score: {sorted(set(ours) - set(theirs))}"
    mismatches = [(key, ours.get(key), score) for key, score in theirs.items() if differs(ours.get(key), score)]
    assert mismatches == [], "column shapes (table, column), synthspark, sdmetrics"
    assert len(ours) >= 5


def test_column_pair_trends_agree_per_pair(scored: Scored) -> None:
    theirs = pair_scores(scored.all_pairs.get_details("Column Pair Trends"), "Table")
    ours = {
        (table, frozenset((pair["column_1"], pair["column_2"]))): pair
        for table, entry in scored.report["tables"].items()
        for pair in entry["column_pair_trends"]
    }
    assert set(ours) == set(theirs)
    metric_names = {"correlation_similarity": "CorrelationSimilarity", "contingency_similarity": "ContingencySimilarity"}
    wrong_metric = [key for key, pair in ours.items() if metric_names[pair["metric"]] != theirs[key]["Metric"]]
    assert wrong_metric == []
    mismatches = [
        (key, pair["score"], theirs[key]["Score"]) for key, pair in ours.items()
        if differs(pair["score"], theirs[key]["Score"])
    ]
    assert mismatches == [], "column pair scores (table, pair), synthspark, sdmetrics"
    assert len(ours) >= 10


def test_pair_thresholds_agree(scored: Scored) -> None:
    theirs = pair_scores(scored.thresholded.get_details("Column Pair Trends"), "Table")
    ours = {
        (table, frozenset((pair["column_1"], pair["column_2"]))): pair
        for table, entry in scored.report["tables"].items()
        for pair in entry["column_pair_trends"]
    }
    real_values = []
    flags = []
    for key, pair in ours.items():
        row = theirs[key]
        if pair["metric"] == "correlation_similarity":
            if differs(pair["real_correlation"], row["Real Correlation"]):
                real_values.append((key, pair["real_correlation"], row["Real Correlation"]))
        elif differs(pair["real_association"], row["Real Association"]):
            real_values.append((key, pair["real_association"], row["Real Association"]))
        if pair["meets_threshold"] != bool(row["Meets Threshold?"] is True):
            flags.append((key, pair["meets_threshold"], row["Meets Threshold?"]))
    assert any(pair["meets_threshold"] for pair in ours.values()), "no pair meets the threshold; the check is empty"
    assert real_values == [], "real correlation or Cramer's V (table, pair), synthspark, sdmetrics"
    assert flags == [], "meets threshold (table, pair), synthspark, sdmetrics"


def test_inter_table_trends_agree_per_pair(scored: Scored) -> None:
    names = {(rel.parent, rel.child, rel.columns[0]): rel.name for rel in scored.plan.relationships}
    for name, report in (("all pairs", scored.all_pairs), ("thresholded", scored.thresholded)):
        details = report.get_details("Intertable Trends")
        theirs = {}
        for row in details.to_dict("records"):
            relationship = names[(row["Parent Table"], row["Child Table"], row["Foreign Key"])]
            theirs[(relationship, row["Column 1"], row["Column 2"])] = row
        ours = {
            (relationship, pair["column_1"], pair["column_2"]): pair
            for relationship, entry in scored.report["relationships"].items()
            for pair in entry["inter_table_trends"]
        }
        assert set(ours) == set(theirs), name
        if name == "all pairs":
            mismatches = [
                (key, pair["score"], theirs[key]["Score"]) for key, pair in ours.items()
                if differs(pair["score"], theirs[key]["Score"])
            ]
        else:
            mismatches = [
                (key, pair["meets_threshold"], theirs[key]["Meets Threshold?"]) for key, pair in ours.items()
                if pair["meets_threshold"] != bool(theirs[key]["Meets Threshold?"] is True)
            ]
        assert mismatches == [], f"inter-table trends, {name}: (relationship, parent column, child column)"


def test_cardinality_agrees_per_relationship(scored: Scored) -> None:
    details = scored.all_pairs.get_details("Cardinality")
    names = {(rel.parent, rel.child, rel.columns[0]): rel.name for rel in scored.plan.relationships}
    theirs = {
        names[(row["Parent Table"], row["Child Table"], row["Foreign Key"])]: row["Score"]
        for row in details.to_dict("records")
    }
    ours = {name: entry["cardinality_similarity"] for name, entry in scored.report["relationships"].items()}
    assert set(ours) == set(theirs)
    mismatches = [(name, ours[name], theirs[name]) for name in ours if differs(ours[name], theirs[name])]
    assert mismatches == [], "cardinality (relationship), synthspark, sdmetrics"


def test_property_and_overall_scores_agree(scored: Scored) -> None:
    overall = scored.report["overall"]
    expected = {
        "column_shapes": scored.all_pairs.get_properties().set_index("Property").loc["Column Shapes", "Score"],
        "cardinality_similarity": scored.all_pairs.get_properties().set_index("Property").loc["Cardinality", "Score"],
    }
    for key, report in (("", scored.all_pairs), ("_thresholded", scored.thresholded)):
        properties = report.get_properties().set_index("Property")["Score"]
        expected[f"column_pair_trends{key}"] = properties["Column Pair Trends"]
        expected[f"inter_table_trends{key}"] = properties["Intertable Trends"]
    expected["quality_score"] = scored.thresholded.get_score()
    expected["quality_score_all_pairs"] = scored.all_pairs.get_score()
    mismatches = [(key, overall[key], value) for key, value in expected.items() if differs(overall[key], value)]
    assert mismatches == [], "overall score, synthspark, sdmetrics"


def test_pairs_beyond_cap_are_counted(spark: SparkSession) -> None:
    frame = spark.createDataFrame(
        [(1.0, 2.0, "a"), (2.0, 3.5, "b"), (3.0, 2.5, "a"), (4.0, 5.0, None)], "x double, y double, c string"
    )
    columns = [ValueColumn("x", "x", True), ValueColumn("y", "y", True), ValueColumn("c", "c", False)]
    _, trends = score_columns(frame, frame, columns, table_pairs(3), shapes=False, max_pairs=2)
    assert trends["skipped"] == 1
    assert [(p["column_1"], p["column_2"]) for p in trends["pairs"]] == [("x", "y"), ("x", "c")]
    assert [p["score"] for p in trends["pairs"]] == [1.0, 1.0]
