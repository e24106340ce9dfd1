"""Run synthspark on a Spark standalone cluster, through Spark Connect, and with three-part catalog names.

A standalone master with one worker and a Spark Connect server are started from
the installed PySpark. They run in processes of their own, listen on 127.0.0.1
only and are stopped when the ``cluster_runs`` fixture returns, also when a run
fails. Two runs of the same config and seed go at the same time, to keep the
module's wall time near that of one run:

- ``spark-submit jobs/synthspark_job.py run`` to the standalone master (classic
  PySpark API), reading CSV files and writing Delta tables under a path;
- ``synthspark run --master sc://...`` to the Connect server, reading
  ``spark_catalog.cluster_source.<table>`` and writing managed tables into
  ``spark_catalog.cluster_out``.

The checks read the written Delta tables by path with the classic ``spark`` fixture.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pyspark
import pytest
import yaml
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from synthspark.config import load_config
from synthspark.session import delta_maven_coordinate, local_jars
from tests.conftest import REPO, write_csv

SPARK_HOME = Path(pyspark.__file__).resolve().parent
SPARK_CLASS = SPARK_HOME / "bin" / "spark-class"
SPARK_SUBMIT = SPARK_HOME / "bin" / "spark-submit"
LOOPBACK = "127.0.0.1"
SEED = 5
SCALE = 0.5
TABLES = ("customer", "account")
SOURCE_CUSTOMERS = 40
STANDALONE_APP = "synthspark-standalone-test"
OUTPUT_SCHEMA = "spark_catalog.cluster_out"
# Seconds. Generous bounds, because the machine may be shared with other Spark jobs.
SERVER_START_TIMEOUT = 300
RUN_TIMEOUT = 1200
STOP_TIMEOUT = 30
# Settings of every Spark driver in this module: loopback only, no UI, few partitions, quiet logs.
SPARK_SETTINGS = {
    "spark.driver.host": LOOPBACK,
    "spark.driver.bindAddress": LOOPBACK,
    "spark.ui.enabled": "false",
    "spark.sql.shuffle.partitions": "2",
    "spark.sql.session.timeZone": "UTC",
    "spark.databricks.delta.snapshotPartitions": "2",
    "spark.log.level": "WARN",
}
# A Connect client cannot set static settings, so the server starts with Delta enabled.
DELTA_SETTINGS = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
}
# Run by a Spark Connect client before the job. It registers the CSV files as tables of
# spark_catalog.cluster_source and creates the output schema. The server keeps its catalog
# in memory, so only a client of that server can create them.
CATALOG_SETUP = """
import sys
from pyspark.sql import SparkSession
from synthspark.sources import CSV_DEFAULTS

url, source, output = sys.argv[1:4]
spark = SparkSession.builder.remote(url).getOrCreate()
spark.sql(f"CREATE DATABASE spark_catalog.cluster_source LOCATION '{source}/catalog'")
spark.sql(f"CREATE DATABASE spark_catalog.cluster_out LOCATION '{output}'")
# The reader options of CSV path sources, so that both runs read the same rows and types.
options = ", ".join(f"{key} '{value}'" for key, value in CSV_DEFAULTS.items())
for table in sys.argv[4:]:
    spark.sql(
        f"CREATE TABLE spark_catalog.cluster_source.{table} USING csv "
        f"OPTIONS (path '{source}/{table}.csv', {options})"
    )
spark.stop()
"""


# --- data and config -----------------------------------------------------------------


def write_small_bank(folder: Path) -> Path:
    """Write customer and account CSVs (40 customers, 0-3 accounts each); return the folder.

    Smaller than tests.bank, because every Spark job costs a scheduling round trip on a
    cluster. It still has an integer and a prefixed string key, a date column,
    categorical, numerical and boolean columns, and parents without children.
    """
    rng = random.Random(3)
    customers = []
    for number in range(1, SOURCE_CUSTOMERS + 1):
        since = f"2020-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        customers.append((number, rng.choice(["retail", "retail", "business"]), since))
    accounts = []
    for customer in customers:
        for _ in range(rng.choice([0, 1, 1, 2, 3])):
            accounts.append((
                f"ACC-{len(accounts) + 1:05d}", customer[0], rng.choice(["checking", "savings"]),
                round(rng.lognormvariate(7, 1.2), 2), rng.random() < 0.8,
            ))
    write_csv(folder, "customer.csv", ["customer_id", "segment", "since"], customers)
    write_csv(folder, "account.csv", ["account_id", "customer_id", "type", "balance", "active"], accounts)
    return folder


def cluster_config(source: Path, output: Path) -> dict[str, Any]:
    """Return the config of the small bank database, reading CSV files and writing under ``output``."""
    return {
        "name": "cluster-bank",
        "source_root": str(source),
        "tables": {
            "customer": {
                "source": {"path": "customer.csv", "format": "csv"},
                "primary_key": "customer_id",
                "columns": {"customer_id": "id", "segment": "categorical", "since": "datetime"},
            },
            "account": {
                "source": {"path": "account.csv", "format": "csv"},
                "primary_key": "account_id",
                "columns": {
                    "account_id": "id", "customer_id": "id", "type": "categorical",
                    "balance": "numerical", "active": "boolean",
                },
                "foreign_keys": [{"columns": "customer_id", "parent": "customer"}],
            },
        },
        "generation": {"scale": 1.0, "seed": 11},
        "model": {"min_category_count": 2},
        "output": {"format": "delta", "path": str(output), "mode": "error"},
        "tracking": {"experiment": "synthspark-tests"},
    }


def write_config(folder: Path, config: dict[str, Any]) -> Path:
    """Write ``config`` as YAML into ``folder``; return the file."""
    path = folder / "bank.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


# --- processes -----------------------------------------------------------------------


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free now."""
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def spark_env() -> dict[str, str]:
    """Return the environment for Spark processes: this interpreter for Python, 127.0.0.1 for every socket."""
    env = dict(os.environ)
    env["PYSPARK_PYTHON"] = sys.executable
    env["PYSPARK_DRIVER_PYTHON"] = sys.executable
    env["SPARK_LOCAL_IP"] = LOOPBACK
    env["SPARK_HOME"] = str(SPARK_HOME)
    return env


def delta_jar_arguments() -> list[str]:
    """Return the spark-submit arguments that put the Delta JARs on the driver and the executors."""
    jars = local_jars()
    if jars:
        return ["--jars", ",".join(jars)]
    return ["--packages", delta_maven_coordinate()]


def conf_arguments(settings: dict[str, str]) -> list[str]:
    """Return ``--conf key=value`` arguments for spark-submit."""
    arguments = []
    for key, value in settings.items():
        arguments += ["--conf", f"{key}={value}"]
    return arguments


def log_tail(path: Path, lines: int = 40) -> str:
    """Return the last lines of a log file, for assertion messages."""
    if not path.exists():
        return f"(no log at {path})"
    return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])


def start(command: list[str], log: Path, cwd: Path) -> subprocess.Popen:
    """Start ``command`` in a new process group, stdout to ``log``.stdout and stderr to ``log``.

    The group also contains the processes that it starts, such as a worker's executors
    or the Python driver of spark-submit, so that :func:`stop` reaches them.
    """
    with open(log.with_suffix(".stdout"), "w", encoding="utf-8") as stdout, open(log, "w", encoding="utf-8") as stderr:
        return subprocess.Popen(
            command, stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL,
            cwd=cwd, env=spark_env(), start_new_session=True,
        )


def stop(process: subprocess.Popen) -> None:
    """Send SIGTERM to the process group of ``process``, then SIGKILL when it has not exited in time."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=STOP_TIMEOUT)
            return
        except subprocess.TimeoutExpired:
            continue


@contextmanager
def server(command: list[str], log: Path, cwd: Path) -> Iterator[subprocess.Popen]:
    """Run ``command`` for the duration of the block, then stop it and its process group."""
    process = start(command, log, cwd)
    try:
        yield process
    finally:
        stop(process)


def wait_until(ready: Callable[[], bool], process: subprocess.Popen, log: Path, name: str) -> None:
    """Poll ``ready()`` until it returns true; fail when ``process`` exits or the time runs out."""
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while not ready():
        if process.poll() is not None:
            pytest.fail(f"{name} exited with code {process.returncode}; last lines of {log}:\n{log_tail(log)}")
        if time.monotonic() > deadline:
            pytest.fail(f"{name} did not start within {SERVER_START_TIMEOUT} s; last lines of {log}:\n{log_tail(log)}")
        time.sleep(0.5)


def finish(process: subprocess.Popen, log: Path, deadline: float) -> dict[str, Any]:
    """Wait for a synthspark command until ``deadline``; return the JSON summary it prints last on stdout.

    Under spark-submit the Python driver's stderr, and so its log lines, also go to stdout.
    """
    stdout_log = log.with_suffix(".stdout")
    try:
        process.wait(timeout=max(deadline - time.monotonic(), 1))
    except subprocess.TimeoutExpired:
        stop(process)
        pytest.fail(f"{process.args[0]} did not finish within {RUN_TIMEOUT} s; last lines of {log}:\n{log_tail(log)}")
    assert process.returncode == 0, (
        f"{Path(process.args[0]).name} exited with code {process.returncode}; last lines of {stdout_log}:\n"
        f"{log_tail(stdout_log)}\nlast lines of {log}:\n{log_tail(log)}"
    )
    text = stdout_log.read_text(encoding="utf-8")
    summary, _ = json.JSONDecoder().raw_decode(text, text.rfind("\n{\n") + 1)
    return summary


def port_open(port: int) -> bool:
    """Return whether something accepts TCP connections on 127.0.0.1:``port``."""
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex((LOOPBACK, port)) == 0


def master_state(web_port: int) -> dict[str, Any]:
    """Return the standalone master's state from its web UI's JSON endpoint."""
    with urllib.request.urlopen(f"http://{LOOPBACK}:{web_port}/json/", timeout=5) as response:
        return json.load(response)


def alive_workers(web_port: int) -> int:
    """Return how many workers the master lists as ALIVE, or 0 while its web UI is not up."""
    try:
        state = master_state(web_port)
    except OSError:
        return 0
    return sum(1 for worker in state.get("workers", []) if worker.get("state") == "ALIVE")


# --- the two runs --------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Run the job on a standalone cluster and through Spark Connect at the same time; stop every server.

    Return, for "standalone" and "connect", the folder that contains one Delta table
    per source table, the command's JSON summary and the config file. "standalone"
    also has the master's state after the run.
    """
    folder = tmp_path_factory.mktemp("cluster")
    source = write_small_bank(folder / "source")
    master_port, master_web, worker_web, connect_port = free_port(), free_port(), free_port(), free_port()
    master_url = f"spark://{LOOPBACK}:{master_port}"
    connect_url = f"sc://{LOOPBACK}:{connect_port}"

    master_command = [
        str(SPARK_CLASS), "org.apache.spark.deploy.master.Master",
        "--host", LOOPBACK, "--port", str(master_port), "--webui-port", str(master_web),
    ]
    worker_command = [
        str(SPARK_CLASS), "org.apache.spark.deploy.worker.Worker",
        "--host", LOOPBACK, "--webui-port", str(worker_web), "--cores", "1", "--memory", "1500m",
        "--work-dir", str(folder / "worker"), master_url,
    ]
    connect_settings = {
        **SPARK_SETTINGS,
        **DELTA_SETTINGS,
        "spark.connect.grpc.binding.address": LOOPBACK,
        "spark.connect.grpc.binding.port": str(connect_port),
        "spark.sql.warehouse.dir": str(folder / "warehouse"),
    }
    connect_command = [
        str(SPARK_SUBMIT), "--class", "org.apache.spark.sql.connect.service.SparkConnectServer",
        "--name", "synthspark-connect-test", "--master", "local[2]",
        *delta_jar_arguments(), *conf_arguments(connect_settings),
    ]

    # spark-submit: CSV sources, Delta tables under a path. get_spark adds the Delta settings.
    standalone_output = folder / "standalone"
    standalone_config = write_config(folder, cluster_config(source, standalone_output))
    submit_settings = {
        **SPARK_SETTINGS,
        "spark.executor.memory": "1g",
        "spark.cores.max": "1",
        "spark.pyspark.python": sys.executable,
    }
    submit_command = [
        str(SPARK_SUBMIT), "--master", master_url, "--name", STANDALONE_APP,
        *delta_jar_arguments(), *conf_arguments(submit_settings),
        str(REPO / "jobs" / "synthspark_job.py"), "run", str(standalone_config),
        "--seed", str(SEED), "--scale", str(SCALE), "--no-tracking",
    ]

    # Spark Connect: catalog sources, managed tables in OUTPUT_SCHEMA (stored under connect_output).
    connect_output = folder / "connect"
    connect_config = cluster_config(source, folder / "unused")
    for table, spec in connect_config["tables"].items():
        spec["source"] = {"table": f"spark_catalog.cluster_source.{table}"}
    (folder / "connect-config").mkdir()
    connect_config_file = write_config(folder / "connect-config", connect_config)
    setup_command = [sys.executable, "-c", CATALOG_SETUP, connect_url, str(source), str(connect_output), *TABLES]
    client_command = [
        sys.executable, "-m", "synthspark.cli", "run", str(connect_config_file), "--master", connect_url,
        "--catalog-schema", OUTPUT_SCHEMA, "--model", str(folder / "connect-model"),
        "--seed", str(SEED), "--scale", str(SCALE),
    ]

    logs = folder / "logs"
    logs.mkdir()
    with ExitStack() as servers:
        master = servers.enter_context(server(master_command, logs / "master.log", folder))
        connect = servers.enter_context(server(connect_command, logs / "connect-server.log", folder))
        wait_until(lambda: port_open(master_port) and port_open(master_web), master, logs / "master.log", "master")
        worker = servers.enter_context(server(worker_command, logs / "worker.log", folder))
        wait_until(lambda: alive_workers(master_web) == 1, worker, logs / "worker.log", "worker")
        submit = servers.enter_context(server(submit_command, logs / "submit.log", folder))

        wait_until(lambda: port_open(connect_port), connect, logs / "connect-server.log", "Spark Connect server")
        setup = subprocess.run(
            setup_command, capture_output=True, text=True, cwd=folder, env=spark_env(),
            timeout=SERVER_START_TIMEOUT, check=False,
        )
        assert setup.returncode == 0, f"catalog set-up through Spark Connect failed:\n{setup.stderr[-3000:]}"
        client = servers.enter_context(server(client_command, logs / "client.log", folder))

        deadline = time.monotonic() + RUN_TIMEOUT
        connect_summary = finish(client, logs / "client.log", deadline)
        standalone_summary = finish(submit, logs / "submit.log", deadline)
        state = master_state(master_web)
    return {
        "standalone": {
            "output": standalone_output, "summary": standalone_summary, "config": standalone_config, "master": state,
        },
        "connect": {"output": connect_output, "summary": connect_summary, "config": connect_config_file},
    }


# --- checks --------------------------------------------------------------------------


def read_output(spark: SparkSession, output: Path) -> dict[str, DataFrame]:
    """Read every written Delta table under ``output``."""
    return {table: spark.read.format("delta").load(str(output / table)) for table in TABLES}


def assert_valid_database(spark: SparkSession, run: dict[str, Any]) -> None:
    """Check row counts against the run's summary, unique primary keys and resolving foreign keys."""
    config = load_config(run["config"])
    tables = read_output(spark, run["output"])
    assert run["summary"]["rows"]["customer"] == round(SOURCE_CUSTOMERS * SCALE)
    for table, frame in tables.items():
        rows = frame.count()
        assert rows > 0, f"{table} is empty"
        assert rows == run["summary"]["rows"][table], f"{table}: {rows} rows written, the summary says otherwise"
        key = config.tables[table].primary_key
        duplicates = frame.groupBy(*key).count().where(F.col("count") > 1).count()
        assert duplicates == 0, f"{table}: {duplicates} duplicate primary keys {key}"
        null_keys = frame.where(" OR ".join(f"{column} IS NULL" for column in key)).count()
        assert null_keys == 0, f"{table}: {null_keys} null primary keys"
        for fk in config.tables[table].foreign_keys:
            parent_columns = fk.parent_columns or config.tables[fk.parent].primary_key
            parents = tables[fk.parent].select(*[F.col(p).alias(c) for p, c in zip(parent_columns, fk.columns)])
            orphans = frame.select(*fk.columns).dropna().join(parents, on=fk.columns, how="left_anti").count()
            assert orphans == 0, f"{table}.{fk.columns} -> {fk.parent}: {orphans} keys without a parent"


# --- tests ---------------------------------------------------------------------------


def test_standalone_submit_runs_on_master(spark: SparkSession, cluster_runs: dict[str, dict[str, Any]]) -> None:
    run = cluster_runs["standalone"]
    completed = [app["name"] for app in run["master"]["completedapps"]]
    assert completed == [STANDALONE_APP], f"expected the job, and only it, on the master; it lists {completed}"
    assert run["summary"]["scores"]["foreign_key_validity"] == 1.0
    assert_valid_database(spark, run)


def test_connect_run_with_catalog_names(spark: SparkSession, cluster_runs: dict[str, dict[str, Any]]) -> None:
    run = cluster_runs["connect"]
    assert run["summary"]["output"] == OUTPUT_SCHEMA
    assert run["summary"]["run_id"], "the Connect run logged no MLflow run"
    assert run["summary"]["scores"]["primary_key_uniqueness"] == 1.0
    assert_valid_database(spark, run)


def test_connect_output_equals_classic(spark: SparkSession, cluster_runs: dict[str, dict[str, Any]]) -> None:
    # spark-submit uses the classic PySpark API, so equal tables show that a Connect client,
    # reading catalog tables, builds the same data from the same seed.
    assert cluster_runs["connect"]["summary"]["rows"] == cluster_runs["standalone"]["summary"]["rows"]
    connect = read_output(spark, cluster_runs["connect"]["output"])
    classic = read_output(spark, cluster_runs["standalone"]["output"])
    for table in TABLES:
        assert connect[table].schema == classic[table].schema, f"{table}: schemas differ"
        assert connect[table].exceptAll(classic[table]).count() == 0, f"{table}: rows only in the Connect run"
        assert classic[table].exceptAll(connect[table]).count() == 0, f"{table}: rows only in the classic run"
