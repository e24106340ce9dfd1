"""Column expressions that draw random values reproducibly.

Every random number is a hash of (seed, table, purpose, row index), so a row gets
the same values whatever the partitioning, the executor count or the order in
which tables are generated.
"""

from __future__ import annotations

import numpy as np
from pyspark.sql import Column
from pyspark.sql import functions as F

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


def double_array(values: np.ndarray | list[float]) -> Column:
    """Return a literal array<double> built from one SQL expression.

    One expression instead of one ``lit`` per element: building thousands of
    ``lit`` columns costs a call into the JVM (or a message under Spark Connect) each.
    """
    items = ",".join(f"{float(v)!r}D" if np.isfinite(v) else f"CAST('{float(v)}' AS DOUBLE)" for v in values)
    return F.expr(f"array({items})") if len(values) else F.array().cast("array<double>")


def string_array(values: list[str]) -> Column:
    """Return a literal array<string> built from one SQL expression (see :func:`double_array`)."""
    if not values:
        return F.array().cast("array<string>")
    escaped = [str(v).replace("\\", "\\\\").replace("'", "\\'") for v in values]
    return F.expr("array(" + ",".join(f"'{v}'" for v in escaped) + ")")


def long_array(values: np.ndarray | list[int]) -> Column:
    """Return a literal array<bigint> built from one SQL expression (see :func:`double_array`)."""
    items = ",".join(f"{int(v)}L" for v in values)
    return F.expr(f"array({items})") if len(values) else F.array().cast("array<bigint>")


def choose_index(u: Column, weights: list[float]) -> Column:
    """Return the 0-based index drawn from ``weights`` (not necessarily normalised) by the uniform ``u``.

    Exact inverse-CDF sampling in plain SQL: a lookup table of ``resolution``
    buckets narrows ``u`` to a short range of candidate indexes, and only that
    range of the cumulative weights is scanned.
    """
    cumulative = np.cumsum(np.asarray(weights, dtype="float64"))
    if len(cumulative) == 0 or cumulative[-1] <= 0:
        raise ValueError("choose_index needs at least one positive weight")
    cumulative = cumulative / cumulative[-1]
    last = len(cumulative) - 1
    if last == 0:
        return F.lit(0)
    if last < 8:
        expression = F.lit(last)
        for position in range(last - 1, -1, -1):
            expression = F.when(u < F.lit(float(cumulative[position])), F.lit(position)).otherwise(expression)
        return expression
    resolution = int(min(max(1024, 4 * len(cumulative)), 1 << 16))
    edges = np.arange(resolution + 1) / resolution
    # Index chosen at a bucket's lower and upper edge: the result for any u inside lies between them.
    low = np.minimum(np.searchsorted(cumulative, edges[:-1], side="right"), last)
    high = np.minimum(np.searchsorted(cumulative, edges[1:], side="right"), last)
    bucket = F.least(F.floor(u * F.lit(resolution)).cast("int"), F.lit(resolution - 1)) + F.lit(1)
    start = F.element_at(long_array(low), bucket).cast("int")
    stop = F.element_at(long_array(high), bucket).cast("int")
    candidates = F.slice(double_array(cumulative), start + F.lit(1), stop - start + F.lit(1))
    return F.least(start + F.size(F.filter(candidates, lambda c: c <= u)), F.lit(last))


def inverse_quantiles(u: Column, quantiles: list[float]) -> Column:
    """Return a value drawn by interpolating the quantile function given at evenly spaced probabilities."""
    points = np.asarray(quantiles, dtype="float64")
    if len(points) == 1:
        return F.lit(float(points[0]))
    table = double_array(points)
    position = u * F.lit(len(points) - 1)
    index = F.least(F.floor(position).cast("int"), F.lit(len(points) - 2))
    below = F.element_at(table, index + F.lit(1))
    above = F.element_at(table, index + F.lit(2))
    return below + (position - index) * (above - below)


def pick(index: Column, values: list[object]) -> Column:
    """Return ``values[index]`` as a column expression."""
    if len(values) == 1:
        return F.lit(values[0])
    return F.element_at(F.array(*[F.lit(value) for value in values]), index + F.lit(1))


def qcol(name: str) -> Column:
    """Return a column reference that takes ``name`` literally (dots, spaces and backticks included)."""
    return F.col("`" + name.replace("`", "``") + "`")
