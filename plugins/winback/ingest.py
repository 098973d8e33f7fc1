"""Ingest one entity: extract -> validate -> load. The DAG tasks and the CLI call these.

- extract: read the source's new records into `raw_<entity>` (canonical text, tagged
  with a load id), in chunks.
- validate: type and check them with Great Expectations, chunk by chunk; bad rows go to
  `quarantine` with the rules they broke, good ones to `valid_<entity>`; the run is
  recorded in `validation_runs`; too many bad rows fail the step.
- load: in one transaction, upsert the valid rows into `<entity>` by key (a newer
  version replaces an older one, an identical row is left alone), register the files or
  advance the watermark, and clear the load's raw rows. Re-running an interval leaves
  the warehouse as one run would.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Iterable

import numpy as np
import pandas as pd
import pyarrow as pa

from winback.canonical import for_checks, shape_raw, type_frame
from winback.config import Config
from winback.schema import ENTITIES, ENTITY_ORDER, Entity
from winback.sources import RejectedLine, Window, make_extractor
from winback.validation import key_rule, row_rules, rule_descriptions, utcnow, validator
from winback.warehouse import BUCKETS, Warehouse, raw_table, valid_table

log = logging.getLogger(__name__)

MALFORMED_RULE = "malformed_line"


class IngestError(RuntimeError):
    """A load cannot go on (wrong state, missing load); the message says what to do."""


class ValidationThresholdError(RuntimeError):
    """More bad rows than the entity's max_bad_share: the batch is not loaded."""


@dataclass(frozen=True)
class ChunkPlan:
    low: int
    high: int
    rows: int


def to_utc(moment: datetime | None) -> datetime | None:
    """Naive datetimes are taken as UTC; aware ones converted. Stored naive UTC."""
    if moment is None:
        return None
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc).replace(tzinfo=None)
    return moment


def new_load_id(entity: str) -> str:
    return f"{entity}-{utcnow():%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"


def open_warehouse(config: Config, warehouse: Warehouse | None = None) -> Warehouse:
    return warehouse or Warehouse(config.warehouse_url)


# -- extract --------------------------------------------------------------------------------
def resolve_window(
    config: Config,
    entity: str,
    start: datetime | None,
    end: datetime | None,
    watermark: datetime | None,
    fill_gaps: bool = False,
) -> Window:
    """The [start, end) to extract. Files ignore start (the file registry says what is
    new); databases and APIs start at the watermark minus lookback unless told, and
    with `fill_gaps` (scheduled runs) never start after the watermark, so a missed run
    leaves no hole."""
    source = config.source(entity)
    start, end = to_utc(start), to_utc(end)
    if start is not None and end is not None and start >= end:
        raise IngestError(f"{entity}: window start {start} is not before end {end}")
    if source.kind == "file":
        return Window(None, end)
    lookback = getattr(source, "lookback", timedelta(0))
    resume = watermark - lookback if watermark is not None else None
    if start is None or (fill_gaps and resume is not None and resume < start):
        start = resume
    return Window(start, end or utcnow())


def _abandon_unfinished(wh: Warehouse, entity: str) -> None:
    """Loads that never finished leave raw/valid rows behind; their files were not
    registered and their watermark not advanced, so this run reads them again."""
    with wh.begin() as conn:
        wh.execute(f"DELETE FROM {raw_table(entity)}", conn=conn)
        wh.execute(f"DELETE FROM {valid_table(entity)}", conn=conn)
        wh.execute(
            "UPDATE load_runs SET status = 'abandoned' WHERE entity = :entity "
            "AND status IN ('extracting', 'extracted', 'validated')",
            {"entity": entity},
            conn=conn,
        )


def _watermark(wh: Warehouse, entity: str) -> datetime | None:
    return wh.scalar("SELECT watermark FROM watermarks WHERE entity = :entity", {"entity": entity})


def _file_registry(wh: Warehouse, entity: str) -> dict[str, dict]:
    rows = wh.rows(
        "SELECT path, size, mtime, sha256 FROM loaded_files WHERE entity = :entity", {"entity": entity}
    )
    return {r.path: {"size": r.size, "mtime": r.mtime, "sha256": r.sha256} for r in rows}


def _update_run(wh: Warehouse, load_id: str, conn=None, **values) -> None:
    assignments = ", ".join(f"{k} = :{k}" for k in values)
    wh.execute(f"UPDATE load_runs SET {assignments} WHERE load_id = :load_id", {**values, "load_id": load_id}, conn=conn)


def prepare(wh: Warehouse, entity: str) -> None:
    wh.ensure_meta_tables()
    wh.ensure_entity_tables(ENTITIES[entity])


def extract(
    config: Config,
    entity: str,
    start: datetime | None = None,
    end: datetime | None = None,
    *,
    fill_gaps: bool = False,
    warehouse: Warehouse | None = None,
) -> dict:
    """Read the source's new records into raw_<entity>; returns the load id and counts."""
    wh = open_warehouse(config, warehouse)
    definition = ENTITIES[entity]
    prepare(wh, entity)
    _abandon_unfinished(wh, entity)
    extractor = make_extractor(config, entity)
    window = resolve_window(config, entity, start, end, _watermark(wh, entity), fill_gaps)
    load_id = new_load_id(entity)
    began = time.perf_counter()
    wh.execute(
        "INSERT INTO load_runs (load_id, entity, source_kind, interval_start, interval_end, status, "
        "started_at) VALUES (:load_id, :entity, :kind, :start, :end, 'extracting', :now)",
        {"load_id": load_id, "entity": entity, "kind": extractor.kind, "start": window.start,
         "end": window.end, "now": utcnow()},
    )
    rows = 0
    try:
        registry = _file_registry(wh, entity) if extractor.kind == "file" else {}
        origins = extractor.origins(window, registry)
        for origin in origins:
            for batch in extractor.read(origin, window):
                raw = shape_raw(
                    batch.table, definition, config, batch.mapping,
                    load_id=load_id, origin=batch.origin, first_row=batch.first_row,
                )
                with wh.begin() as conn:
                    wh.write_arrow(conn, raw_table(entity), raw)
                rows += raw.num_rows
        if extractor.rejected:
            with wh.begin() as conn:
                _quarantine_lines(wh, conn, entity, extractor.kind, load_id, extractor.rejected)
    except Exception as exc:
        _update_run(wh, load_id, status="failed", message=str(exc)[:2000], finished_at=utcnow())
        raise
    _update_run(
        wh, load_id, status="extracted", rows_extracted=rows,
        origins=json.dumps([{"name": o.name, **o.fingerprint} for o in origins]),
    )
    seconds = time.perf_counter() - began
    log.info("%s: extracted %d rows from %d origin(s) %s in %.1fs (load %s)",
             entity, rows, len(origins), window, seconds, load_id)
    return {"entity": entity, "load_id": load_id, "rows": rows, "origins": len(origins),
            "rejected_lines": len(extractor.rejected), "window": str(window), "seconds": round(seconds, 3)}


def _quarantine_lines(wh: Warehouse, conn, entity: str, kind: str, load_id: str,
                      lines: Iterable[RejectedLine]) -> None:
    now = utcnow()
    records = []
    for line in lines:
        raw = json.dumps({"line": line.text}, ensure_ascii=False)
        records.append({
            "entity": entity, "record_hash": _record_hash(line.origin, raw), "source_kind": kind,
            "origin": line.origin, "row_number": line.line, "load_id": load_id, "record_key": None,
            "rules": MALFORMED_RULE, "details": f"{MALFORMED_RULE}: {line.problem}",
            "raw_record": raw, "quarantined_at": now,
        })
    frame = pd.DataFrame.from_records(records).drop_duplicates("record_hash")
    wh.insert_new(conn, "quarantine", _quarantine_arrow(frame), ("entity", "record_hash"))


# -- validate -------------------------------------------------------------------------------
def _run_row(wh: Warehouse, load_id: str):
    rows = wh.rows("SELECT * FROM load_runs WHERE load_id = :load_id", {"load_id": load_id})
    if not rows:
        raise IngestError(f"load {load_id} is not in load_runs (run extract first)")
    return rows[0]


def plan_chunks(bucket_counts: list[tuple[int, int]], chunk_rows: int) -> list[ChunkPlan]:
    """Group consecutive key-hash buckets into chunks of about chunk_rows rows. A key
    lives in one bucket, so every version of it is checked in the same chunk."""
    plans: list[ChunkPlan] = []
    low, rows = None, 0
    for bucket, count in bucket_counts:
        if low is None:
            low = bucket
        rows += count
        if rows >= chunk_rows:
            plans.append(ChunkPlan(low, bucket, rows))
            low, rows = None, 0
    if low is not None:
        plans.append(ChunkPlan(low, BUCKETS - 1, rows))
    return plans


def validate(config: Config, entity: str, load_id: str, *, warehouse: Warehouse | None = None) -> dict:
    """Check the load's raw rows; quarantine the bad, keep the good in valid_<entity>."""
    wh = open_warehouse(config, warehouse)
    definition = ENTITIES[entity]
    run = _run_row(wh, load_id)
    if run.status not in ("extracted", "validated", "rejected"):
        raise IngestError(f"load {load_id} is {run.status}; only an extracted load can be validated")
    began, started_at = time.perf_counter(), utcnow()
    with wh.begin() as conn:
        wh.execute(f"DELETE FROM {valid_table(entity)} WHERE _load_id = :id", {"id": load_id}, conn=conn)
        wh.execute("DELETE FROM quarantine WHERE load_id = :id AND rules <> :malformed",
                   {"id": load_id, "malformed": MALFORMED_RULE}, conn=conn)
    rules = row_rules(definition, config.validation)
    key = key_rule(definition)
    descriptions = rule_descriptions(rules + [key])
    gx = validator()
    row_suite = gx.suite(f"{entity}.rows", rules)
    key_suite = gx.suite(f"{entity}.key", [key])

    counts = wh.rows(
        f"SELECT _bucket, count(*) AS n FROM {raw_table(entity)} WHERE _load_id = :id "
        "GROUP BY _bucket ORDER BY _bucket", {"id": load_id},
    )
    totals = {"checked": 0, "failed": 0, "valid": 0, "duplicates": 0, "superseded": 0}
    per_rule: dict[str, int] = {}
    for plan in plan_chunks([(r[0], r[1]) for r in counts], config.chunk_rows(entity)):
        with wh.begin() as conn:
            raw = wh.read_text(
                conn,
                f"SELECT * FROM {raw_table(entity)} WHERE _load_id = :id AND _bucket BETWEEN :low AND :high",
                {"id": load_id, "low": plan.low, "high": plan.high},
            )
            outcome = _check_chunk(raw, definition, config, gx, row_suite, key_suite)
            wh.write_arrow(conn, valid_table(entity), outcome.valid)
            if outcome.bad:
                frame = _quarantine_frame(raw, outcome.bad, definition, config, run.source_kind, load_id, descriptions)
                wh.insert_new(conn, "quarantine", _quarantine_arrow(frame), ("entity", "record_hash"))
        totals["checked"] += raw.num_rows
        totals["failed"] += len(outcome.bad)
        totals["valid"] += outcome.valid.num_rows
        totals["duplicates"] += outcome.duplicates
        totals["superseded"] += outcome.superseded
        for rule, positions in outcome.by_rule.items():
            per_rule[rule] = per_rule.get(rule, 0) + len(positions)

    malformed = wh.scalar(
        "SELECT count(*) FROM quarantine WHERE load_id = :id AND rules = :malformed",
        {"id": load_id, "malformed": MALFORMED_RULE},
    )
    if malformed:
        per_rule[MALFORMED_RULE] = int(malformed)
        totals["checked"] += int(malformed)
        totals["failed"] += int(malformed)
    limit = config.max_bad_share(entity)
    share = totals["failed"] / totals["checked"] if totals["checked"] else 0.0
    success = share <= limit
    message = None
    if not success:
        worst = ", ".join(f"{rule} {n}" for rule, n in sorted(per_rule.items(), key=lambda kv: -kv[1]))
        message = (
            f"{entity}: {totals['failed']} of {totals['checked']} rows ({share:.1%}) broke validation "
            f"rules, above the limit of {limit:.1%} (validation.max_bad_share); by rule: {worst}. "
            f"Nothing of load {load_id} was loaded; the bad rows are in the quarantine table "
            f"(load_id = '{load_id}'). Fix the source or its column mapping and re-run."
        )
    with wh.begin() as conn:
        wh.execute(
            "INSERT INTO validation_runs (run_id, entity, load_id, rows_checked, rows_failed, "
            "failed_per_rule, duplicates_dropped, superseded, bad_share, max_bad_share, success, "
            "message, started_at, finished_at) VALUES (:run_id, :entity, :load_id, :checked, :failed, "
            ":per_rule, :duplicates, :superseded, :share, :limit, :success, :message, :started, :finished)",
            {"run_id": uuid.uuid4().hex, "entity": entity, "load_id": load_id,
             "checked": totals["checked"], "failed": totals["failed"],
             "per_rule": json.dumps(dict(sorted(per_rule.items()))),
             "duplicates": totals["duplicates"], "superseded": totals["superseded"],
             "share": share, "limit": limit, "success": success, "message": message,
             "started": started_at, "finished": utcnow()},
            conn=conn,
        )
        _update_run(wh, load_id, conn=conn, status="validated" if success else "rejected",
                    rows_valid=totals["valid"], rows_quarantined=totals["failed"], message=message)
    seconds = time.perf_counter() - began
    log.info("%s: validated %d rows in %.1fs: %d valid, %d quarantined %s, %d exact duplicates, "
             "%d older versions dropped", entity, totals["checked"], seconds, totals["valid"],
             totals["failed"], dict(sorted(per_rule.items())), totals["duplicates"], totals["superseded"])
    if not success:
        raise ValidationThresholdError(message)
    return {"entity": entity, "load_id": load_id, "rows_checked": totals["checked"],
            "rows_valid": totals["valid"], "rows_quarantined": totals["failed"],
            "failed_per_rule": dict(sorted(per_rule.items())), "seconds": round(seconds, 3)}


@dataclass
class ChunkOutcome:
    valid: pa.Table
    bad: dict[int, list[str]]  # position in the raw chunk -> rules broken
    by_rule: dict[str, np.ndarray]
    duplicates: int
    superseded: int


def _check_chunk(raw: pa.Table, entity: Entity, config: Config, gx, row_suite, key_suite) -> ChunkOutcome:
    typed = type_frame(raw, entity, config)
    frame = for_checks(typed)
    by_rule = gx.check(frame, row_suite)
    bad_mask = np.zeros(len(frame), dtype=bool)
    for positions in by_rule.values():
        bad_mask[positions] = True
    good = np.flatnonzero(~bad_mask)
    keep, duplicates, superseded = _latest_versions(frame.iloc[good], entity)
    candidates = good[keep]
    conflicts = gx.check(frame.iloc[candidates], key_suite)
    if conflicts:
        (rule, positions), = conflicts.items()
        conflicting = candidates[positions]
        by_rule[rule] = conflicting
        bad_mask[conflicting] = True
        candidates = candidates[~np.isin(candidates, conflicting)]
    bad: dict[int, list[str]] = {}
    for rule, positions in by_rule.items():
        for position in positions.tolist():
            bad.setdefault(position, []).append(rule)
    columns = entity.column_names + ["_row_hash", "_load_id"]
    valid = typed.select(columns).take(pa.array(candidates, type=pa.int64()))
    return ChunkOutcome(valid, bad, by_rule, duplicates, superseded)


def _latest_versions(frame: pd.DataFrame, entity: Entity) -> tuple[np.ndarray, int, int]:
    """Which rows to keep among several with the same key: an exact repeat is dropped,
    an older version gives way to the newest. Rows left with equal keys conflict."""
    keep = np.ones(len(frame), dtype=bool)
    key = list(entity.key)
    repeated = frame.duplicated(subset=key, keep=False).to_numpy()
    if not repeated.any():
        return keep, 0, 0
    subset = frame.loc[repeated, key + ["_row_hash", "_origin", "_row"]].copy()
    subset["_position"] = np.flatnonzero(repeated)
    version = None
    for column in entity.version_by:
        version = frame.loc[repeated, column] if version is None else version.fillna(frame.loc[repeated, column])
    subset["_version"] = version
    exact = subset.duplicated(subset=key + ["_row_hash"], keep="last").to_numpy()
    keep[subset["_position"].to_numpy()[exact]] = False
    remaining = subset[~exact]
    newest = remaining.groupby(key, dropna=False)["_version"].transform("max")
    older = (remaining["_version"] < newest).to_numpy()
    keep[remaining["_position"].to_numpy()[older]] = False
    return keep, int(exact.sum()), int(older.sum())


def _record_hash(origin: str, raw_record: str) -> str:
    return hashlib.md5(f"{origin}\x1f{raw_record}".encode("utf-8")).hexdigest()


def _quarantine_frame(raw: pa.Table, bad: dict[int, list[str]], entity: Entity, config: Config,
                      kind: str, load_id: str, descriptions: dict[str, str]) -> pd.DataFrame:
    positions = sorted(bad)
    rows = raw.take(pa.array(positions, type=pa.int64())).to_pandas()
    mapping = config.source(entity.name).columns
    raw_json = [
        json.dumps(
            # The shop's own column names; unmapped canonical columns only when they
            # carry a value (a null in a mapped column is itself informative).
            {mapping.get(c, c): v for c, v in record.items() if c in mapping or v is not None},
            ensure_ascii=False,
        )
        for record in rows[entity.column_names].astype(object).where(rows[entity.column_names].notna(), None).to_dict("records")
    ]
    rules = [sorted(bad[p]) for p in positions]
    frame = pd.DataFrame({
        "entity": entity.name,
        "source_kind": kind,
        "origin": rows["_origin"].to_numpy(),
        "row_number": rows["_row"].astype("int64").to_numpy(),
        "load_id": load_id,
        "record_key": rows[list(entity.key)].astype("string").fillna("").agg("|".join, axis=1).to_numpy(),
        "rules": [", ".join(r) for r in rules],
        "details": ["; ".join(descriptions[x] for x in r) for r in rules],
        "raw_record": raw_json,
        "quarantined_at": utcnow(),
    })
    frame["record_hash"] = [_record_hash(o, j) for o, j in zip(frame["origin"], frame["raw_record"])]
    return frame.drop_duplicates("record_hash")


def _quarantine_arrow(frame: pd.DataFrame) -> pa.Table:
    types = {"row_number": pa.int64(), "quarantined_at": pa.timestamp("us")}
    return pa.table({c: pa.array(frame[c].tolist(), type=types.get(c, pa.string())) for c in frame.columns})


# -- load ---------------------------------------------------------------------------------------
def _version(entity: Entity, alias: str) -> str:
    columns = [f"{alias}.{c}" for c in entity.version_by]
    return columns[0] if len(columns) == 1 else f"coalesce({', '.join(columns)})"


def load(config: Config, entity: str, load_id: str, *, warehouse: Warehouse | None = None) -> dict:
    """Upsert the load's valid rows into <entity> and finish the load, atomically."""
    wh = open_warehouse(config, warehouse)
    definition = ENTITIES[entity]
    run = _run_row(wh, load_id)
    if run.status == "loaded":
        log.info("%s: load %s was already loaded; nothing to do", entity, load_id)
        return {"entity": entity, "load_id": load_id, "inserted": run.rows_inserted - run.rows_updated,
                "updated": run.rows_updated, "already_loaded": True}
    if run.status != "validated":
        raise IngestError(f"load {load_id} is {run.status}; only a validated load can be loaded")
    began = time.perf_counter()
    table, valid = entity, valid_table(entity)
    join = " AND ".join(f"t.{k} = i.{k}" for k in definition.key)
    newer = (
        f"({_version(definition, 'i')} > {_version(definition, 't')} "
        f"OR ({_version(definition, 'i')} IS NOT DISTINCT FROM {_version(definition, 't')} "
        f"AND i._row_hash <> t._row_hash) "
        f"OR ({_version(definition, 't')} IS NULL AND {_version(definition, 'i')} IS NOT NULL))"
    )
    columns = ", ".join(definition.column_names)
    selected = ", ".join(f"i.{c}" for c in definition.column_names)
    params = {"id": load_id}
    with wh.begin() as conn:
        counted = wh.execute(
            f"SELECT count(*) FILTER (WHERE t.{definition.key[0]} IS NULL), "
            f"count(*) FILTER (WHERE t.{definition.key[0]} IS NOT NULL AND {newer}) "
            f"FROM {valid} i LEFT JOIN {table} t ON {join} WHERE i._load_id = :id",
            params, conn=conn,
        ).one()
        new_rows, updated = int(counted[0]), int(counted[1])
        wh.execute(
            f"DELETE FROM {table} t USING {valid} i WHERE i._load_id = :id AND {join} AND {newer}",
            params, conn=conn,
        )
        wh.execute(
            f"INSERT INTO {table} ({columns}, _load_id, _row_hash, _loaded_at) "
            f"SELECT {selected}, i._load_id, i._row_hash, :now FROM {valid} i "
            f"WHERE i._load_id = :id AND NOT EXISTS (SELECT 1 FROM {table} t WHERE {join})",
            {**params, "now": utcnow()}, conn=conn,
        )
        _finish_origins(wh, conn, entity, run)
        wh.execute(f"DELETE FROM {raw_table(entity)} WHERE _load_id = :id", params, conn=conn)
        wh.execute(f"DELETE FROM {valid} WHERE _load_id = :id", params, conn=conn)
        _update_run(wh, load_id, conn=conn, status="loaded", rows_inserted=new_rows + updated,
                    rows_updated=updated, finished_at=utcnow())
    seconds = time.perf_counter() - began
    log.info("%s: loaded load %s in %.1fs: %d new, %d updated", entity, load_id, seconds, new_rows, updated)
    return {"entity": entity, "load_id": load_id, "inserted": new_rows, "updated": updated,
            "seconds": round(seconds, 3)}


def _finish_origins(wh: Warehouse, conn, entity: str, run) -> None:
    """Files: remember what was read. Databases and APIs: advance the watermark."""
    if run.source_kind == "file":
        for origin in json.loads(run.origins or "[]"):
            params = {"entity": entity, "path": origin["name"]}
            wh.execute("DELETE FROM loaded_files WHERE entity = :entity AND path = :path", params, conn=conn)
            wh.execute(
                "INSERT INTO loaded_files (entity, path, size, mtime, sha256, load_id, loaded_at) "
                "VALUES (:entity, :path, :size, :mtime, :sha256, :load_id, :now)",
                {**params, "size": origin["size"], "mtime": origin["mtime"], "sha256": origin["sha256"],
                 "load_id": run.load_id, "now": utcnow()},
                conn=conn,
            )
        return
    if run.interval_end is None:
        return
    current = wh.execute("SELECT watermark FROM watermarks WHERE entity = :entity",
                         {"entity": entity}, conn=conn).scalar()
    if current is not None and current >= run.interval_end:
        return
    wh.execute("DELETE FROM watermarks WHERE entity = :entity", {"entity": entity}, conn=conn)
    wh.execute("INSERT INTO watermarks (entity, watermark, updated_at) VALUES (:entity, :mark, :now)",
               {"entity": entity, "mark": run.interval_end, "now": utcnow()}, conn=conn)


# -- all three --------------------------------------------------------------------------------
def ingest_entity(config: Config, entity: str, start=None, end=None, *, warehouse=None) -> dict:
    wh = open_warehouse(config, warehouse)
    extracted = extract(config, entity, start, end, warehouse=wh)
    validated = validate(config, entity, extracted["load_id"], warehouse=wh)
    loaded = load(config, entity, extracted["load_id"], warehouse=wh)
    return {**extracted, **validated, **loaded}


def ingest(config: Config, entities: list[str] | None = None, start=None, end=None,
           *, warehouse: Warehouse | None = None) -> list[dict]:
    """Every configured entity (or the ones named), one after the other."""
    wh = open_warehouse(config, warehouse)
    chosen = entities or [e for e in ENTITY_ORDER if e in config.sources]
    return [ingest_entity(config, entity, start, end, warehouse=wh) for entity in chosen]
