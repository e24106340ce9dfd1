"""Reading sources: compressed single files are spread over several partitions."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

from pyspark.sql import SparkSession

from synthspark.config import parse_config
from synthspark.sources import SPREAD_PARTITIONS, read_table
from tests.conftest import write_csv


def test_gzip_source_spread_over_partitions(spark: SparkSession, tmp_path: Path) -> None:
    write_csv(tmp_path, "item.csv", ["item_id", "size"], [(i, i % 7) for i in range(2_000)])
    with open(tmp_path / "item.csv", "rb") as plain, gzip.open(tmp_path / "item.csv.gz", "wb") as packed:
        shutil.copyfileobj(plain, packed)
    config = parse_config({
        "name": "sources",
        "source_root": str(tmp_path),
        "tables": {
            "item": {
                "source": {"path": "item.csv.gz", "format": "csv"},
                "primary_key": "item_id",
                "columns": {"item_id": "id", "size": "numerical"},
            },
        },
        "output": {"format": "delta", "path": str(tmp_path / "out")},
        "tracking": {"enabled": False},
    })
    frame = read_table(spark, config, "item")
    assert frame.rdd.getNumPartitions() == SPREAD_PARTITIONS
    assert frame.count() == 2_000
    assert frame.agg({"size": "sum"}).first()[0] == sum(i % 7 for i in range(2_000))
