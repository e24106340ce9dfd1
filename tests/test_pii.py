"""Personal data columns: formats, uniqueness, determinism, and that no source value reaches the output."""

from __future__ import annotations

import csv
import random
import re
from pathlib import Path

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from synthspark.errors import SourceDataError
from synthspark.pii import (
    DEFAULT_CANDIDATES,
    EMAIL_PATTERN,
    KINDS,
    PHONE_PATTERN,
    distinct_source_values,
    exclude_source_values,
    pii_column,
    verbatim_copies,
    vocabulary,
)
from synthspark.sampling import ROW_INDEX

CASES = Path(__file__).resolve().parents[2] / "shared" / "cases"
PII_CUSTOMERS = CASES / "19-high-cardinality-and-pii" / "customer.csv"

PATTERNS = {
    "name": r"^\S+ \S+$",
    "email": EMAIL_PATTERN,
    "phone": PHONE_PATTERN,
    "address": r"^[1-9][0-9]{0,3} \S.*, \S.*$",
    "text": r"^\S+( \S+){3,11}\.$",
}


def rows_frame(spark: SparkSession, rows: int, partitions: int = 2) -> DataFrame:
    return spark.range(0, rows, numPartitions=partitions).select(F.col("id").alias(ROW_INDEX))


def generate(frame: DataFrame, seed: int = 1, locale: str = "en_US", kinds: tuple[str, ...] = KINDS) -> DataFrame:
    return frame.select(
        ROW_INDEX, *[pii_column(kind, seed, "customer", kind, locale=locale).alias(kind) for kind in kinds]
    )


def collect_by_index(frame: DataFrame) -> list[tuple]:
    return [tuple(row) for row in frame.orderBy(ROW_INDEX).collect()]


def values_frame(spark: SparkSession, values: list[str]) -> DataFrame:
    return spark.createDataFrame([(value,) for value in values], "value string")


def test_formats_match_patterns(spark: SparkSession) -> None:
    rows = collect_by_index(generate(rows_frame(spark, 5000)))

    assert len(rows) == 5000
    for position, kind in enumerate(KINDS, start=1):
        pattern = re.compile(PATTERNS[kind])
        bad = [row[position] for row in rows if row[position] is None or not pattern.match(row[position])]
        assert bad == [], f"{kind}: {len(bad)} values do not match {PATTERNS[kind]}, for example {bad[:5]}"
    emails = [row[KINDS.index("email") + 1] for row in rows]
    assert len(set(emails)) == len(emails)
    names = [row[KINDS.index("name") + 1] for row in rows]
    assert len(set(names)) > 4500


def test_name_and_email_describe_same_person(spark: SparkSession) -> None:
    rows = generate(rows_frame(spark, 200), kinds=("name", "email")).collect()

    for row in rows:
        last = re.sub("[^a-z]", "", row["name"].split(" ")[1].lower())
        assert re.sub("[^a-z]", "", row["email"].split("@")[0]).endswith(last), (row["name"], row["email"])


@pytest.mark.parametrize("locale", ["de_DE", "fr_FR", "ja_JP"])
def test_other_locales_match_patterns(spark: SparkSession, locale: str) -> None:
    rows = generate(rows_frame(spark, 500), locale=locale, kinds=("email", "phone")).collect()

    bad_emails = [row["email"] for row in rows if not re.match(EMAIL_PATTERN, row["email"])]
    bad_phones = [row["phone"] for row in rows if not re.match(PHONE_PATTERN, row["phone"])]
    assert bad_emails == []
    assert bad_phones == []
    assert len({row["email"] for row in rows}) == len(rows)


def test_emails_unique_across_candidates(spark: SparkSession) -> None:
    # Rows take different candidates, as after exclude_source_values. There are 24
    # styles per name, so candidates from 24 on also draw new name parts.
    frame = rows_frame(spark, 2000)
    choices = [0, 1, 2, 23, 24, 25, 47, 48]
    slot = F.pmod(F.col(ROW_INDEX), F.lit(len(choices)))
    expression = pii_column("email", 1, "customer", "email", candidate=choices[0])
    for position, candidate in enumerate(choices[1:], start=1):
        expression = F.when(
            slot == F.lit(position), pii_column("email", 1, "customer", "email", candidate=candidate)
        ).otherwise(expression)
    emails = [row[0] for row in frame.select(expression).collect()]

    assert len(set(emails)) == len(emails)
    assert all(re.match(EMAIL_PATTERN, email) for email in emails)


def test_same_seed_same_values_across_partitionings(spark: SparkSession) -> None:
    one = collect_by_index(generate(rows_frame(spark, 3000, partitions=1)))
    reshuffled = rows_frame(spark, 3000, partitions=3).repartition(5, F.rand(7))
    two = collect_by_index(generate(reshuffled))

    assert one == two


def test_different_seeds_differ(spark: SparkSession) -> None:
    one = collect_by_index(generate(rows_frame(spark, 2000), seed=1))
    two = collect_by_index(generate(rows_frame(spark, 2000), seed=2))

    for position, kind in enumerate(KINDS, start=1):
        same = sum(1 for a, b in zip(one, two) if a[position] == b[position])
        assert same < 20, f"{kind}: {same} of 2000 values equal under seeds 1 and 2"


def test_exclude_replaces_all_source_values(spark: SparkSession) -> None:
    generated = generate(rows_frame(spark, 1000), kinds=("name", "email"))
    before = {row[ROW_INDEX]: row for row in generated.collect()}
    copied = [before[i]["email"] for i in range(200)]
    source = values_frame(spark, copied + ["someone@example.com", "nobody@example.org"])

    result = exclude_source_values(
        generated,
        "email",
        source,
        lambda k: pii_column("email", 1, "customer", "email", candidate=k),
        table="customer",
        unique=True,
    )
    after = {row[ROW_INDEX]: row for row in result.collect()}

    assert result.columns == generated.columns
    assert set(after) == set(before)
    assert set(row["email"] for row in after.values()).isdisjoint(copied)
    assert all(after[i]["email"] != before[i]["email"] for i in range(200))
    assert all(after[i] == before[i] for i in range(200, 1000))
    assert all(re.match(EMAIL_PATTERN, row["email"]) for row in after.values())
    assert len({row["email"] for row in after.values()}) == 1000
    assert verbatim_copies(result, "email", source).copies == 0


def test_exclude_skips_candidates_in_source(spark: SparkSession) -> None:
    generated = generate(rows_frame(spark, 200), kinds=("name",))
    candidate_names = generated.select(
        ROW_INDEX,
        *[pii_column("name", 1, "customer", "name", candidate=k).alias(f"c{k}") for k in range(DEFAULT_CANDIDATES)],
    ).where(F.col(ROW_INDEX) < 20)
    candidates = candidate_names.collect()
    # Rows 0..19: every candidate but the last is a source value, so each row must take the last.
    source = values_frame(spark, [row[f"c{k}"] for row in candidates for k in range(DEFAULT_CANDIDATES - 1)])

    result = exclude_source_values(
        generated,
        "name",
        source,
        lambda k: pii_column("name", 1, "customer", "name", candidate=k),
        table="customer",
    )
    after = {row[ROW_INDEX]: row["name"] for row in result.collect()}

    for row in candidates:
        assert after[row[ROW_INDEX]] == row[f"c{DEFAULT_CANDIDATES - 1}"]
    assert verbatim_copies(result, "name", source).copies == 0


def test_exclude_fails_when_every_candidate_is_source(spark: SparkSession) -> None:
    generated = generate(rows_frame(spark, 100), kinds=("phone",))
    every_candidate = generated.select(
        *[pii_column("phone", 1, "customer", "phone", candidate=k).alias(f"c{k}") for k in range(3)]
    ).where(F.col(ROW_INDEX) < 4)
    source = values_frame(spark, [value for row in every_candidate.collect() for value in row])

    with pytest.raises(SourceDataError) as error:
        exclude_source_values(
            generated,
            "phone",
            source,
            lambda k: pii_column("phone", 1, "customer", "phone", candidate=k),
            table="customer",
            max_candidates=3,
        )

    message = str(error.value)
    assert "customer.phone" in message
    assert "4 of 4" in message
    assert "max_candidates" in message


@pytest.mark.skipif(not PII_CUSTOMERS.exists(), reason="the customer CSV with made-up personal data is not available")
def test_real_pii_never_copied_at_scale_10(spark: SparkSession) -> None:
    with open(PII_CUSTOMERS, newline="", encoding="utf-8") as handle:
        real_rows = list(csv.DictReader(handle))
    source = spark.read.csv(str(PII_CUSTOMERS), header=True, inferSchema=False)
    rows = len(real_rows) * 10
    generated = generate(rows_frame(spark, rows), kinds=("name", "email", "phone"))
    columns = {"name": "full_name", "email": "email", "phone": "phone"}

    result = generated
    for kind, source_column in columns.items():
        result = exclude_source_values(
            result,
            kind,
            distinct_source_values(source, source_column),
            lambda k, kind=kind: pii_column(kind, 1, "customer", kind, candidate=k),
            table="customer",
            unique=kind == "email",
        )
    collected = result.collect()

    assert len(collected) == rows
    for kind, source_column in columns.items():
        real = {row[source_column] for row in real_rows}
        copies = [row[kind] for row in collected if row[kind] in real]
        assert copies == [], f"{kind} copies source values"
    assert verbatim_copies(result, "email", distinct_source_values(source, "email")).copies == 0
    assert len({row["email"] for row in collected}) == rows


def test_verbatim_copies_counts_non_null_rows(spark: SparkSession) -> None:
    generated = spark.createDataFrame([("a",), ("b",), (None,), ("c",), ("a",)], "value string")
    source = values_frame(spark, ["a", "x", "a"])

    counted = verbatim_copies(generated, "value", source)

    assert counted.rows == 4
    assert counted.copies == 2
    assert counted.share == 0.5


def test_invalid_kind_and_locale_rejected() -> None:
    with pytest.raises(ValueError, match=r"customer\.ssn.*address, email, name, phone, text"):
        pii_column("ssn", 1, "customer", "ssn")
    with pytest.raises(ValueError, match="unknown locale 'xx_XX'"):
        pii_column("name", 1, "customer", "full_name", locale="xx_XX")


def test_vocabulary_independent_of_global_random() -> None:
    vocabulary.cache_clear()
    random.seed(1)
    state = random.getstate()
    first = vocabulary("en_GB")
    assert random.getstate() == state

    vocabulary.cache_clear()
    random.seed(2)
    second = vocabulary("en_GB")

    assert first == second
    assert 100 <= len(first.first_names) <= 2000
    assert len(first.words) >= 100
