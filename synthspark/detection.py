"""Detection score: how well a Spark ML random forest separates real rows from synthetic ones.

For one table, both sides are sampled to the same number of rows. A parent table's rows
are enriched with aggregates of their children per relationship: the child count, the
mean of each continuous child column and the distinct count of each discrete child
column. A random forest is trained on a hash-chosen 70 % of the rows and scored on the
other 30 %: accuracy and ROC AUC near 0.5 mean the classifier cannot tell the sides
apart, 1.0 means every row is caught.

Samples and the split are chosen by a hash of each whole row (keys included) and the
seed, so they do not depend on partitioning. Only bounded results reach the driver:
row counts, the most frequent values of each discrete column, and one row per
(label, rounded probability) of the held-out predictions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pyspark.ml.classification import RandomForestClassifier
from pyspark.ml.feature import VectorAssembler
from pyspark.ml.functions import vector_to_array
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from synthspark.quality import ValueColumn, row_hash, value_expressions
from synthspark.sampling import INTERNAL, qcol

# Rows sampled per side by default. The forest trains on 70 % of twice this many rows.
DETECTION_ROWS = 10_000
# Below this many rows on either side, a table is not scored: its held-out part would be too small.
MIN_DETECTION_ROWS = 50
# Value columns plus child aggregates used as features of one table, in table order.
MAX_FEATURE_COLUMNS = 60
# A discrete column is encoded as the rank of its value among this many most frequent values,
# counted over both sides. Rarer values share one code, and null has another.
TOP_CATEGORIES = 30
# Held-out share of each side's rows.
TEST_SHARE = 0.3
# Probabilities are rounded to this many decimals before the AUC histogram reaches the driver.
_PROBABILITY_DECIMALS = 4
_FOREST = {"numTrees": 20, "maxDepth": 5, "minInstancesPerNode": 5, "maxBins": 32}

_HASH = f"{INTERNAL}hash"
_LABEL = f"{INTERNAL}label"
_TEST = f"{INTERNAL}test"
_FEATURES = f"{INTERNAL}features"
_REAL, _SYNTHETIC = 0, 1


@dataclass(frozen=True)
class ChildTable:
    """One relationship whose child rows are aggregated onto the parent rows.

    ``columns`` is the child's foreign key and ``parent_columns`` the parent columns it
    references. ``values`` are the child columns to aggregate.
    """

    name: str
    real: DataFrame
    synthetic: DataFrame
    columns: Sequence[str]
    parent_columns: Sequence[str]
    values: Sequence[ValueColumn]


@dataclass(frozen=True)
class _Feature:
    """One model input before encoding: a column of the enriched rows, continuous or discrete."""

    name: str
    slot: str
    continuous: bool


def _count_rows(real: DataFrame, synthetic: DataFrame) -> tuple[int, int]:
    stacked = real.select(F.lit(_REAL).alias(_LABEL)).unionByName(synthetic.select(F.lit(_SYNTHETIC).alias(_LABEL)))
    counts = {int(row[_LABEL]): int(row["count"]) for row in stacked.groupBy(_LABEL).count().collect()}
    return counts.get(_REAL, 0), counts.get(_SYNTHETIC, 0)


def _plan_features(values: Sequence[ValueColumn], children: Sequence[ChildTable], limit: int) -> tuple[
    list[_Feature], list[tuple[ChildTable, list[ValueColumn]]], int
]:
    """Choose the features in order (own columns, then per relationship its count and columns) up to ``limit``.

    Return the features, the child columns aggregated per relationship, and how many were left out.
    """
    features: list[_Feature] = []
    aggregated: list[tuple[ChildTable, list[ValueColumn]]] = []
    available = len(values) + sum(1 + len(child.values) for child in children)
    for j, column in enumerate(values[:limit]):
        features.append(_Feature(column.name, f"{INTERNAL}f{j}", column.continuous))
    for r, child in enumerate(children):
        if len(features) >= limit:
            break
        features.append(_Feature(f"{child.name}:count", f"{INTERNAL}r{r}n", True))
        room = limit - len(features)
        columns = list(child.values[:room])
        for j, column in enumerate(columns):
            # A continuous child column becomes its mean, and a discrete one its number of distinct values.
            label = "mean" if column.continuous else "distinct"
            features.append(_Feature(f"{child.name}:{label}:{column.name}", f"{INTERNAL}r{r}v{j}", True))
        aggregated.append((child, columns))
    return features, aggregated, available - len(features)


def _key_slots(r: int, child: ChildTable) -> list[str]:
    return [f"{INTERNAL}r{r}k{i}" for i in range(len(child.columns))]


def _keys_as(frame: DataFrame, columns: Sequence[str], slots: Sequence[str], like: DataFrame) -> list[Column]:
    """Return ``columns`` of ``frame`` named ``slots`` and cast to their types in ``like``.

    The real and synthetic keys are stacked in one column, so they need one type. The cast
    changes nothing when the generated keys have the source types, as they do.
    """
    types = {field.name: field.dataType for field in like.schema.fields}
    return [qcol(c).cast(types[c]).alias(slot) for c, slot in zip(columns, slots)]


def _sample_side(
    frame: DataFrame,
    label: int,
    like: DataFrame,
    values: Sequence[ValueColumn],
    aggregated: Sequence[tuple[ChildTable, list[ValueColumn]]],
    rows: int,
    seed: int,
) -> DataFrame:
    """Return ``rows`` rows of one side chosen by hash: label, split flag, hash, own features and parent keys.

    The held-out rows are the side's ``TEST_SHARE`` of the sample with the lowest hashes, an
    exact count. Splitting each row by its own hash instead would leave the sides unequal in
    each part. A forest that cannot separate the sides would then lean to the side that is
    larger in training. That side is the smaller one in the held-out part, so the score would
    fall below 0.5.
    """
    own = [value.alias(f"{INTERNAL}f{j}") for j, value in enumerate(value_expressions(frame, values))]
    keys = [
        key for r, (child, _) in enumerate(aggregated)
        for key in _keys_as(frame, child.parent_columns, _key_slots(r, child), like)
    ]
    # Declaring the label binary spares the forest a Spark job that would count its classes.
    binary = {"ml_attr": {"type": "nominal", "name": _LABEL, "num_vals": 2}}
    sampled = (
        frame.select(F.lit(float(label)).alias(_LABEL, metadata=binary), row_hash(frame, seed, "detection").alias(_HASH),
                     *own, *keys)
        .orderBy(_HASH)
        .limit(rows)
    )
    # After the limit the sample is one partition of at most ``max_rows`` rows, so this
    # window moves no data.
    order = F.row_number().over(Window.partitionBy(_LABEL).orderBy(_HASH))
    return sampled.withColumn(_TEST, order <= F.lit(round(rows * TEST_SHARE)))


def _with_child_aggregates(
    stacked: DataFrame, r: int, child: ChildTable, columns: Sequence[ValueColumn]
) -> DataFrame:
    """Add one relationship's child count and child column means or distinct counts to the sampled parents."""
    slots = _key_slots(r, child)
    value_slots = [f"{INTERNAL}r{r}v{j}" for j in range(len(columns))]

    def project(frame: DataFrame, label: int) -> DataFrame:
        values = [value.alias(slot) for value, slot in zip(value_expressions(frame, columns), value_slots)]
        keys = _keys_as(frame, child.columns, slots, child.real)
        return frame.select(F.lit(float(label)).alias(_LABEL), *keys, *values)

    children = project(child.real, _REAL).unionByName(project(child.synthetic, _SYNTHETIC))
    aggregates = [F.count(F.lit(1)).alias(f"{INTERNAL}r{r}n")]
    for column, slot in zip(columns, value_slots):
        statistic = F.avg(slot) if column.continuous else F.count_distinct(F.col(slot))
        aggregates.append(statistic.alias(slot))
    # Only the sampled parents' children are aggregated: the sampled keys (at most
    # ``max_rows`` per side) are broadcast to the child scan, and the summary back.
    parents = F.broadcast(stacked.select(_LABEL, *slots))
    summary = children.join(parents, on=[_LABEL, *slots], how="left_semi").groupBy(_LABEL, *slots).agg(*aggregates)
    enriched = stacked.join(F.broadcast(summary), on=[_LABEL, *slots], how="left").drop(*slots)
    # A parent without children has count 0 and distinct counts 0. Its means stay null, which
    # the encoding turns into a null flag.
    zero_filled = [f"{INTERNAL}r{r}n"] + [slot for column, slot in zip(columns, value_slots) if not column.continuous]
    return enriched.fillna(0, subset=zero_filled)


def _top_values(frame: DataFrame, features: Sequence[_Feature]) -> dict[str, dict[str, int]]:
    """Return, per discrete feature, its most frequent values mapped to their rank (0 = most frequent)."""
    discrete = [f for f in features if not f.continuous]
    if not discrete:
        return {}
    cells = frame.select(
        F.explode(F.array(*[F.struct(F.lit(f.slot).alias("k"), F.col(f.slot).alias("v")) for f in discrete])).alias("e")
    ).select("e.k", "e.v").where(F.col("v").isNotNull())
    ranked = cells.groupBy("k", "v").count().withColumn(
        "rank", F.row_number().over(Window.partitionBy("k").orderBy(F.desc("count"), F.asc("v")))
    )
    result: dict[str, dict[str, int]] = {f.slot: {} for f in discrete}
    for row in ranked.where(F.col("rank") <= TOP_CATEGORIES).collect():
        result[row["k"]][row["v"]] = int(row["rank"]) - 1
    return result


def _encoded(features: Sequence[_Feature], top: dict[str, dict[str, int]]) -> tuple[list[Column], list[str]]:
    """Return numeric model inputs: continuous values with nulls as 0 plus a null flag, discrete values as ranks."""
    inputs: list[Column] = []
    names: list[str] = []
    for index, feature in enumerate(features):
        value = F.col(feature.slot)
        if feature.continuous:
            number = value.cast("double")
            missing = number.isNull() | F.isnan(number) | (F.abs(number) == F.lit(float("inf")))
            inputs.append(F.when(missing, F.lit(0.0)).otherwise(number).alias(f"{INTERNAL}x{index}"))
            inputs.append(missing.cast("double").alias(f"{INTERNAL}m{index}"))
            names += [f"{INTERNAL}x{index}", f"{INTERNAL}m{index}"]
            continue
        ranks = top.get(feature.slot, {})
        code: Column = F.lit(float(TOP_CATEGORIES))
        if ranks:
            lookup = F.create_map(*[item for v, r in ranks.items() for item in (F.lit(v), F.lit(float(r)))])
            code = F.coalesce(F.try_element_at(lookup, value), code)
        inputs.append(F.when(value.isNull(), F.lit(float(TOP_CATEGORIES + 1))).otherwise(code).alias(f"{INTERNAL}x{index}"))
        names.append(f"{INTERNAL}x{index}")
    return inputs, names


def _held_out_scores(predictions: DataFrame) -> dict[str, Any]:
    """Return accuracy and ROC AUC (Mann-Whitney, ties counted half) from the held-out predictions."""
    probability = F.round(vector_to_array("probability")[_SYNTHETIC], _PROBABILITY_DECIMALS)
    rows = (
        predictions.select(F.col(_LABEL), probability.alias("p"), (F.col("prediction") == F.col(_LABEL)).alias("hit"))
        .groupBy(_LABEL, "p")
        .agg(F.count(F.lit(1)).alias("rows"), F.sum(F.col("hit").cast("long")).alias("hits"))
        .collect()
    )
    histogram: dict[float, list[int]] = {}
    total = hits = 0
    for row in rows:
        counts = histogram.setdefault(float(row["p"]), [0, 0])
        counts[int(row[_LABEL])] += int(row["rows"])
        total += int(row["rows"])
        hits += int(row["hits"])
    real = sum(c[_REAL] for c in histogram.values())
    synthetic = sum(c[_SYNTHETIC] for c in histogram.values())
    auc = None
    if real and synthetic:
        below = 0
        pairs = 0.0
        for p in sorted(histogram):
            counts = histogram[p]
            pairs += counts[_SYNTHETIC] * (below + 0.5 * counts[_REAL])
            below += counts[_REAL]
        auc = pairs / (real * synthetic)
    return {"accuracy": hits / total if total else None, "auc": auc, "test_rows": total}


def detection_score(
    real: DataFrame,
    synthetic: DataFrame,
    values: Sequence[ValueColumn],
    children: Sequence[ChildTable] = (),
    *,
    seed: int = 0,
    max_rows: int = DETECTION_ROWS,
    max_features: int = MAX_FEATURE_COLUMNS,
) -> dict[str, Any]:
    """Train a random forest to separate real from synthetic rows and score it on held-out rows.

    Both sides are cut to ``min(real rows, synthetic rows, max_rows)`` rows. Return a
    JSON-ready dict: ``accuracy`` and ``auc`` on the held-out rows (None when the table is
    not scored, with the reason in ``skipped``), the rows per side, train and test row
    counts, and the features used and left out.
    """
    features, aggregated, left_out = _plan_features(values, children, max_features)
    result: dict[str, Any] = {
        "accuracy": None, "auc": None, "rows_per_side": 0, "train_rows": 0, "test_rows": 0,
        "features": [f.name for f in features], "features_skipped": left_out, "skipped": None,
    }
    if not features:
        result["skipped"] = "no value column and no child table"
        return result
    real_rows, synthetic_rows = _count_rows(real, synthetic)
    rows = min(real_rows, synthetic_rows, max_rows)
    result["rows_per_side"] = rows
    if rows < MIN_DETECTION_ROWS:
        result["skipped"] = f"fewer than {MIN_DETECTION_ROWS} rows on a side"
        return result

    own = values[:max_features]
    stacked = _sample_side(real, _REAL, real, own, aggregated, rows, seed).unionByName(
        _sample_side(synthetic, _SYNTHETIC, real, own, aggregated, rows, seed)
    )
    for r, (child, columns) in enumerate(aggregated):
        stacked = _with_child_aggregates(stacked, r, child, columns)
    # The forest's bagging and split sampling depend on the partition each row is in and on
    # the row order. Both are fixed here: each side's sample is one partition sorted by hash,
    # and the broadcast joins that add the child aggregates keep that order.
    stacked = stacked.persist()
    try:
        top = _top_values(stacked, features)
        inputs, names = _encoded(features, top)
        encoded = stacked.select(F.col(_LABEL), F.col(_TEST), *inputs)
        assembler = VectorAssembler(inputCols=names, outputCol=_FEATURES)
        train = assembler.transform(encoded.where(~F.col(_TEST)))
        test = assembler.transform(encoded.where(F.col(_TEST)))
        forest = RandomForestClassifier(featuresCol=_FEATURES, labelCol=_LABEL, seed=seed, **_FOREST)
        model = forest.fit(train)
        scores = _held_out_scores(model.transform(test))
    finally:
        stacked.unpersist()
    result.update(scores)
    result["train_rows"] = 2 * rows - scores["test_rows"]
    return result
