"""Ingest one entity: extract -> validate -> load. The DAG tasks and the CLI call these.

- extract: read the source's new records as canonical text into the load's raw
  Parquet parts in the landing area (`winback.ingest.landing`), in chunks.
- validate: type and check them with Great Expectations, chunk by chunk; bad rows go to
  the `quarantine` table with the rules they broke, good ones to the load's valid
  parts; the run is recorded in `validation_runs`; too many bad rows fail the step.
- load: in one transaction, upsert the valid rows into `<entity>` by key (a newer
  version replaces an older one, an identical row is left alone), register the files or
  advance the watermark; then drop the load's landing files. Re-running an interval
  leaves the warehouse as one run would.

A reload (`reload=True`, `ingest --reload`) reads again what was loaded before: the
files (all, or those registered as modified within [start, end)) or the whole window of
a database or API, whatever the watermark says, and replaces the quarantine records of
what it re-read. `winback.ingest.recheck` re-checks quarantined records through the same
validate and load.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from winback.clock import utcnow
from winback.config import Config
from winback.ingest.canonical import (
    engine,
    for_checks,
    keep_rows,
    raw_select,
    typed_select,
    with_origin,
)
from winback.ingest.landing import Landing, leftover_loads
from winback.ingest.prefetch import Background, prefetched
from winback.ingest.quarantine import (
    MALFORMED_RULE,
    bad_records,
    field_records,
    quarantine_lines,
    record_key,
    store,
)
from winback.ingest.settings import FILE_KINDS
from winback.ingest.sources import Window, make_extractor
from winback.ingest.validation import (
    key_rule,
    over_limit,
    row_rules,
    rule_columns,
    rule_descriptions,
    validator,
)
from winback.ingest.versions import latest_versions
from winback.schema import ENTITIES, ENTITY_ORDER, Entity
from winback.warehouse import BUCKETS, Warehouse

log = logging.getLogger(__name__)

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
        moment = moment.astimezone(UTC).replace(tzinfo=None)
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
    reload: bool = False,
) -> Window:
    """The [start, end) to extract. Files ignore start (the file registry says what is
    new); databases and APIs start at the watermark minus lookback unless told, and
    with `fill_gaps` (scheduled runs) never start after the watermark, so a missed run
    leaves no hole. A reload ignores the watermark: it reads from `start`, else from
    ingest.start_date."""
    source = config.source(entity)
    start, end = to_utc(start), to_utc(end)
    if start is not None and end is not None and start >= end:
        raise IngestError(f"{entity}: window start {start} is not before end {end}")
    if source.kind in FILE_KINDS:
        return Window(None, end)
    if reload:
        return Window(start or datetime.combine(config.ingest.start_date, datetime.min.time()), end or utcnow())
    lookback = getattr(source, "lookback", timedelta(0))
    resume = watermark - lookback if watermark is not None else None
    if start is None or (fill_gaps and resume is not None and resume < start):
        start = resume
    return Window(start, end or utcnow())


def _abandon_unfinished(wh: Warehouse, config: Config, entity: str) -> None:
    """Loads that never finished leave landing files behind; their files were not
    registered and their watermark not advanced, so this run reads them again."""
    for load_id in leftover_loads(config.landing_root, entity):
        Landing(config.landing_root, entity, load_id).remove()
    wh.execute(
        "UPDATE load_runs SET status = 'abandoned' WHERE entity = :entity "
        "AND status IN ('extracting', 'extracted', 'validated')",
        {"entity": entity},
    )


def _watermark(wh: Warehouse, entity: str) -> datetime | None:
    return wh.scalar("SELECT watermark FROM watermarks WHERE entity = :entity", {"entity": entity})


def _file_registry(wh: Warehouse, entity: str) -> dict[str, dict]:
    rows = wh.rows(
        "SELECT path, size, mtime, sha256 FROM loaded_files WHERE entity = :entity", {"entity": entity}
    )
    return {r.path: {"size": r.size, "mtime": r.mtime, "sha256": r.sha256} for r in rows}


def forget_files(registry: dict[str, dict], start: datetime | None, end: datetime | None) -> dict[str, dict]:
    """The registry a reload extracts against: without the files registered as modified
    in [start, end) (all of them when neither is given), so they are read again. The
    registry table itself changes only when the reload's load commits."""
    low = to_utc(start).replace(tzinfo=UTC).timestamp() if start else float("-inf")
    high = to_utc(end).replace(tzinfo=UTC).timestamp() if end else float("inf")
    return {path: known for path, known in registry.items() if not low <= known["mtime"] < high}


def update_run(wh: Warehouse, load_id: str, conn=None, **values) -> None:
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
    reload: bool = False,
    warehouse: Warehouse | None = None,
) -> dict:
    """Read the source's new records into raw_<entity>; returns the load id and counts.
    `reload`: read again what was loaded before (see the module's docstring)."""
    wh = open_warehouse(config, warehouse)
    definition = ENTITIES[entity]
    prepare(wh, entity)
    _abandon_unfinished(wh, config, entity)
    extractor = make_extractor(config, entity)
    window = extractor.readable(resolve_window(config, entity, start, end, _watermark(wh, entity), fill_gaps, reload))
    load_id = new_load_id(entity)
    landing = Landing(config.landing_root, entity, load_id)
    began = time.perf_counter()
    wh.execute(
        "INSERT INTO load_runs (load_id, entity, source_kind, interval_start, interval_end, status, "
        "started_at, mode) VALUES (:load_id, :entity, :kind, :start, :end, 'extracting', :now, :mode)",
        {"load_id": load_id, "entity": entity, "kind": extractor.kind, "start": window.start,
         "end": window.end, "now": utcnow(), "mode": "reload" if reload else None},
    )
    rows = filtered = 0
    try:
        registry = _file_registry(wh, entity) if extractor.kind in FILE_KINDS else {}
        if reload:
            registry = forget_files(registry, start, end)
        origins = extractor.origins(window, registry)
        raw = landing.raw_writer(config.chunk_rows(entity))
        batches = (batch for origin in origins for batch in extractor.read(origin, window))
        for batch in prefetched(batches):
            select = raw_select(definition, config, batch.mapping, load_id=load_id)
            table, left_out = keep_rows(definition, config.source(entity), batch.mapping,
                                        with_origin(batch.table, batch.origin, batch.first_row))
            filtered += left_out
            raw.add(table, select)
        raw.flush()
        rows = raw.rows
        if extractor.rejected:
            with wh.begin() as conn:
                quarantine_lines(wh, conn, entity, extractor.kind, load_id, extractor.rejected, refresh=reload)
    except Exception as exc:
        landing.remove()
        update_run(wh, load_id, status="failed", message=str(exc)[:2000], finished_at=utcnow())
        raise
    update_run(
        wh, load_id, status="extracted", rows_extracted=rows, rows_filtered=filtered,
        origins=json.dumps([{"name": o.name, **o.fingerprint} for o in origins]),
    )
    seconds = time.perf_counter() - began
    log.info("%s: extracted %d rows from %d origin(s) %s in %.1fs (load %s)%s",
             entity, rows, len(origins), window, seconds, load_id,
             f"; {filtered} left out by the source's where or values' _other: drop" if filtered else "")
    return {"entity": entity, "load_id": load_id, "rows": rows, "filtered": filtered, "origins": len(origins),
            "rejected_lines": len(extractor.rejected), "window": str(window), "seconds": round(seconds, 3)}


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
    mode = getattr(run, "mode", None)  # loads extracted before the column existed have none
    began, started_at = time.perf_counter(), utcnow()
    landing = Landing(config.landing_root, entity, load_id)
    landing.clear_valid()
    wh.execute("DELETE FROM quarantine WHERE load_id = :id AND rules <> :malformed",
               {"id": load_id, "malformed": MALFORMED_RULE})
    rules = row_rules(definition, config.validation)
    key = key_rule(definition)
    descriptions = rule_descriptions(rules + [key])
    check_columns = rule_columns(rules)  # GX sees only what its rules read
    fields = {rule.name: rule.field for rule in rules if rule.field}

    totals = {"checked": 0, "failed": 0, "valid": 0, "duplicates": 0, "superseded": 0, "nulled": 0}
    per_rule: dict[str, int] = {}
    nulled_per_rule: dict[str, int] = {}
    def typed_chunks():
        for plan in plan_chunks(landing.bucket_counts(), config.chunk_rows(entity)):
            relation = landing.raw_relation(plan.low, plan.high)
            # Streamed batches: materialising in one go held the result twice in memory.
            reader = engine().sql(typed_select(definition, config, relation)).to_arrow_reader(65_536)
            yield plan, pa.Table.from_batches(list(reader), reader.schema)

    # While GX checks chunk k, the next chunk is typed and the previous one written;
    # the first chunk is typed while GX is imported.
    chunks = prefetched(typed_chunks())
    gx = validator()
    row_suite = gx.suites(f"{entity}.rows", rules)
    key_suite = gx.suites(f"{entity}.key", [key])
    with Background() as writer:
        for plan, typed in chunks:
            outcome = _check_chunk(typed, definition, gx, row_suite, key_suite, check_columns, fields)
            writer.submit(landing.write_valid, outcome.valid)
            if outcome.bad or outcome.nulled:
                quarantined = [bad_records(typed, outcome.by_rule, definition, config, run.source_kind, load_id,
                                           descriptions)] if outcome.bad else []
                if outcome.nulled:
                    quarantined.append(field_records(typed, outcome.nulled, fields, definition, config,
                                                     run.source_kind, load_id, descriptions))
                with wh.begin() as conn:
                    # A reload or recheck finds records bad again: they take its rules and load.
                    store(wh, conn, pa.concat_tables(quarantined), refresh=mode is not None)
            totals["checked"] += typed.num_rows
            totals["failed"] += outcome.bad
            totals["valid"] += outcome.valid.num_rows
            totals["duplicates"] += outcome.duplicates
            totals["superseded"] += outcome.superseded
            for rule, positions in outcome.by_rule.items():
                per_rule[rule] = per_rule.get(rule, 0) + len(positions)
            for rule, positions in outcome.nulled.items():
                per_rule[rule] = per_rule.get(rule, 0) + len(positions)
                nulled_per_rule[rule] = nulled_per_rule.get(rule, 0) + len(positions)
                totals["nulled"] += len(positions)

    malformed = wh.scalar(
        "SELECT count(*) FROM quarantine WHERE load_id = :id AND rules = :malformed",
        {"id": load_id, "malformed": MALFORMED_RULE},
    )
    if malformed:
        per_rule[MALFORMED_RULE] = int(malformed)
        totals["checked"] += int(malformed)
        totals["failed"] += int(malformed)
    # A recheck reads quarantined records only: a high bad share is its starting point,
    # and what passes loads whatever stays.
    limit = 1.0 if mode == "recheck" else config.max_bad_share(entity)
    checked = totals["checked"] or 1
    # A field-level rule broken by many rows fails the load too instead of quietly
    # emptying a column.
    share, too_many_nulled = over_limit(totals["checked"], totals["failed"], nulled_per_rule, limit)
    success = share <= limit and not too_many_nulled
    message = None
    if not success:
        worst = ", ".join(f"{rule} {n}" for rule, n in sorted(per_rule.items(), key=lambda kv: -kv[1]))
        nulled = "; ".join(f"{rule} would set {fields[rule]} to null in {n} of {totals['checked']} rows "
                           f"({n / checked:.1%})" for rule, n in sorted(too_many_nulled.items()))
        message = (
            f"{entity}: {totals['failed']} of {totals['checked']} rows ({share:.1%}) broke validation rules"
            + (f", and {nulled}" if nulled else "") +
            f", above the limit of {limit:.1%} (validation.max_bad_share); by rule: {worst}. "
            f"Nothing of load {load_id} was loaded; the bad rows and values are in the quarantine table "
            f"(load_id = '{load_id}'). Fix the source or its column mapping and re-run."
        )
    with wh.begin() as conn:
        wh.execute(
            "INSERT INTO validation_runs (run_id, entity, load_id, rows_checked, rows_failed, "
            "failed_per_rule, duplicates_dropped, superseded, bad_share, max_bad_share, success, "
            "message, started_at, finished_at, values_nulled) VALUES (:run_id, :entity, :load_id, :checked, "
            ":failed, :per_rule, :duplicates, :superseded, :share, :limit, :success, :message, :started, "
            ":finished, :nulled)",
            {"run_id": uuid.uuid4().hex, "entity": entity, "load_id": load_id,
             "checked": totals["checked"], "failed": totals["failed"],
             "per_rule": json.dumps(dict(sorted(per_rule.items()))),
             "duplicates": totals["duplicates"], "superseded": totals["superseded"],
             "share": share, "limit": limit, "success": success, "message": message,
             "started": started_at, "finished": utcnow(), "nulled": totals["nulled"]},
            conn=conn,
        )
        update_run(wh, load_id, conn=conn, status="validated" if success else "rejected",
                    rows_valid=totals["valid"], rows_quarantined=totals["failed"], message=message)
    seconds = time.perf_counter() - began
    log.info("%s: validated %d rows in %.1fs: %d valid, %d quarantined, %d values set to null %s, "
             "%d exact duplicates, %d older versions dropped", entity, totals["checked"], seconds, totals["valid"],
             totals["failed"], totals["nulled"], dict(sorted(per_rule.items())), totals["duplicates"],
             totals["superseded"])
    if not success:
        raise ValidationThresholdError(message)
    return {"entity": entity, "load_id": load_id, "rows_checked": totals["checked"],
            "rows_valid": totals["valid"], "rows_quarantined": totals["failed"], "values_nulled": totals["nulled"],
            "failed_per_rule": dict(sorted(per_rule.items())), "seconds": round(seconds, 3)}


@dataclass
class ChunkOutcome:
    valid: pa.Table
    bad: int  # rows that broke at least one rule
    by_rule: dict[str, np.ndarray]  # rule -> positions of the bad rows that broke it
    duplicates: int
    superseded: int
    # field-level rule -> positions of the rows kept with that rule's field set to null
    nulled: dict[str, np.ndarray]


def _check_chunk(typed: pa.Table, entity: Entity, gx, row_suite, key_suite, check_columns: list[str],
                 fields: dict[str, str]) -> ChunkOutcome:
    failures = gx.check(for_checks(typed, check_columns), row_suite)
    by_rule = {rule: positions for rule, positions in failures.items() if rule not in fields}
    bad_mask = np.zeros(typed.num_rows, dtype=bool)
    for positions in by_rule.values():
        bad_mask[positions] = True
    candidates, duplicates, superseded = latest_versions(typed, ~bad_mask, entity)
    keys = typed.select(list(entity.key)).take(pa.array(candidates, type=pa.int64())).to_pandas()
    conflicts = gx.check(keys, key_suite)
    if conflicts:
        (rule, positions), = conflicts.items()
        conflicting = candidates[positions]
        by_rule[rule] = conflicting
        bad_mask[conflicting] = True
        candidates = np.delete(candidates, positions)
    valid = typed.select(entity.column_names + ["_row_hash", "_load_id"])
    # Field-level rules: a record that is otherwise good loads without the bad value
    # (a bad record is quarantined whole, this rule named among the others it broke).
    nulled: dict[str, np.ndarray] = {}
    null_masks: dict[str, np.ndarray] = {}
    for rule, positions in failures.items():
        if rule not in fields:
            continue
        in_bad = bad_mask[positions]
        if in_bad.any():
            by_rule[rule] = positions[in_bad]
        if (~in_bad).any():
            nulled[rule] = positions[~in_bad]
            mask = null_masks.setdefault(fields[rule], np.zeros(typed.num_rows, dtype=bool))
            mask[nulled[rule]] = True
    for column, mask in null_masks.items():
        index = valid.column_names.index(column)
        values = valid.column(index)
        valid = valid.set_column(index, column, pc.if_else(pa.array(mask), pa.scalar(None, values.type), values))
    if len(candidates) < valid.num_rows:
        valid = valid.take(pa.array(candidates, type=pa.int64()))
    return ChunkOutcome(valid, int(bad_mask.sum()), by_rule, duplicates, superseded, nulled)


# -- load ---------------------------------------------------------------------------------------
def _version(entity: Entity, alias: str) -> str:
    columns = [f"{alias}.{c}" for c in entity.version_by]
    return columns[0] if len(columns) == 1 else f"coalesce({', '.join(columns)})"


def load(config: Config, entity: str, load_id: str, *, warehouse: Warehouse | None = None,
         also: Callable | None = None) -> dict:
    """Upsert the load's valid rows into <entity> and finish the load, atomically.
    `also(conn)` runs in the same transaction (a recheck releases its records there)."""
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
    table = entity
    join = " AND ".join(f"t.{k} = i.{k}" for k in definition.key)
    newer_i, newer_t = _version(definition, "i"), _version(definition, "t")
    # Replace a stored row when the incoming one is a newer version, or the same
    # version with other content; an identical or older row leaves it alone.
    newer = (
        f"({newer_i} > {newer_t} OR ({newer_i} IS NOT DISTINCT FROM {newer_t} AND i._row_hash <> t._row_hash) "
        f"OR ({newer_t} IS NULL AND {newer_i} IS NOT NULL))"
    )
    columns = ", ".join(definition.column_names)
    selected = ", ".join(f"i.{c}" for c in definition.column_names)
    landing = Landing(config.landing_root, entity, load_id)
    parts = landing.valid_parts()
    new_rows = updated = 0
    with wh.begin() as conn:
        if parts:
            incoming = wh.parquet_relation(conn, parts, table)
            updated = wh.count_changed(
                conn, table, f"DELETE FROM {table} t USING {incoming} i WHERE {join} AND {newer}"
            )
            written = wh.count_changed(
                conn, table,
                f"INSERT INTO {table} ({columns}, _load_id, _row_hash, _loaded_at) "
                f"SELECT {selected}, i._load_id, i._row_hash, :now FROM {incoming} i "
                f"WHERE NOT EXISTS (SELECT 1 FROM {table} t WHERE {join})",
                {"now": utcnow()},
            )
            new_rows = written - updated
        if getattr(run, "mode", None) == "reload":
            _release_reread(wh, conn, definition, run, incoming if parts else None)
        _finish_origins(wh, conn, entity, run)
        if also is not None:
            also(conn)
        update_run(wh, load_id, conn=conn, status="loaded", rows_inserted=new_rows + updated,
                    rows_updated=updated, finished_at=utcnow())
    landing.remove()
    seconds = time.perf_counter() - began
    log.info("%s: loaded load %s in %.1fs: %d new, %d updated", entity, load_id, seconds, new_rows, updated)
    return {"entity": entity, "load_id": load_id, "inserted": new_rows, "updated": updated,
            "seconds": round(seconds, 3)}


def _release_reread(wh: Warehouse, conn, entity: Entity, run, incoming: str | None) -> None:
    """A reload's quarantine: what it found bad again carries its load id (validate
    refreshed it). Earlier records of the files it read again are what a fix made good,
    so they leave the quarantine; a database or API has no files: there, the earlier
    records of the keys it loaded (derived keys change with a values: fix, so events of
    an API may stay for `quarantine recheck`)."""
    params = {"entity": entity.name, "load_id": run.load_id}
    if run.source_kind in FILE_KINDS:
        reread = [o["name"] for o in json.loads(run.origins or "[]") if not o.get("unchanged")]
        if reread:
            files = wh.temp_values(conn, "_reread_files", "origin", reread)
            wh.execute(f"DELETE FROM quarantine WHERE entity = :entity AND load_id <> :load_id "
                       f"AND origin IN (SELECT origin FROM {files})", params, conn=conn)
    elif incoming is not None:
        wh.execute(f"DELETE FROM quarantine WHERE entity = :entity AND load_id <> :load_id AND record_key IN "
                   f"(SELECT {record_key(entity, 'i')} FROM {incoming} i)", params, conn=conn)


def _finish_origins(wh: Warehouse, conn, entity: str, run) -> None:
    """Files: remember what was read. Databases and APIs: advance the watermark. A
    recheck read the quarantine, not the source: it changes neither."""
    if getattr(run, "mode", None) == "recheck":
        return
    if run.source_kind in FILE_KINDS:
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
def ingest_entity(config: Config, entity: str, start=None, end=None, *, reload: bool = False,
                  warehouse=None) -> dict:
    wh = open_warehouse(config, warehouse)
    extracted = extract(config, entity, start, end, reload=reload, warehouse=wh)
    validated = validate(config, entity, extracted["load_id"], warehouse=wh)
    loaded = load(config, entity, extracted["load_id"], warehouse=wh)
    return {**extracted, **validated, **loaded}


def ingest(config: Config, entities: list[str] | None = None, start=None, end=None,
           *, reload: bool = False, warehouse: Warehouse | None = None) -> list[dict]:
    """Every configured entity (or the ones named), one after the other."""
    wh = open_warehouse(config, warehouse)
    chosen = entities or [e for e in ENTITY_ORDER if e in config.sources]
    return [ingest_entity(config, entity, start, end, reload=reload, warehouse=wh) for entity in chosen]
