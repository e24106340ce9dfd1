"""Output depends on the seed and config only: not on shuffle partitions or the order of tables in the config."""

from __future__ import annotations

from pathlib import Path

from pyspark.sql import SparkSession

from synthspark.config import parse_config
from synthspark.output import read_tables
from synthspark.pipeline import run_pipeline
from tests.bank import bank_config, write_bank


def test_partitions_and_table_order_do_not_change_output(spark: SparkSession, tmp_path: Path) -> None:
    source = write_bank(tmp_path / "src")
    first = parse_config(bank_config(source, tmp_path / "first", tracking={"enabled": False}))
    data = bank_config(source, tmp_path / "second", tracking={"enabled": False})
    data["tables"] = dict(reversed(list(data["tables"].items())))
    second = parse_config(data)
    assert list(second.tables) != list(first.tables)

    run_pipeline(spark, first, stages=("fit", "generate"))
    previous = spark.conf.get("spark.sql.shuffle.partitions")
    spark.conf.set("spark.sql.shuffle.partitions", "7")
    try:
        run_pipeline(spark, second, stages=("fit", "generate"))
    finally:
        spark.conf.set("spark.sql.shuffle.partitions", previous)

    tables = list(first.tables)
    one = read_tables(spark, first.output, tables)
    two = read_tables(spark, second.output, tables)
    for table in tables:
        assert one[table].schema == two[table].schema
        assert one[table].count() == two[table].count()
        assert one[table].exceptAll(two[table]).count() == 0, f"{table} differs"
        assert two[table].exceptAll(one[table]).count() == 0, f"{table} differs"
