"""Generation throughput of synthspark in rows/s written to Delta, against a floor measured in the same run.

The model is fitted on berka, read in place from the shared datasets folder. synthspark then
generates every table at ``--scale`` and writes it to Delta, timed from the call to ``generate``
to the last table written, with the same Delta writer as the floor. The key checks and the
staged publishing that the ``generate`` command adds are not included. The floor writes, for every table, ``spark.range(rows)`` turned into
random columns of the same Spark types, so the ratio shows what synthspark's sampling costs on
top of writing the same amount of Delta data.

Run: .venv/bin/python benchmarks/throughput.py --scale 50
"""

from __future__ import annotations

import argparse
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import _common

logger = logging.getLogger("benchmarks.throughput")

# Throughput that synthspark should reach, as a share of the floor's rows per second.
TARGET_RATIO = 0.5


def random_column(field: Any, seed: int) -> Any:
    """Return a random Spark column of ``field``'s type: uniform numbers, dates over about 5 years,
    strings drawn from 1,000 short values (like a categorical column)."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    u = F.rand(seed)
    data_type = field.dataType
    if isinstance(data_type, T.StringType):
        value = F.concat(F.lit("v"), F.floor(u * 1000).cast("string"))
    elif isinstance(data_type, T.DateType):
        value = F.date_add(F.lit("1993-01-01").cast("date"), F.floor(u * 2000).cast("int"))
    elif isinstance(data_type, (T.TimestampType, T.TimestampNTZType)):
        value = F.timestamp_seconds(F.lit(725_000_000) + F.floor(u * 160_000_000))
    elif isinstance(data_type, T.BooleanType):
        value = u < F.lit(0.5)
    elif isinstance(data_type, T.DecimalType):
        value = u * F.lit(10.0 ** max(data_type.precision - data_type.scale - 1, 0))
    elif isinstance(data_type, (T.ByteType, T.ShortType)):
        value = F.floor(u * 100)
    else:
        value = F.floor(u * 1_000_000) if not isinstance(data_type, (T.FloatType, T.DoubleType)) else u * 1_000_000
    return value.cast(data_type).alias(field.name)


def write_floor(spark: Any, schema: Any, rows: int, path: Path, seed: int) -> float:
    """Write ``rows`` random rows of ``schema`` to a Delta table at ``path``; return the seconds taken."""
    frame = spark.range(rows).select(*[random_column(field, seed + i) for i, field in enumerate(schema.fields)])
    return write_delta(frame, path)


def write_delta(frame: Any, path: Path) -> float:
    """Write ``frame`` as a Delta table at ``path``, replacing it; return the seconds taken."""
    started = time.monotonic()
    frame.write.format("delta").mode("overwrite").option("overwriteSchema", "true").save(str(path))
    return time.monotonic() - started


def run_synthspark(spark: Any, model: Any, config: Any, folder: Path) -> dict[str, Any]:
    """Generate every table and write it to Delta with the floor's writer; return rows, seconds and schemas."""
    from synthspark.generate import generate

    started = time.monotonic()
    database = generate(spark, model, config)
    generate_seconds = time.monotonic() - started
    try:
        write_seconds = {name: write_delta(frame, folder / name) for name, frame in database.tables.items()}
        schemas = {name: frame.schema for name, frame in database.tables.items()}
    finally:
        database.unpersist()
    return {
        "rows": dict(database.rows),
        "generate_s": generate_seconds,
        "write_s": write_seconds,
        "total_s": time.monotonic() - started,
        "schemas": schemas,
    }


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Fit on berka, then run ``--rounds`` rounds of synthspark and the floor; keep each table's fastest time."""
    from synthspark.config import load_config
    from synthspark.fit import fit
    from synthspark.model import FittedModel

    scratch = args.scratch
    for folder in ("synthspark", "floor", "warm-up"):
        shutil.rmtree(scratch / folder, ignore_errors=True)
    config = load_config(
        _common.REPO / "conf" / "berka.yaml", source=str(args.datasets_dir / "berka"), scale=args.scale, seed=args.seed
    )
    watch = _common.Stopwatch()
    with watch.step("spark start"):
        spark = _common.start_spark(args.master, args.driver_memory, args.shuffle_partitions)
    if args.model is not None:
        model = FittedModel.load(str(args.model))
    else:
        with watch.step("fit on berka"):
            model = fit(spark, config)
        model.save(str(scratch / "model"))
    with watch.step("warm-up"):
        # Loads the Delta and Parquet writer classes before anything is timed.
        write_floor(spark, spark.range(1).schema, 10_000, scratch / "warm-up", args.seed)

    best: dict[str, Any] = {}
    floor_best: dict[str, float] = {}
    cpu = {"synthspark": [], "floor": []}
    jvm = _common.jvm_pid(spark)
    for round_number in range(1, args.rounds + 1):
        with watch.step(f"round {round_number}: synthspark generate + write"), _common.PeakMemorySampler(jvm) as sampler:
            result = run_synthspark(spark, model, config, scratch / "synthspark")
        cpu["synthspark"].append(sampler.peaks.python_cpu_s + sampler.peaks.jvm_cpu_s)
        if not best or result["total_s"] < best["total_s"]:
            best = result
        with watch.step(f"round {round_number}: floor"), _common.PeakMemorySampler(jvm) as sampler:
            for table, rows in result["rows"].items():
                seconds = write_floor(spark, result["schemas"][table], rows, scratch / "floor" / table, args.seed)
                floor_best[table] = min(seconds, floor_best.get(table, seconds))
        cpu["floor"].append(sampler.peaks.python_cpu_s + sampler.peaks.jvm_cpu_s)
    sizes = {
        table: (_common.directory_mib(scratch / "synthspark" / table), _common.directory_mib(scratch / "floor" / table))
        for table in best["rows"]
    }
    spark.stop()
    return {
        "synthspark": best, "floor_s": floor_best, "sizes": sizes, "steps": watch.seconds,
        "cpu_s": {name: min(values) for name, values in cpu.items()},
    }


def render(measured: dict[str, Any], machine: dict[str, str], args: argparse.Namespace) -> str:
    """Return the report section: one row per table and a total row."""
    synth = measured["synthspark"]
    rows = []
    for table, count in synth["rows"].items():
        write_s = synth["write_s"][table]
        floor_s = measured["floor_s"][table]
        synth_mib, floor_mib = measured["sizes"][table]
        rows.append([
            table, f"{count:,}", len(synth["schemas"][table].fields), f"{write_s:.1f}",
            _common.format_rate(count, write_s), f"{floor_s:.1f}", _common.format_rate(count, floor_s),
            f"{floor_s / write_s:.0%}" if write_s > 0 else "n/a", f"{synth_mib:.1f}", f"{floor_mib:.1f}",
        ])
    total_rows = sum(synth["rows"].values())
    floor_total = sum(measured["floor_s"].values())
    ratio = floor_total / synth["total_s"]

    rows.append([
        "**all tables**", f"{total_rows:,}", "", f"{synth['total_s']:.1f}", _common.format_rate(total_rows, synth["total_s"]),
        f"{floor_total:.1f}", _common.format_rate(total_rows, floor_total), f"**{ratio:.0%}**",
        f"{sum(s for s, _ in measured['sizes'].values()):.1f}", f"{sum(f for _, f in measured['sizes'].values()):.1f}",
    ])

    verdict = "met" if ratio >= TARGET_RATIO else "missed"
    cpu = measured["cpu_s"]
    model = f"fitted on berka earlier, loaded from `{args.model}`" if args.model is not None else "fitted on berka in this run"
    steps = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in measured["steps"].items())

    return "\n".join([
        _common.section_header(f"Generation throughput (berka at scale {args.scale:g})", machine),
        f"synthspark (model {model}) generates every table at the given scale and writes it to Delta. The floor writes "
        "`spark.range(rows)` with random columns of the same Spark types (numbers uniform, strings from 1,000 short "
        "values, dates over about 5 years) to Delta, table by table. Per-table synthspark seconds are the Delta write, "
        "which includes computing that table's columns; the key frames of parent tables are computed in `generate` "
        "before the first write, so the total row also counts those "
        f"{synth['generate_s']:.1f} s. Each time is the fastest of {args.rounds} round(s). "
        "The ratio is synthspark rows/s divided by floor rows/s.\n",
        _common.markdown_table(
            ["table", "rows", "columns", "synthspark s", "synthspark rows/s", "floor s", "floor rows/s",
             "ratio", "synthspark MiB", "floor MiB"],
            rows,
        ),
        "",
        f"Target: synthspark at least {TARGET_RATIO:.0%} of the floor's rows/s over all tables. "
        f"Measured {ratio:.0%}: target {verdict}.",
        "",
        f"CPU time (user + system, Python process and JVM, least of the rounds): synthspark {cpu['synthspark']:.1f} s, "
        f"floor {cpu['floor']:.1f} s, so by CPU time synthspark reaches {cpu['floor'] / cpu['synthspark']:.0%} of the "
        "floor. Other jobs on a shared machine inflate CPU time less than wall time.",
        "",
        f"Steps of this run: {steps}.",
    ])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=50.0, help="rows of each root table = berka rows x SCALE (default 50)")
    parser.add_argument("--rounds", type=int, default=1, help="timed rounds; each table keeps its fastest (default 1)")
    parser.add_argument("--model", type=Path, help="fitted berka model to load instead of fitting (for example SCRATCH/model)")
    parser.add_argument("--seed", type=int, default=7, help="generation seed")
    parser.add_argument("--datasets-dir", type=Path, default=_common.DATASETS, help="folder that contains berka/")
    parser.add_argument("--scratch", type=Path, default=_common.SCRATCH / "throughput", help="output folder, emptied first")
    parser.add_argument("--no-report", action="store_true", help="do not update docs/benchmarks.md")
    parser.add_argument("--log-level", default="INFO")
    _common.add_spark_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _common.configure_logging(args.log_level)
    machine = _common.machine_description(_common.use_code(args.code))
    measured = measure(args)
    section = render(measured, machine, args)
    print(section)
    if not args.no_report:
        _common.update_report("throughput", section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
