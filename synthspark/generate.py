"""Generate: parents first, child counts sampled per parent, children expanded in Spark.

Every table gets a contiguous row index ``__ss_idx`` (0 .. rows-1). A child
table's index comes from a prefix sum of its parents' sampled child counts, done
per block of parent rows with one small aggregate on the driver, so no step
depends on partitioning. Foreign-key columns are copied from the generated
parent, which makes every key valid by construction.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from synthspark import pii
from synthspark.config import SynthConfig, parse_config
from synthspark.dependence import (
    PARENT_Z,
    STRATIFIED_ROWS,
    U_RANKED,
    Z,
    count_dimension,
    dimension_score,
    dimension_uniform,
    expected_score_histograms,
    joint_index,
    joint_member,
    normal_cdf,
    null_dimension,
    with_joint_columns,
    with_normal_scores,
    with_ranked_uniforms,
    with_reference_ranks,
    with_reference_scores,
    with_score_uniforms,
)
from synthspark.errors import GenerationError
from synthspark.model import ColumnModel, FittedModel, RelationshipModel, TableModel
from synthspark.plan import Plan, Relationship, TablePlan, build_plan
from synthspark.sampling import (
    INTERNAL,
    ROW_INDEX,
    choose_index,
    hash_long,
    inverse_quantiles,
    pick,
    qcol,
    string_array,
    uniform,
)
from synthspark.session import tune_session
from synthspark.sources import read_table

logger = logging.getLogger(__name__)

ORDINAL = f"{INTERNAL}ord"
PARENT_INDEX = f"{INTERNAL}pidx"
COUNT = f"{INTERNAL}count"
START = f"{INTERNAL}start"
BLOCK = f"{INTERNAL}block"
SLOT = f"{INTERNAL}slot"
RANK = f"{INTERNAL}rank"
SCORE = f"{INTERNAL}score"
# Parent rows are split into at most this many blocks for prefix sums; one row per
# block reaches the driver.
MAX_BLOCKS = 4096


@dataclass
class GeneratedDatabase:
    """Generated tables (lazy DataFrames over stored key frames) and their row counts."""

    tables: dict[str, DataFrame]
    rows: dict[str, int]
    _cached: list[DataFrame] = field(default_factory=list)

    def unpersist(self) -> None:
        """Release the stored key frames.

        Cached frames are dropped at once. Spark's cleaner frees local checkpoints
        once no frame refers to them, so this also drops the references.
        """
        for frame in self._cached:
            frame.unpersist()
        self._cached.clear()


def _is_connect(spark: SparkSession) -> bool:
    """Return whether ``spark`` is a Spark Connect session."""
    return type(spark).__module__.startswith("pyspark.sql.connect")


def _type_of(column: ColumnModel) -> T.DataType:
    # Pure Python, unlike _parse_datatype_string, so it works under Spark Connect too.
    return T._parse_datatype_json_string(column.spark_type)


def _with_prefix_sums(spark: SparkSession, frame: DataFrame, rows: int) -> tuple[DataFrame, int]:
    """Add ``START``: the sum of ``COUNT`` over rows with a smaller ``PARENT_INDEX``; return it and the total."""
    block_size = max(1, math.ceil(rows / MAX_BLOCKS))
    blocked = frame.withColumn(BLOCK, F.floor(qcol(PARENT_INDEX) / F.lit(block_size)).cast("long"))
    totals = blocked.groupBy(BLOCK).agg(F.sum(COUNT).alias("total")).orderBy(BLOCK).collect()
    offsets = []
    running = 0
    for row in totals:
        offsets.append((int(row[BLOCK]), running))
        running += int(row["total"] or 0)
    if not offsets:
        return frame.withColumn(START, F.lit(0).cast("long")), 0
    offset_frame = spark.createDataFrame(offsets, f"{BLOCK} long, offset long")
    from pyspark.sql import Window

    within = Window.partitionBy(BLOCK).orderBy(PARENT_INDEX).rowsBetween(Window.unboundedPreceding, Window.currentRow)
    result = (
        blocked.join(F.broadcast(offset_frame), on=BLOCK, how="left")
        .withColumn(START, qcol("offset") + F.sum(COUNT).over(within) - qcol(COUNT))
        .drop("offset", BLOCK)
    )
    return result, running


def _with_ranks(spark: SparkSession, frame: DataFrame, score: Column, rows: int) -> DataFrame:
    """Add ``RANK``: each row's 0-based position when rows are sorted by ``score`` (ties by ``PARENT_INDEX``).

    ``score`` is a standard normal, so ``Phi(score)`` splits rows into blocks of
    similar size. One count per block reaches the driver and each block is sorted
    on its own, so no step depends on partitioning.
    """
    from pyspark.sql import Window

    blocks = max(1, min(MAX_BLOCKS, rows))
    scored = frame.withColumn(SCORE, score).withColumn(
        BLOCK, F.least(F.floor(normal_cdf(qcol(SCORE)) * F.lit(blocks)).cast("long"), F.lit(blocks - 1))
    )
    totals = scored.groupBy(BLOCK).count().orderBy(BLOCK).collect()
    offsets = []
    running = 0
    for row in totals:
        offsets.append((int(row[BLOCK]), running))
        running += int(row["count"])
    if not offsets:
        return frame.withColumn(RANK, F.lit(0).cast("long"))
    offset_frame = spark.createDataFrame(offsets, f"{BLOCK} long, offset long")
    within = Window.partitionBy(BLOCK).orderBy(SCORE, PARENT_INDEX)
    return (
        scored.join(F.broadcast(offset_frame), on=BLOCK, how="left")
        .withColumn(RANK, qcol("offset") + F.row_number().over(within) - F.lit(1))
        .drop("offset", BLOCK, SCORE)
    )


def _affine_permutation(rows: int, seed: int, *parts: str) -> tuple[int, int]:
    """Return (multiplier, offset) such that i -> (multiplier * i + offset) mod rows is a permutation."""
    digest = hashlib.sha256("|".join([str(seed), *parts]).encode()).digest()
    multiplier = int.from_bytes(digest[:8], "big") % rows or 1
    while math.gcd(multiplier, rows) != 1:
        multiplier = multiplier % rows + 1
    offset = int.from_bytes(digest[8:16], "big") % rows
    return multiplier, offset


def quotas(weights: list[float], total: int) -> list[int]:
    """Split ``total`` into integer parts proportional to ``weights`` (largest remainder method)."""
    share = np.asarray(weights, dtype="float64")
    share = share / share.sum() * total
    parts = np.floor(share).astype("int64")
    remainder = total - int(parts.sum())
    if remainder > 0:
        order = np.argsort(-(share - parts), kind="stable")
        parts[order[:remainder]] += 1
    return [int(p) for p in parts]


@dataclass
class _Counts:
    """Each parent's number of children (or slots) as columns over the parents' frame.

    ``start`` is the position of the parent's first child among all children, and
    ``total`` the number of children. Both are None when only a Spark job can
    compute them (see :func:`_with_prefix_sums`).
    """

    count: Column
    start: Column | None
    total: int | None


def _sample_counts(
    seed: int, table: str, rel: RelationshipModel, purpose: str, parents: int, ranked: bool = False,
    limit: int | None = None,
) -> _Counts:
    """Return each parent's child count so that the counts follow the fitted histogram as closely as integers allow.

    The ``parents`` rows get quotas of each count value (proportional to the
    fitted histogram), so the histogram is reproduced, not only matched in
    expectation. The quotas go in the order of ``RANK`` when ``ranked`` (the
    parents' copula score for this count, so large parents get many children),
    else in the order of a seeded permutation of the parent index. Counts above
    ``limit`` are cut to it.

    Children are laid out in the same order as the quotas, so the position of a
    parent's first child needs no Spark job. It is the number of children of the
    quotas before the parent's own, plus its count times the parents before it in
    its own quota.
    """
    weights = [float(p) for p in rel.count_parents]
    if not weights or sum(weights) == 0 or parents == 0:
        return _Counts(F.lit(0).cast("long"), F.lit(0).cast("long"), 0)
    parts = quotas(weights, parents)
    values = [int(v) if limit is None else min(int(v), limit) for v in rel.count_values]
    if ranked:
        position = qcol(RANK)
    else:
        multiplier, offset = _affine_permutation(parents, seed, table, rel.name, purpose)
        wide = T.DecimalType(38, 0)
        position = F.pmod(
            qcol(PARENT_INDEX).cast(wide) * F.lit(multiplier).cast(wide) + F.lit(offset).cast(wide),
            F.lit(parents).cast(wide),
        ).cast("long")
    u = (position.cast("double") + F.lit(0.5)) / F.lit(float(parents))
    quota = choose_index(u, [float(p) for p in parts])
    children = [part * value for part, value in zip(parts, values)]
    first_parent = np.cumsum([0, *parts[:-1]]).tolist()
    first_child = np.cumsum([0, *children[:-1]]).tolist()
    count = pick(quota, values).cast("long")
    start = pick(quota, first_child).cast("long") + (position - pick(quota, first_parent).cast("long")) * count
    return _Counts(count, start, int(sum(children)))


class _Generator:
    def __init__(
        self,
        spark: SparkSession,
        model: FittedModel,
        config: SynthConfig,
        plan: Plan,
        sources: dict[str, DataFrame] | None = None,
    ):
        self.spark = spark
        self.model = model
        self.config = config
        self.plan = plan
        self.seed = config.generation.seed
        self.keys: dict[str, DataFrame] = {}
        self.rows: dict[str, int] = {}
        self.cached: list[DataFrame] = []
        # Per conditioned table, the expected histograms of its scores (see child_frame).
        self.histograms: dict[str, dict[int, list[float]]] = {}
        # Source tables, read only to make sure no personal value is copied from them.
        self.sources: dict[str, DataFrame] = dict(sources or {})

    def keep(self, frame: DataFrame) -> DataFrame:
        """Compute ``frame`` once and return it stored, for the tables and jobs that read it again.

        A local checkpoint replaces the frame's query plan by its stored rows, so later
        queries over it are planned without the plans of the tables before it. A cached
        frame keeps that lineage, and planning it took most of the driver's time (see
        docs/benchmarks.md, "Where the generation time goes").
        """
        # NOTE: under Spark Connect the frames are cached instead. Building the checkpoint
        # command for the copula's deeply nested plans failed in the Python client with
        # "DecodeError: Exceeded upb_DecodeOptions_MaxDepth".
        if self.config.generation.key_frames == "checkpoint" and not _is_connect(self.spark):
            stored = frame.localCheckpoint(eager=True, storageLevel=StorageLevel.MEMORY_AND_DISK)
        else:
            stored = frame.persist(StorageLevel.MEMORY_AND_DISK)
        self.cached.append(stored)
        return stored

    def parent_keys(self, rel: Relationship, purpose: str, limit: int | None = None) -> tuple[DataFrame, _Counts]:
        """Return the parent's index and key as the child names them, with each parent's child count (at most ``limit``).

        The frame also carries the parent's copula scores as ``PARENT_Z`` when the
        child table is conditioned on them.
        """
        parent = self.keys[rel.parent]
        extra = []
        dependence = self.model.tables[rel.child].dependence
        if dependence is not None and dependence.get("parent") == rel.name and Z in parent.columns:
            extra.append(F.slice(qcol(Z), 1, len(dependence["parent_dimensions"])).alias(PARENT_Z))
        frame = parent.select(
            qcol(ROW_INDEX).alias(PARENT_INDEX),
            *[qcol(p).alias(c) for p, c in zip(rel.parent_columns, rel.columns)],
            *extra,
            *([qcol(Z)] if Z in parent.columns else []),
        )
        score = dimension_score(self.model.tables[rel.parent].dependence, count_dimension(rel.name))
        fitted_rel = self.model.relationships[rel.name]
        rows = self.rows[rel.parent]
        if score is not None:
            frame = _with_ranks(self.spark, frame, score, rows)
        counts = _sample_counts(self.seed, rel.child, fitted_rel, purpose, rows, ranked=score is not None, limit=limit)
        scale = self.config.generation.scale
        if self.config.tables[rel.parent].reference and scale != 1:
            # A reference table keeps its rows, so its children scale through their counts,
            # rounded up or down at random so that the total follows the scale.
            bump = uniform(self.seed, rel.child, rel.name, purpose, "scale", index=qcol(PARENT_INDEX))
            scaled = F.floor(counts.count.cast("double") * F.lit(float(scale)) + bump).cast("long")
            if limit is not None:
                scaled = F.least(scaled, F.lit(limit).cast("long"))
            counts = _Counts(scaled, None, None)
        if Z in parent.columns:
            frame = frame.drop(Z)
        return frame, counts

    def with_starts(self, parents: DataFrame, counts: _Counts, rel: Relationship) -> tuple[DataFrame, int]:
        """Add ``COUNT`` and ``START`` (the position of each parent's first child) to ``parents``; return it and the total."""
        parents = parents.withColumn(COUNT, counts.count)
        if counts.start is None or counts.total is None:
            return _with_prefix_sums(self.spark, parents, self.rows[rel.parent])
        return parents.withColumn(START, counts.start), counts.total

    def root_frame(self, table: str) -> tuple[DataFrame, int]:
        fitted = self.model.tables[table]
        requested = self.config.generation.rows.get(table)
        count = requested if requested is not None else int(round(fitted.rows * self.config.generation.scale))
        frame = self.spark.range(count).select(
            qcol("id").alias(ROW_INDEX), qcol("id").alias(ORDINAL)
        )
        return frame, count

    def child_frame(self, table: str, rel: Relationship) -> tuple[DataFrame, int]:
        fitted_rel = self.model.relationships[rel.name]
        fitted = self.model.tables[table]
        # When the primary key is the foreign key, the relationship is one-to-one: at most one child per parent.
        one_to_one = bool(fitted.primary_key) and set(fitted.primary_key) <= set(rel.columns)
        parents, counts = self.parent_keys(rel, "count", limit=1 if one_to_one else None)
        carried = [qcol(PARENT_Z)] if PARENT_Z in parents.columns else []
        ranged, total = self.with_starts(parents, counts, rel)
        expanded = ranged.where(qcol(COUNT) > 0).select(
            *[qcol(c) for c in rel.columns],
            qcol(START),
            *carried,
            F.explode(F.sequence(F.lit(0).cast("long"), qcol(COUNT) - 1)).alias(ORDINAL),
        )
        expanded = expanded.select(
            (qcol(START) + qcol(ORDINAL)).alias(ROW_INDEX), qcol(ORDINAL), *[qcol(c) for c in rel.columns], *carried
        )
        null_share = fitted_rel.null_fraction
        null_rows = 0
        if null_share >= 1.0:
            null_rows = int(round(fitted.rows * self.config.generation.scale))
        elif null_share > 0:
            null_rows = int(round(total * null_share / (1 - null_share)))
        if carried and total + null_rows > STRATIFIED_ROWS and fitted.dependence is not None:
            self.histograms[table] = expected_score_histograms(ranged, COUNT, fitted.dependence, null_rows)
        if null_rows:
            types = {c.name: _type_of(c) for c in fitted.columns}
            nulls = self.spark.range(total, total + null_rows).select(
                qcol("id").alias(ROW_INDEX),
                (qcol("id") - F.lit(total)).alias(ORDINAL),
                *[F.lit(None).cast(types[c]).alias(c) for c in rel.columns],
                *([F.lit(None).cast("array<double>").alias(PARENT_Z)] if carried else []),
            )
            expanded = expanded.unionByName(nulls)
        return expanded, total + null_rows

    def assign(self, table: str, frame: DataFrame, rows: int, rel: Relationship) -> DataFrame:
        """Fill ``rel``'s columns by mapping rows onto the slots of each parent's sampled child count.

        Row ``i`` takes slot ``floor(perm(i) * slots / rows)`` where ``perm`` is an
        affine permutation of ``0 .. rows-1`` derived from the seed. Each slot so
        receives ``rows / slots`` rows (rounded), which keeps the relationship's
        children-per-parent distribution, zeros included.
        """
        fitted_rel = self.model.relationships[rel.name]
        parents, slots_per_parent = self.parent_keys(rel, "slots")
        ranged, slots = self.with_starts(parents.drop(PARENT_Z), slots_per_parent, rel)
        types = {c.name: _type_of(c) for c in self.model.tables[table].columns}
        if slots == 0 or rows == 0:
            logger.warning("relationship %s: the generated parents offer no children; its key is null", rel.describe())
            return frame.select(*[qcol(c) for c in frame.columns], *[F.lit(None).cast(types[c]).alias(c) for c in rel.columns])
        exploded = ranged.where(qcol(COUNT) > 0).select(
            *[qcol(c) for c in rel.columns],
            F.explode(F.sequence(qcol(START), qcol(START) + qcol(COUNT) - 1)).alias(SLOT),
        )
        multiplier, offset = _affine_permutation(rows, self.seed, table, rel.name)
        wide = T.DecimalType(38, 0)
        permuted = F.pmod(
            qcol(ROW_INDEX).cast(wide) * F.lit(multiplier).cast(wide) + F.lit(offset).cast(wide), F.lit(rows).cast(wide)
        )
        slot = F.floor(permuted * F.lit(slots).cast(wide) / F.lit(rows).cast(wide)).cast("long")
        is_null = uniform(self.seed, table, rel.name, "null") < F.lit(fitted_rel.null_fraction)
        with_slot = frame.withColumn(SLOT, F.when(is_null, F.lit(None)).otherwise(slot))
        return with_slot.join(exploded, on=SLOT, how="left").drop(SLOT)

    def fill_self_reference(self, table: str, frame: DataFrame, rows: int, rel: Relationship) -> DataFrame:
        """Fill a foreign key to the table itself as a forest: every row's parent has a smaller row index.

        Each row gets a number of direct children from the fitted histogram, the
        largest counts at the smallest indexes. The first ``roots`` rows have no
        parent; row ``m`` after them takes the row whose range of child slots
        holds slot ``m - roots``. Rows with children come first, so that row
        always has a smaller index than ``m``: the result has no cycles, and its
        depth grows with the logarithm of the row count as in a real hierarchy.
        """
        fitted_rel = self.model.relationships[rel.name]
        types = {c.name: _type_of(c) for c in self.model.tables[table].columns}
        pairs = sorted(zip(fitted_rel.count_values, fitted_rel.count_parents), reverse=True)
        weights = [float(p) for _, p in pairs]
        if rows == 0 or not weights or sum(weights) == 0:
            return frame.select(*frame.columns, *[F.lit(None).cast(types[c]).alias(c) for c in rel.columns])
        parts = quotas(weights, rows)
        u = (qcol(ROW_INDEX).cast("double") + F.lit(0.5)) / F.lit(float(rows))
        counts = pick(choose_index(u, [float(p) for p in parts]), [int(v) for v, _ in pairs]).cast("long")
        parents = frame.select(
            qcol(ROW_INDEX).alias(PARENT_INDEX),
            *[qcol(p).alias(c) for p, c in zip(rel.parent_columns, rel.columns)],
            counts.alias(COUNT),
        )
        ranged, slots = _with_prefix_sums(self.spark, parents, rows)
        roots = max(1, rows - slots)
        exploded = ranged.where(qcol(COUNT) > 0).select(
            *[qcol(c) for c in rel.columns],
            F.explode(F.sequence(qcol(START), qcol(START) + qcol(COUNT) - 1)).alias(SLOT),
        )
        slot = F.when(qcol(ROW_INDEX) >= F.lit(roots), qcol(ROW_INDEX) - F.lit(roots))
        logger.info("generate %s: %s as a forest with %d root(s)", table, rel.describe(), roots)
        return frame.withColumn(SLOT, slot).join(exploded, on=SLOT, how="left").drop(SLOT)

    def reference_keys(self, table: str) -> DataFrame:
        """Return the source rows of a reference table, indexed in primary-key order, with their scores."""
        started = time.monotonic()
        fitted = self.model.tables[table]
        source = self.source(table)
        order = [qcol(c) for c in (fitted.primary_key or source.columns)]
        # NOTE: a window over the whole table runs in one partition; reference tables are lookup tables.
        index = (F.row_number().over(Window.orderBy(*order)) - F.lit(1)).cast("long")
        frame = with_joint_columns(source, fitted).withColumn(ROW_INDEX, index)
        if fitted.dependence is not None:
            ranked = self.keep(with_reference_ranks(frame, fitted, fitted.dependence, self.seed))
            frame = with_reference_scores(ranked, fitted.dependence, self.seed, table)
        frame = self.keep(frame)
        self.rows[table] = frame.count()
        if self.rows[table] != fitted.rows:
            logger.warning(
                "reference table %s: the source has %d rows and the model was fitted on %d; children are "
                "generated for the current rows, so their number changes. Fit again if the source changed",
                table, self.rows[table], fitted.rows,
            )
        logger.info("generate %s: %d source rows copied as a reference table, %.1f s",
                    table, self.rows[table], time.monotonic() - started)
        return frame

    def generate_keys(self, table: str, table_plan: TablePlan) -> DataFrame:
        if self.config.tables[table].reference:
            return self.reference_keys(table)
        started = time.monotonic()
        if table_plan.driver is None:
            frame, count = self.root_frame(table)
        else:
            frame, count = self.child_frame(table, table_plan.driver)
        for rel in table_plan.assigned:
            frame = self.assign(table, frame, count, rel)
        fitted = self.model.tables[table]
        conditioned = False
        if fitted.dependence is not None:
            conditioned = PARENT_Z in frame.columns
            frame = with_normal_scores(frame, fitted.dependence, self.seed, table)
            if count <= STRATIFIED_ROWS:
                frame = with_ranked_uniforms(frame, fitted.dependence, count)
        check_key_capacity(table, fitted, count)
        key_columns = [c for c in fitted.primary_key if c not in frame.columns]
        frame = frame.select(
            *frame.columns,
            *[_primary_key_expr(fitted, fitted.column(c), self.seed, table, count).alias(c) for c in key_columns],
        )
        if table_plan.self_reference is not None:
            frame = self.fill_self_reference(table, frame, count, table_plan.self_reference)
        if any(rel.parent == table and rel.child != table for rel in self.plan.relationships):
            # Child tables read the keys and scores again. Other tables are computed once, as they are written.
            frame = self.keep(frame)
        if conditioned and count > STRATIFIED_ROWS:
            # Unconditioned scores are N(0, 1) by construction. Conditioned ones follow the expected histograms.
            frame = with_score_uniforms(frame, fitted.dependence, self.histograms.pop(table))
        self.rows[table] = count
        logger.info("generate %s keys: %d rows, %.1f s", table, count, time.monotonic() - started)
        return frame

    def run(self) -> GeneratedDatabase:
        for table in self.plan.order:
            self.keys[table] = self.generate_keys(table, self.plan.tables[table])
        for table in self.plan.order:
            for rel in self.plan.tables[table].deferred:
                # Both ends of the cycle exist now; the key is mapped onto the parent's slots as usual.
                self.keys[table] = self.keep(self.assign(table, self.keys[table], self.rows[table], rel))
        tables = {table: self.finish(table) for table in self.plan.order}
        return GeneratedDatabase(tables, dict(self.rows), self.cached)

    def finish(self, table: str) -> DataFrame:
        fitted = self.model.tables[table]
        frame = self.keys[table]
        if self.config.tables[table].reference:
            return frame.select(*[_source_form(qcol(c.name), c).alias(c.name) for c in fitted.columns])
        outputs = [] if ROW_INDEX not in frame.columns else [qcol(ROW_INDEX)]
        ranked = U_RANKED in frame.columns
        for joint in fitted.joint:
            u = self.uniform_of(table, joint, ranked)
            u = uniform(self.seed, table, joint.name, "value") if u is None else u
            frame = frame.withColumn(joint.name, joint_index(joint, u))
        for column in fitted.columns:
            data_type = _type_of(column)
            joint = fitted.joint_of(column.name)
            if column.name in frame.columns:
                outputs.append(qcol(column.name).cast(data_type).alias(column.name))
            elif joint is not None:
                u = uniform(self.seed, table, column.name, "joint")
                outputs.append(joint_member(joint, column, data_type, u).alias(column.name))
            elif column.stored_as is not None:
                value = _value_expr(column, data_type, self.seed, table, self.uniform_of(table, column, ranked),
                                    self.null_uniform_of(table, column, ranked))
                outputs.append(_source_form(value, column).alias(column.name))
            elif column.distribution["type"] == "personal":
                outputs.append(self.personal_expr(table, column).alias(column.name))
            else:
                value = _value_expr(column, data_type, self.seed, table, self.uniform_of(table, column, ranked),
                                    self.null_uniform_of(table, column, ranked))
                outputs.append(value.alias(column.name))
        result = frame.select(*outputs)
        for column in fitted.columns:
            if column.distribution["type"] == "personal" and column.role == "value":
                result = self.exclude_source_values(table, column, result)
        return result.drop(ROW_INDEX)

    def uniform_of(self, table: str, column: ColumnModel, ranked: bool = False) -> Column | None:
        """Return the copula's uniform for ``column``, or None when the column is drawn independently."""
        return dimension_uniform(self.model.tables[table].dependence, column.name, ranked)

    def null_uniform_of(self, table: str, column: ColumnModel, ranked: bool = False) -> Column | None:
        """Return the copula's uniform for whether ``column`` is null, or None when nulls are drawn independently."""
        return dimension_uniform(self.model.tables[table].dependence, null_dimension(column.name), ranked)

    def personal_expr(self, table: str, column: ColumnModel, candidate: int = 0) -> Column:
        """Return the column's generated personal data (a name, e-mail, ...) with its null share."""
        value = pii.pii_column(
            column.distribution["kind"], self.seed, table, column.name, locale=self.config.model.locale,
            candidate=candidate,
        )
        if column.null_fraction > 0:
            is_null = uniform(self.seed, table, column.name, "null") < F.lit(column.null_fraction)
            value = F.when(is_null, F.lit(None).cast("string")).otherwise(value)
        return value.cast(_type_of(column))

    def source(self, table: str) -> DataFrame:
        """Return the source table as read (all rows), reading it on first use."""
        if table not in self.sources:
            self.sources[table] = read_table(self.spark, self.config, table)
        return self.sources[table]

    def exclude_source_values(self, table: str, column: ColumnModel, frame: DataFrame) -> DataFrame:
        """Replace generated personal values that equal a source value of the same column."""
        source = self.source(table)
        kind = column.distribution["kind"]
        return pii.exclude_source_values(
            frame,
            column.name,
            pii.distinct_source_values(source, column.name),
            lambda k: pii.pii_column(
                kind, self.seed, table, column.name, locale=self.config.model.locale, candidate=k
            ),
            table=table,
            unique=kind == "email",
        )


def _source_form(value: Column, column: ColumnModel) -> Column:
    """Cast a value to the column's type; a date modelled as a date goes back to its source form (20230105)."""
    if column.stored_as is None:
        return value.cast(_type_of(column))
    stored_type = T._parse_datatype_json_string(column.stored_as["type"])
    return F.date_format(value, column.stored_as["format"]).cast(stored_type)


def _number_to_type(value: Column, column: ColumnModel, data_type: T.DataType) -> Column:
    if isinstance(data_type, T.DateType):
        return F.date_from_unix_date(F.rint(value).cast("int"))
    if isinstance(data_type, T.TimestampType):
        return F.timestamp_micros(F.rint(value).cast("long"))
    if isinstance(data_type, T.TimestampNTZType):
        return F.timestamp_micros(F.rint(value).cast("long")).cast("timestamp_ntz")
    if isinstance(data_type, T.DecimalType):
        return F.round(value, data_type.scale).cast(data_type)
    if isinstance(data_type, (T.ByteType, T.ShortType, T.IntegerType, T.LongType)):
        return F.rint(value).cast(data_type)
    return value.cast(data_type)


def _random_string(seed: int, table: str, column: str, length: Column, alphabet: str) -> Column:
    letters = string_array(list(alphabet))
    size = len(alphabet)
    positions = F.sequence(F.lit(1), F.greatest(length.cast("int"), F.lit(1)))
    chars = F.transform(
        positions,
        lambda i: F.element_at(
            letters,
            (F.pmod(F.xxhash64(F.lit(seed).cast("long"), F.lit(table), F.lit(column), qcol(ROW_INDEX), i), F.lit(size))
             + F.lit(1)).cast("int"),
        ),
    )
    return F.array_join(chars, "")


def _encode(number: Column, alphabet: str, length: int) -> Column:
    """Write ``number`` in base len(alphabet) with exactly ``length`` digits (most significant first)."""
    size = len(alphabet)
    letters = string_array(list(alphabet))
    digits = [
        # A row index is below 2**63, so digits of higher powers are always the first letter.
        F.lit(alphabet[0]) if size**power >= 1 << 63
        else F.element_at(letters, (F.pmod(F.floor(number / F.lit(size**power)), F.lit(size)) + F.lit(1)).cast("int"))
        for power in range(length - 1, -1, -1)
    ]
    return F.concat(*digits)


def _formatted_number(number: Column, prefix: str, width: int) -> Column:
    text = number.cast("string")
    if width > 0:
        text = F.when(F.length(text) >= width, text).otherwise(F.lpad(text, width, "0"))
    return F.concat(F.lit(prefix), text)


def key_capacity(dist: dict[str, Any]) -> tuple[int, int] | None:
    """Return (lowest number, how many values) a string key format holds, or None when it is unbounded."""
    if dist["type"] != "string_format":
        return None
    if dist["style"] == "prefixed_number":
        if dist["width"] > 0:
            # Fixed width with leading zeros, such as ACC-000001: 0 .. 10**width - 1.
            return 0, 10 ** dist["width"]
        # Variable width, such as ST-123 and ST-1234: every number with min..max digits.
        low = 10 ** (dist["min_digits"] - 1) if dist["min_digits"] > 1 else 0
        return low, 10 ** max(dist["max_digits"], 1) - low
    return 0, len(dist["alphabet"]) ** max(dist["length"], 1)


def describe_key_format(dist: dict[str, Any]) -> str:
    """Return a key format in words, for error messages."""
    if dist["style"] == "prefixed_number":
        if dist["width"] > 0:
            return f"'{dist['prefix']}' + {dist['width']} digits"
        return f"'{dist['prefix']}' + {dist['min_digits']}-{dist['max_digits']} digits"
    return f"{dist['length']} characters from '{dist['alphabet']}'"


def check_key_capacity(table: str, fitted: TableModel, rows: int) -> None:
    """Raise before any table is written when a declared one-column key format cannot hold ``rows`` values.

    Formats learned from the source are not limits: keys past their capacity get more digits.
    """
    if len(fitted.primary_key) != 1 or rows == 0:
        return
    column = fitted.column(fitted.primary_key[0])
    if not column.distribution.get("strict"):
        return
    capacity = key_capacity(column.distribution)
    if capacity is not None and rows > capacity[1]:
        raise GenerationError(
            f"primary key {table}.{column.name}: the declared format {describe_key_format(column.distribution)} "
            f"holds {capacity[1]:,} distinct values, but {rows:,} rows are requested. Nothing was written. "
            f"Lower generation.scale or generation.rows, or widen tables.{table}.columns.{column.name}.format"
        )


def _primary_key_expr(fitted: TableModel, column: ColumnModel, seed: int, table: str, rows: int) -> Column:
    """Return a unique key value: from the row index for a one-column key, else from the ordinal in its group."""
    single = len(fitted.primary_key) == 1
    number = qcol(ROW_INDEX) if single else qcol(ORDINAL)
    dist = column.distribution
    if dist["type"] == "uniform_int":
        return F.lit(dist["min"]).cast("long") + number
    if dist["type"] == "ordinal":
        span = dist["max"] - dist["min"]
        group = fitted.rows if single else fitted.key_group_max
        step = span / max(group - 1, 1) if span > 0 else 1.0
        data_type = _type_of(column)
        if isinstance(data_type, (T.DateType,)) or isinstance(data_type, (T.ByteType, T.ShortType, T.IntegerType, T.LongType)):
            step = max(1.0, round(step))
        return _number_to_type(F.lit(dist["min"]) + number * F.lit(step), column, data_type)
    capacity = key_capacity(dist)
    if capacity is None:
        raise ValueError(f"cannot generate key column {table}.{column.name} from {dist['type']}")
    low, size = capacity
    if single and 0 < rows <= size < 1 << 62:
        # Spread over the whole format: keys look like the source's (3- and 4-digit ids alike)
        # and do not simply repeat the source's first values. floor((2i + 1) * size / 2 rows)
        # grows by at least 1 from one row to the next, so keys stay unique.
        wide = T.DecimalType(38, 0)
        spread = (number.cast(wide) * F.lit(2) + F.lit(1)) * F.lit(size).cast(wide) / F.lit(2 * rows).cast(wide)
        number = F.floor(spread).cast("long")
    if dist["style"] == "prefixed_number":
        return _formatted_number(number + F.lit(low), dist["prefix"], dist["width"])
    # Composite keys number codes within each group; longer codes only past the format's capacity.
    alphabet = dist["alphabet"]
    length = max(dist["length"], 1)
    overflow_length = max(length, math.ceil(62 / math.log2(len(alphabet))))
    if size >= 1 << 62:
        # Every row index fits in the source's code length.
        return _encode(number, alphabet, length)
    return F.when(number < F.lit(size), _encode(number, alphabet, length)).otherwise(
        _encode(number, alphabet, overflow_length)
    )


def _value_expr(
    column: ColumnModel,
    data_type: T.DataType,
    seed: int,
    table: str,
    u: Column | None = None,
    null_u: Column | None = None,
) -> Column:
    """Return the drawn values of ``column``: from the uniform ``u``, null where ``null_u`` is below the null share.

    Without ``u`` or ``null_u``, those uniforms are drawn independently of the other columns.
    """
    dist = column.distribution
    kind = dist["type"]
    if u is None:
        u = uniform(seed, table, column.name, "value")
    if kind == "all_null":
        return F.lit(None).cast(data_type)
    if kind == "quantiles":
        value = inverse_quantiles(u, dist["values"])
        value = F.least(F.greatest(value, F.lit(dist["min"])), F.lit(dist["max"]))
        result = _number_to_type(value, column, data_type)
    elif kind == "discrete":
        value = pick(choose_index(u, [float(w) for w in dist["weights"]]), [float(v) for v in dist["values"]])
        result = _number_to_type(value, column, data_type)
    elif kind == "categorical":
        result = pick(choose_index(u, [float(w) for w in dist["weights"]]), dist["values"]).cast(data_type)
    elif kind == "boolean":
        result = (u < F.lit(dist["true_fraction"])).cast(data_type)
    elif kind == "uniform_int":
        span = dist["max"] - dist["min"] + 1
        result = (F.lit(dist["min"]).cast("long") + F.floor(u * F.lit(span)).cast("long")).cast(data_type)
    elif kind == "string_format":
        result = _random_format_value(dist, seed, table, column.name)
    elif kind == "text":
        result = _text_expr(dist, u, seed, table, column.name)
    elif kind in ("key", "ordinal"):
        raise ValueError(f"column {table}.{column.name} is a key column and cannot be sampled as a value")
    else:
        raise ValueError(f"unknown distribution type {kind!r} for {table}.{column.name}")
    if column.null_fraction > 0:
        draw = uniform(seed, table, column.name, "null") if null_u is None else null_u
        result = F.when(draw < F.lit(column.null_fraction), F.lit(None).cast(data_type)).otherwise(result)
    return result.cast(data_type)


def _random_format_value(dist: dict[str, Any], seed: int, table: str, column: str) -> Column:
    if dist["style"] == "prefixed_number":
        digits = max(dist["max_digits"], 1)
        number = F.pmod(hash_long(seed, table, column, "format"), F.lit(10**min(digits, 18)))
        return _formatted_number(number, dist["prefix"], dist["width"])
    return _random_string(seed, table, column, F.lit(dist["length"]), dist["alphabet"])


def _text_expr(dist: dict[str, Any], u: Column, seed: int, table: str, column: str) -> Column:
    lengths = dist["length_quantiles"]
    length = F.rint(inverse_quantiles(uniform(seed, table, column, "length"), lengths))
    letters = "abcdefghijklmnopqrstuvwxyz"
    generated = _random_string(seed, table, column, length, letters)
    if not dist["values"]:
        return generated
    kept = pick(choose_index(uniform(seed, table, column, "kept"), [float(w) for w in dist["weights"]]), dist["values"])
    return F.when(u < F.lit(dist["kept_fraction"]), kept.cast("string")).otherwise(generated)


def generate(
    spark: SparkSession,
    model: FittedModel,
    config: SynthConfig | None = None,
    sources: dict[str, DataFrame] | None = None,
) -> GeneratedDatabase:
    """Generate every table of ``model``; ``config`` overrides the generation settings stored in it.

    Tables with personal-data columns (names, e-mails, phones, addresses, free
    text) are checked against their source, so that no source value of such a
    column appears in the output. ``sources`` passes frames already read (all
    rows, before orphan rows are dropped). Missing ones are read from the
    config's source locations.
    """
    config = config or parse_config(model.config, origin="fitted model")
    plan = build_plan(config)
    tune_session(spark)
    return _Generator(spark, model, config, plan, sources).run()
