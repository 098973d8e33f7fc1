"""Quarantine rows: bad records with the rules they broke, under the shop's own column
names, keyed by (entity, record_hash) so a re-run never quarantines a record twice."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable

import numpy as np
import pandas as pd
import pyarrow as pa

from winback.clock import utcnow
from winback.config import Config
from winback.ingest.canonical import engine, ident, literal, raw_text
from winback.ingest.sources import RejectedLine
from winback.schema import Entity
from winback.warehouse import Warehouse

MALFORMED_RULE = "malformed_line"


# What a record found bad again takes from the new finding when `refresh` is asked for
# (reloads, rechecks): the rules as they are now and the load that found them. Its
# quarantined_at stays: when it was first quarantined.
REFRESHED = ("source_kind", "row_number", "load_id", "record_key", "rules", "details")


def store(wh: Warehouse, conn, records: pa.Table, refresh: bool = False) -> None:
    """Add quarantine records; one already there is left alone, or with `refresh` takes
    the new finding's rules and load (see REFRESHED)."""
    wh.insert_new(conn, "quarantine", records, ("entity", "record_hash"), update=REFRESHED if refresh else ())


def quarantine_lines(wh: Warehouse, conn, entity: str, kind: str, load_id: str,
                      lines: Iterable[RejectedLine], refresh: bool = False) -> None:
    now = utcnow()
    records = []
    for line in lines:
        raw = json.dumps({"line": line.text}, ensure_ascii=False)
        records.append({
            "entity": entity, "record_hash": record_hash(line.origin, raw), "source_kind": kind,
            "origin": line.origin, "row_number": line.line, "load_id": load_id, "record_key": None,
            "rules": MALFORMED_RULE, "details": f"{MALFORMED_RULE}: {line.problem}",
            "raw_record": raw, "quarantined_at": now, "level": "row", "field": None,
        })
    frame = pd.DataFrame.from_records(records).drop_duplicates("record_hash")
    store(wh, conn, quarantine_arrow(frame), refresh)


def record_key(entity: Entity, alias: str) -> str:
    """SQL of a record's key as one text ("a|b" for a compound key)."""
    return "concat_ws('|', " + ", ".join(f"coalesce({alias}.{ident(k)}, '')" for k in entity.key) + ")"


def record_hash(origin: str, raw_record: str) -> str:
    return hashlib.md5(f"{origin}\x1f{raw_record}".encode()).hexdigest()


QUARANTINE_TYPES = {"row_number": pa.int64(), "quarantined_at": pa.timestamp("us")}


def quarantine_arrow(frame: pd.DataFrame) -> pa.Table:
    return pa.table({c: pa.array(frame[c].tolist(), type=QUARANTINE_TYPES.get(c, pa.string())) for c in frame.columns})


def bad_records(typed: pa.Table, by_rule: dict[str, np.ndarray], entity: Entity, config: Config,
                        kind: str, load_id: str, descriptions: dict[str, str]) -> pa.Table:
    """Quarantine rows for a chunk's bad records, built in SQL: the raw record under the
    shop's own column names, every rule it broke, and a hash that keeps re-runs from
    quarantining the same record twice."""
    bad = np.unique(np.concatenate(list(by_rule.values())))
    picked = pa.array(bad, type=pa.int64())
    records = pa.table(
        [typed.column("_origin").take(picked), typed.column("_row").take(picked),
         *[raw_text(typed, c).take(picked) for c in entity.column_names]],
        names=["_origin", "_row", *entity.column_names],
    )
    broken = pa.table({
        "_pos": np.concatenate([np.searchsorted(bad, p) for _, p in sorted(by_rule.items())]),
        "rule": [rule for rule, p in sorted(by_rule.items()) for _ in range(len(p))],
        "description": [descriptions[rule] for rule, p in sorted(by_rule.items()) for _ in range(len(p))],
    })
    records = records.append_column("_pos", pa.array(np.arange(len(bad), dtype=np.int64)))
    mapping = config.source(entity.name).columns
    # Unmapped canonical columns appear only when some bad row carries a value; a shop
    # column feeding two canonical ones (one consent box for email and sms) appears once.
    shown: dict[str, str] = {}
    for c in entity.column_names:
        if c in mapping or records.column(c).null_count < len(bad):
            shown.setdefault(mapping.get(c, c), c)
    record = "to_json(struct_pack(" + ", ".join(f"{ident(shop)} := r.{ident(c)}" for shop, c in shown.items()) + "))"
    con = engine()
    con.register("raw_bad", records)
    con.register("broken", broken)
    try:
        return con.sql(f"""
            WITH rules AS (
                SELECT _pos, string_agg(rule, ', ' ORDER BY rule) AS rules,
                       string_agg(description, '; ' ORDER BY rule) AS details
                FROM broken GROUP BY _pos
            ), records AS (
                SELECT CAST(r._origin AS VARCHAR) AS origin, r._row AS row_number, {record_key(entity, "r")} AS record_key,
                       rules.rules, rules.details, CAST({record} AS VARCHAR) AS raw_record
                FROM raw_bad r JOIN rules USING (_pos)
            )
            SELECT {literal(entity.name)} AS entity, md5(origin || chr(31) || raw_record) AS record_hash,
                   {literal(kind)} AS source_kind, origin, row_number, {literal(load_id)} AS load_id,
                   record_key, rules, details, raw_record, TIMESTAMP {literal(str(utcnow()))} AS quarantined_at,
                   'row' AS level, CAST(NULL AS VARCHAR) AS field
            FROM records QUALIFY row_number() OVER (PARTITION BY record_hash ORDER BY origin, row_number) = 1
        """).to_arrow_table()
    finally:
        con.unregister("raw_bad")
        con.unregister("broken")


def field_records(typed: pa.Table, issues: dict[str, np.ndarray], fields: dict[str, str], entity: Entity,
                  config: Config, kind: str, load_id: str, descriptions: dict[str, str]) -> pa.Table:
    """Quarantine rows for values set to null in records that loaded (field-level
    issues): one per record and field, with the value under the shop's column name and
    the rules it broke; re-runs of the same record and value add nothing."""
    mapping = config.source(entity.name).columns
    parts = []
    for rule, positions in sorted(issues.items()):
        picked = pa.array(positions, type=pa.int64())
        column = fields[rule]
        parts.append(pa.table({
            "origin": typed.column("_origin").take(picked).cast(pa.string()),
            "row_number": typed.column("_row").take(picked),
            **{k: typed.column(k).take(picked).cast(pa.string()) for k in entity.key},
            "field": pa.array([column] * len(positions), pa.string()),
            "shop_column": pa.array([mapping.get(column, column)] * len(positions), pa.string()),
            "value": raw_text(typed, column).take(picked).cast(pa.string()),
            "rule": pa.array([rule] * len(positions), pa.string()),
            "description": pa.array([descriptions[rule]] * len(positions), pa.string()),
        }))
    con = engine()
    con.register("field_issues", pa.concat_tables(parts))
    try:
        return con.sql(f"""
            WITH records AS (
                SELECT origin, row_number, {record_key(entity, "r")} AS record_key, field,
                       CAST(json_object(any_value(shop_column), any_value(value)) AS VARCHAR) AS raw_record,
                       string_agg(rule, ', ' ORDER BY rule) AS rules,
                       string_agg(description, '; ' ORDER BY rule) AS details
                FROM field_issues r GROUP BY ALL
            )
            SELECT {literal(entity.name)} AS entity,
                   md5(concat_ws(chr(31), origin, record_key, field, raw_record)) AS record_hash,
                   {literal(kind)} AS source_kind, origin, row_number, {literal(load_id)} AS load_id,
                   record_key, rules, details, raw_record, TIMESTAMP {literal(str(utcnow()))} AS quarantined_at,
                   'field' AS level, field
            FROM records QUALIFY row_number() OVER (PARTITION BY record_hash ORDER BY origin, row_number) = 1
        """).to_arrow_table()
    finally:
        con.unregister("field_issues")
