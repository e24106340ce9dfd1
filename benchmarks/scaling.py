"""Fit and generate time and driver peak memory of synthspark as the data grows (1x, 10x, 100x berka).

A model fitted on the real berka tables generates berka at each scale into Delta tables; a model
is then fitted on those tables. So the k-times source is synthspark's own output, and both steps
handle k times the rows. Every step runs in a fresh process, so its peak memory is its own: the
resident set size (RSS) of the Python driver and of the driver JVM (which in local mode also runs
the executors), sampled every 0.2 s.

Run: .venv/bin/python benchmarks/scaling.py --sizes 1 10 100
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import yaml

import _common

logger = logging.getLogger("benchmarks.scaling")

BERKA_CONF = _common.REPO / "conf" / "berka.yaml"
SEED = 7


# ---------------------------------------------------------------- workers (one process each)


def _berka_config(args: argparse.Namespace, source: dict[str, Any] | None, output: Path, scale: float) -> Any:
    """Return conf/berka.yaml with tracking off, output overwritten, and optionally other sources."""
    from synthspark.config import parse_config

    with open(BERKA_CONF, encoding="utf-8") as handle:
        data = yaml.safe_load(handle)
    data["source_root"] = str(args.datasets_dir / "berka")
    if source is not None:
        for table, spec in data["tables"].items():
            spec["source"] = source[table]
    data["generation"] = {"scale": scale, "seed": SEED}
    data["output"] = {"format": "delta", "path": str(output), "mode": "overwrite"}
    data["tracking"] = {"enabled": False}
    return parse_config(data, origin="scaling benchmark")


def run_step(args: argparse.Namespace) -> dict[str, Any]:
    """Run one step (fit-real, generate or fit) at one size; return seconds, rows and memory peaks."""
    from synthspark.pipeline import run_pipeline

    scratch = args.scratch
    folder = scratch / f"x{args.size:g}"
    real_model = args.model or scratch / "model-real"
    if args.step == "fit-real":
        config = _berka_config(args, None, folder / "unused", 1.0)
        stages, model_dir = ("fit",), real_model
    elif args.step == "generate":
        shutil.rmtree(folder / "tables", ignore_errors=True)
        config = _berka_config(args, None, folder / "tables", args.size)
        stages, model_dir = ("generate",), real_model
    else:
        tables = {name: {"path": str(folder / "tables" / name), "format": "delta"} for name in _table_names()}
        config = _berka_config(args, tables, folder / "unused", 1.0)
        stages, model_dir = ("fit",), folder / "model"
    spark = _common.start_spark(args.master, args.driver_memory, args.shuffle_partitions)
    started = time.monotonic()
    with _common.PeakMemorySampler(_common.jvm_pid(spark)) as sampler:
        result = run_pipeline(spark, config, model_dir=str(model_dir), stages=stages)
    seconds = time.monotonic() - started
    rows = dict(result.rows) if result.rows else {name: table.rows for name, table in result.model.tables.items()}
    spark.stop()
    return {
        "seconds": seconds,
        "stage_seconds": result.seconds,
        "rows": rows,
        "peak_python_mib": sampler.peaks.python_mib,
        "peak_jvm_mib": sampler.peaks.jvm_mib,
        "cpu_s": sampler.peaks.python_cpu_s + sampler.peaks.jvm_cpu_s,
    }


def _table_names() -> list[str]:
    with open(BERKA_CONF, encoding="utf-8") as handle:
        return list(yaml.safe_load(handle)["tables"])


def worker_main(args: argparse.Namespace) -> int:
    """Run one step and write its result file; the exit code is 0 even when the step failed."""
    try:
        result = run_step(args)
        result["status"] = "ok"
    except Exception as error:  # noqa: BLE001 - recorded in the report
        logger.error("step %s at %gx failed: %s", args.step, args.size, error)
        result = {"status": "error", "error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()}
    Path(args.result).write_text(json.dumps(result, indent=1), encoding="utf-8")
    return 0


# ---------------------------------------------------------------- orchestration


def collect_results(args: argparse.Namespace) -> dict[str, Any]:
    """Rebuild the measurements from the step result files of an earlier, possibly stopped, run.

    A step without a result file is reported as not run, or as stopped when its log exists.
    """
    logs = args.scratch / "logs"

    def load(step: str, size: float) -> dict[str, Any] | None:
        result_file = logs / f"{step}-x{size:g}.json"
        if result_file.exists():
            return json.loads(result_file.read_text(encoding="utf-8"))
        if (logs / f"{step}-x{size:g}.log").exists():
            return {"status": "stopped"}
        return None

    measured: dict[str, Any] = {"fit-real": load("fit-real", 1) or {"status": "skipped"}, "sizes": {}}
    for size in args.sizes:
        entry = {step: result for step in ("generate", "fit") if (result := load(step, size)) is not None}
        if entry:
            measured["sizes"][size] = entry
    return measured


def run_worker(step: str, size: float, args: argparse.Namespace) -> dict[str, Any]:
    """Run one step in a fresh process with a time limit; a timeout kills its process group (the JVM too)."""
    logs = args.scratch / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    result_file = logs / f"{step}-x{size:g}.json"
    result_file.unlink(missing_ok=True)
    command = [
        sys.executable, str(Path(__file__).resolve()), "--step", step, "--size", f"{size:g}", "--result", str(result_file),
        "--scratch", str(args.scratch), "--datasets-dir", str(args.datasets_dir), *_common.spark_arguments(args),
    ]
    if args.model is not None:
        command += ["--model", str(args.model)]
    logger.info("%s at %gx: start, limit %.0f min", step, size, args.timeout_minutes)
    started = time.monotonic()
    with open(logs / f"{step}-x{size:g}.log", "w", encoding="utf-8") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            process.wait(timeout=args.timeout_minutes * 60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            logger.warning("%s at %gx: timed out after %.0f min", step, size, args.timeout_minutes)
            return {"status": "timeout", "seconds": time.monotonic() - started}
    if not result_file.exists():
        return {"status": "error", "error": f"worker exited with code {process.returncode}; see {logs}"}
    result = json.loads(result_file.read_text(encoding="utf-8"))
    logger.info("%s at %gx: %s, %.1f s", step, size, result["status"], result.get("seconds", 0.0))
    return result


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Fit on the real data once, then generate and fit at each size; stop at the first size that fails."""
    shutil.rmtree(args.scratch, ignore_errors=True)
    if args.model is None:
        measured: dict[str, Any] = {"fit-real": run_worker("fit-real", 1, args), "sizes": {}}
        if measured["fit-real"]["status"] != "ok":
            return measured
    else:
        measured = {"fit-real": {"status": "skipped"}, "sizes": {}}
    for size in args.sizes:
        entry = {"generate": run_worker("generate", size, args)}
        if entry["generate"]["status"] == "ok":
            entry["fit"] = run_worker("fit", size, args)
        measured["sizes"][size] = entry
        # The tables are only needed by this size's fit.
        shutil.rmtree(args.scratch / f"x{size:g}" / "tables", ignore_errors=True)
        if any(step["status"] != "ok" for step in entry.values()):
            break
    return measured


# ---------------------------------------------------------------- report


def _step_cells(result: dict[str, Any] | None, rows: int) -> list[str]:
    if result is None:
        return ["not run", "", "", "", ""]
    if result["status"] == "stopped":
        return ["stopped by hand before it finished", "", "", "", ""]
    if result["status"] == "timeout":
        return [f"timed out after {result['seconds'] / 60:.0f} min", "", "", "", ""]
    if result["status"] != "ok":
        return ["error: " + result["error"].splitlines()[0][:150], "", "", "", ""]
    seconds = result["seconds"]
    return [
        f"{seconds:,.1f}",
        f"{result['cpu_s']:,.1f}",
        f"{seconds / rows * 1e6:,.2f}" if rows else "",
        f"{result['peak_jvm_mib']:,.0f}",
        f"{result['peak_python_mib']:,.0f}",
    ]


def render(measured: dict[str, Any], machine: dict[str, str], args: argparse.Namespace) -> str:
    """Return the report section: one row per size."""
    rows = []
    real = measured["fit-real"]
    if real["status"] == "ok":
        real_rows = sum(real["rows"].values())
        rows.append(["real berka (CSV)", f"{real_rows:,}", "", "", "", "", "", *_step_cells(real, real_rows)])
    for size, entry in measured["sizes"].items():
        generated = entry.get("generate", {"status": "error", "error": "no result"})
        size_rows = sum(generated["rows"].values()) if generated["status"] == "ok" else 0
        rows.append([
            f"{size:g}x", f"{size_rows:,}" if size_rows else "",
            *_step_cells(generated, size_rows), *_step_cells(entry.get("fit"), size_rows),
        ])
    not_run = [size for size in args.sizes if size not in measured["sizes"]]
    notes = []
    if args.from_results:
        logs = sorted((args.scratch / "logs").glob("*.log"), key=lambda path: path.stat().st_mtime)
        if logs:
            first = dt.datetime.fromtimestamp(logs[0].stat().st_mtime, dt.timezone.utc).strftime("%H:%M")
            last = dt.datetime.fromtimestamp(logs[-1].stat().st_mtime, dt.timezone.utc).strftime("%H:%M")
            notes.append(
                f"This table was assembled from the step results of an earlier run, whose steps ended between {first} "
                f"and {last} UTC. The date and load average above are those of the assembly."
            )
    if args.model is not None:
        notes.append(f"The model fitted on the real tables was loaded from `{args.model}`, so its fit is not in the table.")
    if not_run:
        notes.append(f"Not run, because a smaller size failed or timed out: {', '.join(f'{s:g}x' for s in not_run)}.")
    return "\n".join([
        _common.section_header("Scaling with data size (berka)", machine),
        "Each size's source is berka generated by synthspark at that scale (from a model fitted on the real "
        "tables) and written to Delta; the model for the fit column is then fitted on those Delta tables. "
        "*generate* is `run_pipeline(stages=('generate',))`: generating, checking keys and writing Delta. "
        "*fit* is `run_pipeline(stages=('fit',))`: reading and checking the sources, fitting, saving the model. "
        "MLflow tracking is off and Spark start is excluded. µs/row is wall time per row; CPU s is the user "
        "plus system time of the Python process and the JVM, which other jobs on a shared machine inflate less. Each step ran in a fresh process with "
        f"`spark.driver.memory={args.driver_memory}` and a limit of {args.timeout_minutes:.0f} minutes. "
        "Peak RSS is in MiB; the JVM's includes the executors (local mode) and, because the JVM keeps heap "
        "it has claimed, it shows how much of the heap limit a step reached rather than its live data.\n",
        _common.markdown_table(
            ["size", "rows", "generate s", "generate CPU s", "generate µs/row", "generate JVM MiB",
             "generate Python MiB", "fit s", "fit CPU s", "fit µs/row", "fit JVM MiB", "fit Python MiB"],
            rows,
        ),
        "",
        "\n\n".join(notes),
    ])


# ---------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=float, default=[1.0, 10.0, 100.0], help="multiples of berka to run")
    parser.add_argument("--model", type=Path, help="model fitted on the real berka tables to load instead of fitting one")
    parser.add_argument("--timeout-minutes", type=float, default=30.0, help="limit per step, in minutes")
    parser.add_argument("--datasets-dir", type=Path, default=_common.DATASETS, help="folder that contains berka/")
    parser.add_argument("--scratch", type=Path, default=_common.SCRATCH / "scaling", help="output folder, emptied first")
    parser.add_argument(
        "--from-results", action="store_true",
        help="report the step results already in --scratch (of a stopped run) instead of running anything",
    )
    parser.add_argument("--no-report", action="store_true", help="do not update docs/benchmarks.md")
    parser.add_argument("--log-level", default="INFO")
    _common.add_spark_arguments(parser)
    # Internal: run one step in this process.
    parser.add_argument("--step", choices=["fit-real", "generate", "fit"], help=argparse.SUPPRESS)
    parser.add_argument("--size", type=float, default=1.0, help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _common.configure_logging(args.log_level)
    if args.step:
        # The orchestrator has already put the measured code on PYTHONPATH, which this process inherits.
        return worker_main(args)
    code = _common.use_code(args.code)
    machine = _common.machine_description(code)
    measured = collect_results(args) if args.from_results else measure(args)
    (args.scratch / "results.json").write_text(json.dumps(measured, indent=1, default=str), encoding="utf-8")
    section = render(measured, machine, args)
    print(section)
    if not args.no_report:
        _common.update_report("scaling", section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
