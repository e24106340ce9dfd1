"""Column expressions that draw random values reproducibly.

Every random number is a hash of (seed, table, purpose, row index), so a row gets
the same values whatever the partitioning, the executor count or the order in
which tables are generated.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pyspark.sql import Column
from pyspark.sql import functions as F
from pyspark.sql.functions import pandas_udf

# Reserved prefix of internal columns; they never reach the output.
INTERNAL = "__ss_"
ROW_INDEX = f"{INTERNAL}idx"

_TWO_POW_53 = float(1 << 53)


def uniform(seed: int, *parts: str | int, index: Column | None = None) -> Column:
    """Return a column of uniform doubles in [0, 1) derived from the seed, the parts and the row index."""
    index = qcol(ROW_INDEX) if index is None else index
    hashed = F.xxhash64(F.lit(seed).cast("long"), *[F.lit(str(part)) for part in parts], index)
    return F.shiftrightunsigned(hashed, 11).cast("double") / F.lit(_TWO_POW_53)


def hash_long(seed: int, *parts: str | int, index: Column | None = None) -> Column:
    """Return a column of non-negative 63-bit integers derived like :func:`uniform`."""
    index = qcol(ROW_INDEX) if index is None else index
    hashed = F.xxhash64(F.lit(seed).cast("long"), *[F.lit(str(part)) for part in parts], index)
    return F.shiftrightunsigned(hashed, 1)


def choose_index(u: Column, weights: list[float]) -> Column:
    """Return the 0-based index drawn from ``weights`` (not necessarily normalised) by the uniform ``u``."""
    cumulative = np.cumsum(np.asarray(weights, dtype="float64"))
    if len(cumulative) == 0 or cumulative[-1] <= 0:
        raise ValueError("choose_index needs at least one positive weight")
    cumulative = cumulative / cumulative[-1]
    last = len(cumulative) - 1
    if last == 0:
        return F.lit(0)
    if last < 8:
        # A short CASE chain is cheaper than a Python worker round trip.
        expression = F.lit(last)
        for position in range(last - 1, -1, -1):
            expression = F.when(u < F.lit(float(cumulative[position])), F.lit(position)).otherwise(expression)
        return expression

    @pandas_udf("int")  # type: ignore[call-overload]
    def _search(values: pd.Series) -> pd.Series:
        found = np.searchsorted(cumulative, values.to_numpy(), side="right")
        return pd.Series(np.minimum(found, last).astype("int32"))

    return _search(u)


def inverse_quantiles(u: Column, quantiles: list[float]) -> Column:
    """Return a value drawn by interpolating the quantile function given at evenly spaced probabilities."""
    points = np.asarray(quantiles, dtype="float64")
    if len(points) == 1:
        return F.lit(float(points[0]))
    probabilities = np.linspace(0.0, 1.0, len(points))

    @pandas_udf("double")  # type: ignore[call-overload]
    def _interpolate(values: pd.Series) -> pd.Series:
        return pd.Series(np.interp(values.to_numpy(), probabilities, points))

    return _interpolate(u)


def pick(index: Column, values: list[object]) -> Column:
    """Return ``values[index]`` as a column expression."""
    if len(values) == 1:
        return F.lit(values[0])
    return F.element_at(F.array(*[F.lit(value) for value in values]), index + F.lit(1))


def qcol(name: str) -> Column:
    """Return a column reference that takes ``name`` literally (dots, spaces and backticks included)."""
    return F.col("`" + name.replace("`", "``") + "`")
