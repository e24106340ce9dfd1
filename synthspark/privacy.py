"""Privacy scores next to fidelity: exact copies of real rows and distance to the closest record (DCR).

Both compare the value columns that the model learns value by value (the columns
:func:`synthspark.quality.value_columns` returns). Keys are never compared. Neither are
personal-data and free-text columns, generated from word lists, or categorical columns
with no value frequent enough to keep, generated at random. A synthetic row that equals
a real row on every compared column counts as a copy even when its generated name differs.

The real rows are split into halves A and B by a hash of each whole row and the seed.

- Exact-copy share: the share of synthetic rows whose values equal those of some real
  row, nulls equal to nulls (a distributed join). For reference, the same check for real
  half-B rows against half A is reported as ``exact_copy_share_holdout``. Half A has half
  as many rows as the whole real table, so the reference is somewhat lower than what a
  fresh draw from the real distribution would give against all real rows.
- DCR: for a hash-chosen sample of synthetic rows, the distance to the closest row of an
  equal-size sample of half A and of half B (a cross join). The distance is the mean over
  columns of a term in [0, 1]. For a continuous column the term is ``|x - y|`` divided by
  the range of the real column, capped at 1. For a discrete column it is 0 for equal values
  and 1 otherwise. A null against a null gives 0 and a null against a value gives 1.
  ``dcr_half_a_share`` is the share of synthetic rows closer to half A than to half B,
  ties counted one half.

The generator is fitted on all real rows, so neither half is held out from training.
``dcr_half_a_share`` therefore tests whether synthetic rows sit closer to some specific
real rows than to others drawn from the same table: a value far from 50 % means the
synthetic rows track particular real rows. It does not measure how much a model would
leak about rows it was not trained on. The share is noisier than a share of independent
rows, because synthetic rows near each other share their closest record: on tables of a
few thousand rows it moves by several points from one seed to another.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import reduce
from typing import Any

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from synthspark.quality import ValueColumn, row_hash, value_expressions
from synthspark.sampling import INTERNAL

# Synthetic rows whose closest record is searched, and rows sampled from each real half, by default.
DCR_SYNTHETIC_ROWS = 1_000
DCR_REAL_ROWS = 5_000

_SIDE = f"{INTERNAL}side"
_HASH = f"{INTERNAL}hash"
_FOUND = f"{INTERNAL}found"
_IN_A = f"{INTERNAL}in_a"
_DISTANCE = f"{INTERNAL}distance"
_ROW = f"{INTERNAL}row"
_HALF_A, _HALF_B, _SYNTHETIC = 0, 1, 2


def _slot(j: int) -> str:
    return f"{INTERNAL}v{j}"


def _reference_slot(j: int) -> str:
    return f"{INTERNAL}rv{j}"


def real_half(real: DataFrame, seed: int) -> Column:
    """Return the half of each real row: 0 for half A, 1 for half B, from a hash of the whole row and the seed."""
    return (row_hash(real, seed, "privacy") % F.lit(2)).cast("int")


def _real_rows(real: DataFrame, columns: Sequence[ValueColumn], seed: int) -> DataFrame:
    """Return the real rows' values with their half and sampling hash."""
    values = [value.alias(_slot(j)) for j, value in enumerate(value_expressions(real, columns))]
    # The half is the hash's lowest bit, so the sampling order within a half uses the other bits.
    order = F.shiftright(row_hash(real, seed, "privacy"), 1)
    return real.select(real_half(real, seed).alias(_SIDE), order.alias(_HASH), *values)


def _synthetic_rows(synthetic: DataFrame, columns: Sequence[ValueColumn], seed: int) -> DataFrame:
    values = [value.alias(_slot(j)) for j, value in enumerate(value_expressions(synthetic, columns))]
    return synthetic.select(F.lit(_SYNTHETIC).alias(_SIDE), row_hash(synthetic, seed, "privacy").alias(_HASH), *values)


def _copies_and_ranges(real: DataFrame, synthetic: DataFrame, columns: Sequence[ValueColumn]) -> dict[int, dict[str, Any]]:
    """Count rows per side, exact copies and the real ranges of continuous columns, in one query.

    Every row is left-joined, null-safe, to the distinct real value rows. A synthetic row
    is a copy when it finds any real row; a half-B row is a copy when it finds a half-A row.
    """
    slots = [_slot(j) for j in range(len(columns))]
    reference = real.groupBy(*slots).agg(F.max((F.col(_SIDE) == F.lit(_HALF_A)).cast("int")).alias(_IN_A))
    reference = reference.select(
        *[F.col(s).alias(_reference_slot(j)) for j, s in enumerate(slots)], F.lit(1).alias(_FOUND), F.col(_IN_A)
    )
    probes = real.drop(_HASH).unionByName(synthetic.drop(_HASH))
    matches = reduce(
        lambda a, b: a & b, [F.col(s).eqNullSafe(F.col(_reference_slot(j))) for j, s in enumerate(slots)]
    )
    joined = probes.join(reference, on=matches, how="left")
    copy = F.when(F.col(_SIDE) == F.lit(_SYNTHETIC), F.col(_FOUND)).otherwise(F.col(_IN_A))
    aggregates = [F.count(F.lit(1)).alias("rows"), F.sum(F.coalesce(copy, F.lit(0))).alias("copies")]
    for j, column in enumerate(columns):
        if column.continuous:
            aggregates += [F.min(_slot(j)).alias(f"lo_{j}"), F.max(_slot(j)).alias(f"hi_{j}")]
    rows = joined.groupBy(_SIDE).agg(*aggregates).collect()
    return {int(row[_SIDE]): row.asDict() for row in rows}


def _distance(columns: Sequence[ValueColumn], spans: dict[int, float | None]) -> Column:
    """Return the mean per-column distance between ``_slot(j)`` (synthetic) and ``_reference_slot(j)`` (real)."""
    terms = []
    for j, column in enumerate(columns):
        mine, theirs = F.col(_slot(j)), F.col(_reference_slot(j))
        if column.continuous and spans.get(j):
            difference = F.least(F.abs(mine - theirs) / F.lit(spans[j]), F.lit(1.0))
        else:
            # Discrete columns, and continuous ones whose real values are all equal (or all null).
            difference = F.when(mine.eqNullSafe(theirs), F.lit(0.0)).otherwise(F.lit(1.0))
        term = (
            F.when(mine.isNull() & theirs.isNull(), F.lit(0.0))
            .when(mine.isNull() | theirs.isNull(), F.lit(1.0))
            .otherwise(difference)
        )
        terms.append(term)
    return reduce(lambda a, b: a + b, terms) / F.lit(float(len(terms)))


def _closest_records(
    real: DataFrame,
    synthetic: DataFrame,
    columns: Sequence[ValueColumn],
    spans: dict[int, float | None],
    real_rows: int,
    synthetic_rows: int,
) -> dict[str, Any]:
    """Return the half-A share and median of the closest-record distances of the sampled synthetic rows."""
    slots = [_slot(j) for j in range(len(columns))]

    # Each half's sample is one partition after its limit, so the cross join below runs as
    # two tasks, and the synthetic sample (at most ``synthetic_rows`` rows) is broadcast.
    reference = reduce(
        DataFrame.unionByName,
        [
            real.where(F.col(_SIDE) == F.lit(half)).orderBy(_HASH).limit(real_rows).select(
                F.col(_SIDE), *[F.col(s).alias(_reference_slot(j)) for j, s in enumerate(slots)]
            )
            for half in (_HALF_A, _HALF_B)
        ],
    )

    # Row numbers tell apart synthetic rows that are equal in every column, keys included.
    sample = synthetic.orderBy(_HASH).limit(synthetic_rows).select(
        F.row_number().over(Window.partitionBy(_SIDE).orderBy(_HASH)).alias(_ROW), *slots
    )
    distances = reference.crossJoin(F.broadcast(sample)).select(
        _ROW, F.col(_SIDE), _distance(columns, spans).alias(_DISTANCE)
    )

    closest = distances.groupBy(_ROW).agg(
        F.min(F.when(F.col(_SIDE) == F.lit(_HALF_A), F.col(_DISTANCE))).alias("a"),
        F.min(F.when(F.col(_SIDE) == F.lit(_HALF_B), F.col(_DISTANCE))).alias("b"),
    )
    nearer_a = F.when(F.col("a") < F.col("b"), F.lit(1.0)).when(F.col("a") == F.col("b"), F.lit(0.5)).otherwise(F.lit(0.0))
    row = closest.agg(
        F.avg(nearer_a).alias("share"),
        F.median(F.least("a", "b")).alias("median"),
        F.count(F.lit(1)).alias("rows"),
    ).first()
    assert row is not None
    return {"dcr_half_a_share": row["share"], "dcr_median": row["median"], "dcr_synthetic_rows": int(row["rows"])}


def privacy_scores(
    real: DataFrame,
    synthetic: DataFrame,
    columns: Sequence[ValueColumn],
    *,
    seed: int = 0,
    synthetic_rows: int = DCR_SYNTHETIC_ROWS,
    real_rows: int = DCR_REAL_ROWS,
) -> dict[str, Any]:
    """Return the exact-copy shares and the DCR scores of one table, computed by two Spark queries.

    ``synthetic_rows`` caps the synthetic rows whose closest record is searched and
    ``real_rows`` the rows taken from each real half; both halves get the same count.
    A score is None when a side has no rows.
    """
    result: dict[str, Any] = {
        "columns": len(columns), "synthetic_rows": 0, "exact_copy_rows": 0, "exact_copy_share": None,
        "exact_copy_share_holdout": None, "dcr_half_a_share": None, "dcr_median": None,
        "dcr_synthetic_rows": 0, "dcr_real_rows_per_half": 0,
    }
    if not columns:
        return result
    real_values = _real_rows(real, columns, seed)
    synthetic_values = _synthetic_rows(synthetic, columns, seed)
    sides = _copies_and_ranges(real_values, synthetic_values, columns)
    empty: dict[str, Any] = {"rows": 0, "copies": 0}
    half_a, half_b, synthetic_side = (sides.get(side, empty) for side in (_HALF_A, _HALF_B, _SYNTHETIC))
    result["synthetic_rows"] = int(synthetic_side["rows"])
    result["exact_copy_rows"] = int(synthetic_side["copies"] or 0)
    if synthetic_side["rows"]:
        result["exact_copy_share"] = result["exact_copy_rows"] / int(synthetic_side["rows"])
    if half_a["rows"] and half_b["rows"]:
        result["exact_copy_share_holdout"] = int(half_b["copies"] or 0) / int(half_b["rows"])

    per_half = min(int(half_a["rows"]), int(half_b["rows"]), real_rows)
    searched = min(int(synthetic_side["rows"]), synthetic_rows)
    if per_half == 0 or searched == 0:
        return result
    spans: dict[int, float | None] = {}
    for j, column in enumerate(columns):
        if column.continuous:
            lows = [side.get(f"lo_{j}") for side in (half_a, half_b) if side.get(f"lo_{j}") is not None]
            highs = [side.get(f"hi_{j}") for side in (half_a, half_b) if side.get(f"hi_{j}") is not None]
            span = (float(max(highs)) - float(min(lows))) if lows else None
            spans[j] = span if span is not None and math.isfinite(span) and span > 0 else None
    result.update(_closest_records(real_values, synthetic_values, columns, spans, per_half, searched))
    result["dcr_real_rows_per_half"] = per_half
    return result
