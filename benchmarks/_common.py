"""Shared harness for the on-demand benchmarks: machine description, Spark session, memory sampling, report sections.

Benchmarks write their data under a scratch folder outside the repository and record their
results as one section each of ``docs/benchmarks.md``, replaced on every run.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import platform
import re
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parents[1]
DATASETS = REPO.parent / "shared" / "datasets"
SCRATCH = Path(os.environ.get("SYNTHSPARK_BENCH_DIR", "/tmp/synthspark-bench"))
REPORT = REPO / "docs" / "benchmarks.md"
MIB = 1024 * 1024

logger = logging.getLogger("benchmarks")


def configure_logging(level: str = "INFO") -> None:
    """Log to stderr with timestamps, and quiet the chatty client libraries."""
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("py4j", "urllib3", "alembic", "faker", "rdt", "copulas", "sdv", "sdmetrics",
                  "SingleTableSynthesizer", "MultiTableSynthesizer"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _java_version() -> str:
    try:
        completed = subprocess.run(["java", "-version"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"unknown ({error})"
    lines = completed.stderr.strip().splitlines()
    return lines[0] if lines else "unknown"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git(*words: str) -> str:
    return subprocess.run(["git", *words], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()


def use_code(ref: str) -> str:
    """Make ``import synthspark`` load the package as committed at ``ref``, or the working tree for "worktree".

    The committed package is extracted with ``git archive`` under the scratch folder and put first
    on ``sys.path`` and ``PYTHONPATH`` (which worker processes inherit), so that edits in progress
    in the working tree do not change what is measured. Returns a description for the report.
    """
    if ref == "worktree":
        dirty = _git("status", "--porcelain", "--", "synthspark")
        commit = _git("rev-parse", "--short", "HEAD")
        return f"working tree on {commit}" + (" (synthspark/ has uncommitted changes)" if dirty else "")
    commit = _git("rev-parse", "--short", ref)
    target = SCRATCH / "code" / commit
    if not (target / "synthspark" / "__init__.py").exists():
        target.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", commit, "synthspark"], cwd=REPO, capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    sys.path.insert(0, str(target))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(target), os.environ.get("PYTHONPATH")]))
    return f"{commit} (committed synthspark/, extracted to {target})"


def machine_description(code: str) -> dict[str, str]:
    """Describe the hardware, software versions and current load that a measurement ran on."""
    load = os.getloadavg()
    return {
        "cpu": f"{os.cpu_count()} logical cores, {_cpu_model()}",
        "memory": f"{psutil.virtual_memory().total / 1024**3:.1f} GiB",
        "os": platform.platform(),
        "python": platform.python_version(),
        "java": _java_version(),
        "pyspark": _version("pyspark"),
        "delta-spark": _version("delta-spark"),
        "sdv": _version("sdv"),
        "sdmetrics": _version("sdmetrics"),
        "synthspark code": code,
        "load average at start (1, 5, 15 min)": ", ".join(f"{value:.2f}" for value in load),
    }


def start_spark(master: str, driver_memory: str, shuffle_partitions: int | None = None) -> Any:
    """Start a Delta-enabled Spark session for a benchmark: UI off, UTC, quiet logs.

    ``shuffle_partitions`` None keeps Spark's default of 200, as the synthspark command line does.
    """
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    if "SYNTHSPARK_JARS_DIR" not in os.environ and (REPO / ".jars").is_dir():
        os.environ["SYNTHSPARK_JARS_DIR"] = str(REPO / ".jars")
    from synthspark.session import get_spark

    conf = {
        "spark.driver.memory": driver_memory,
        "spark.ui.enabled": "false",
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.adaptive.enabled": "true",
    }
    if shuffle_partitions is not None:
        conf["spark.sql.shuffle.partitions"] = str(shuffle_partitions)
    spark = get_spark(master, conf, app_name="synthspark-benchmark")
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def jvm_pid(spark: Any) -> int:
    """Return the process id of the driver JVM (in local mode the executors run inside it)."""
    return int(spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid())  # noqa: SLF001


@dataclass
class MemoryPeaks:
    """Peak resident set size (MiB) and CPU time used (user + system seconds) of the Python process and the JVM."""

    python_mib: float = 0.0
    jvm_mib: float = 0.0
    python_cpu_s: float = 0.0
    jvm_cpu_s: float = 0.0
    samples: int = 0


def _cpu_seconds(process: psutil.Process | None) -> float:
    if process is None:
        return 0.0
    try:
        times = process.cpu_times()
    except psutil.NoSuchProcess:
        return 0.0
    return times.user + times.system


class PeakMemorySampler:
    """Sample the RSS of this Python process and of the driver JVM in a background thread.

    Peaks are only as fine as ``interval`` seconds; a spike shorter than that can be missed. CPU
    time is measured over the whole block; on a shared machine it varies less than wall time.
    """

    def __init__(self, jvm_process_id: int | None, interval: float = 0.2):
        self.interval = interval
        self.python = psutil.Process()
        self.jvm = psutil.Process(jvm_process_id) if jvm_process_id else None
        self.peaks = MemoryPeaks()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _sample(self) -> None:
        self.peaks.python_mib = max(self.peaks.python_mib, self.python.memory_info().rss / MIB)
        if self.jvm is not None:
            try:
                self.peaks.jvm_mib = max(self.peaks.jvm_mib, self.jvm.memory_info().rss / MIB)
            except psutil.NoSuchProcess:
                self.jvm = None
        self.peaks.samples += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakMemorySampler:
        self._cpu_start = (_cpu_seconds(self.python), _cpu_seconds(self.jvm))
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        self.peaks.python_cpu_s = _cpu_seconds(self.python) - self._cpu_start[0]
        self.peaks.jvm_cpu_s = _cpu_seconds(self.jvm) - self._cpu_start[1] if self.jvm is not None else 0.0


@dataclass
class Stopwatch:
    """Wall-clock seconds of named steps, in the order they ran."""

    seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        logger.info("%s: start", name)
        try:
            yield
        finally:
            self.seconds[name] = time.monotonic() - started
            logger.info("%s: done, %.1f s", name, self.seconds[name])


def command_line(argv: Sequence[str] | None = None) -> str:
    """Return the command that ran this benchmark, relative to the repository root."""
    argv = list(sys.argv if argv is None else argv)
    script = Path(argv[0]).resolve()
    try:
        script_text = str(script.relative_to(REPO))
    except ValueError:
        script_text = str(script)
    return shlex.join([".venv/bin/python", script_text, *argv[1:]])


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Format rows as a GitHub Markdown table; numbers are right-aligned."""
    def cell(value: object) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    numeric = [all(isinstance(row[i], (int, float)) or _looks_numeric(row[i]) for row in rows) for i in range(len(headers))]
    lines = [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join("---:" if is_number else "---" for is_number in numeric) + "|",
    ]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def _looks_numeric(value: object) -> bool:
    return isinstance(value, str) and re.fullmatch(r"[-+]?[\d,]*\.?\d+( ?%)?", value.strip()) is not None


def machine_markdown(machine: dict[str, str]) -> str:
    """Format a machine description as a bullet list."""
    return "\n".join(f"- {key}: {value}" for key, value in machine.items())


def _section_markers(name: str) -> tuple[str, str]:
    return f"<!-- benchmark:{name} -->", f"<!-- /benchmark:{name} -->"


def update_report(name: str, body: str, report: Path = REPORT) -> None:
    """Replace the section ``name`` of the report with ``body``, or append it when it is missing.

    Text outside the markers of ``name`` is kept as it is, so each script owns one section.
    """
    begin, end = _section_markers(name)
    block = f"{begin}\n{body.strip()}\n{end}"
    text = report.read_text(encoding="utf-8") if report.exists() else "# Benchmarks\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = head + block + tail
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(text, encoding="utf-8")
    logger.info("updated section %r of %s", name, report)


def section_header(title: str, machine: dict[str, str], argv: Sequence[str] | None = None) -> str:
    """Return the start of a report section: title, command, date and machine."""
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"## {title}\n\n"
        f"Command: `{command_line(argv)}`\n\n"
        f"Run on {now}. Machine:\n\n{machine_markdown(machine)}\n"
    )


def add_spark_arguments(parser: Any) -> None:
    """Add the options that every benchmark takes: which synthspark code, and the Spark session settings."""
    parser.add_argument(
        "--code", default="HEAD",
        help="git revision whose synthspark/ is measured, or 'worktree' for the files as they are (default HEAD)",
    )
    parser.add_argument("--master", default="local[*]", help="Spark master (default local[*], all cores)")
    parser.add_argument("--driver-memory", default="4g", help="spark.driver.memory, the JVM heap in local mode (default 4g)")
    parser.add_argument(
        "--shuffle-partitions", type=int, default=None,
        help="spark.sql.shuffle.partitions (default: Spark's 200, as the synthspark command line leaves it)",
    )


def spark_arguments(args: Any) -> list[str]:
    """Return the Spark session options of ``args`` as command-line words, to pass on to a worker process."""
    words = ["--master", args.master, "--driver-memory", args.driver_memory]
    if args.shuffle_partitions is not None:
        words += ["--shuffle-partitions", str(args.shuffle_partitions)]
    return words


def directory_mib(path: Path) -> float:
    """Return the size in MiB of all files under ``path``."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / MIB


def format_rate(rows: float, seconds: float) -> str:
    """Return rows per second with thousands separators, or n/a for a zero time."""
    return f"{rows / seconds:,.0f}" if seconds > 0 else "n/a"
