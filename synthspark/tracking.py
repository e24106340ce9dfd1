"""MLflow tracking of a pipeline run: parameters, metrics and artifacts.

The tracking URI is MLflow's own choice: ``MLFLOW_TRACKING_URI`` when set, else
its local default store in the working directory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import mlflow
import yaml

from synthspark.config import SynthConfig, TrackingSpec

logger = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9_\-. /]")


def metric_key(*parts: str) -> str:
    """Join parts into an MLflow metric key, replacing characters MLflow rejects with '_'."""
    return "/".join(_UNSAFE.sub("_", part.replace("->", "__to__")) for part in parts)


def flatten_report(report: dict[str, Any]) -> dict[str, float]:
    """Turn an evaluation report into metric key -> finite value pairs."""
    metrics: dict[str, float] = {}

    def put(key: str, value: Any) -> None:
        if isinstance(value, bool):
            value = float(value)
        if isinstance(value, (int, float)) and math.isfinite(float(value)):
            metrics[key] = float(value)

    for table, entry in report.get("tables", {}).items():
        put(metric_key("rows", table), entry.get("rows"))
        put(metric_key("real_rows", table), entry.get("real_rows"))
        put(metric_key("column_shapes", table), entry.get("column_shapes_mean"))
        put(metric_key("column_pair_trends", table), entry.get("column_pair_trends_mean"))
        put(metric_key("column_pair_trends_thresholded", table), entry.get("column_pair_trends_thresholded_mean"))
        put(metric_key("column_pairs_skipped", table), entry.get("column_pairs_skipped"))
        for column, shape in entry.get("column_shapes", {}).items():
            put(metric_key("column_shape", table, column), shape["score"])
        key = entry.get("primary_key")
        if key:
            put(metric_key("primary_key_uniqueness", table), key["score"])
            put(metric_key("duplicate_keys", table), key["duplicate_keys"])
        detection = entry.get("detection") or {}
        for stat in ("accuracy", "auc"):
            put(metric_key(f"detection_{stat}", table), detection.get(stat))
        privacy = entry.get("privacy") or {}
        for stat in ("exact_copy_share", "exact_copy_share_holdout", "dcr_half_a_share", "dcr_median"):
            put(metric_key(stat, table), privacy.get(stat))
    for name, entry in report.get("relationships", {}).items():
        put(metric_key("foreign_key_validity", name), entry["foreign_key_validity"])
        put(metric_key("orphan_rows_generated", name), entry["orphan_rows"])
        put(metric_key("cardinality", name), entry["cardinality_similarity"])
        put(metric_key("inter_table_trends", name), entry.get("inter_table_trends_mean"))
        put(metric_key("inter_table_trends_thresholded", name), entry.get("inter_table_trends_thresholded_mean"))
        put(metric_key("inter_table_pairs_skipped", name), entry.get("inter_table_pairs_skipped"))
        for side in ("real", "synthetic"):
            for stat, value in entry[f"children_{side}"].items():
                put(metric_key(f"children_{side}", name, stat), value)
    for name, entry in report.get("chains", {}).items():
        hops = f"{entry['hops']}hop"
        put(metric_key(f"inter_table_trends_{hops}", name), entry.get("inter_table_trends_mean"))
        put(metric_key(f"inter_table_trends_{hops}_thresholded", name), entry.get("inter_table_trends_thresholded_mean"))
        put(metric_key(f"inter_table_pairs_skipped_{hops}", name), entry.get("inter_table_pairs_skipped"))
    for name, value in report.get("overall", {}).items():
        put(metric_key("overall", name), value)
    return metrics


def config_params(config: SynthConfig, versions: dict[str, str]) -> dict[str, str]:
    """Return the run parameters: generation settings, model settings, output, tables and versions."""
    canonical = json.dumps(config.model_dump(mode="json"), sort_keys=True)
    params: dict[str, str] = {
        "config_name": config.name,
        "config_sha256": hashlib.sha256(canonical.encode("utf-8")).hexdigest(),
        "seed": str(config.generation.seed),
        "scale": str(config.generation.scale),
        "rows": json.dumps(config.generation.rows, sort_keys=True),
        "tables": ",".join(config.tables),
        "relationships": str(sum(len(t.foreign_keys) for t in config.tables.values())),
        "min_category_count": str(config.model.min_category_count),
        "quantiles": str(config.model.quantiles),
        "output_format": config.output.format,
        "output_location": str(config.output.path or config.output.catalog_schema),
        "output_mode": config.output.mode,
    }
    for table, spec in config.tables.items():
        for fk in spec.foreign_keys:
            key = metric_key("on_orphan", table, "+".join(fk.columns), fk.parent)
            params[key] = fk.on_orphan.value
    for package, version in versions.items():
        params[f"version_{package}"] = version
    return params


class RunTracker:
    """Logs to an active MLflow run, or does nothing when tracking is disabled."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.run_id: str | None = None

    def params(self, values: dict[str, str]) -> None:
        if self.enabled:
            mlflow.log_params({k: v[:6000] for k, v in values.items()})

    def metrics(self, values: dict[str, float]) -> None:
        if self.enabled and values:
            mlflow.log_metrics(values)

    def text(self, text: str, name: str) -> None:
        if self.enabled:
            mlflow.log_text(text, name)

    def json(self, data: dict[str, Any], name: str) -> None:
        if self.enabled:
            mlflow.log_dict(data, name)

    def directory(self, path: str, name: str) -> None:
        if self.enabled:
            mlflow.log_artifacts(path, name)

    def config(self, config: SynthConfig) -> None:
        self.text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False), "config.yaml")


@contextmanager
def tracked_run(spec: TrackingSpec, run_name: str | None = None) -> Iterator[RunTracker]:
    """Open an MLflow run for the duration of the block; a failing block ends it FAILED with the error logged."""
    tracker = RunTracker(spec.enabled)
    if not spec.enabled:
        yield tracker
        return
    mlflow.set_experiment(spec.experiment)
    run = mlflow.start_run(run_name=spec.run_name or run_name)
    tracker.run_id = run.info.run_id
    logger.info(
        "MLflow run %s in experiment '%s' at %s", run.info.run_id, spec.experiment, mlflow.get_tracking_uri()
    )
    try:
        yield tracker
    except BaseException as error:
        try:
            mlflow.set_tag("error", f"{type(error).__name__}: {error}"[:5000])
            mlflow.log_text(f"{type(error).__name__}: {error}\n", "error.txt")
        finally:
            mlflow.end_run(status="FAILED")
        raise
    mlflow.end_run(status="FINISHED")
