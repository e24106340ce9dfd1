"""The shared datasets as the benchmarks need them: pandas tables, SDV metadata, synthspark configs, baselines.

Each dataset folder contains CSV tables and a ``metadata.yaml`` with tables, keys, foreign keys and
column kinds (id, categorical, numerical, datetime, text, boolean). The tables are read in place.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from _common import DATASETS, REPO

# Kinds of metadata.yaml as SDV sdtypes. SDV does not model free text, so it is "unknown" there
# (sampled as placeholder strings) and sdmetrics skips it.
SDTYPES = {
    "id": "id",
    "categorical": "categorical",
    "numerical": "numerical",
    "datetime": "datetime",
    "boolean": "boolean",
    "text": "unknown",
}


def load_metadata(dataset: str, datasets_dir: Path = DATASETS) -> dict[str, Any]:
    """Read a dataset's ``metadata.yaml``."""
    with open(datasets_dir / dataset / "metadata.yaml", encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def as_list(value: Any) -> list[str]:
    """Return a key given as one column name, a list of names or null as a list."""
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def subset(meta: dict[str, Any], tables: list[str]) -> dict[str, Any]:
    """Keep only ``tables`` and the foreign keys between them."""
    kept = {}
    for name in tables:
        spec = dict(meta["tables"][name])
        spec["foreign_keys"] = [fk for fk in spec.get("foreign_keys", []) if fk["parent_table"] in tables]
        kept[name] = spec
    return {**meta, "tables": kept}


def topological_order(meta: dict[str, Any]) -> list[str]:
    """Order tables parents first; tables in a cycle are left out."""
    remaining = {name: {fk["parent_table"] for fk in spec.get("foreign_keys", [])} - {name}
                 for name, spec in meta["tables"].items()}
    order: list[str] = []
    while True:
        ready = sorted(name for name, parents in remaining.items() if parents <= set(order))
        if not ready:
            return order
        order += ready
        for name in ready:
            del remaining[name]


def read_tables(dataset: str, meta: dict[str, Any], datasets_dir: Path = DATASETS) -> dict[str, pd.DataFrame]:
    """Read a dataset's tables with pandas, with only empty fields as null (``NA`` is a real value in some).

    Categorical and text columns are read as strings, so that codes such as ``0114709`` keep
    their leading zeros and compare equal to the generated values.
    """
    tables = {}
    for name, spec in meta["tables"].items():
        as_text = {column: str for column, kind in spec["columns"].items() if kind in ("categorical", "text")}
        tables[name] = pd.read_csv(
            datasets_dir / dataset / spec["file"], keep_default_na=False, na_values=[""], dtype=as_text
        )
    return tables


def sdv_metadata_dict(meta: dict[str, Any]) -> dict[str, Any]:
    """Translate ``metadata.yaml`` into the SDV / sdmetrics multi-table metadata dictionary.

    Composite keys are passed on as lists, so that SDV itself decides whether it accepts them.
    Raises ValueError for a foreign key that references columns other than the parent's primary key.
    """
    referenced = {fk["parent_table"] for spec in meta["tables"].values() for fk in spec.get("foreign_keys", [])}
    keys = {
        # A parent without a declared primary key is referenced through its natural key.
        name: as_list(spec.get("primary_key") or (spec.get("natural_key") if name in referenced else None))
        for name, spec in meta["tables"].items()
    }
    tables: dict[str, Any] = {}
    relationships = []
    for name, spec in meta["tables"].items():
        columns = {}
        for column, kind in spec["columns"].items():
            entry: dict[str, Any] = {"sdtype": SDTYPES[kind]}
            fmt = spec.get("datetime_formats", {}).get(column)
            if kind == "datetime" and fmt:
                entry["datetime_format"] = fmt
            columns[column] = entry
        table: dict[str, Any] = {"columns": columns}
        key = keys[name]
        if key:
            table["primary_key"] = key[0] if len(key) == 1 else key
        tables[name] = table
    for name, spec in meta["tables"].items():
        for fk in spec.get("foreign_keys", []):
            child_columns = as_list(fk["columns"])
            parent_columns = as_list(fk["parent_columns"])
            parent_key = keys[fk["parent_table"]]
            if parent_columns != parent_key:
                raise ValueError(f"{name}.{child_columns} references {fk['parent_table']}.{parent_columns}, "
                                 f"not the parent's primary key {parent_key}")
            relationships.append({
                "parent_table_name": fk["parent_table"],
                "parent_primary_key": parent_key[0] if len(parent_key) == 1 else parent_key,
                "child_table_name": name,
                "child_foreign_key": child_columns[0] if len(child_columns) == 1 else child_columns,
            })
    return {"METADATA_SPEC_VERSION": "V1", "tables": tables, "relationships": relationships}


def synthspark_config_dict(
    dataset: str, meta: dict[str, Any], output: str, seed: int, datasets_dir: Path = DATASETS
) -> dict[str, Any]:
    """Return a synthspark config for the tables in ``meta``.

    The repository's ``conf/<dataset>.yaml`` is used when it exists, restricted to the same tables
    and foreign keys. Otherwise the config is derived from ``metadata.yaml``, with text columns
    typed as strings so that leading zeros survive Spark's type inference.
    """
    conf_file = REPO / "conf" / f"{dataset}.yaml"
    tables: dict[str, Any] = {}
    if conf_file.exists():
        with open(conf_file, encoding="utf-8") as handle:
            base = yaml.safe_load(handle)
        for name in meta["tables"]:
            spec = dict(base["tables"][name])
            spec["foreign_keys"] = [fk for fk in spec.get("foreign_keys", []) if fk["parent"] in meta["tables"]]
            tables[name] = spec
        extra = {key: base[key] for key in ("model",) if key in base}
    else:
        for name, spec in meta["tables"].items():
            columns = {
                column: {"kind": kind, "type": "string"} if kind == "text" else {"kind": kind}
                for column, kind in spec["columns"].items()
            }
            tables[name] = {
                "source": {"path": spec["file"], "format": "csv"},
                "primary_key": as_list(spec.get("primary_key")),
                "columns": columns,
                "foreign_keys": [
                    {"columns": as_list(fk["columns"]), "parent": fk["parent_table"],
                     "parent_columns": as_list(fk["parent_columns"])}
                    for fk in spec.get("foreign_keys", [])
                ],
            }
        extra = {}
    return {
        "name": f"bench-{dataset}",
        "source_root": str(datasets_dir / dataset),
        "tables": tables,
        "generation": {"scale": 1.0, "seed": seed},
        "output": {"format": "delta", "path": output, "mode": "overwrite"},
        "tracking": {"enabled": False},
        **extra,
    }


def _as_text(series: pd.Series) -> pd.Series:
    """Return values as strings (nulls kept); integral floats lose their ``.0`` so 7.0 matches "7"."""
    if pd.api.types.is_float_dtype(series):
        present = series.dropna()
        if len(present) and (present == np.floor(present)).all():
            series = series.astype("Int64")
    return series.astype(object).where(series.notna(), None).map(lambda v: v if v is None else str(v))


def normalize_for_quality(tables: dict[str, pd.DataFrame], metadata: dict[str, Any]) -> dict[str, pd.DataFrame]:
    """Give every source the same pandas types so sdmetrics compares like with like.

    Categorical columns become strings, numerical columns floats, datetime columns datetime64.
    """
    result = {}
    for name, frame in tables.items():
        frame = frame.copy()
        for column, entry in metadata["tables"][name]["columns"].items():
            if column not in frame.columns:
                continue
            sdtype = entry["sdtype"]
            if sdtype == "categorical":
                frame[column] = _as_text(frame[column])
            elif sdtype == "numerical":
                frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
            elif sdtype == "datetime":
                frame[column] = pd.to_datetime(frame[column], errors="coerce", format=entry.get("datetime_format"))
        result[name] = frame
    return result


def quality_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """Return the metadata for sdmetrics, without datetime formats (the values are datetime64 by then)."""
    tables = {}
    for name, table in metadata["tables"].items():
        columns = {column: {"sdtype": entry["sdtype"]} for column, entry in table["columns"].items()}
        tables[name] = {**table, "columns": columns}
    return {"tables": tables, "relationships": metadata["relationships"]}


def key_columns(meta: dict[str, Any], table: str) -> set[str]:
    """Return the primary and foreign key columns of ``table``."""
    spec = meta["tables"][table]
    keys = set(as_list(spec.get("primary_key")))
    for fk in spec.get("foreign_keys", []):
        keys |= set(as_list(fk["columns"]))
    return keys


def independent_columns(tables: dict[str, pd.DataFrame], meta: dict[str, Any], seed: int) -> dict[str, pd.DataFrame]:
    """Baseline: the real tables with every non-key column shuffled on its own.

    Marginals and relationships stay exactly real; every correlation between columns is broken.
    """
    rng = np.random.default_rng(seed)
    result = {}
    for name, frame in tables.items():
        shuffled = frame.copy()
        for column in frame.columns:
            if column not in key_columns(meta, name):
                shuffled[column] = frame[column].to_numpy()[rng.permutation(len(frame))]
        result[name] = shuffled
    return result


def real_halves(
    tables: dict[str, pd.DataFrame], meta: dict[str, Any], seed: int
) -> tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame]]:
    """Ceiling: split the real data into two random halves that keep whole families together.

    Rows of tables without a parent go to half 0 or 1 at random. Every other row follows the parent
    named by its table's first foreign key, so a second foreign key may point into the other half,
    and sdmetrics then counts such rows as children of no parent.
    """
    rng = np.random.default_rng(seed)
    side: dict[str, np.ndarray] = {}
    for name in topological_order(meta):
        frame = tables[name]
        fks = meta["tables"][name].get("foreign_keys", [])
        if not fks:
            side[name] = rng.integers(0, 2, len(frame))
            continue
        fk = fks[0]
        parent = fk["parent_table"]
        parent_key = as_list(fk["parent_columns"])
        lookup = tables[parent][parent_key].assign(_half=side[parent])
        joined = frame[as_list(fk["columns"])].merge(
            lookup, left_on=as_list(fk["columns"]), right_on=parent_key, how="left"
        )
        # Rows with a null or orphan key have no parent to follow: they go to a random half.
        random_side = pd.Series(rng.integers(0, 2, len(frame)))
        side[name] = joined["_half"].fillna(random_side).astype(int).to_numpy()
    first = {name: tables[name][side[name] == 0].reset_index(drop=True) for name in side}
    second = {name: tables[name][side[name] == 1].reset_index(drop=True) for name in side}
    return first, second
