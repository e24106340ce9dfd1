"""Write generated tables: Delta (default), Parquet or CSV, under a path or a catalog schema.

Every target is checked before the first write. Each Delta write is one atomic
commit. If a later table fails, tables already written in this run are restored
to their previous version, or removed when they are new. A run killed mid-write
is not covered: it can leave some tables new and others old.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.utils import AnalysisException

from synthspark.config import OutputSpec
from synthspark.errors import OutputError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Target:
    """Destination of one table: a path or a catalog name."""

    table: str
    path: str | None
    name: str | None

    def describe(self) -> str:
        """Return the path or catalog name."""
        return self.path or self.name or self.table


def targets(output: OutputSpec, tables: list[str]) -> dict[str, Target]:
    """Return the target of each table under the configured output location."""
    if output.catalog_schema is not None:
        return {t: Target(t, None, f"{output.catalog_schema}.`{t}`") for t in tables}
    if output.path is None:
        raise OutputError("no output location: set output.path (or pass --output) or output.catalog_schema")
    return {t: Target(t, os.path.join(output.path, t), None) for t in tables}


def _is_local(path: str) -> bool:
    return "://" not in path or path.startswith("file:")


def _local(path: str) -> str:
    return path.removeprefix("file:")


def _delta_version(spark: SparkSession, target: Target) -> int | None:
    """Return the current Delta version of ``target``, or None when it is not a Delta table."""
    reference = f"delta.`{target.path}`" if target.path else target.name
    try:
        row = spark.sql(f"DESCRIBE HISTORY {reference} LIMIT 1").select("version").first()
    except AnalysisException:
        return None
    except Exception as error:  # noqa: BLE001 - Delta raises JVM errors of several classes here
        if "not a Delta table" in str(error) or "DELTA_MISSING_DELTA_TABLE" in str(error):
            return None
        raise
    return int(row[0]) if row else None


def _exists(spark: SparkSession, target: Target) -> bool:
    if target.name is not None:
        return spark.catalog.tableExists(target.name.replace("`", ""))
    assert target.path is not None
    if _is_local(target.path):
        return os.path.exists(_local(target.path))
    try:
        spark.read.format("delta").load(target.path).schema  # noqa: B018 - reads metadata only
        return True
    except AnalysisException:
        return False


def check_targets(spark: SparkSession, output: OutputSpec, planned: dict[str, Target]) -> None:
    """Raise :class:`OutputError` before any write when mode 'error' would replace existing output."""
    if output.mode != "error":
        return
    existing = [t.describe() for t in planned.values() if _exists(spark, t)]
    if existing:
        raise OutputError(
            f"output already exists: {existing[:5]}{' ...' if len(existing) > 5 else ''}. Nothing was written. "
            f"Choose another output location, remove it, or set output.mode: overwrite (--mode overwrite)"
        )


def _write_one(frame: DataFrame, output: OutputSpec, target: Target) -> None:
    writer = frame.write.format(output.format).mode("overwrite")
    if output.format == "delta":
        writer = writer.option("overwriteSchema", "true")
    if output.format == "csv":
        writer = writer.option("header", "true")
    if target.name is not None:
        writer.saveAsTable(target.name)
        return
    assert target.path is not None
    if output.format == "delta" or not _is_local(target.path):
        # NOTE: Parquet and CSV on remote storage are written in place, not atomically.
        writer.save(target.path)
        return
    # Parquet/CSV on a local disk: write beside the target, then swap directories.
    final = _local(target.path)
    staging = f"{final}.synthspark-{uuid.uuid4().hex[:8]}"
    writer.save(staging)
    backup = f"{staging}.old"
    if os.path.exists(final):
        os.replace(final, backup)
    os.replace(staging, final)
    shutil.rmtree(backup, ignore_errors=True)


def _rollback(spark: SparkSession, target: Target, version: int | None, existed: bool, output: OutputSpec) -> None:
    reference = f"delta.`{target.path}`" if target.path else target.name
    try:
        if existed and version is not None and output.format == "delta":
            spark.sql(f"RESTORE TABLE {reference} TO VERSION AS OF {version}")
            logger.warning("restored %s to version %d after a failed run", target.describe(), version)
        elif not existed:
            if target.name is not None:
                spark.sql(f"DROP TABLE IF EXISTS {target.name}")
            elif target.path is not None and _is_local(target.path):
                shutil.rmtree(_local(target.path), ignore_errors=True)
            logger.warning("removed %s, written by the failed run", target.describe())
    except Exception:  # noqa: BLE001 - the original error is re-raised by the caller
        logger.exception("could not roll back %s; inspect it by hand", target.describe())


def write_tables(
    spark: SparkSession, tables: dict[str, DataFrame], output: OutputSpec
) -> dict[str, float]:
    """Write every table; on failure undo this run's writes and re-raise. Return seconds per table."""
    planned = targets(output, list(tables))
    check_targets(spark, output, planned)
    done: list[tuple[Target, int | None, bool]] = []
    seconds: dict[str, float] = {}
    for table, frame in tables.items():
        target = planned[table]
        existed = _exists(spark, target)
        version = _delta_version(spark, target) if existed and output.format == "delta" else None
        started = time.monotonic()
        logger.info("write %s: start -> %s", table, target.describe())
        try:
            _write_one(frame, output, target)
        except BaseException:
            done.append((target, version, existed))
            for written, old_version, was_there in reversed(done):
                _rollback(spark, written, old_version, was_there, output)
            raise
        done.append((target, version, existed))
        seconds[table] = time.monotonic() - started
        logger.info("write %s: done, %.1f s", table, seconds[table])
    return seconds


def read_tables(spark: SparkSession, output: OutputSpec, tables: list[str]) -> dict[str, DataFrame]:
    """Read written tables back."""
    planned = targets(output, tables)
    result = {}
    for table, target in planned.items():
        try:
            if target.name is not None:
                result[table] = spark.read.table(target.name)
            elif output.format == "csv":
                result[table] = spark.read.option("header", "true").option("inferSchema", "true").csv(target.path)
            else:
                result[table] = spark.read.format(output.format).load(target.path)
        except AnalysisException as error:
            raise OutputError(
                f"cannot read generated table '{table}' at {target.describe()}: {str(error).splitlines()[0]}; "
                f"run 'synthspark generate' first or check --output"
            ) from None
    return result
