"""The pipeline stages as one Python API: fit, generate, evaluate, publish, each tracked in MLflow."""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from pyspark.sql import DataFrame, SparkSession

from synthspark.config import SynthConfig
from synthspark.errors import ConfigError, SynthsparkError
from synthspark.evaluate import evaluate
from synthspark.fit import PreparedSources, fit_prepared, prepare_sources
from synthspark.generate import generate
from synthspark.model import FittedModel
from synthspark.output import MODEL_SUBDIR, REPORT_FILE, read_tables
from synthspark.plan import Plan, build_plan
from synthspark.publish import Staging, open_staging
from synthspark.sources import check_sources
from synthspark.tracking import (
    RunTracker,
    config_params,
    flatten_report,
    metric_key,
    tracked_run,
)

logger = logging.getLogger(__name__)


def default_model_dir(config: SynthConfig) -> str:
    """Return where ``run`` keeps the fitted model: beside the tables under the output path."""
    if config.output.path is None:
        raise ConfigError("output.catalog_schema is set, so pass --model DIR to say where the fitted model goes")
    return os.path.join(config.output.path, MODEL_SUBDIR)


@dataclass
class RunResult:
    """Result of a pipeline run: model, report, row counts, seconds and MLflow run id."""

    model: FittedModel | None = None
    report: dict[str, Any] | None = None
    rows: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    run_id: str | None = None


def _check_model_matches(model: FittedModel, config: SynthConfig) -> None:
    fitted_tables = set(model.tables)
    configured = set(config.tables)
    if fitted_tables != configured:
        raise ConfigError(
            f"the fitted model covers tables {sorted(fitted_tables)} but the config declares {sorted(configured)}; "
            f"fit the model again with this config"
        )


def evaluation_options(config: SynthConfig) -> dict[str, Any]:
    """Return the keyword arguments of :func:`evaluate` that the config's ``evaluation`` section sets."""
    spec = config.evaluation
    return {
        "detection": spec.detection,
        "privacy": spec.privacy,
        "max_hops": spec.max_hops,
        "seed": config.generation.seed,
        "reference": reference_tables(config),
        "scale": config.generation.scale,
    }


def reference_tables(config: SynthConfig) -> list[str]:
    """Return the names of the config's reference tables, which are copied from their sources."""
    return [name for name, table in config.tables.items() if table.reference]


def _integrity_gate(report: dict[str, Any]) -> None:
    """Raise before publishing when generated keys are not unique or foreign keys do not resolve."""
    problems = []
    for table, entry in report["tables"].items():
        key = entry.get("primary_key")
        if key and (key["duplicate_keys"] or key["null_keys"]):
            problems.append(f"{table}: {key['duplicate_keys']} duplicate and {key['null_keys']} null primary keys")
    for entry in report["relationships"].values():
        if entry["orphan_rows"]:
            problems.append(f"{entry['relationship']}: {entry['orphan_rows']} generated keys without a parent")
    if problems:
        raise SynthsparkError(
            "generated data failed the integrity check, so the output was not changed: " + "; ".join(problems)
            + ". This is a synthspark bug; please report it with the config"
        )


def fit_stage(
    config: SynthConfig, plan: Plan, sources: PreparedSources, model_dir: str, tracker: RunTracker
) -> tuple[FittedModel, float]:
    """Fit a model on prepared sources, save it to ``model_dir`` and log it; return it and the seconds taken."""
    started = time.monotonic()
    model = fit_prepared(config, plan, sources)
    model.save(model_dir)
    seconds = time.monotonic() - started
    tracker.metrics({metric_key("orphan_rows", name): float(rel.orphan_rows) for name, rel in model.relationships.items()})
    tracker.directory(model_dir, "model")
    logger.info("fit: done, %d tables, %.1f s, model at %s", len(model.tables), seconds, model_dir)
    return model, seconds


def run_pipeline(
    spark: SparkSession,
    config: SynthConfig,
    *,
    model_dir: str | None = None,
    stages: tuple[str, ...] = ("fit", "generate", "evaluate"),
) -> RunResult:
    """Run the given stages in order inside one MLflow run.

    ``fit`` learns and saves the model; ``generate`` generates the tables;
    ``evaluate`` scores them against the source. Every stage's seconds and
    every score become metrics.

    A run that generates writes nothing to the published output until every
    check has passed: the tables, the model (when it is the default one under
    the output path) and the report are staged and checked there, then
    published together (see :mod:`synthspark.publish`). A run that fails or is
    killed leaves the earlier output as it was.
    """
    unknown = set(stages) - {"fit", "generate", "evaluate"}
    if unknown:
        raise ConfigError(f"unknown stage(s) {sorted(unknown)}; choose from fit, generate, evaluate")
    model_dir = model_dir or default_model_dir(config)
    plan = build_plan(config)
    if "fit" in stages or "evaluate" in stages:
        check_sources(config)
    else:
        # Generation reads the sources of reference tables only.
        check_sources(config, reference_tables(config))
    result = RunResult()

    sources: PreparedSources | None = None
    with _staging(spark, config, plan, stages) as staging:
        try:
            with tracked_run(config.tracking, run_name=f"{config.name}-{'-'.join(stages)}") as tracker:
                result.run_id = tracker.run_id
                sources = _run_stages(spark, config, plan, stages, model_dir, tracker, result, staging)
        finally:
            if sources is not None:
                sources.unpersist()
    return result


@contextmanager
def _staging(spark: SparkSession, config: SynthConfig, plan: Plan, stages: tuple[str, ...]) -> Iterator[Staging | None]:
    """Open the staging area of a run that generates (this also checks mode 'error'), and always close it."""
    if "generate" not in stages:
        yield None
        return
    staging = open_staging(spark, config.output, list(plan.order))
    try:
        yield staging
    finally:
        staging.close()


def _run_stages(
    spark: SparkSession,
    config: SynthConfig,
    plan: Plan,
    stages: tuple[str, ...],
    model_dir: str,
    tracker: RunTracker,
    result: RunResult,
    staging: Staging | None,
) -> PreparedSources | None:
    """Run the stages; return the prepared sources (cached) for the caller to release."""
    tracker.config(config)
    sources: PreparedSources | None = None
    try:
        if "fit" in stages:
            started = time.monotonic()
            sources = prepare_sources(spark, config, plan)
            result.seconds["prepare"] = time.monotonic() - started
            fit_dir = staging.model_dir(model_dir) if staging is not None else model_dir
            model, result.seconds["fit"] = fit_stage(config, plan, sources, fit_dir, tracker)
        else:
            model = FittedModel.load(model_dir)
            _check_model_matches(model, config)
        result.model = model
        tracker.params(config_params(config, model.versions))

        if staging is not None:
            if "evaluate" in stages and sources is None:
                sources = prepare_sources(spark, config, plan)
            real = sources.frames if "evaluate" in stages and sources is not None else None
            _generate_and_publish(spark, config, plan, model, real, staging, tracker, result)
        elif "evaluate" in stages:
            started = time.monotonic()
            synthetic = read_tables(spark, config.output, list(plan.order))
            if sources is None:
                sources = prepare_sources(spark, config, plan)
            result.report = evaluate(model, plan, sources.frames, synthetic, **evaluation_options(config))
            result.seconds["evaluate"] = time.monotonic() - started
            _log_report(result.report, tracker)
            if config.output.path is not None:
                _save_report(result.report, config.output.path)

        tracker.metrics({metric_key("seconds", stage): s for stage, s in result.seconds.items()})
    except BaseException:
        if sources is not None:
            sources.unpersist()
        raise
    return sources


def _generate_and_publish(
    spark: SparkSession,
    config: SynthConfig,
    plan: Plan,
    model: FittedModel,
    real: dict[str, DataFrame] | None,
    staging: Staging,
    tracker: RunTracker,
    result: RunResult,
) -> None:
    """Generate and stage the tables, check the staged copy, then publish it.

    With ``real`` source tables the check is the full evaluation, whose report
    is published with the tables. With None only keys and cardinality are
    checked, and a report of the replaced tables is removed.
    """
    started = time.monotonic()
    database = generate(spark, model, config)
    try:
        write_seconds = staging.write(database.tables)
    finally:
        database.unpersist()
    result.rows = dict(database.rows)
    result.seconds["generate"] = time.monotonic() - started
    tracker.metrics({metric_key("seconds_write", t): s for t, s in write_seconds.items()})
    tracker.metrics({metric_key("rows", t): float(n) for t, n in result.rows.items()})

    # The checks read the staged tables: cheaper than evaluating the lazy generated
    # frames, which would run generation again.
    started = time.monotonic()
    report = evaluate(model, plan, real or {}, staging.read(), **evaluation_options(config))
    result.seconds["evaluate" if real is not None else "check"] = time.monotonic() - started
    _integrity_gate(report)
    if real is not None:
        result.report = report
        _log_report(report, tracker)
        staging.save_report(report)

    started = time.monotonic()
    staging.publish()
    result.seconds["publish"] = time.monotonic() - started


def _log_report(report: dict[str, Any], tracker: RunTracker) -> None:
    tracker.metrics(flatten_report(report))
    tracker.json(report, "metrics.json")


def _save_report(report: dict[str, Any], output_path: str) -> None:
    if "://" in output_path and not output_path.startswith("file:"):
        return
    local = output_path.removeprefix("file:")
    os.makedirs(local, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=local, delete=False, suffix=".tmp", encoding="utf-8") as handle:
        json.dump(report, handle, indent=1)
    os.replace(handle.name, os.path.join(local, REPORT_FILE))
