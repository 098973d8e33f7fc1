"""The read-only snapshot of a DuckDB warehouse, published after each build.

DuckDB admits one writing process per file, and an analyst's open connection to the
warehouse would block the pipeline's next task. So each build copies the marts and the
history to a separate file (`build.snapshot`) that analysts and BI tools open instead
(`duckdb -readonly data/snapshot.duckdb`). It is written aside and renamed over the old
one: a reader sees the old or the new snapshot, never half of one, and one that has the
old file open keeps reading it until it reconnects. PostgreSQL needs none: readers never
block writers there.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from pathlib import Path

from winback.clock import utcnow
from winback.private_files import private_dir, restrict
from winback.warehouse import Warehouse, sql_literal

log = logging.getLogger(__name__)
SCHEMA = "winback_snapshot"


def publish_snapshot(wh: Warehouse, target: Path, tables: list[str], build: dict) -> Path:
    """Copy `tables` of the warehouse into a new file and put it in place of `target`;
    a `snapshot_info` table says which build it holds."""
    began = time.perf_counter()
    private_dir(target.parent)
    aside = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with wh.engine.connect() as conn:
            duck = conn.connection.driver_connection
            duck.execute(f"ATTACH {sql_literal(str(aside))} AS {SCHEMA}")
            try:
                for table in tables:
                    duck.execute(f"CREATE TABLE {SCHEMA}.{table} AS FROM main.{table}")
                info = ", ".join(f"{sql_literal(v)} AS {k}" for k, v in (
                    ("build_id", build["build_id"]), ("as_of", build["as_of"]), ("backfill", build["backfill"]),
                    ("published_at", utcnow())))
                duck.execute(f"CREATE TABLE {SCHEMA}.snapshot_info AS SELECT {info}")
            finally:
                duck.execute(f"DETACH {SCHEMA}")
        os.replace(restrict(aside), target)
    finally:
        for leftover in (aside, aside.with_name(aside.name + ".wal")):
            leftover.unlink(missing_ok=True)
    log.info("published %d tables to the read-only snapshot %s in %.1fs", len(tables), target,
             time.perf_counter() - began)
    return target
