"""Shop records -> canonical records: column mapping, text clean-up, keys, typing.

Both steps run as SQL on an in-process DuckDB over Arrow batches, whatever the
warehouse is: vectorized, multi-threaded, and the same on every deployment.
- `shape_raw` (extract): the shop's columns -> canonical text columns, trimmed, empty
  as null, values mapped, a key derived where the source has none, a hash bucket.
- `type_frame` (validate): canonical text -> typed values (timestamps in UTC), keeping
  the text beside every typed column so a value that does not parse is a rule broken.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from winback.config import Config
from winback.ingest.settings import OTHER_ACTIONS, OTHER_VALUE, SourceBase
from winback.schema import Entity
from winback.warehouse import BUCKETS

RAW_SUFFIX = "__raw"  # the text behind a typed or normalised column
UNPARSED_SUFFIX = "__unparsed"  # the text of a value that did not parse, else null
OUT_OF_RANGE_SUFFIX = "__out_of_range"  # the text of an infinite or too large number, else null
# The largest magnitude each numeric type holds: NUMERIC(18,2) and BIGINT, in both warehouses.
MAGNITUDE_LIMITS = {"money": 1e16, "integer": 2.0**63, "number": float("inf")}
IDENTITY_COLUMN = "_identity"  # coalesce of Entity.one_of, for the "one of" rule
TRUE_WORDS = ("1", "true", "t", "yes", "y", "да", "д")
FALSE_WORDS = ("0", "false", "f", "no", "n", "нет", "н")

_local = threading.local()


class MappingError(ValueError):
    """A column named in the mapping (or required) is not in the source."""


ENGINE_MEMORY_LIMIT = "768MB"  # the whole compute engine; it spills to disk beyond

_engine_lock = threading.Lock()
_database: duckdb.DuckDBPyConnection | None = None


def engine() -> duckdb.DuckDBPyConnection:
    """This thread's cursor on the process's in-process DuckDB (the vectorized compute
    engine). One database for all threads keeps one memory budget."""
    global _database
    if not hasattr(_local, "con"):
        with _engine_lock:
            if _database is None:
                import tempfile

                _database = duckdb.connect(
                    ":memory:",
                    config={"memory_limit": ENGINE_MEMORY_LIMIT, "temp_directory": tempfile.gettempdir()},
                )
                _database.execute("SET TimeZone = 'UTC'")
                _database.execute("SET enable_progress_bar = false")
            _local.con = _database.cursor()
    return _local.con


def literal(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class Mapping:
    """Which source column feeds each canonical column, resolved against one batch."""

    columns: dict[str, str]  # canonical -> source column, only the ones present
    filtered_by: tuple[str, ...] = ()  # the source's own columns its `where` tests

    @property
    def read_columns(self) -> list[str]:
        """The shop's columns a reader must hand over: the mapped ones and those `where` tests."""
        return sorted(set(self.columns.values()) | set(self.filtered_by))

    @classmethod
    def resolve(cls, entity: Entity, source: SourceBase, available: list[str], origin: str) -> Mapping:
        present = set(available)
        unknown_filters = [c for c in source.where if c not in present]
        if unknown_filters:
            raise MappingError(
                f"{origin}: column {', '.join(map(repr, unknown_filters))} (sources.{entity.name}.where) not found; "
                f"columns there: {', '.join(available) or '(none)'}"
            )
        resolved: dict[str, str] = {}
        missing_mapped = []
        for canonical in entity.column_names:
            name = source.columns.get(canonical)
            if name is not None:
                if name not in present:
                    missing_mapped.append(f"{name!r} (mapped to {canonical})")
                    continue
                resolved[canonical] = name
            elif canonical in present:
                resolved[canonical] = canonical  # same name in the shop: no mapping needed
        if missing_mapped:
            raise MappingError(
                f"{origin}: column {', '.join(missing_mapped)} not found; "
                f"columns there: {', '.join(available) or '(none)'}"
            )
        missing_required = [
            c for c in entity.required_columns
            if c not in resolved and c not in entity.defaults and not _derivable(entity, source, c)
        ]
        if missing_required:
            raise MappingError(
                f"{origin}: required column {', '.join(missing_required)} of {entity.name} is not "
                f"mapped in sources.{entity.name}.columns and not present by that name; "
                f"columns there: {', '.join(available) or '(none)'}"
            )
        return cls(resolved, tuple(source.where))

    def inverse(self) -> dict[str, str]:
        return {canonical: source for canonical, source in self.columns.items()}


def _derivable(entity: Entity, source: SourceBase, column: str) -> bool:
    return column in entity.key and (bool(entity.derived_key_from) or source.generate_keys)


def _keep_condition(entity: Entity, source: SourceBase, mapping: Mapping) -> str | None:
    """SQL over a batch of shop records: the rows the source keeps (its `where`, and no
    value that `values: {<column>: {_other: drop}}` drops); None when it keeps all."""
    tests = []
    for column, test in source.where.items():
        value = _clean_text(f"CAST({ident(column)} AS VARCHAR)")
        listed = test if isinstance(test, list) else test.values
        if listed is not None:
            tests.append(f"coalesce({value} IN ({', '.join(map(literal, listed)) or 'NULL'}), FALSE)")
        else:
            tests.append(f"coalesce({value} NOT IN ({', '.join(map(literal, test.not_in)) or 'NULL'}), TRUE)")
    for name, values in source.values.items():
        if values.get(OTHER_VALUE) == "drop" and name in mapping.columns:
            value = _clean_text(f"CAST({ident(mapping.columns[name])} AS VARCHAR)")
            tests.append(f"({value} IS NULL OR {_known_value(value, values, entity.column(name).allowed)})")
    return " AND ".join(tests) or None


def keep_rows(entity: Entity, source: SourceBase, mapping: Mapping, batch: pa.Table) -> tuple[pa.Table, int]:
    """The rows of `batch` the source keeps (_keep_condition), and how many it left out."""
    condition = _keep_condition(entity, source, mapping)
    if not condition:
        return batch, 0
    con = engine()
    con.register("batch", batch)
    try:
        kept = con.execute(f"SELECT * FROM batch WHERE {condition}").fetch_arrow_table()
    finally:
        con.unregister("batch")
    return kept, batch.num_rows - kept.num_rows


def _known_value(expr: str, values: dict[str, str], allowed) -> str:
    """The value is named by the map, or canonical already."""
    named = [k for k in values if k != OTHER_VALUE]
    tests = [f"{expr} IN ({', '.join(map(literal, named))})"] if named else []
    if allowed is not None:
        tests.append(f"lower({expr}) IN ({', '.join(map(literal, sorted(allowed)))})")
    return "(" + (" OR ".join(tests) or "FALSE") + ")"


def raw_select(entity: Entity, config: Config, mapping: Mapping, *, load_id: str) -> str:
    """SQL over batches of shop records (relation `batch`, with the `_origin` and `_row`
    columns of `with_origin`) that yields the raw landing columns: canonical text, load
    id, origin, row, bucket."""
    source = config.source(entity.name)
    selects = [f"{literal(load_id)} AS _load_id", "_origin", "_row"]
    texts: dict[str, str] = {}
    for column in entity.columns:
        name = column.name
        if name in mapping.columns:
            expr = _clean_text(f"CAST({ident(mapping.columns[name])} AS VARCHAR)")
            if name in source.values:
                expr = _value_map(expr, source.values[name], column.allowed)
            fallback = config.default_currency if name == "currency" else column.default
            if fallback is not None:
                expr = f"coalesce({expr}, {literal(fallback)})"
        elif column.default is not None:
            expr = literal(column.default)
        elif name == "currency":
            expr = literal(config.default_currency)
        else:
            expr = "CAST(NULL AS VARCHAR)"
        texts[name] = expr
    if entity.derived_key_from and entity.key[0] not in mapping.columns:
        # A content hash: the same event exported twice gets the same id, so reloads
        # do not duplicate it. md5 is stable across DuckDB versions, unlike hash().
        parts = ", ".join(f"coalesce({texts[c]}, '')" for c in entity.derived_key_from)
        texts[entity.key[0]] = f"substr(md5(concat_ws('|', {parts})), 1, 20)"
    elif source.generate_keys and entity.key[0] not in mapping.columns:
        # The file and line: the same file read again gives the same keys, and a line
        # changed in place replaces its record.
        texts[entity.key[0]] = "substr(md5(CAST(_origin AS VARCHAR) || ':' || CAST(_row AS VARCHAR)), 1, 20)"
    for name, expr in texts.items():
        selects.append(f"{expr} AS {ident(name)}")
    key_parts = ", ".join(f"coalesce({ident(k)}, '')" for k in entity.key)
    return (
        f"SELECT *, CAST(hash(concat_ws('|', {key_parts})) % {BUCKETS} AS INTEGER) AS _bucket "
        f"FROM (SELECT {', '.join(selects)} FROM batch)"
    )


def _clean_text(value: str) -> str:
    """Trimmed text, empty as null. TRIM only where a space is at an end: rebuilding
    every string tripled the cost of shaping a batch."""
    return (f"CASE WHEN {value} = '' THEN NULL WHEN {value} LIKE ' %' OR {value} LIKE '% ' "
            f"THEN NULLIF(TRIM({value}), '') ELSE {value} END")


def with_origin(batch: pa.Table, origin: str, first_row: int) -> pa.Table:
    """The batch plus where each record came from. Row numbers come from Arrow: a
    window function would serialise the query."""
    rows = pa.array(np.arange(first_row, first_row + batch.num_rows, dtype=np.int64))
    origins = pa.DictionaryArray.from_arrays(pa.array(np.zeros(batch.num_rows, dtype=np.int32)), pa.array([origin]))
    return batch.append_column("_origin", origins).append_column("_row", rows)


def _value_map(expr: str, values: dict[str, str], allowed) -> str:
    cases = " ".join(f"WHEN {expr} = {literal(k)} THEN {literal(v)}" for k, v in values.items() if k != OTHER_VALUE)
    other = values.get(OTHER_VALUE)
    if other is not None and other not in OTHER_ACTIONS:
        # Any other value becomes `other`; a canonical one stays itself.
        keep = f"WHEN lower({expr}) IN ({', '.join(map(literal, sorted(allowed)))}) THEN {expr} " if allowed else ""
        return f"CASE WHEN {expr} IS NULL THEN NULL {cases} {keep}ELSE {literal(other)} END"
    return f"CASE {cases} ELSE {expr} END" if cases else expr


def typed_select(entity: Entity, config: Config, raw: str) -> str:
    """SQL over raw landing rows (relation `raw`): canonical text -> typed values
    (timestamps in UTC). Beside every typed column, `<col>__unparsed` keeps the text of
    a value that did not parse (a broken rule, not a silent null); `<col>__raw` keeps
    the text of every column whose value is not its text (for quarantined records).
    `_row_hash` hashes the record's canonical text (to skip reloading identical rows)."""
    source = config.source(entity.name)
    zone = config.source_timezone(entity.name)
    inner = ["_load_id", "_origin", "_row"]
    unparsed, out_of_range = [], []
    for column in entity.columns:
        name = ident(column.name)
        raw_name = ident(column.name + RAW_SUFFIX)
        if column.type == "text":
            if column.check == "email" or column.allowed is not None:
                inner.extend([f"lower({name}) AS {name}", f"{name} AS {raw_name}"])
            elif column.check == "currency":
                inner.extend([f"upper({name}) AS {name}", f"{name} AS {raw_name}"])
            else:
                inner.append(name)
            continue
        inner.append(f"{_typed(column.type, name, source, zone)} AS {name}")
        inner.append(f"{name} AS {raw_name}")
        # Computed on outer levels so each conversion runs once per value.
        too_large = None
        if column.magnitude_checked:
            too_large = ident(column.name + OUT_OF_RANGE_SUFFIX)
            number = f"TRY_CAST({_number_text(raw_name, source)} AS DOUBLE)"
            limit = MAGNITUDE_LIMITS[column.type]
            # NaN is no number at all (parses), and DuckDB orders it above every number.
            beyond = f" OR (isfinite({number}) AND abs({number}) >= {limit!r})" if limit != float("inf") else ""
            out_of_range.append(
                f"CASE WHEN {name} IS NULL AND (isinf({number}){beyond}) THEN {raw_name} END AS {too_large}")
        not_number = f" AND {too_large} IS NULL" if too_large else ""
        unparsed.append(f"CASE WHEN {name} IS NULL{not_number} THEN {raw_name} END "
                        f"AS {ident(column.name + UNPARSED_SUFFIX)}")
    if entity.one_of:
        inner.append(f"coalesce({', '.join(ident(c) for c in entity.one_of)}) AS {IDENTITY_COLUMN}")
    # DuckDB's 64-bit hash of the canonical text (an md5 of it cost a third of typing).
    # It only compares versions of one key; the pinned DuckDB keeps it stable.
    hashed = ", ".join(ident(c) for c in entity.column_names)
    inner.append(f"CAST(hash({hashed}) >> 1 AS BIGINT) AS _row_hash")
    typed = f"SELECT {', '.join(inner)} FROM {raw}"
    if out_of_range:
        typed = f"SELECT {', '.join(['*', *out_of_range])} FROM ({typed})"
    return f"SELECT {', '.join(['*', *unparsed])} FROM ({typed})"


def raw_text(typed: pa.Table, column: str) -> pa.ChunkedArray:
    """The text a typed chunk's column was read from (for quarantined records)."""
    raw = column + RAW_SUFFIX
    return typed.column(raw if raw in typed.column_names else column)


# Great Expectations compares datetime64[ns] columns vectorized and anything else row
# by row; values outside the ns range are clamped (they fail the range rule anyway).
_NS_MIN, _NS_MAX = pa.scalar(datetime(1700, 1, 1), pa.timestamp("us")), pa.scalar(datetime(2200, 1, 1), pa.timestamp("us"))


def for_checks(typed: pa.Table, columns: list[str]) -> pd.DataFrame:
    """The pandas view Great Expectations checks: only the columns its rules use,
    decimals as floats and timestamps in nanoseconds (both compared vectorized)."""
    arrays = []
    for name in columns:
        column = typed.column(name)
        if pa.types.is_decimal(column.type):
            column = column.cast(pa.float64())
        elif pa.types.is_timestamp(column.type):
            clamped = pc.max_element_wise(column, _NS_MIN, skip_nulls=False)
            column = pc.min_element_wise(clamped, _NS_MAX, skip_nulls=False).cast(pa.timestamp("ns"))
        arrays.append(column)
    return pa.table(arrays, names=columns).to_pandas()


def _number_text(name: str, source: SourceBase) -> str:
    if getattr(source, "decimal", ".") == ",":
        # "1 234,50" -> "1234.50": spaces (incl. non-breaking) are thousands separators.
        return f"replace(regexp_replace({name}, '[\\s\\x{{00a0}}\\x{{202f}}]', '', 'g'), ',', '.')"
    return name


def _typed(kind: str, name: str, source: SourceBase, zone: str) -> str:
    if kind == "timestamp":
        return _timestamp(name, source.timestamp_format, zone)
    if kind == "date":
        return _date(name, source.timestamp_format)
    number = f"TRY_CAST({_number_text(name, source)} AS DOUBLE)"
    # TRY_CAST throughout: NaN, infinity or 1e20 is a bad value of one row, not an error
    # that stops the whole load (they become null and break a rule).
    if kind == "money":
        return f"TRY_CAST(round({number}, 2) AS DECIMAL(18,2))"
    if kind == "number":
        return f"CASE WHEN isfinite({number}) THEN {number} END"
    if kind == "integer":
        # "7" and "7.0" are integers, "7.5" is not.
        return f"CASE WHEN {number} = round({number}) THEN TRY_CAST({number} AS BIGINT) END"
    if kind == "boolean":
        truthy = ", ".join(literal(w) for w in TRUE_WORDS)
        falsy = ", ".join(literal(w) for w in FALSE_WORDS)
        return f"CASE WHEN lower({name}) IN ({truthy}) THEN TRUE WHEN lower({name}) IN ({falsy}) THEN FALSE END"
    raise ValueError(f"unknown column type {kind}")


def _date(name: str, fmt: str | None) -> str:
    """A calendar day, never shifted by a time zone: ISO (2025-01-05), or the date part
    of the source's timestamp_format (15.03.1985 for "%d.%m.%Y %H:%M:%S")."""
    day_format = fmt.split("%H")[0].strip() if fmt else ""
    if not day_format or day_format == "%Y-%m-%d":
        return f"TRY_CAST({name} AS DATE)"
    return f"COALESCE(TRY_CAST({name} AS DATE), CAST(try_strptime({name}, {literal(day_format)}) AS DATE))"


def _timestamp(name: str, fmt: str | None, zone: str) -> str:
    """Parse to a naive UTC timestamp; naive input is local time in `zone`.

    UTC is taken from the instant's epoch: DuckDB's timezone('UTC', ...) costs as much
    as the zone lookup itself. DST edges follow ICU: an ambiguous local time is read as
    standard time, a skipped one as if the clock had not moved yet."""
    if fmt and ("%z" in fmt or "%Z" in fmt):
        return f"make_timestamp(epoch_us(CAST(try_strptime({name}, {literal(fmt)}) AS TIMESTAMPTZ)))"
    local = f"try_strptime({name}, {literal(fmt)})" if fmt else f"TRY_CAST({name} AS TIMESTAMP)"
    as_utc = local if zone == "UTC" else f"make_timestamp(epoch_us(timezone({literal(zone)}, {local})))"
    if fmt:
        return as_utc
    # An offset only counts after a time of day: "2025-01-05" ends in "-05" too.
    aware = f"regexp_matches({name}, '\\d:\\d\\d(:\\d\\d(\\.\\d+)?)?\\s*(Z|[+-]\\d\\d(:?\\d\\d)?)$')"
    return f"CASE WHEN {aware} THEN make_timestamp(epoch_us(TRY_CAST({name} AS TIMESTAMPTZ))) ELSE {as_utc} END"
