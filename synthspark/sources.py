"""Read source tables as Spark DataFrames, read-only."""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Collection

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.utils import AnalysisException

from synthspark.config import ColumnKind, ColumnSpec, SynthConfig, TableSpec, parse_type
from synthspark.errors import ConfigError, SourceDataError, format_examples
from synthspark.sampling import qcol

logger = logging.getLogger(__name__)

# Column metadata key that records for the fitter how the source stored a converted column.
STORED_AS = "synthspark.stored_as"
_INTEGRAL = (T.ByteType, T.ShortType, T.IntegerType, T.LongType)
_DATETIME = (T.DateType, T.TimestampType, T.TimestampNTZType)

# RFC 4180 quoting: a quote inside a quoted field is doubled. Spark's own default
# escape character is a backslash, which misreads such fields.
CSV_DEFAULTS = {"header": "true", "inferSchema": "true", "escape": '"', "mode": "FAILFAST"}
# A single file compressed with one of these codecs cannot be split, so Spark reads it in one
# task. Such a source is spread over this many partitions after reading: a fixed number, so
# that the fitted model does not depend on the cluster.
UNSPLITTABLE_SUFFIXES = (".gz", ".zst", ".lz4", ".snappy", ".deflate")
SPREAD_PARTITIONS = 8


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


def check_sources(config: SynthConfig, tables: Collection[str] | None = None) -> None:
    """Check local source files and CSV headers without Spark; raise :class:`ConfigError` on the first problem.

    ``tables`` limits the check to those tables (all by default). Catalog tables and
    remote paths are checked when Spark reads them.
    """
    for table, spec in config.tables.items():
        if spec.source.table is not None or (tables is not None and table not in tables):
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
    """Read one source table; cast columns with a declared type and parse datetimes stored as text or integers."""
    spec = config.tables[table]
    source = spec.source
    location = source_location(config, table)
    try:
        if source.table is not None:
            frame = spark.read.table(source.table)
        elif source.format == "csv":
            frame = _read_csv(spark, spec, location)
        else:
            frame = spark.read.options(**source.options).format(source.format).load(location)
    except AnalysisException as error:
        message = str(error).splitlines()[0]
        raise ConfigError(
            f"cannot read the source of table '{table}' at {location} ({source.format}): {message}. "
            f"Check tables.{table}.source and --source"
        ) from None
    check_declared_columns(table, spec, frame.columns)
    if source.table is None and location.lower().endswith(UNSPLITTABLE_SUFFIXES):
        frame = frame.repartition(SPREAD_PARTITIONS)
    return _apply_declared_types(table, spec, frame)


def _read_csv(spark: SparkSession, spec: TableSpec, location: str) -> DataFrame:
    """Read a CSV file; columns with a declared type or format are read as text, the rest inferred.

    Reading declared columns as text keeps decimals exact (inference would go
    through double) and gives an empty file the declared types.
    """
    options = {**CSV_DEFAULTS, **spec.source.options}
    typed = {name for name, column in spec.columns.items() if column.type is not None}
    formatted = {name for name, column in spec.columns.items() if column.format is not None}
    if not (typed | formatted) or options.get("inferSchema", "true").lower() != "true":
        return spark.read.options(**options).csv(location)
    inferred = spark.read.options(**options).csv(location).schema
    # An integer column with a date format (20230105 for yyyyMMdd) keeps its type, so the output can too.
    as_text = typed | {
        field.name for field in inferred.fields if field.name in formatted and not isinstance(field.dataType, _INTEGRAL)
    }
    schema = T.StructType(
        [
            T.StructField(field.name, T.StringType() if field.name in as_text else field.dataType, True)
            for field in inferred.fields
        ]
    )
    return spark.read.options(**{**options, "inferSchema": "false"}).schema(schema).csv(location)


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


def _apply_declared_types(table: str, spec: TableSpec, frame: DataFrame) -> DataFrame:
    """Cast each column with a declared type or datetime format; invalid values are an error or null."""
    types = dict(frame.dtypes)
    for column, column_spec in spec.columns.items():
        if column not in types:
            continue
        parsed = _converted(table, column, column_spec, frame.schema[column].dataType)
        if parsed is None:
            continue
        source_type = frame.schema[column].dataType
        frame = _checked(table, column, column_spec, frame, parsed)
        if column_spec.kind == ColumnKind.DATETIME and isinstance(source_type, _INTEGRAL):
            # Generation writes these dates back in the source's integer form, such as 20230105.
            stored = {"type": source_type.json(), "format": column_spec.format}
            frame = frame.withMetadata(column, {STORED_AS: stored})
    return frame


def _converted(table: str, column: str, spec: ColumnSpec, source_type: T.DataType) -> Column | None:
    """Return the expression that converts the source column to its modelling type, or None to keep it."""
    value = qcol(column)
    target = parse_type(spec.type) if spec.type is not None else None
    if spec.kind == ColumnKind.DATETIME and isinstance(source_type, (T.StringType, *_INTEGRAL)):
        if spec.format is None:
            if target is not None and isinstance(target, _DATETIME):
                return value.try_cast(target)
            raise ConfigError(
                f"column {table}.{column} is declared datetime but was read as {source_type.simpleString()}; set "
                f"tables.{table}.columns.{column}.format to its Spark datetime pattern, such as yyyy-MM-dd HH:mm:ss, "
                f"or type: timestamp for ISO-8601 text"
            )
        text = value.cast("string")
        pattern = F.lit(spec.format)
        has_time = any(letter in spec.format for letter in "HhkKmsSaXxOVz")
        if has_time and not isinstance(target, T.DateType):
            if isinstance(source_type, _INTEGRAL):
                raise ConfigError(
                    f"column {table}.{column} is an integer column with a time-of-day format '{spec.format}'; "
                    f"only date formats such as yyyyMMdd are supported for integer-encoded datetimes"
                )
            stamp = F.try_to_timestamp(text, pattern)
            return stamp.cast("timestamp_ntz") if isinstance(target, T.TimestampNTZType) else stamp
        # A date-only pattern: reject values that parse but do not round-trip (20230231 is not a date).
        day = F.to_date(F.try_to_timestamp(text, pattern))
        return F.when(F.date_format(day, spec.format) == text, day)
    if target is None or target == source_type:
        return None
    if isinstance(target, T.BooleanType) and isinstance(source_type, T.StringType):
        lowered = F.lower(F.trim(value))
        return F.when(lowered.isin("true", "t", "yes", "1"), F.lit(True)).when(
            lowered.isin("false", "f", "no", "0"), F.lit(False)
        )
    return value.try_cast(target)


def _checked(table: str, column: str, spec: ColumnSpec, frame: DataFrame, parsed: Column) -> DataFrame:
    """Replace ``column`` with ``parsed``; values that do not convert raise or become null."""
    expected = spec.format or spec.type
    bad = frame.where(qcol(column).isNotNull() & parsed.isNull())
    # Bounded: at most 5 example values reach the driver.
    examples = [str(row[0]) for row in bad.select(column).distinct().orderBy(column).limit(5).collect()]
    if examples:
        count = bad.count()
        if spec.on_invalid == "error":
            raise SourceDataError(
                f"column {table}.{column}: {count} value(s) do not match the declared "
                f"{'format' if spec.format else 'type'} '{expected}', for example {format_examples(examples)}. "
                f"Fix the values or the declaration, or set on_invalid: null to read them as null"
            )
        logger.warning(
            "column %s.%s: %d value(s) do not match '%s' and are read as null (on_invalid: null), for example %s",
            table, column, count, expected, format_examples(examples),
        )
    return frame.withColumn(column, parsed)
