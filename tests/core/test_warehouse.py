"""The warehouse layer: literals for DuckDB, bulk writes on both engines, the DuckDB
single-writer lock."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import date, datetime
from decimal import Decimal

import pyarrow as pa
import pytest
import winback.warehouse as warehouse_module
from winback.warehouse import Warehouse, WarehouseLocked, inline


def test_inlined_literals_are_quoted_safely():
    sql = inline(
        "SELECT :a, :b, :c, :d, :e, :f, :g, '10:00:00'",
        {"a": "O'Brien", "b": None, "c": True, "d": 7, "e": Decimal("1.50"),
         "f": datetime(2025, 1, 2, 3, 4, 5), "g": date(2025, 1, 2)},
    )
    assert sql == ("SELECT 'O''Brien', NULL, TRUE, 7, 1.50, TIMESTAMP '2025-01-02 03:04:05', "
                   "DATE '2025-01-02', '10:00:00'")


def test_bulk_write_keeps_values_types_and_nulls(warehouse_url):
    wh = Warehouse(warehouse_url)
    try:
        wh.execute("CREATE TABLE t (s TEXT, e TEXT, n NUMERIC(18,2), ts TIMESTAMP, b BOOLEAN, i BIGINT)")
        data = pa.table({
            "s": ["a,\"quoted\"\nline", None], "e": ["", "x"], "n": pa.array([Decimal("1.25"), None], pa.decimal128(18, 2)),
            "ts": pa.array([datetime(2025, 1, 2, 3, 4, 5, 123456), None], pa.timestamp("us")),
            "b": [True, None], "i": [2**40, None],
        })
        with wh.begin() as conn:
            wh.write_arrow(conn, "t", data)
        rows = [tuple(r) for r in wh.rows("SELECT s, e, n, ts, b, i FROM t ORDER BY e")]
        assert rows == [
            ("a,\"quoted\"\nline", "", Decimal("1.25"), datetime(2025, 1, 2, 3, 4, 5, 123456), True, 2**40),
            (None, "x", None, None, None, None),
        ]
    finally:
        wh.dispose()


def test_a_locked_duckdb_file_fails_with_what_to_do(tmp_path, monkeypatch, caplog):
    path = tmp_path / "locked.duckdb"
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import duckdb, time; c = duckdb.connect({str(path)!r}); print('ready', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        monkeypatch.setattr(warehouse_module, "DUCKDB_LOCK_WAIT_SECONDS", 1)
        started = time.monotonic()
        with pytest.raises(WarehouseLocked, match=rf"locked by PID {holder.pid}.*one writer at a time"):
            Warehouse(f"duckdb:///{path}").scalar("SELECT 1")
        assert time.monotonic() - started >= 1  # it waited before giving up
        # The wait is not silent: the log says who holds the file while waiting.
        waits = [r.getMessage() for r in caplog.records if "waited" in r.getMessage()]
        assert waits and f"locked by PID {holder.pid} (python" in waits[0], caplog.text
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.postgres
def test_parallel_first_runs_create_the_tables_without_unique_violations(pg_schema_url):
    """Under a real scheduler the first run starts several extract tasks at once on a
    fresh PostgreSQL warehouse; concurrent CREATE TABLE IF NOT EXISTS of one name
    fails one of them with UniqueViolation on pg_type. Every task must succeed."""
    from concurrent.futures import ThreadPoolExecutor
    from threading import Barrier

    from winback.schema import ENTITIES

    tasks = 8
    start = Barrier(tasks)

    def first_run(entity: str) -> None:
        wh = Warehouse(pg_schema_url)
        try:
            start.wait()
            wh.ensure_meta_tables()
            wh.ensure_entity_tables(ENTITIES[entity])
        finally:
            wh.dispose()

    entities = (list(ENTITIES) * 2)[:tasks]
    with ThreadPoolExecutor(tasks) as pool:
        for future in [pool.submit(first_run, e) for e in entities]:
            future.result()  # raises the task's error, if any
    assert Warehouse(pg_schema_url).table_exists("load_runs")
