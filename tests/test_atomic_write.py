"""A run that is killed or fails part-way leaves the published output exactly as it was; a rerun succeeds.

The end-to-end test runs the ``synthspark`` command line with real Spark and
Delta on a three-table slice of the bank database. The run that it kills with
SIGKILL is a subprocess with a JVM of its own. The other runs call the command
line in this process on the test session's Spark, which saves starting a JVM
for each of them. The other tests build the publish journal's intermediate
states on plain files.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from pyspark.errors import IllegalArgumentException
from pyspark.sql import SparkSession

from synthspark.cli import main
from synthspark.config import OutputSpec
from synthspark.errors import OutputError
from synthspark.publish import JOURNAL_FILE, STAGING_DIR, Staging, lock_output, recover
from tests.bank import bank_config, write_bank
from tests.conftest import write_csv

TABLES = ["branch", "customer", "account"]
COLUMNS = {
    "branch": ["branch_id", "region"],
    "customer": ["customer_id", "branch_id", "segment"],
    "account": ["account_id", "customer_id", "balance"],
}
# Generous bounds for a loaded 2-core machine, where one run can take minutes.
RUN_TIMEOUT = 900.0
POLL_SECONDS = 0.05


def _config_file(tmp_path: Path) -> Path:
    """Write a config for three bank tables with two or three columns each, to keep each run short."""
    source = write_bank(tmp_path / "src")
    config = bank_config(source, tmp_path / "unused", tracking={"enabled": False})
    config["tables"] = {name: config["tables"][name] for name in TABLES}
    for name, columns in COLUMNS.items():
        with open(source / f"{name}.csv", encoding="utf-8", newline="") as handle:
            rows = list(csv.DictReader(handle))
        write_csv(source, f"{name}.csv", columns, [tuple(row[c] for c in columns) for row in rows])
        spec = config["tables"][name]
        spec["columns"] = {column: spec["columns"][column] for column in columns}
    path = tmp_path / "bank.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def _arguments(command: str, config_file: Path, output: Path, seed: int) -> list[str]:
    """Return the ``synthspark`` command-line arguments of one run."""
    return [command, str(config_file), "--output", str(output), "--seed", str(seed), "--mode", "overwrite",
            "--no-tracking"]


def _subprocess_command(command: str, config_file: Path, output: Path, seed: int) -> list[str]:
    """Return the command that runs ``synthspark`` in a new Python process, which starts its own local Spark."""
    settings = ["spark.sql.shuffle.partitions=2", "spark.default.parallelism=2", "spark.ui.enabled=false"]
    arguments = [sys.executable, "-m", "synthspark.cli", *_arguments(command, config_file, output, seed),
                 "--master", "local[2]"]
    for setting in settings:
        arguments += ["--conf", setting]
    return arguments


def _snapshot(output: Path) -> dict[str, str]:
    """Return every published file and folder under ``output`` (staging excluded) with a SHA-256 of its bytes."""
    snapshot = {}
    for folder, subfolders, files in os.walk(output):
        relative = Path(folder).relative_to(output)
        if relative == Path("."):
            # Pruning here stops os.walk from entering the staging area.
            subfolders[:] = [name for name in subfolders if name != STAGING_DIR]
        for name in subfolders:
            snapshot[str(relative / name) + "/"] = "folder"
        for name in files:
            snapshot[str(relative / name)] = hashlib.sha256((Path(folder) / name).read_bytes()).hexdigest()
    return snapshot


def _delta_rows(table: Path) -> int:
    """Return the row count of a Delta table from the numRecords statistics of its log (no checkpoints)."""
    rows = 0
    for commit in sorted((table / "_delta_log").glob("*.json")):
        for line in commit.read_text(encoding="utf-8").splitlines():
            action = json.loads(line)
            if "add" in action:
                rows += json.loads(action["add"]["stats"])["numRecords"]
            assert "remove" not in action, f"{table} should be a fresh table with one commit"
    return rows


def _wait_for_staged_table(process: subprocess.Popen[str], output: Path, log: Path) -> Path:
    """Poll until the run's first staged table folder appears; return it."""
    deadline = time.monotonic() + RUN_TIMEOUT
    while time.monotonic() < deadline:
        staged = [path for table in TABLES for path in output.glob(f"{STAGING_DIR}/*/new/{table}")]
        if staged:
            return staged[0]
        if process.poll() is not None:
            pytest.fail(f"the run ended (exit {process.returncode}) before it staged a table:\n"
                        f"{log.read_text(encoding='utf-8')[-3000:]}")
        time.sleep(POLL_SECONDS)
    pytest.fail(f"no staged table appeared within {RUN_TIMEOUT:.0f} s")


def test_killed_and_failed_runs_keep_output(
    spark: SparkSession, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    config_file = _config_file(tmp_path)
    output = tmp_path / "out"
    caplog.set_level(logging.INFO, logger="synthspark")

    assert main(_arguments("run", config_file, output, 1)) == 0
    published = _snapshot(output)
    for table in TABLES:
        assert f"{table}/_delta_log/" in published
    assert "_synthspark_model/model.json" in published
    assert "_synthspark_report.json" in published
    assert not (output / STAGING_DIR).exists(), "a finished run should delete its staging area"

    # Kill a run with another seed while it writes its staged tables. It generates from the
    # published model, so it reaches its first write sooner than a run that fits first.
    killed_log = tmp_path / "killed.log"
    with open(killed_log, "w", encoding="utf-8") as stderr:
        process = subprocess.Popen(_subprocess_command("generate", config_file, output, 2),
                                   stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True)
        try:
            staged = _wait_for_staged_table(process, output, killed_log)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=120)
    assert process.returncode == -signal.SIGKILL
    assert staged.exists(), "the killed run should leave its staging area for the next run to clean"
    assert _snapshot(output) == published, "a killed run changed the published output"

    # A run that fails while writing: Delta rejects the default table property, so the first staged write raises.
    caplog.clear()
    bad_property = "spark.databricks.delta.properties.defaults.appendOnly"
    try:
        with pytest.raises(IllegalArgumentException, match='"notabool"') as failure:
            main([*_arguments("generate", config_file, output, 3), "--conf", f"{bad_property}=notabool"])
    finally:
        spark.conf.unset(bad_property)
    assert "write branch: start" in caplog.text, f"the run should fail while writing, not before: {failure.value}"
    assert "stopped before it published" in caplog.text, "the failed run should first clean the killed run's staging"
    assert _snapshot(output) == published, "a failed run changed the published output"
    assert not (output / STAGING_DIR).exists(), "a failed run should delete its staging area"

    capsys.readouterr()
    assert main(_arguments("run", config_file, output, 2)) == 0
    summary = json.loads(capsys.readouterr().out)
    replaced = _snapshot(output)
    assert not (output / STAGING_DIR).exists()
    for table in TABLES:
        files = {path for path in replaced if path.startswith(f"{table}/")}
        assert files != {path for path in published if path.startswith(f"{table}/")}, f"{table} was not replaced"
        assert _delta_rows(output / table) == summary["rows"][table]
    report = json.loads((output / "_synthspark_report.json").read_text(encoding="utf-8"))
    assert report["overall"]["foreign_key_validity"] == 1.0
    assert replaced["_synthspark_report.json"] != published["_synthspark_report.json"]
    model = json.loads((output / "_synthspark_model" / "model.json").read_text(encoding="utf-8"))
    assert model["config"]["generation"]["seed"] == 2, "the rerun should publish the model it fitted"


def _publish_state(output: Path, steps: int) -> tuple[dict[str, str], Path]:
    """Stage a new output of plain files and make the first ``steps`` renames of publishing it.

    With ``steps`` -1 the whole publish runs. The published output contains
    tables a and b and a report. The run stages new a and b and no report, so
    publishing also moves the report aside. Returns the original snapshot and the
    run folder.
    """
    for name in ("a", "b"):
        (output / name).mkdir(parents=True)
        (output / name / "part-0").write_text(f"old {name}", encoding="utf-8")
    (output / "_synthspark_report.json").write_text("old report", encoding="utf-8")
    original = _snapshot(output)
    staging = Staging(None, OutputSpec(path=str(output)), ["a", "b"], "run-1")  # type: ignore[arg-type]
    assert staging.run_dir is not None
    run_dir = Path(staging.run_dir)
    for name in ("a", "b"):
        (run_dir / "new" / name).mkdir(parents=True)
        (run_dir / "new" / name / "part-0").write_text(f"new {name}", encoding="utf-8")
    if steps < 0:
        staging.publish()
        staging.close()
        return original, run_dir
    # The renames that publishing makes, in its order, after it writes the journal.
    entries = [{"name": "a", "staged": True}, {"name": "b", "staged": True},
               {"name": "_synthspark_report.json", "staged": False}]
    (run_dir / JOURNAL_FILE).write_text(json.dumps({"entries": entries}), encoding="utf-8")
    (run_dir / "old").mkdir()
    renames = [(output / "a", run_dir / "old" / "a"), (run_dir / "new" / "a", output / "a"),
               (output / "b", run_dir / "old" / "b"), (run_dir / "new" / "b", output / "b"),
               (output / "_synthspark_report.json", run_dir / "old" / "_synthspark_report.json")]
    for source, destination in renames[:steps]:
        os.rename(source, destination)
    return original, run_dir


@pytest.mark.parametrize("steps", range(6))
def test_recover_undoes_interrupted_publish(tmp_path: Path, steps: int) -> None:
    output = tmp_path / "out"
    original, run_dir = _publish_state(output, steps)
    lock = lock_output(str(output))
    try:
        assert recover(str(output)) == ["run-1"]
    finally:
        os.close(lock)
    assert _snapshot(output) == original
    assert not run_dir.exists()
    assert not (output / STAGING_DIR).exists()


def test_publish_replaces_tables_and_drops_stale_report(tmp_path: Path) -> None:
    output = tmp_path / "out"
    _publish_state(output, -1)
    assert (output / "a" / "part-0").read_text(encoding="utf-8") == "new a"
    assert (output / "b" / "part-0").read_text(encoding="utf-8") == "new b"
    assert not (output / "_synthspark_report.json").exists()
    assert not (output / STAGING_DIR).exists()


def test_recover_deletes_staging_without_journal(tmp_path: Path) -> None:
    output = tmp_path / "out"
    (output / "a").mkdir(parents=True)
    (output / "a" / "part-0").write_text("old a", encoding="utf-8")
    leftover = output / STAGING_DIR / "run-0" / "new" / "a"
    leftover.mkdir(parents=True)
    (leftover / "part-0").write_text("half written", encoding="utf-8")
    original = _snapshot(output)
    assert recover(str(output)) == ["run-0"]
    assert _snapshot(output) == original
    assert not (output / STAGING_DIR).exists()


def test_second_writer_is_rejected(tmp_path: Path) -> None:
    lock = lock_output(str(tmp_path))
    try:
        with pytest.raises(OutputError, match="another synthspark run is writing"):
            lock_output(str(tmp_path))
    finally:
        os.close(lock)
    os.close(lock_output(str(tmp_path)))
