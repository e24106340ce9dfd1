"""Stage a run's output, check the staged copy, then publish it, so that a failed or killed run changes nothing.

A run writes every table to a staging area first, the checks read the staged
tables, and only a run whose checks passed publishes. How it publishes depends
on where the output lives.

Local path: everything the run publishes (the tables, the fitted model when it
lives under the output, the report) is staged in
``OUTPUT/_synthspark_staging/<run id>/new``. Publishing writes a journal
(``publish.json``) that lists these entries, then renames each published entry
into ``.../old`` and the staged entry into its place. Deleting the journal is the
commit point. A run that stops before the journal exists has not changed the
published output. A run killed during the renames leaves the journal behind,
and the next run, or ``python -m synthspark.publish OUTPUT``, moves every entry
back before it does anything else. Only one run at a time may write an output,
because each run takes an exclusive ``flock`` on the output directory.

Catalog schema, or a path with a URI scheme (HDFS, object stores): the tables
are staged as ``_synthspark_staging_<run id>_<table>`` in the same schema, or
under ``OUTPUT/_synthspark_staging/<run id>``, and then copied over the
published tables with one Delta commit per table. A failure restores the tables
already replaced. A run killed during the copies can leave some tables new and
others old, and nothing repairs that automatically; the versions to restore are
logged before the first copy.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import logging
import os
import shutil
import sys
import time
import uuid
from collections.abc import Sequence
from typing import Any

from pyspark.sql import DataFrame, SparkSession

from synthspark.config import OutputSpec
from synthspark.errors import OutputError
from synthspark.output import (
    MODEL_SUBDIR,
    REPORT_FILE,
    Target,
    check_targets,
    delta_version,
    is_local_path,
    local_path,
    read_table,
    restore_table,
    table_exists,
    targets,
    write_table,
)

logger = logging.getLogger(__name__)

STAGING_DIR = "_synthspark_staging"
JOURNAL_FILE = "publish.json"
CATALOG_STAGING_PREFIX = "_synthspark_staging_"


class Staging:
    """A run's staging area: where its tables are written and checked before :meth:`publish`.

    Create it with :func:`open_staging` and always :meth:`close` it. Closing an
    unpublished staging area deletes it and leaves the published output as it was.
    """

    def __init__(
        self,
        spark: SparkSession,
        output: OutputSpec,
        tables: list[str],
        run_id: str,
        *,
        lock: int | None = None,
        created_output: bool = False,
    ):
        self.spark = spark
        self.output = output
        self.tables = list(tables)
        self.run_id = run_id
        self.published = False
        self._lock = lock
        self._created_output = created_output
        if output.catalog_schema is not None:
            self._output_dir = None
            self.run_dir = None
            self.staged = {
                t: Target(t, None, f"{output.catalog_schema}.`{CATALOG_STAGING_PREFIX}{run_id}_{t}`") for t in tables
            }
            return
        assert output.path is not None
        if is_local_path(output.path):
            self._output_dir = local_path(output.path)
            self.run_dir = os.path.join(self._output_dir, STAGING_DIR, run_id)
            new = os.path.join(self.run_dir, "new")
        else:
            self._output_dir = None
            self.run_dir = f"{output.path.rstrip('/')}/{STAGING_DIR}/{run_id}"
            new = self.run_dir
        self.staged = {t: Target(t, f"{new}/{t}", None) for t in tables}

    @property
    def publishes_by_rename(self) -> bool:
        """Whether the output is a local directory, published by renames that a later run can undo."""
        return self._output_dir is not None

    def model_dir(self, model_dir: str) -> str:
        """Return where fit saves the model: staged when ``model_dir`` is the default one under a local output."""
        if self._output_dir is None or self.run_dir is None:
            return model_dir
        if os.path.abspath(model_dir) != os.path.abspath(os.path.join(self._output_dir, MODEL_SUBDIR)):
            return model_dir
        return os.path.join(self.run_dir, "new", MODEL_SUBDIR)

    def write(self, tables: dict[str, DataFrame]) -> dict[str, float]:
        """Write every table to the staging area and return the seconds taken per table."""
        seconds: dict[str, float] = {}
        for table in self.tables:
            target = self.staged[table]
            started = time.monotonic()
            logger.info("write %s: start -> %s", table, target.describe())
            write_table(tables[table], self.output.format, target, replace=False)
            seconds[table] = time.monotonic() - started
            logger.info("write %s: done, %.1f s", table, seconds[table])
        return seconds

    def read(self) -> dict[str, DataFrame]:
        """Read the staged tables back, for the checks that must pass before publishing."""
        return {table: read_table(self.spark, self.output.format, target) for table, target in self.staged.items()}

    def save_report(self, report: dict[str, Any]) -> None:
        """Stage the evaluation report, so that it is published with the tables it describes (local output only)."""
        if self.run_dir is None or self._output_dir is None:
            return
        new = os.path.join(self.run_dir, "new")
        os.makedirs(new, exist_ok=True)
        with open(os.path.join(new, REPORT_FILE), "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=1)

    def publish(self) -> None:
        """Replace the published output with the staged one. On failure, put the published output back and raise."""
        started = time.monotonic()
        if self.publishes_by_rename:
            self._publish_by_rename()
        else:
            self._publish_by_copy()
        self.published = True
        logger.info("publish: done, %d tables, %.1f s", len(self.tables), time.monotonic() - started)

    def _publish_by_rename(self) -> None:
        assert self._output_dir is not None and self.run_dir is not None
        new = os.path.join(self.run_dir, "new")
        old = os.path.join(self.run_dir, "old")
        entries = []
        for name in [*self.tables, MODEL_SUBDIR, REPORT_FILE]:
            staged = os.path.lexists(os.path.join(new, name))
            published = os.path.lexists(os.path.join(self._output_dir, name))
            # A model that was not staged is the one this run read; it stays. A published
            # report that was not staged described the replaced tables, so it goes.
            if name == MODEL_SUBDIR and not staged:
                continue
            if staged or published:
                entries.append({"name": name, "staged": staged})
        _write_journal(self.run_dir, entries)
        os.makedirs(old, exist_ok=True)
        try:
            for entry in entries:
                published = os.path.join(self._output_dir, entry["name"])
                if os.path.lexists(published):
                    os.rename(published, os.path.join(old, entry["name"]))
                if entry["staged"]:
                    os.rename(os.path.join(new, entry["name"]), published)
        except BaseException:
            _roll_back(self._output_dir, self.run_dir, entries)
            logger.error("publish failed; the output at %s is back as it was before this run", self._output_dir)
            raise
        os.remove(os.path.join(self.run_dir, JOURNAL_FILE))
        _fsync_directory(self.run_dir)

    def _publish_by_copy(self) -> None:
        # NOTE: no test runs this path (catalog schemas and remote paths). A rename
        # could publish HDFS output like local output, because HDFS renames are atomic.
        planned = targets(self.output, self.tables)
        before: dict[str, tuple[bool, int | None]] = {}
        for table, target in planned.items():
            existed = table_exists(self.spark, target)
            version = delta_version(self.spark, target) if existed and self.output.format == "delta" else None
            before[table] = (existed, version)
        previous = ", ".join(
            f"{planned[t].describe()} version {v}" for t, (existed, v) in before.items() if existed and v is not None
        )
        if previous:
            logger.info(
                "publish: replacing tables one Delta commit at a time. If this run stops before 'publish: done', "
                "restore each table with RESTORE TABLE <table> TO VERSION AS OF <version>: %s", previous,
            )
        done: list[str] = []
        try:
            for table in self.tables:
                done.append(table)
                staged = read_table(self.spark, self.output.format, self.staged[table])
                write_table(staged, self.output.format, planned[table], replace=True)
        except BaseException:
            for table in reversed(done):
                existed, version = before[table]
                restore_table(self.spark, planned[table], version, existed, self.output.format)
            raise

    def close(self) -> None:
        """Delete the staging area and release the output's lock. Tables that were not published are lost."""
        try:
            if self.publishes_by_rename:
                self._close_local()
            elif self.output.catalog_schema is not None:
                for target in self.staged.values():
                    try:
                        self.spark.sql(f"DROP TABLE IF EXISTS {target.name}")
                    except Exception:  # noqa: BLE001 - cleanup must not hide the run's own error
                        logger.warning("could not drop staging table %s; drop it by hand", target.name, exc_info=True)
            else:
                assert self.run_dir is not None
                _delete_remote(self.spark, self.run_dir)
        finally:
            if self._lock is not None:
                os.close(self._lock)
                self._lock = None

    def _close_local(self) -> None:
        assert self._output_dir is not None and self.run_dir is not None
        if not self.published and os.path.exists(os.path.join(self.run_dir, JOURNAL_FILE)):
            # Only an interrupted rollback leaves the journal here; finish it before deleting anything.
            recover(self._output_dir)
        shutil.rmtree(self.run_dir, ignore_errors=True)
        _remove_empty_directory(os.path.join(self._output_dir, STAGING_DIR))
        if self._created_output:
            _remove_empty_directory(self._output_dir)


def open_staging(spark: SparkSession, output: OutputSpec, tables: list[str]) -> Staging:
    """Open a staging area for a run that writes ``tables``.

    For a local output path this locks the output directory, undoes what killed
    runs left (see :func:`recover`) and then checks mode 'error', all without a
    Spark job. Raises :class:`OutputError` when mode 'error' finds existing
    output or another run has the lock.
    """
    # Letters, digits and underscores only, so that it is also valid in a catalog table name.
    run_id = time.strftime("%Y%m%d_%H%M%S_") + uuid.uuid4().hex[:8]
    planned = targets(output, tables)
    if output.path is None or not is_local_path(output.path):
        check_targets(spark, output, planned)
        if output.catalog_schema is not None:
            _warn_leftover_catalog_tables(spark, output.catalog_schema)
        return Staging(spark, output, tables, run_id)

    output_dir = local_path(output.path)
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise OutputError(f"output path {output_dir} exists and is not a directory; choose another --output")
    created = not os.path.exists(output_dir)
    os.makedirs(output_dir, exist_ok=True)
    lock = lock_output(output_dir)
    try:
        recover(output_dir)
        check_targets(spark, output, planned)
    except BaseException:
        os.close(lock)
        if created:
            _remove_empty_directory(output_dir)
        raise
    return Staging(spark, output, tables, run_id, lock=lock, created_output=created)


def lock_output(output_dir: str) -> int:
    """Take an exclusive ``flock`` on ``output_dir`` and return the open descriptor that keeps it.

    The kernel releases the lock when the process ends, so a killed run never
    leaves it behind. Raises :class:`OutputError` when another process has it.
    """
    # NOTE: flock on NFS and other network file systems depends on the client and
    # may not exclude a process on another machine.
    descriptor = os.open(output_dir, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        raise OutputError(
            f"another synthspark run is writing to {output_dir}; wait until it finishes, then run again"
        ) from None
    return descriptor


def recover(output_dir: str) -> list[str]:
    """Undo the unfinished publishes of stopped runs under ``output_dir`` and delete their staging areas.

    A staging area with a journal belongs to a run that stopped while renaming:
    every entry it moved goes back, so the output is again exactly what was
    published before that run. A staging area without a journal belongs to a run
    that stopped before publishing, or after its commit point, and is deleted.
    The caller must hold :func:`lock_output`. Returns the run ids cleaned up.
    """
    root = os.path.join(output_dir, STAGING_DIR)
    if not os.path.isdir(root):
        return []
    cleaned = []
    for run_id in sorted(os.listdir(root)):
        run_dir = os.path.join(root, run_id)
        if not os.path.isdir(run_dir):
            continue
        journal = os.path.join(run_dir, JOURNAL_FILE)
        if os.path.exists(journal):
            with open(journal, encoding="utf-8") as handle:
                entries = json.load(handle)["entries"]
            _roll_back(output_dir, run_dir, entries)
            logger.warning(
                "run %s stopped while publishing to %s; put back %d entries as they were before it",
                run_id, output_dir, len(entries),
            )
        else:
            logger.warning("deleting the staging area of run %s, which stopped before it published", run_id)
        shutil.rmtree(run_dir)
        cleaned.append(run_id)
    _remove_empty_directory(root)
    return cleaned


def _roll_back(output_dir: str, run_dir: str, entries: list[dict[str, Any]]) -> None:
    """Move every entry back to its state before publishing, then delete the journal.

    Safe to repeat after an interruption: for each entry, a missing staged copy
    means the published one is this run's, and a copy in ``old`` is the original.
    """
    new = os.path.join(run_dir, "new")
    old = os.path.join(run_dir, "old")
    for entry in reversed(entries):
        name = entry["name"]
        published = os.path.join(output_dir, name)
        if entry["staged"] and not os.path.lexists(os.path.join(new, name)) and os.path.lexists(published):
            os.rename(published, os.path.join(new, name))
        if os.path.lexists(os.path.join(old, name)):
            os.rename(os.path.join(old, name), published)
    os.remove(os.path.join(run_dir, JOURNAL_FILE))
    _fsync_directory(run_dir)


def _write_journal(run_dir: str, entries: list[dict[str, Any]]) -> None:
    """Write the journal atomically (temporary file, fsync, rename), so that it is either whole or absent."""
    temporary = os.path.join(run_dir, JOURNAL_FILE + ".tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump({"entries": entries}, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, os.path.join(run_dir, JOURNAL_FILE))
    _fsync_directory(run_dir)


def _fsync_directory(path: str) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _remove_empty_directory(path: str) -> None:
    try:
        os.rmdir(path)
    except OSError:
        pass  # not empty, or already gone


def _delete_remote(spark: SparkSession, path: str) -> None:
    """Delete a staging folder on remote storage through the JVM's Hadoop FileSystem, when there is a JVM."""
    try:
        context = spark.sparkContext
        hadoop_path = context._jvm.org.apache.hadoop.fs.Path(path)  # type: ignore[union-attr]
        hadoop_path.getFileSystem(context._jsc.hadoopConfiguration()).delete(hadoop_path, True)  # type: ignore[union-attr]
    except Exception:  # noqa: BLE001 - Spark Connect has no JVM access; cleanup must not hide the run's error
        logger.warning("could not delete the staging folder %s; delete it by hand", path, exc_info=True)


def _warn_leftover_catalog_tables(spark: SparkSession, schema: str) -> None:
    """Log staging tables left in ``schema``. They come from runs that stopped, or from a run still writing."""
    rows = spark.sql(f"SHOW TABLES IN {schema} LIKE '{CATALOG_STAGING_PREFIX}*'").collect()
    for row in rows:
        logger.warning(
            "staging table %s.%s is left from a run that stopped, or belongs to a run still writing; "
            "drop it when no run is writing to %s", schema, row["tableName"], schema,
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Undo a stopped run's unfinished publish under a local output directory; return the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m synthspark.publish",
        description="Put a local synthspark output back as it was before a run that was killed while publishing, "
        "and delete staging areas that stopped runs left. Every synthspark run does this itself before it starts.",
    )
    parser.add_argument("output", help="output directory, the --output of the stopped run")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    output_dir = local_path(args.output)
    if not os.path.isdir(output_dir):
        logger.error("output directory %s not found", output_dir)
        return 2
    try:
        lock = lock_output(output_dir)
    except OutputError as error:
        logger.error("%s", error)
        return 1
    try:
        cleaned = recover(output_dir)
    finally:
        os.close(lock)
    print(json.dumps({"output": output_dir, "runs_cleaned": cleaned}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
