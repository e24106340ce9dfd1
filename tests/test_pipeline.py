"""The whole pipeline on a small made-up bank database: keys, types, determinism, orphans, output, MLflow."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import mlflow
import pytest
from mlflow.tracking import MlflowClient
from pyspark.sql import DataFrame, SparkSession

from synthspark.cli import main
from synthspark.config import SynthConfig, load_config, parse_config
from synthspark.errors import ConfigError, OutputError, SourceDataError
from synthspark.output import read_tables
from synthspark.pipeline import run_pipeline
from tests.bank import bank_config, write_bank
from tests.conftest import job_count

TABLES = ["branch", "customer", "account", "transfer", "account_note"]
RELATIONSHIPS = [
    ("customer", ["branch_id"], "branch", ["branch_id"]),
    ("account", ["customer_id"], "customer", ["customer_id"]),
    ("transfer", ["account_id"], "account", ["account_id"]),
    ("account_note", ["account_id"], "account", ["account_id"]),
]
KEYS = {"branch": ["branch_id"], "customer": ["customer_id"], "account": ["account_id"],
        "transfer": ["transfer_id"], "account_note": ["account_id", "note_no"]}


def _config(tmp_path: Path, name: str = "out", **overrides) -> SynthConfig:
    source = tmp_path / "src"
    if not source.exists():
        write_bank(source)
    return parse_config(bank_config(source, tmp_path / name, **overrides))


def assert_integrity(tables: dict[str, DataFrame]) -> None:
    """Assert unique non-null primary keys and resolving foreign keys among the bank tables in ``tables``."""
    for table, key in KEYS.items():
        if table not in tables:
            continue
        frame = tables[table]
        assert frame.count() == frame.select(*key).distinct().count(), f"{table} primary key repeats"
        assert frame.where(" OR ".join(f"{c} IS NULL" for c in key)).count() == 0, f"{table} has null keys"
    for child, columns, parent, parent_columns in RELATIONSHIPS:
        if child not in tables or parent not in tables:
            continue
        keys = tables[parent].select(*[tables[parent][p].alias(c) for p, c in zip(parent_columns, columns)])
        present = tables[child].dropna(subset=columns)
        orphans = present.join(keys, on=columns, how="left_anti").count()
        assert orphans == 0, f"{child}.{columns} has {orphans} keys without a parent"


def assert_same_rows(first: DataFrame, second: DataFrame) -> None:
    assert first.schema == second.schema
    assert first.count() == second.count()
    assert first.exceptAll(second).count() == 0
    assert second.exceptAll(first).count() == 0


@pytest.fixture(scope="module")
def bank_run(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory, mlflow_server: str):
    """Run the whole pipeline once, tracked on a real MLflow server on 127.0.0.1."""
    tmp_path = tmp_path_factory.mktemp("bank")
    # Every score on, so that this run covers detection, privacy and chains end to end.
    config = _config(tmp_path, evaluation={})
    previous = os.environ["MLFLOW_TRACKING_URI"]
    os.environ["MLFLOW_TRACKING_URI"] = mlflow_server
    try:
        result = run_pipeline(spark, config)
    finally:
        os.environ["MLFLOW_TRACKING_URI"] = previous
    return config, result, tmp_path


@pytest.fixture(scope="module")
def cli_run(spark: SparkSession, bank_run) -> dict[str, Any]:
    """Run fit, generate and evaluate as three command-line calls with the bank run's source and seed.

    The config file lists the tables in reverse order and caches the key frames instead of storing
    local checkpoints. The calls run with 7 shuffle partitions instead of 2. Comparing with the bank
    run then shows that none of these changes the output.
    Returns the config file, the output and model folders, the table order, each call's exit code,
    and whether the model and a table existed after the fit call.
    """
    import yaml

    config, _, tmp_path = bank_run
    data = bank_config(tmp_path / "src", tmp_path / "unused")
    data["tables"] = dict(reversed(list(data["tables"].items())))
    data["generation"]["key_frames"] = "cache"
    config_file = tmp_path / "cli.yaml"
    config_file.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    output = tmp_path / "cli-out"
    model = tmp_path / "cli-model"
    common = ["--output", str(output), "--model", str(model), "--seed", str(config.generation.seed)]
    run = {"config_file": config_file, "output": output, "model": model, "common": common,
           "table_order": list(load_config(config_file).tables)}
    previous = spark.conf.get("spark.sql.shuffle.partitions")
    spark.conf.set("spark.sql.shuffle.partitions", "7")
    try:
        run["fit"] = main(["fit", str(config_file), *common])
        run["model_after_fit"] = (model / "model.json").is_file()
        run["table_after_fit"] = (output / "branch").exists()
        run["generate"] = main(["generate", str(config_file), *common])
        run["evaluate"] = main(["evaluate", str(config_file), *common])
    finally:
        spark.conf.set("spark.sql.shuffle.partitions", previous)
    return run


def test_run_writes_delta_tables_with_valid_keys(spark: SparkSession, bank_run) -> None:
    config, result, _ = bank_run
    output = Path(config.output.path)
    for table in TABLES:
        assert (output / table / "_delta_log").is_dir(), f"{table} is not a Delta table"
    tables = read_tables(spark, config.output, TABLES)
    assert_integrity(tables)
    assert result.report["overall"]["foreign_key_validity"] == 1.0
    assert result.report["overall"]["primary_key_uniqueness"] == 1.0


def test_output_keeps_source_types_and_formats(spark: SparkSession, bank_run) -> None:
    config, _, _ = bank_run
    tables = read_tables(spark, config.output, TABLES)
    types = {table: dict(frame.dtypes) for table, frame in tables.items()}
    assert types["customer"]["customer_id"] == "int"
    assert types["customer"]["birth_year"] == "int"
    assert types["customer"]["since"] == "date"
    assert types["account"]["account_id"] == "string"
    assert types["account"]["active"] == "boolean"
    assert types["transfer"]["booked_at"] == "timestamp"
    assert types["account_note"]["note_no"] == "int"
    ids = [row[0] for row in tables["account"].select("account_id").limit(50).collect()]
    assert all(len(value) == 9 and value.startswith("ACC-") and value[4:].isdigit() for value in ids)
    notes = tables["account_note"].groupBy("account_id").agg({"note_no": "max", "*": "count"}).collect()
    assert all(row["max(note_no)"] == row["count(1)"] for row in notes), "note_no should run 1..k per account"


def test_scores_cover_every_table_and_relationship(bank_run) -> None:
    _, result, _ = bank_run
    report = result.report
    assert set(report["tables"]) == set(TABLES)
    assert len(report["relationships"]) == len(RELATIONSHIPS)
    for entry in report["relationships"].values():
        assert 0.5 <= entry["cardinality_similarity"] <= 1.0
    assert report["tables"]["transfer"]["column_shapes"]["channel"]["metric"] == "tv_complement"
    assert report["tables"]["transfer"]["column_shapes"]["amount"]["metric"] == "ks_complement"
    assert report["overall"]["column_shapes"] > 0.8


def test_mlflow_server_run_holds_params_metrics_artifacts(bank_run, mlflow_server: str) -> None:
    _, result, _ = bank_run
    client = MlflowClient(tracking_uri=mlflow_server)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["seed"] == "11"
    assert params["scale"] == "1.0"
    assert params["version_pyspark"].startswith("4.")
    assert "version_delta-spark" in params
    metrics = run.data.metrics
    for table in TABLES:
        assert metrics[f"rows/{table}"] > 0
    assert metrics["overall/foreign_key_validity"] == 1.0
    assert "cardinality/transfer.account_id__to__account.account_id" in metrics
    assert "column_shape/transfer/amount" in metrics
    assert 0.0 <= metrics["overall/detection_accuracy"] <= 1.0
    assert 0.0 <= metrics["overall/dcr_half_a_share"] <= 1.0
    for stage in ("fit", "generate", "evaluate"):
        assert metrics[f"seconds/{stage}"] > 0
    artifacts = {item.path for item in client.list_artifacts(result.run_id)}
    assert {"config.yaml", "metrics.json", "model"} <= artifacts
    model_files = {item.path for item in client.list_artifacts(result.run_id, "model")}
    assert "model/model.json" in model_files


def test_rare_categories_never_reach_model_or_output(spark: SparkSession, bank_run) -> None:
    config, _, source_tmp = bank_run
    assert "courier" in (source_tmp / "src" / "transfer.csv").read_text(encoding="utf-8")
    model_text = (Path(config.output.path) / "_synthspark_model" / "model.json").read_text(encoding="utf-8")
    assert "courier" not in model_text
    transfers = read_tables(spark, config.output, ["transfer"])["transfer"]
    channels = {row[0] for row in transfers.select("channel").distinct().collect()}
    assert channels == {"card", "wire", "cash"}


def test_same_seed_same_tables_other_seed_differs(
    spark: SparkSession, bank_run, cli_run: dict[str, Any], tmp_path: Path
) -> None:
    # The command-line run fitted its own model from the same source and generated with the same seed.
    # It listed the tables in reverse order, cached its key frames and ran with 7 shuffle partitions,
    # and none of these may change the output.
    config, _, source_tmp = bank_run
    assert cli_run["table_order"] == list(reversed(config.tables))
    assert cli_run["fit"] == 0
    assert cli_run["generate"] == 0
    other = parse_config(bank_config(source_tmp / "src", tmp_path / "other", tracking={"enabled": False},
                                     generation={"scale": 1.0, "seed": 12}))
    model_dir = str(Path(config.output.path) / "_synthspark_model")
    run_pipeline(spark, other, model_dir=model_dir, stages=("generate",))
    first = read_tables(spark, config.output, TABLES)
    second = read_tables(spark, config.output.model_copy(update={"path": str(cli_run["output"])}), TABLES)
    third = read_tables(spark, other.output, TABLES)
    for table in TABLES:
        assert_same_rows(first[table], second[table])
    assert first["transfer"].exceptAll(third["transfer"]).count() > 0


def test_scale_multiplies_root_rows(spark: SparkSession, bank_run, tmp_path: Path) -> None:
    config, _, source_tmp = bank_run
    doubled = parse_config(bank_config(source_tmp / "src", tmp_path / "x2", tracking={"enabled": False},
                                       generation={"scale": 2.0, "seed": 11}))
    result = run_pipeline(spark, doubled, model_dir=str(Path(config.output.path) / "_synthspark_model"),
                          stages=("generate",))
    assert result.rows["branch"] == 24
    tables = read_tables(spark, doubled.output, TABLES)
    assert_integrity(tables)
    assert tables["transfer"].count() > 1.3 * read_tables(spark, config.output, ["transfer"])["transfer"].count()


def test_existing_output_is_refused_and_kept(spark: SparkSession, bank_run) -> None:
    config, _, _ = bank_run
    history = spark.sql(f"DESCRIBE HISTORY delta.`{config.output.path}/transfer`").count()
    jobs_before = job_count(spark)
    with pytest.raises(OutputError, match="output already exists"):
        run_pipeline(spark, config)
    assert job_count(spark) == jobs_before, "the refusal should come before any Spark job"
    assert spark.sql(f"DESCRIBE HISTORY delta.`{config.output.path}/transfer`").count() == history


def test_orphans_default_to_a_clear_error(spark: SparkSession, tmp_path: Path) -> None:
    source = write_bank(tmp_path / "src", orphans=3)
    config = parse_config(bank_config(source, tmp_path / "out", tracking={"enabled": False}))
    with pytest.raises(SourceDataError) as error:
        run_pipeline(spark, config)
    message = str(error.value)
    assert "transfer.account_id -> account.account_id" in message
    assert "3 row(s)" in message
    assert "'ACC-90000'" in message
    assert "on_orphan: drop" in message
    assert "on_orphan: set_null" in message
    assert not (tmp_path / "out" / "transfer").exists()


@pytest.mark.parametrize("policy", ["drop", "set_null"])
def test_orphan_policy_is_applied_and_counted(spark: SparkSession, tmp_path: Path, policy: str) -> None:
    source = write_bank(tmp_path / "src", orphans=3)
    data = bank_config(source, tmp_path / "out")
    # Only the two tables of the relationship, which keeps the run short.
    data["tables"] = {name: data["tables"][name] for name in ("account", "transfer")}
    data["tables"]["account"].pop("foreign_keys")
    data["tables"]["transfer"]["foreign_keys"][0]["on_orphan"] = policy
    config = parse_config(data)
    result = run_pipeline(spark, config, stages=("fit", "generate"))
    model = json.loads((tmp_path / "out" / "_synthspark_model" / "model.json").read_text(encoding="utf-8"))
    rel = model["relationships"]["transfer.account_id->account.account_id"]
    assert rel["orphan_rows"] == 3
    if policy == "set_null":
        assert rel["null_fraction"] > 0
    else:
        assert rel["null_fraction"] == 0
    metrics = mlflow.get_run(result.run_id).data.metrics
    assert metrics["orphan_rows/transfer.account_id__to__account.account_id"] == 3
    tables = read_tables(spark, config.output, list(config.tables))
    assert tables["transfer"].count() > 0
    assert_integrity(tables)


def test_cli_stages_run_separately(cli_run: dict[str, Any]) -> None:
    assert cli_run["fit"] == 0
    assert cli_run["model_after_fit"]
    assert not cli_run["table_after_fit"], "fit alone should write no table"
    assert cli_run["generate"] == 0
    assert cli_run["evaluate"] == 0
    report = json.loads((cli_run["output"] / "_synthspark_report.json").read_text(encoding="utf-8"))
    assert report["overall"]["foreign_key_validity"] == 1.0
    second = main(["generate", str(cli_run["config_file"]), *cli_run["common"]])
    assert second == 2, "second generate must refuse existing output"


@pytest.mark.parametrize("problem", ["missing_table", "unknown_column", "missing_parent", "cycle"])
def test_bad_config_fails_before_any_spark_job(spark: SparkSession, tmp_path: Path, problem: str) -> None:
    source = write_bank(tmp_path / "src")
    data = bank_config(source, tmp_path / "out", tracking={"enabled": False})
    if problem == "missing_table":
        (source / "account.csv").unlink()
    elif problem == "unknown_column":
        data["tables"]["transfer"]["columns"]["fee"] = "numerical"
    elif problem == "missing_parent":
        data["tables"]["transfer"]["foreign_keys"][0]["parent"] = "accounts"
    else:
        data["tables"]["branch"]["columns"]["head_account"] = "id"
        data["tables"]["branch"]["foreign_keys"] = [{"columns": "head_account", "parent": "account"}]
    jobs_before = job_count(spark)
    with pytest.raises(ConfigError):
        run_pipeline(spark, parse_config(data))
    assert job_count(spark) == jobs_before
    assert not (tmp_path / "out").exists()
