"""Targets, writes and reads of generated tables: Delta (default), Parquet or CSV, by path or catalog name.

Runs do not write published tables directly: :mod:`synthspark.publish` stages
every table, checks the staged copy and then publishes it.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.utils import AnalysisException

from synthspark.config import OutputSpec
from synthspark.errors import OutputError

logger = logging.getLogger(__name__)

# Entries that a run keeps beside the tables under an output path.
MODEL_SUBDIR = "_synthspark_model"
REPORT_FILE = "_synthspark_report.json"


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


def is_local_path(path: str) -> bool:
    """Return whether ``path`` is on the local file system (no URI scheme, or ``file:``)."""
    return "://" not in path or path.startswith("file:")


def local_path(path: str) -> str:
    """Return ``path`` without a ``file:`` prefix."""
    return path.removeprefix("file:")


def delta_version(spark: SparkSession, target: Target) -> int | None:
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


def table_exists(spark: SparkSession, target: Target) -> bool:
    """Return whether ``target`` exists: a catalog table, a local path, or a Delta table at a remote path."""
    if target.name is not None:
        return spark.catalog.tableExists(target.name.replace("`", ""))
    assert target.path is not None
    if is_local_path(target.path):
        return os.path.exists(local_path(target.path))
    try:
        spark.read.format("delta").load(target.path).schema  # noqa: B018 - reads metadata only
        return True
    except AnalysisException:
        return False


def check_targets(spark: SparkSession, output: OutputSpec, planned: dict[str, Target]) -> None:
    """Raise :class:`OutputError` before any write when mode 'error' would replace existing output."""
    if output.mode != "error":
        return
    existing = [t.describe() for t in planned.values() if table_exists(spark, t)]
    if existing:
        raise OutputError(
            f"output already exists: {existing[:5]}{' ...' if len(existing) > 5 else ''}. Nothing was written. "
            f"Choose another output location, remove it, or set output.mode: overwrite (--mode overwrite)"
        )


def write_table(frame: DataFrame, output_format: str, target: Target, *, replace: bool) -> None:
    """Write one table to ``target``.

    With ``replace`` an existing table is overwritten (for Delta, one new commit
    that may change the schema); without it an existing table raises.
    """
    # "error", not its synonym "errorifexists", which the Spark Connect client of PySpark 4.2 rejects.
    writer = frame.write.format(output_format).mode("overwrite" if replace else "error")
    if output_format == "delta" and replace:
        writer = writer.option("overwriteSchema", "true")
    if output_format == "csv":
        # Spark's CSV writer trims leading and trailing spaces by default, which changes values.
        writer = writer.option("header", "true").options(ignoreLeadingWhiteSpace=False, ignoreTrailingWhiteSpace=False)
    if target.name is not None:
        writer.saveAsTable(target.name)
    else:
        writer.save(target.path)


def read_table(spark: SparkSession, output_format: str, target: Target) -> DataFrame:
    """Read one written table; CSV is read with its header and inferred types."""
    if target.name is not None:
        return spark.read.table(target.name)
    if output_format == "csv":
        return spark.read.option("header", "true").option("inferSchema", "true").csv(target.path)
    return spark.read.format(output_format).load(target.path)


def restore_table(spark: SparkSession, target: Target, version: int | None, existed: bool, output_format: str) -> None:
    """Put ``target`` back as it was before this run: Delta ``RESTORE`` to ``version``, or drop it when it is new.

    Errors are logged, not raised, because the caller re-raises the error that
    made it roll back. Parquet and CSV tables that existed cannot be restored.
    """
    reference = f"delta.`{target.path}`" if target.path else target.name
    try:
        if existed and version is not None and output_format == "delta":
            spark.sql(f"RESTORE TABLE {reference} TO VERSION AS OF {version}")
            logger.warning("restored %s to version %d after a failed run", target.describe(), version)
        elif existed:
            logger.error("cannot restore %s: only Delta tables keep earlier versions", target.describe())
        elif target.name is not None:
            spark.sql(f"DROP TABLE IF EXISTS {target.name}")
            logger.warning("dropped %s, written by the failed run", target.describe())
        else:
            logger.error("%s was written by the failed run and is left in place; delete it by hand", target.describe())
    except Exception:  # noqa: BLE001 - the original error is re-raised by the caller
        logger.exception("could not roll back %s; inspect it by hand", target.describe())


def read_tables(spark: SparkSession, output: OutputSpec, tables: list[str]) -> dict[str, DataFrame]:
    """Read published tables back."""
    planned = targets(output, tables)
    result = {}
    for table, target in planned.items():
        try:
            result[table] = read_table(spark, output.format, target)
        except AnalysisException as error:
            raise OutputError(
                f"cannot read generated table '{table}' at {target.describe()}: {str(error).splitlines()[0]}; "
                f"run 'synthspark generate' first or check --output"
            ) from None
    return result
