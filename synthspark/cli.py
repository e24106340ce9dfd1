"""Command line: ``synthspark fit | generate | evaluate | run CONFIG [options]``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from synthspark.config import OutputSpec, load_config
from synthspark.errors import ConfigError, SynthsparkError

logger = logging.getLogger("synthspark")

STAGES = {
    "fit": ("fit",),
    "generate": ("generate",),
    "evaluate": ("evaluate",),
    "run": ("fit", "generate", "evaluate"),
}


def _spark_setting(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    return key.strip(), value


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser shared by the CLI and the spark-submit entry points."""
    parser = argparse.ArgumentParser(
        prog="synthspark",
        description="Fit a multi-table model, generate a synthetic database with valid foreign keys, evaluate it.",
    )
    parser.add_argument("command", choices=sorted(STAGES), help="fit, generate, evaluate, or run (all three)")
    parser.add_argument("config", help="YAML config, for example conf/berka.yaml")
    parser.add_argument("--source", help="directory that relative source paths resolve against (overrides source_root)")
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--output", help="output directory for the generated tables (overrides output.path)")
    target.add_argument(
        "--catalog-schema", metavar="[CATALOG.]SCHEMA",
        help="write managed Delta tables into this catalog schema instead of a directory (overrides output)",
    )
    parser.add_argument("--model", help="fitted model directory (default: OUTPUT/_synthspark_model)")
    parser.add_argument("--seed", type=int, help="random seed (overrides generation.seed)")
    parser.add_argument("--scale", type=float, help="rows of each root table = source rows x SCALE")
    parser.add_argument("--mode", choices=["error", "overwrite"], help="what to do when output exists")
    parser.add_argument("--master", default=None, help="Spark master when no session is active (default local[*])")
    parser.add_argument(
        "--conf", action="append", type=_spark_setting, default=[], metavar="KEY=VALUE",
        help="Spark setting, repeatable, for example --conf spark.sql.shuffle.partitions=8",
    )
    parser.add_argument("--no-tracking", action="store_true", help="do not log to MLflow")
    parser.add_argument("--log-level", default="INFO", help="Python log level (default INFO)")
    return parser


def _updated_output(output: OutputSpec, changes: dict[str, str | None]) -> OutputSpec:
    """Return ``output`` with command-line overrides applied, validated like the config file."""
    try:
        return OutputSpec.model_validate({**output.model_dump(), **changes})
    except ValidationError as error:
        problems = "; ".join(item["msg"].removeprefix("Value error, ") for item in error.errors())
        raise ConfigError(f"invalid output options on the command line: {problems}") from None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the process exit code (0 success, 2 bad input, 1 other failure)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("py4j", "urllib3", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        config = load_config(args.config, source=args.source, output=args.output, seed=args.seed, scale=args.scale)
        updates = {}
        output_updates = {}
        if args.mode:
            output_updates["mode"] = args.mode
        if args.catalog_schema:
            output_updates.update(catalog_schema=args.catalog_schema, path=None)
        if output_updates:
            updates["output"] = _updated_output(config.output, output_updates)
        if args.no_tracking:
            updates["tracking"] = config.tracking.model_copy(update={"enabled": False})
        if updates:
            config = config.model_copy(update=updates)

        # Imported here so that config errors are reported without starting the JVM.
        from synthspark.pipeline import reference_tables, run_pipeline
        from synthspark.plan import build_plan
        from synthspark.session import get_spark
        from synthspark.sources import check_sources

        build_plan(config)
        if args.command != "generate":
            check_sources(config)
        else:
            check_sources(config, reference_tables(config))
        spark = get_spark(args.master, dict(args.conf))
        result = run_pipeline(spark, config, model_dir=args.model, stages=STAGES[args.command])
    except SynthsparkError as error:
        logger.error("%s", error)
        return 2
    summary = {
        "run_id": result.run_id,
        "rows": result.rows,
        "seconds": {k: round(v, 1) for k, v in result.seconds.items()},
        "output": config.output.path or config.output.catalog_schema,
    }
    if result.report is not None:
        summary["scores"] = result.report["overall"]
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
