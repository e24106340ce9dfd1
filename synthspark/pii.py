"""Personal data (names, e-mails, phones, addresses, free text) generated in Spark, and exclusion of source values.

Faker runs only on the driver, once per locale, to build bounded word lists
(first names, last names, street names, cities, words) and phone formats from a
privately seeded instance. Rows pick from those lists in plain Spark SQL, indexed
by hashes of (seed, table, column, purpose, row index) as everywhere else in
synthspark, so a row gets the same value whatever the partitioning.

Generated values can still equal a source value by chance (a common name, say).
:func:`exclude_source_values` replaces such rows with the first alternative
candidate that is not a source value, and :func:`verbatim_copies` counts what is
left for the report.
"""

from __future__ import annotations

import functools
import logging
import re
import time
import unicodedata
from dataclasses import dataclass
from typing import Callable

from faker import Faker
from faker.config import AVAILABLE_LOCALES
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from synthspark.errors import SourceDataError
from synthspark.sampling import INTERNAL, ROW_INDEX, hash_long, qcol, string_array

logger = logging.getLogger(__name__)

KINDS = ("name", "email", "phone", "address", "text")
EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
PHONE_PATTERN = r"^\+?[0-9][0-9 ()\-]{6,}$"
DEFAULT_CANDIDATES = 8

# Faker draws per word list and the cap on distinct items kept. Draws follow Faker's
# own weights, so the kept items are the locale's more common names and words.
_DRAWS = 3000
_MAX_ITEMS = 2000
# Seed of the private Faker instance, so the word lists depend only on the locale and the
# installed Faker version, never on the generation seed or Python's global random state.
_VOCABULARY_SEED = 0
_LIST_SEPARATOR = "\x1f"
# Parsed variants kept per phone format that contains a Faker template such as
# {{area_code_with_separator}}.
_TEMPLATE_VARIANTS = 8
_FALLBACK_PHONE_FORMATS = ("+%# ### ### ####",)
# Faker's numerify placeholders: "#" is any digit, "%" a digit 1-9 and "$" a digit 2-9.
_PLACEHOLDERS = "#%$"
# Each row draws this many digits (two hashes of 18 decimal digits), so a phone format
# may be at most this long.
_PHONE_DIGITS = 36
# Used as an e-mail name part when a name has no ASCII letters.
# NOTE: e-mails in locales with non-Latin names (ja_JP, zh_CN) therefore read like user.user12@example.org.
_ASCII_FALLBACK = "user"
_EMAIL_SEPARATORS = (".", "_", "", "-")
_EMAIL_FORMS = 2  # first + separator + last, or first initial + separator + last
_TEXT_MIN_WORDS = 4
_TEXT_MAX_WORDS = 12

SOURCE_VALUE = f"{INTERNAL}source_value"
_IS_SOURCE = f"{INTERNAL}is_source"
_POSITION = f"{INTERNAL}position"
_OPTION = f"{INTERNAL}option"
_REPLACEMENT = f"{INTERNAL}replacement"
# Replacement frames up to this many rows are broadcast to the join with the generated rows.
_BROADCAST_ROWS = 100_000


@dataclass(frozen=True)
class Vocabulary:
    """Word lists and phone formats of one locale, drawn once on the driver."""

    locale: str
    first_names: tuple[str, ...]
    last_names: tuple[str, ...]
    first_names_ascii: tuple[str, ...]  # lowercase a-z form of first_names, same order
    last_names_ascii: tuple[str, ...]
    streets: tuple[str, ...]
    cities: tuple[str, ...]
    words: tuple[str, ...]
    email_domains: tuple[str, ...]
    phone_formats: tuple[str, ...]  # Faker numerify patterns that match PHONE_PATTERN


@dataclass(frozen=True)
class CopyCount:
    """Non-null generated values of a column and how many of them equal a source value."""

    rows: int
    copies: int

    @property
    def share(self) -> float:
        """Share of non-null generated values that are verbatim source values (0.0 for an empty column)."""
        return self.copies / self.rows if self.rows else 0.0


def pii_column(
    kind: str,
    seed: int,
    table: str,
    column: str,
    index: Column | None = None,
    locale: str = "en_US",
    *,
    candidate: int = 0,
    person: str | None = None,
) -> Column:
    """Build a string column of fake personal data of ``kind`` for ``table.column``.

    Kinds: ``name`` ("First Last"), ``email`` (name parts, the row number and a
    reserved example.* domain), ``phone`` (a phone format of the locale matching
    PHONE_PATTERN), ``address`` ("123 Street Name, City") and ``text`` (a sentence
    of 4 to 12 words). No value is null. ``index`` defaults to the row index column
    ``__ss_idx``, and e-mails are unique within the table only when it is unique.

    ``candidate`` k > 0 builds the k-th alternative value for the same row, used by
    :func:`exclude_source_values`. Name and e-mail columns of a table with the same
    ``person`` label (default: one shared label) describe the same person in
    candidate 0. E-mail candidates 1 to 23 (with Faker's three example.* domains) keep
    the name parts and change only the form, separator and domain.
    """
    if kind not in KINDS:
        raise ValueError(
            f"invalid personal data kind {kind!r} for {table}.{column}. Use one of {', '.join(sorted(KINDS))}"
        )
    if candidate < 0:
        raise ValueError(f"candidate must be 0 or more for {table}.{column}, got {candidate}")
    words = vocabulary(locale)
    index = qcol(ROW_INDEX) if index is None else index
    person_label = f"{INTERNAL}person" if person is None else person
    if kind == "name":
        first, last = _name_parts(words, seed, table, person_label, index, candidate, ascii_form=False)
        return F.concat(first, F.lit(" "), last)
    if kind == "email":
        return _email_expr(words, seed, table, column, person_label, index, candidate)
    if kind == "phone":
        return _phone_expr(words, seed, table, column, index, candidate)
    if kind == "address":
        return _address_expr(words, seed, table, column, index, candidate)
    return _text_expr(words, seed, table, column, index, candidate)


@functools.lru_cache(maxsize=16)
def vocabulary(locale: str) -> Vocabulary:
    """Build the word lists of ``locale`` from a privately seeded Faker instance, once per locale (cached)."""
    if locale not in AVAILABLE_LOCALES:
        raise ValueError(
            f"unknown locale {locale!r} for personal data. Use a Faker locale such as en_US, en_GB or de_DE"
        )

    started = time.monotonic()
    fake = Faker(locale)
    # seed_instance gives this instance its own random.Random, so Python's global
    # random state is neither read nor changed.
    fake.seed_instance(_VOCABULARY_SEED)

    first_names = _distinct_draws(fake.first_name)
    last_names = _distinct_draws(fake.last_name)
    result = Vocabulary(
        locale=locale,
        first_names=first_names,
        last_names=last_names,
        first_names_ascii=tuple(_ascii_letters(name) for name in first_names),
        last_names_ascii=tuple(_ascii_letters(name) for name in last_names),
        streets=_distinct_draws(fake.street_name),
        cities=_distinct_draws(fake.city),
        words=_distinct_draws(fake.word),
        email_domains=tuple(_provider(fake, "internet").safe_domain_names),
        phone_formats=_phone_formats(fake),
    )

    logger.info(
        "personal data vocabulary %s: %d first names, %d last names, %d streets, %d cities, %d words, %.1f s",
        locale, len(first_names), len(last_names), len(result.streets), len(result.cities), len(result.words),
        time.monotonic() - started,
    )
    return result


def _distinct_draws(draw: Callable[[], str]) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for _ in range(_DRAWS):
        value = draw().strip()
        if value and _LIST_SEPARATOR not in value:
            seen.setdefault(value, None)
        if len(seen) >= _MAX_ITEMS:
            break
    return tuple(seen)


def _ascii_letters(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return re.sub("[^a-z]", "", decomposed.lower()) or _ASCII_FALLBACK


def _provider(fake: Faker, family: str) -> object:
    prefix = f"faker.providers.{family}"
    for provider in fake.get_providers():
        if type(provider).__module__.startswith(prefix):
            return provider
    raise ValueError(f"Faker has no {family} provider for locale {fake.locales[0]!r}")


def _phone_formats(fake: Faker) -> tuple[str, ...]:
    """Return the locale's phone formats whose numbers always match PHONE_PATTERN.

    Formats with Faker templates are parsed a few times into concrete formats, and
    formats with optional digits (``!``, ``@``) are left out because their length varies.
    Formats longer than _PHONE_DIGITS characters are left out too.
    """
    concrete: list[str] = []
    for pattern in _provider(fake, "phone_number").formats:
        if "{{" in pattern:
            concrete.extend(fake.parse(pattern) for _ in range(_TEMPLATE_VARIANTS))
        else:
            concrete.append(pattern)
    accepted = []
    for pattern in concrete:
        if "!" in pattern or "@" in pattern or len(pattern) > _PHONE_DIGITS:
            continue
        example = "".join("5" if ch in _PLACEHOLDERS else ch for ch in pattern)
        if re.match(PHONE_PATTERN, example):
            accepted.append(pattern)
    return tuple(accepted) or _FALLBACK_PHONE_FORMATS


def _pick(values: tuple[str, ...], hashed: Column) -> Column:
    return F.element_at(string_array(list(values)), (F.pmod(hashed, F.lit(len(values))) + F.lit(1)).cast("int"))


def _name_parts(
    words: Vocabulary, seed: int, table: str, person: str, index: Column, candidate: int, ascii_form: bool
) -> tuple[Column, Column]:
    first_hash = hash_long(seed, table, person, "first_name", candidate, index=index)
    last_hash = hash_long(seed, table, person, "last_name", candidate, index=index)
    if ascii_form:
        return _pick(words.first_names_ascii, first_hash), _pick(words.last_names_ascii, last_hash)
    return _pick(words.first_names, first_hash), _pick(words.last_names, last_hash)


def _email_expr(
    words: Vocabulary, seed: int, table: str, column: str, person: str, index: Column, candidate: int
) -> Column:
    """Build ``name parts + (index + 1) @ domain``.

    Uniqueness: the name parts are ASCII letters and separators and end in a letter,
    so the digits before ``@`` are exactly the row number. Rows with different
    indexes therefore never share an e-mail, whichever candidate each row took.
    """
    domains = words.email_domains
    styles = _EMAIL_FORMS * len(_EMAIL_SEPARATORS) * len(domains)
    # Candidates 0 .. styles-1 of a row take distinct styles with the same name parts,
    # and later candidates also draw new name parts.
    base = F.pmod(hash_long(seed, table, column, "email_style", index=index), F.lit(styles))
    style = F.pmod(base + F.lit(candidate % styles), F.lit(styles))
    form = F.floor(style / F.lit(len(_EMAIL_SEPARATORS) * len(domains)))
    separator = F.element_at(
        F.array(*[F.lit(s) for s in _EMAIL_SEPARATORS]),
        (F.pmod(F.floor(style / F.lit(len(domains))), F.lit(len(_EMAIL_SEPARATORS))) + F.lit(1)).cast("int"),
    )
    domain = F.element_at(
        F.array(*[F.lit(d) for d in domains]), (F.pmod(style, F.lit(len(domains))) + F.lit(1)).cast("int")
    )
    first, last = _name_parts(words, seed, table, person, index, candidate // styles, ascii_form=True)
    first = F.when(form == F.lit(0), first).otherwise(F.substring(first, 1, 1))
    number = (index.cast("long") + F.lit(1)).cast("string")
    return F.concat(first, separator, last, number, F.lit("@"), domain)


def _phone_expr(words: Vocabulary, seed: int, table: str, column: str, index: Column, candidate: int) -> Column:
    """Fill a phone format of the locale with hashed digits.

    One small expression whatever the number of formats: the chosen format and a
    row's digit string are zipped character by character, and each placeholder takes
    the digit at its own position.
    """
    chosen = hash_long(seed, table, column, "phone_format", candidate, index=index)
    pattern = _pick(words.phone_formats, chosen)
    digits = F.concat(
        *[
            F.lpad(F.pmod(hash_long(seed, table, column, "phone_digits", candidate, part, index=index), F.lit(10**18))
                   .cast("string"), 18, "0")
            for part in range(_PHONE_DIGITS // 18)
        ]
    )

    def fill(character: Column, digit: Column) -> Column:
        # NOTE: "%" maps 0 to 9 and "$" maps 0 and 1 to 8 and 9, so those digits are twice
        # as frequent at such positions.
        return (
            F.when(character == F.lit("#"), digit)
            .when(character == F.lit("%"), F.translate(digit, "0", "9"))
            .when(character == F.lit("$"), F.translate(digit, "01", "89"))
            .otherwise(character)
        )

    return F.array_join(F.zip_with(F.split(pattern, ""), F.split(digits, ""), fill), "")


def _address_expr(words: Vocabulary, seed: int, table: str, column: str, index: Column, candidate: int) -> Column:
    # House numbers have 1 to 4 digits, each digit count equally likely, so short numbers are common too.
    digits = F.pmod(hash_long(seed, table, column, "house_digits", candidate, index=index), F.lit(4)) + F.lit(1)
    low = F.pow(F.lit(10), digits - F.lit(1)).cast("long")
    span = F.pow(F.lit(10), digits).cast("long") - low
    house = low + F.pmod(hash_long(seed, table, column, "house_number", candidate, index=index), span)
    # NOTE: every locale uses the en_US order "number street, city". Faker's
    # locale-specific address formats are not applied.
    street = _pick(words.streets, hash_long(seed, table, column, "street", candidate, index=index))
    city = _pick(words.cities, hash_long(seed, table, column, "city", candidate, index=index))
    return F.concat(house.cast("string"), F.lit(" "), street, F.lit(", "), city)


def _text_expr(words: Vocabulary, seed: int, table: str, column: str, index: Column, candidate: int) -> Column:
    span = _TEXT_MAX_WORDS - _TEXT_MIN_WORDS + 1
    length = F.pmod(hash_long(seed, table, column, "text_length", candidate, index=index), F.lit(span)) + F.lit(
        _TEXT_MIN_WORDS
    )
    vocabulary_array = string_array(list(words.words))
    size = len(words.words)

    def word_at(position: Column) -> Column:
        # Same construction as sampling.hash_long, with the word position as a last input.
        hashed = F.shiftrightunsigned(
            F.xxhash64(
                F.lit(seed).cast("long"),
                *[F.lit(str(part)) for part in (table, column, "text_word", candidate)],
                index,
                position,
            ),
            1,
        )
        return F.element_at(vocabulary_array, (F.pmod(hashed, F.lit(size)) + F.lit(1)).cast("int"))

    sentence = F.array_join(F.transform(F.sequence(F.lit(1), length.cast("int")), word_at), " ")
    return F.concat(F.upper(F.substring(sentence, 1, 1)), F.substring(sentence, 2, 1 << 20), F.lit("."))


def distinct_source_values(source: DataFrame, column: str) -> DataFrame:
    """Return the distinct non-null values of ``source.column`` as strings, in one column ``__ss_source_value``."""
    return (
        source.select(qcol(column).cast("string").alias(SOURCE_VALUE))
        .where(qcol(SOURCE_VALUE).isNotNull())
        .distinct()
    )


def _normalise_source(source_values: DataFrame, where: str) -> DataFrame:
    if len(source_values.columns) != 1:
        raise ValueError(
            f"source values for {where} must have exactly one column, got {source_values.columns}. "
            "Build them with distinct_source_values(source_df, column)"
        )
    return distinct_source_values(source_values, source_values.columns[0])


def exclude_source_values(
    df: DataFrame,
    column: str,
    source_values: DataFrame,
    candidates: Callable[[int], Column],
    *,
    table: str,
    max_candidates: int = DEFAULT_CANDIDATES,
    index: str = ROW_INDEX,
    unique: bool = False,
) -> DataFrame:
    """Replace every value of ``df.column`` that equals a source value with the first candidate that does not.

    Values are compared as strings. A row whose value is a source value takes
    ``candidates(k)`` for the smallest k in 0 .. max_candidates-1 whose value is not a
    source value; other rows are unchanged. ``candidates(k)`` is evaluated on ``df``'s
    columns (usually ``pii_column(..., candidate=k)``), and ``index`` must be a unique
    row id column of ``df``. ``source_values`` is a one-column DataFrame of source values.

    Runs Spark jobs now: one pass over ``df`` joined with the source values, which
    stores the replacements of the matching rows with ``localCheckpoint``, and a
    count of them. Raises SourceDataError naming ``table.column`` and the count if some
    row still equals a source value after all candidates. With ``unique=True`` it
    also checks that no replacement duplicates another row's value (one more job,
    only when some row was replaced) and raises ValueError if one does. The result
    keeps ``df``'s columns and types and reads ``df`` once more when it is used, so
    calls can be chained over several columns without the plan growing
    exponentially. It is ``df`` itself when no row matched.
    """
    where = f"{table}.{column}"
    if max_candidates < 1:
        raise ValueError(f"max_candidates must be at least 1 for {where}, got {max_candidates}")
    for name in (column, index):
        if name not in df.columns:
            raise ValueError(f"column {name!r} not found in the DataFrame for {where}, which has {df.columns}")
    started = time.monotonic()
    source = _normalise_source(source_values, where)
    data_type = df.schema[column].dataType

    hits = df.join(source, qcol(column).cast("string") == qcol(SOURCE_VALUE), "left_semi")
    options = hits.select(
        qcol(index),
        F.posexplode(F.array(*[candidates(k).cast("string") for k in range(max_candidates)])).alias(_POSITION, _OPTION),
    )
    chosen = (
        options.join(source, qcol(_OPTION) == qcol(SOURCE_VALUE), "left_anti")
        .groupBy(qcol(index))
        .agg(F.min_by(qcol(_OPTION), qcol(_POSITION)).alias(_REPLACEMENT))
    )
    # A local checkpoint cuts the lineage, so the result's plan contains df only once.
    # Its size is the number of matching rows, usually none or few.
    replacements = hits.select(qcol(index)).join(chosen, on=index, how="left").localCheckpoint(eager=True)

    counts = replacements.agg(
        F.count(F.lit(1)).alias("matched"), F.count_if(qcol(_REPLACEMENT).isNull()).alias("unresolved")
    ).first()
    matched = int(counts["matched"]) if counts else 0
    unresolved = int(counts["unresolved"] or 0) if counts else 0
    if unresolved:
        raise SourceDataError(
            f"{where}: {unresolved} of {matched} generated rows still equal a source value after "
            f"{max_candidates} candidates, so the output would copy personal data. The source values "
            "cover most of what this generator can produce. Raise max_candidates, or use a kind with "
            "more possible values for this column"
        )
    logger.info(
        "exclude source values from %s: %d rows matched a source value and were replaced, %.1f s",
        where, matched, time.monotonic() - started,
    )
    if matched == 0:
        return df

    if matched <= _BROADCAST_ROWS:
        replacements = F.broadcast(replacements)
    result = df.join(replacements, on=index, how="left").select(
        *[
            F.coalesce(qcol(_REPLACEMENT).cast(data_type), qcol(c)).alias(c) if c == column else qcol(c)
            for c in df.columns
        ]
    )
    if unique:
        _check_replacements_unique(result, replacements, column, where)
    return result


def _check_replacements_unique(result: DataFrame, replacements: DataFrame, column: str, where: str) -> None:
    new_values = replacements.select(qcol(_REPLACEMENT)).distinct()
    duplicated = (
        result.join(new_values, qcol(column) == qcol(_REPLACEMENT), "left_semi")
        .groupBy(qcol(column))
        .count()
        .where(qcol("count") > 1)
        .count()
    )
    if duplicated:
        raise ValueError(
            f"{where} is declared unique, but {duplicated} replacement values also occur in other rows. "
            "The candidates function must give distinct rows distinct values, as pii_column e-mails do"
        )


def verbatim_copies(df: DataFrame, column: str, source_values: DataFrame) -> CopyCount:
    """Count the non-null values of ``df.column`` that equal a source value (as strings), in one aggregate job.

    ``source_values`` is a one-column DataFrame, for example from :func:`distinct_source_values`.
    """
    if column not in df.columns:
        raise ValueError(f"column {column!r} not found in the DataFrame, which has {df.columns}")
    source = _normalise_source(source_values, column)
    flags = source.select(qcol(SOURCE_VALUE), F.lit(1).alias(_IS_SOURCE))
    values = df.select(qcol(column).cast("string").alias(_OPTION)).where(qcol(_OPTION).isNotNull())
    row = (
        values.join(flags, qcol(_OPTION) == qcol(SOURCE_VALUE), "left")
        .agg(F.count(F.lit(1)).alias("rows"), F.count(qcol(_IS_SOURCE)).alias("copies"))
        .first()
    )
    if row is None:
        return CopyCount(rows=0, copies=0)
    return CopyCount(rows=int(row["rows"]), copies=int(row["copies"]))
