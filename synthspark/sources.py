"""Read source tables as Spark DataFrames, read-only."""

from __future__ import annotations

import csv
import os

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.utils import AnalysisException

from synthspark.config import ColumnKind, SynthConfig, TableSpec
from synthspark.errors import ConfigError, SourceDataError, format_examples
from synthspark.sampling import qcol

# RFC 4180 quoting: a quote inside a quoted field is doubled. Spark's own default
# escape character is a backslash, which misreads such fields.
CSV_DEFAULTS = {"header": "true", "inferSchema": "true", "escape": '"', "mode": "FAILFAST"}


def source_location(config: SynthConfig, table: str) -> str:
    """Return the resolved path or catalog name of ``table``'s source."""
    source = config.tables[table].source
    if source.table is not None:
        return source.table
    assert source.path is not None
    return config.resolve_source_path(source.path)


def local_csv_header(path: str) -> list[str] | None:
    """Return the header of a local, uncompressed CSV file, or None when it cannot be read cheaply."""
    if "://" in path and not path.startswith("file:"):
        return None
    local = path.removeprefix("file:")
    if not os.path.isfile(local) or local.endswith((".gz", ".bz2", ".zip")):
        return None
    with open(local, encoding="utf-8", newline="") as handle:
        row = next(csv.reader(handle), None)
    return row or []


def check_sources(config: SynthConfig) -> None:
    """Check local source files and CSV headers without Spark; raise :class:`ConfigError` on the first problem.

    Catalog tables and remote paths are checked when Spark reads them.
    """
    for table, spec in config.tables.items():
        if spec.source.table is not None:
            continue
        location = source_location(config, table)
        if "://" in location and not location.startswith("file:"):
            continue
        local = location.removeprefix("file:")
        if not os.path.exists(local):
            raise ConfigError(
                f"source of table '{table}' not found: {local} (tables.{table}.source.path resolved against "
                f"source_root {config.source_root!r}). Check the path, or pass --source with the folder that holds it"
            )
        if spec.source.format == "csv" and "header" not in spec.source.options:
            header = local_csv_header(local)
            if header is not None:
                check_declared_columns(table, spec, header)


def read_table(spark: SparkSession, config: SynthConfig, table: str) -> DataFrame:
    """Read one source table, with datetime columns stored as text parsed by their declared format."""
    spec = config.tables[table]
    source = spec.source
    location = source_location(config, table)
    try:
        if source.table is not None:
            frame = spark.read.table(source.table)
        elif source.format == "csv":
            frame = spark.read.options(**{**CSV_DEFAULTS, **source.options}).csv(location)
        else:
            frame = spark.read.options(**source.options).format(source.format).load(location)
    except AnalysisException as error:
        message = str(error).splitlines()[0]
        raise ConfigError(
            f"cannot read the source of table '{table}' at {location} ({source.format}): {message}. "
            f"Check tables.{table}.source and --source"
        ) from None
    check_declared_columns(table, spec, frame.columns)
    return _parse_text_datetimes(table, spec, frame)


def check_declared_columns(table: str, spec: TableSpec, actual: list[str]) -> None:
    """Raise :class:`ConfigError` when the config names a column that the source lacks."""
    named = set(spec.columns) | set(spec.primary_key)
    for fk in spec.foreign_keys:
        named.update(fk.columns)
    missing = sorted(named - set(actual))
    if missing:
        raise ConfigError(
            f"table '{table}': column(s) {missing} named in the config are not in the source; "
            f"the source has {actual}. Fix the names under tables.{table}"
        )


def _parse_text_datetimes(table: str, spec: TableSpec, frame: DataFrame) -> DataFrame:
    types = dict(frame.dtypes)
    for column, column_spec in spec.columns.items():
        if column_spec.kind != ColumnKind.DATETIME or types.get(column) != "string":
            continue
        if column_spec.format is None:
            raise ConfigError(
                f"column {table}.{column} is declared datetime but was read as text; set "
                f"tables.{table}.columns.{column}.format to its Spark datetime pattern, such as yyyy-MM-dd HH:mm:ss"
            )
        has_time = any(letter in column_spec.format for letter in "HhmsSa")
        parse = F.try_to_timestamp if has_time else None
        pattern = F.lit(column_spec.format)
        if parse is None:
            parsed = F.to_date(F.try_to_timestamp(qcol(column), pattern))
        else:
            parsed = parse(qcol(column), pattern)
        bad = frame.where(qcol(column).isNotNull() & parsed.isNull())
        # Bounded: at most 5 example values reach the driver.
        examples = [row[0] for row in bad.select(column).limit(5).collect()]
        if examples:
            count = bad.count()
            raise SourceDataError(
                f"column {table}.{column}: {count} value(s) do not match the declared format "
                f"'{column_spec.format}', for example {format_examples(examples)}. Fix the values or the format"
            )
        frame = frame.withColumn(column, parsed)
    return frame
