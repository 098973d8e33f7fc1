"""Re-check quarantined records under the current mapping and rules; purge old ones.

After a fix of the configuration (a `values:` entry for a status the shop added, a
validation setting), `recheck` maps the quarantined records' values again (their
`raw_record` holds the shop's columns) and sends them through the ingest's own validate
and load, as one load run of mode 'recheck': records that pass are upserted by key (an
older version never overwrites a newer staging row) and leave the quarantine in the
load's transaction; the others stay, with the rules they break now.

Only row-level records are re-checked: a field-level record belongs to a row that did
load (its value stays null until the source sends the record again), and a malformed
line has no columns to map. A change of which shop column feeds a canonical column
cannot be applied to values kept under the old column: `ingest --reload` reads the
source again instead.
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import datetime

import pyarrow as pa

from winback.clock import utcnow
from winback.config import Config
from winback.ingest.canonical import (
    Mapping,
    MappingError,
    keep_rows,
    raw_select,
)
from winback.ingest.landing import Landing
from winback.ingest.pipeline import (
    load,
    new_load_id,
    open_warehouse,
    prepare,
    to_utc,
    update_run,
    validate,
)
from winback.ingest.quarantine import MALFORMED_RULE
from winback.schema import ENTITIES, ENTITY_ORDER, Entity
from winback.warehouse import Warehouse

log = logging.getLogger(__name__)


def recheck(config: Config, entity: str, *, warehouse: Warehouse | None = None) -> dict:
    """Re-check the entity's quarantined rows; returns what was rechecked, released
    (loaded, or given way to an identical or newer copy) and still quarantined."""
    wh = open_warehouse(config, warehouse)
    definition = ENTITIES[entity]
    prepare(wh, entity)
    records = wh.rows(
        "SELECT record_hash, origin, row_number, record_key, raw_record FROM quarantine "
        "WHERE entity = :entity AND level = 'row' AND rules <> :malformed ORDER BY origin, row_number",
        {"entity": entity, "malformed": MALFORMED_RULE},
    )
    if not records:
        return {"entity": entity, "load_id": None, "rechecked": 0, "released": 0, "dropped": 0, "still_quarantined": 0,
                "inserted": 0, "updated": 0, "failed_per_rule": {}}
    batches = shop_batches(definition, config, records)  # a mapping error stops it before any write
    load_id = new_load_id(entity)
    wh.execute(
        "INSERT INTO load_runs (load_id, entity, source_kind, status, started_at, mode) "
        "VALUES (:load_id, :entity, :kind, 'extracting', :now, 'recheck')",
        {"load_id": load_id, "entity": entity, "kind": config.source(entity).kind, "now": utcnow()},
    )
    landing = Landing(config.landing_root, entity, load_id)
    dropped = 0
    try:
        raw = landing.raw_writer(config.chunk_rows(entity))
        for table, mapping in batches:
            # a value now dropped on purpose (`_other: drop`) leaves the quarantine unloaded
            table, left_out = keep_rows(definition, _unfiltered(config.source(entity)), mapping, table)
            dropped += left_out
            raw.add(table, raw_select(definition, config, mapping, load_id=load_id))
        raw.flush()
    except Exception as exc:
        landing.remove()
        update_run(wh, load_id, status="failed", message=str(exc)[:2000], finished_at=utcnow())
        raise
    update_run(wh, load_id, status="extracted", rows_extracted=raw.rows, rows_filtered=dropped,
                origins=json.dumps([{"name": "quarantine", "records": len(records)}]))
    validated = validate(config, entity, load_id, warehouse=wh)
    hashes = [r.record_hash for r in records]

    def release(conn) -> None:
        # Found bad again, a record carries this load's id (validate refreshed it, or
        # quarantined it anew under the mapping's current columns); the rest passed.
        rechecked = wh.temp_values(conn, "_rechecked", "record_hash", hashes)
        wh.execute(f"DELETE FROM quarantine WHERE entity = :entity AND load_id <> :load_id "
                   f"AND record_hash IN (SELECT record_hash FROM {rechecked})",
                   {"entity": entity, "load_id": load_id}, conn=conn)

    loaded = load(config, entity, load_id, warehouse=wh, also=release)
    still = int(wh.scalar("SELECT count(*) FROM quarantine WHERE entity = :entity AND load_id = :load_id "
                          "AND level = 'row'", {"entity": entity, "load_id": load_id}))
    log.info("%s: rechecked %d quarantined rows (load %s): %d released, %d still quarantined",
             entity, len(records), load_id, len(records) - still, still)
    return {"entity": entity, "load_id": load_id, "rechecked": len(records), "released": len(records) - still,
            "dropped": dropped,
            "still_quarantined": still, "inserted": loaded["inserted"], "updated": loaded["updated"],
            "values_nulled": validated["values_nulled"], "failed_per_rule": validated["failed_per_rule"]}


def recheck_entities(config: Config, entities: list[str] | None = None, *,
                     warehouse: Warehouse | None = None) -> list[dict]:
    """Every configured entity (or the ones named), one after the other."""
    wh = open_warehouse(config, warehouse)
    chosen = entities or [e for e in ENTITY_ORDER if e in config.sources]
    return [recheck(config, entity, warehouse=wh) for entity in chosen]


def shop_batches(entity: Entity, config: Config, records: list) -> list[tuple[pa.Table, Mapping]]:
    """Quarantined records as batches of the shop's columns (one per set of columns,
    as the mapping of their day showed them), each with the current mapping resolved
    against it. `_origin` and `_row` keep where each record came from."""
    source = _unfiltered(config.source(entity.name))
    groups: dict[tuple[str, ...], list[tuple[object, dict]]] = {}
    for record in records:
        values = record.raw_record if isinstance(record.raw_record, dict) else json.loads(record.raw_record)
        values = _without_derived_key(entity, source, values)
        groups.setdefault(tuple(values), []).append((record, values))
    batches = []
    for columns, members in groups.items():
        # Columns the mapping does not name were kept only when some bad row had a
        # value: a required one missing here was empty (its rule says so again).
        empty = [c for c in entity.required_columns
                 if c not in source.columns and c not in columns and not (c in entity.key and entity.derived_key_from)]
        first = members[0][0]
        where = f"quarantined {entity.name} record {first.record_key or '(no key)'!r} ({first.origin}, row {first.row_number})"
        try:
            mapping = Mapping.resolve(entity, source, [*columns, *empty], where)
        except MappingError as exc:
            others = f" and {len(members) - 1} more like it" if len(members) > 1 else ""
            raise MappingError(
                f"{exc}{others}: the quarantine keeps the shop's columns the mapping named when the record was "
                f"quarantined, so a changed column mapping cannot be re-checked; read the source again with "
                f"`python -m winback ingest --reload --entity {entity.name}` (see docs/ingest.md)"
            ) from None
        table = {c: pa.array([_text(values.get(c)) for _, values in members], pa.string()) for c in [*columns, *empty]}
        table["_origin"] = pa.array([record.origin for record, _ in members], pa.string())
        table["_row"] = pa.array([record.row_number for record, _ in members], pa.int64())
        batches.append((pa.table(table), mapping))
    return batches


def _unfiltered(source):
    """The source without its `where`: a quarantined record passed it when it was read,
    and the quarantine keeps only the mapped columns, not the ones `where` tests."""
    return source.model_copy(update={"where": {}})


def _without_derived_key(entity: Entity, source, values: dict) -> dict:
    """The record without the key the extract derived from its values (events without
    an id): kept, it would load the record under the key of its old, unmapped values;
    dropped, it is derived again as a new extract would. A key the shop sent under the
    key's own name stays (it is no hash of the values)."""
    key = entity.key[0]
    if not entity.derived_key_from or key in source.columns or key not in values:
        return values
    parts = [values.get(source.columns.get(c, c)) or "" for c in entity.derived_key_from]
    if values[key] == hashlib.md5("|".join(parts).encode()).hexdigest()[:20]:  # as canonical.raw_select
        values = {c: v for c, v in values.items() if c != key}
    return values


def _text(value) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value) if isinstance(value, (dict, list)) else str(value)


def purge(config: Config, before: datetime, entities: list[str] | None = None, *,
          warehouse: Warehouse | None = None) -> dict[str, int]:
    """Delete quarantine rows first quarantined before `before` (naive: UTC), of every
    entity or the ones named; returns how many per entity."""
    wh = open_warehouse(config, warehouse)
    wh.ensure_meta_tables()
    params = {"before": to_utc(before)}
    with wh.begin() as conn:
        counts = {r.entity: int(r.n) for r in wh.execute(
            "SELECT entity, count(*) AS n FROM quarantine WHERE quarantined_at < :before "
            "GROUP BY entity ORDER BY entity", params, conn=conn)
            if not entities or r.entity in entities}
        for entity in counts:
            wh.execute("DELETE FROM quarantine WHERE entity = :entity AND quarantined_at < :before",
                       {**params, "entity": entity}, conn=conn)
    for entity, rows in counts.items():
        log.info("%s: purged %d quarantine rows quarantined before %s", entity, rows, params["before"])
    return counts
