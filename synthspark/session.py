"""Create or reuse a SparkSession with Delta Lake enabled."""

from __future__ import annotations

import logging
import os
import sys
from importlib import metadata

from pyspark.sql import SparkSession

logger = logging.getLogger(__name__)

SCALA_VERSION = "2.13"
DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"
DELTA_CATALOG = "org.apache.spark.sql.delta.catalog.DeltaCatalog"
# A folder of pre-fetched JARs (see scripts/fetch-delta-jars.sh); used instead of
# resolving spark.jars.packages when it exists.
JARS_DIR_ENV = "SYNTHSPARK_JARS_DIR"


def delta_maven_coordinate() -> str:
    """Return the Maven coordinate of the Delta JAR that matches the installed pyspark and delta-spark."""
    import pyspark

    spark_minor = ".".join(pyspark.__version__.split(".")[:2])
    delta_version = metadata.version("delta-spark")
    return f"io.delta:delta-spark_{spark_minor}_{SCALA_VERSION}:{delta_version}"


def _local_jars() -> list[str]:
    folder = os.environ.get(JARS_DIR_ENV)
    if not folder or not os.path.isdir(folder):
        return []
    return sorted(os.path.join(folder, name) for name in os.listdir(folder) if name.endswith(".jar"))


def get_spark(
    master: str | None = None,
    conf: dict[str, str] | None = None,
    app_name: str = "synthspark",
) -> SparkSession:
    """Return the active SparkSession, or start one with Delta Lake enabled.

    Under ``spark-submit``, on Databricks or in a notebook the active session is
    reused as it is, except that ``conf`` entries are applied where Spark allows
    changing them at run time. Otherwise a session starts on ``master``, by
    default ``local[*]``, and ``sc://host:port`` connects through Spark Connect.
    The Delta JARs come from ``$SYNTHSPARK_JARS_DIR`` when it is set, else from
    Maven Central through ``spark.jars.packages``.
    """
    conf = dict(conf or {})
    active = SparkSession.getActiveSession()
    if active is not None:
        for key, value in conf.items():
            active.conf.set(key, value)
        return active

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    master = master or os.environ.get("SYNTHSPARK_MASTER") or "local[*]"
    builder = SparkSession.builder.appName(app_name)
    if master.startswith("sc://"):
        builder = builder.remote(master)
    else:
        builder = builder.master(master)
        builder = builder.config("spark.sql.extensions", DELTA_EXTENSION)
        builder = builder.config("spark.sql.catalog.spark_catalog", DELTA_CATALOG)
        jars = _local_jars()
        if jars and "spark.jars" not in conf:
            builder = builder.config("spark.jars", ",".join(jars))
        elif "spark.jars.packages" not in conf and "spark.jars" not in conf:
            builder = builder.config("spark.jars.packages", delta_maven_coordinate())
    builder = builder.config("spark.ui.showConsoleProgress", "false")
    if master.startswith("local"):
        # Delta replays its log with 50 partitions by default, which dominates small local runs.
        builder = builder.config("spark.databricks.delta.snapshotPartitions", "2")
    for key, value in conf.items():
        builder = builder.config(key, value)
    logger.info("starting Spark session: master=%s", master)
    return builder.getOrCreate()
