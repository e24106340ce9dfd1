"""Column expressions that draw random values reproducibly.

Every random number is a hash of (seed, table, purpose, row index), so a row gets
the same values whatever the partitioning, the executor count or the order in
which tables are generated.
"""

from __future__ import annotations

from collections.abc import Callable

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


# Arrays longer than this are built from one string literal (see :func:`double_array`).
_SHORT_ARRAY = 8
# Separators tried in order for string arrays: the first that occurs in no value is used.
_SEPARATORS = ("\x1f", "\x1e", "\x1d", "\x1c")


def _split_literal(items: list[str], separator: str, element_type: str) -> Column:
    """Return ``items`` as a literal array: one string literal split and cast, which Spark folds to a constant.

    A SQL ``array(...)`` of N literals is an expression tree of N nodes, which every
    analysis and optimisation pass walks again. With the 1,000-point grids of fitted
    quantiles that costs seconds per query. The split string is three nodes.
    """
    value = F.split(F.lit(separator.join(items)), separator, -1)
    return value if element_type == "string" else value.cast(f"array<{element_type}>")


def double_array(values: np.ndarray | list[float]) -> Column:
    """Return a literal array<double> built from one expression (infinities and NaN included).

    One expression instead of one ``lit`` per element: building thousands of
    ``lit`` columns costs a call into the JVM (or a message under Spark Connect) each.
    """
    if not len(values):
        return F.array().cast("array<double>")
    if len(values) > _SHORT_ARRAY:
        # repr gives the shortest string that parses back to the same double.
        return _split_literal([repr(float(v)) for v in values], ",", "double")
    items = ",".join(f"{float(v)!r}D" if np.isfinite(v) else f"CAST('{float(v)}' AS DOUBLE)" for v in values)
    return F.expr(f"array({items})")


def string_array(values: list[str]) -> Column:
    """Return a literal array<string> built from one expression (see :func:`double_array`)."""
    if not values:
        return F.array().cast("array<string>")
    texts = [str(v) for v in values]
    if len(texts) > _SHORT_ARRAY:
        separator = next((s for s in _SEPARATORS if not any(s in t for t in texts)), None)
        if separator is not None:
            return _split_literal(texts, separator, "string")
    escaped = [t.replace("\\", "\\\\").replace("'", "\\'") for t in texts]
    return F.expr("array(" + ",".join(f"'{v}'" for v in escaped) + ")")


def long_array(values: np.ndarray | list[int]) -> Column:
    """Return a literal array<bigint> built from one expression (see :func:`double_array`)."""
    if not len(values):
        return F.array().cast("array<bigint>")
    if len(values) > _SHORT_ARRAY:
        return _split_literal([str(int(v)) for v in values], ",", "bigint")
    return F.expr("array(" + ",".join(f"{int(v)}L" for v in values) + ")")


# Candidates that count_passing compares one by one by default. Rows with more are scanned.
_MAX_CANDIDATES = 8


def choose_index(u: Column, weights: list[float]) -> Column:
    """Return the 0-based index drawn from ``weights`` (not necessarily normalised) by the uniform ``u``.

    Exact inverse-CDF sampling in plain SQL: a lookup table of ``resolution``
    buckets gives the first candidate index, and the few cumulative weights that
    end inside the bucket are compared with ``u`` one by one. The resolution is
    raised until no bucket contains more than _MAX_CANDIDATES of them, or it reaches
    65,536. The comparisons are plain expressions, which Spark compiles. A
    higher-order ``filter`` over the candidates, several times slower, runs only
    in buckets that still contain more (see :func:`count_passing`).
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
    while True:
        edges = np.arange(resolution + 1) / resolution
        # Index chosen at a bucket's lower and upper edge: the result for any u inside lies between them.
        low = np.minimum(np.searchsorted(cumulative, edges[:-1], side="right"), last)
        high = np.minimum(np.searchsorted(cumulative, edges[1:], side="right"), last)
        span = int((high - low).max())
        if span <= _MAX_CANDIDATES or resolution >= 1 << 16:
            break
        resolution = min(resolution * 4, 1 << 16)
    bucket = F.least(F.floor(u * F.lit(resolution)).cast("int"), F.lit(resolution - 1))
    start = F.get(long_array(low), bucket).cast("int")
    stop = F.get(long_array(high), bucket).cast("int")
    chosen = count_passing(double_array(cumulative), start, stop, span, lambda c: c <= u)
    return F.least(chosen, F.lit(last))


def count_passing(
    values: Column, start: Column, stop: Column, widest: int, test: Callable[[Column], Column],
    unrolled: int = _MAX_CANDIDATES,
) -> Column:
    """Return ``start`` plus how many of ``values[start:stop]`` (0-based) pass ``test``.

    Every element after ``stop`` must fail ``test``, as in a sorted array. ``widest``
    is the largest ``stop - start`` of any row. Up to ``unrolled`` elements are
    compared one by one in plain expressions, which Spark compiles. A higher-order
    ``filter``, several times slower because Spark does not compile it, runs only
    on rows where ``stop - start`` is larger. Each comparison repeats ``test``'s
    expression in the query plan, which Spark's optimizer then has to walk.
    """
    passed = start
    for offset in range(min(widest, unrolled)):
        # An element past the end of the array is null, so it counts as failing.
        passed = passed + F.when(test(F.get(values, start + F.lit(offset))), F.lit(1)).otherwise(F.lit(0))
    if widest > unrolled:
        candidates = F.slice(values, start + F.lit(1), F.greatest(stop - start, F.lit(0)))
        scanned = start + F.size(F.filter(candidates, test))
        passed = F.when(stop - start > F.lit(unrolled), scanned).otherwise(passed)
    return passed


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
    if all(isinstance(v, str) for v in values):
        table = string_array([str(v) for v in values])
    elif all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        table = long_array([int(v) for v in values])
    elif all(isinstance(v, float) for v in values):
        table = double_array([float(v) for v in values])
    else:
        table = F.array(*[F.lit(value) for value in values])
    return F.element_at(table, index + F.lit(1))


def qcol(name: str) -> Column:
    """Return a column reference that takes ``name`` literally (dots, spaces and backticks included)."""
    return F.col("`" + name.replace("`", "``") + "`")
