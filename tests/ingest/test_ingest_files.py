"""Ingest from file drops, end to end through extract -> validate -> load, on DuckDB and
on PostgreSQL: loading, quarantine, idempotency, incremental loads and updates."""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from support import orders_source, table_rows, write_csv
from winback.ingest.pipeline import (
    ValidationThresholdError,
    extract,
    ingest,
    load,
    validate,
)
from winback.ingest.sources import SourceError

HEADER = "id,client_id,date,sum,status,currency,updated"


def orders_config(write_config, warehouse_url, **extra):
    values = {"status": {"canceled": "cancelled", **extra.pop("values", {}).get("status", {})}}
    source = orders_source(
        timestamp_format="%Y-%m-%d %H:%M:%S",
        columns={"order_id": "id", "customer_id": "client_id", "created_at": "date",
                 "total_amount": "sum", "updated_at": "updated"},
        values=values,
        **extra,
    )
    return write_config({"orders": source}, warehouse=warehouse_url, timezone="Europe/Moscow")


def test_orders_load_with_defaults_timezone_and_value_mapping(write_config, warehouse_url, tmp_path, open_warehouse):
    write_csv(tmp_path / "shop/orders/2025-01.csv", "id,client_id,date,sum,status,updated",
              "1,C1,2025-01-05 10:00:00,100.50,,",
              "2,C2,2025-01-06 03:30:00,20,canceled,2025-01-07 12:00:00")
    config = write_config(
        {"orders": orders_source(timestamp_format="%Y-%m-%d %H:%M:%S",
                                 values={"status": {"canceled": "cancelled"}})},
        warehouse=warehouse_url, timezone="Europe/Moscow", default_currency="RUB",
    )
    [result] = ingest(config)
    assert (result["rows"], result["rows_valid"], result["inserted"]) == (2, 2, 2)
    wh = open_warehouse(config)
    rows = wh.rows("SELECT order_id, customer_id, created_at, total_amount, status, currency, updated_at "
                   "FROM orders ORDER BY order_id")
    # Moscow is UTC+3: naive local times are stored as UTC.
    assert rows[0] == ("1", "C1", datetime(2025, 1, 5, 7, 0), Decimal("100.50"), "completed", "RUB", None)
    assert rows[1][2] == datetime(2025, 1, 6, 0, 30)
    assert rows[1][4] == "cancelled"
    # `updated` is not mapped (the shop calls it that, not updated_at): left empty.
    assert rows[1][6] is None


def test_bad_rows_are_quarantined_with_their_rules_and_good_rows_load(write_config, warehouse_url, tmp_path, open_warehouse):
    write_csv(tmp_path / "shop/orders/a.csv", HEADER,
              "1,C1,2025-01-05 10:00:00,100,completed,RUB,",
              "2,C2,2025-01-06 10:00:00,-5,completed,RUB,",
              "3,,2025-01-07 10:00:00,30,completed,RUB,",
              "4,C4,2025-13-45 10:00:00,40,completed,RUBL,",
              "5,C5,2025-01-08 10:00:00,50,lost,RUB,")
    config = orders_config(write_config, warehouse_url, max_bad_share=1.0)
    [result] = ingest(config)
    assert result["rows_valid"] == 1 and result["rows_quarantined"] == 4
    assert result["failed_per_rule"] == {
        "created_at_parses": 1, "currency_valid": 1, "customer_id_present": 1,
        "status_allowed": 1, "total_amount_non_negative": 1,
    }
    wh = open_warehouse(config)
    assert [r[0] for r in wh.rows("SELECT order_id FROM orders")] == ["1"]
    quarantined = {r.record_key: r for r in wh.rows("SELECT * FROM quarantine")}
    assert set(quarantined) == {"2", "3", "4", "5"}
    four = quarantined["4"]
    assert four.rules == "created_at_parses, currency_valid"
    assert four.origin == "shop/orders/a.csv" and four.row_number == 4
    assert four.load_id == result["load_id"] and four.source_kind == "file"
    # The raw record keeps the shop's own column names and values.
    assert json.loads(four.raw_record)["date"] == "2025-13-45 10:00:00"
    assert json.loads(four.raw_record)["currency"] == "RUBL"
    run = wh.rows("SELECT * FROM validation_runs")[0]
    assert (run.rows_checked, run.rows_failed, run.success) == (5, 4, True)
    assert json.loads(run.failed_per_rule)["total_amount_non_negative"] == 1


def test_too_many_bad_rows_fail_with_entity_rules_and_counts_and_load_nothing(write_config, warehouse_url, tmp_path, open_warehouse):
    lines = [f"{i},C{i},2025-01-05 10:00:00,{-1 if i < 3 else 10},completed,RUB," for i in range(20)]
    write_csv(tmp_path / "shop/orders/a.csv", HEADER, *lines)
    config = orders_config(write_config, warehouse_url)  # default limit: 5 %
    extracted = extract(config, "orders")
    with pytest.raises(ValidationThresholdError) as failure:
        validate(config, "orders", extracted["load_id"])
    message = str(failure.value)
    assert "orders" in message and "3 of 20 rows (15.0%)" in message
    assert "total_amount_non_negative 3" in message and "5.0%" in message
    wh = open_warehouse(config)
    assert wh.scalar("SELECT count(*) FROM orders") == 0
    assert wh.scalar("SELECT count(*) FROM quarantine") == 3
    run = wh.rows("SELECT success, rows_failed FROM validation_runs")[0]
    assert tuple(run) == (False, 3)
    with pytest.raises(Exception, match="rejected"):
        load(config, "orders", extracted["load_id"])
    # The file was not registered: after the fix, the next run reads it again.
    write_csv(tmp_path / "shop/orders/a.csv", HEADER,
              *[f"{i},C{i},2025-01-05 10:00:00,10,completed,RUB," for i in range(20)])
    [result] = ingest(config)
    assert result["inserted"] == 20


def test_rerunning_the_same_files_leaves_the_warehouse_identical(write_config, warehouse_url, tmp_path, open_warehouse):
    write_csv(tmp_path / "shop/orders/a.csv", HEADER,
              "1,C1,2025-01-05 10:00:00,100,completed,RUB,",
              "2,C2,2025-01-06 10:00:00,-5,completed,RUB,")
    config = orders_config(write_config, warehouse_url, max_bad_share=1.0)
    ingest(config)
    wh = open_warehouse(config)
    before = (table_rows(wh, "orders", "order_id"), table_rows(wh, "quarantine", "record_hash"),
              table_rows(wh, "loaded_files", "path"))
    [again] = ingest(config)
    assert again["rows"] == 0
    after = (table_rows(wh, "orders", "order_id"), table_rows(wh, "quarantine", "record_hash"),
             table_rows(wh, "loaded_files", "path"))
    assert after == before


def test_a_new_drop_loads_only_new_rows_and_updates_changed_orders(write_config, warehouse_url, tmp_path, open_warehouse):
    write_csv(tmp_path / "shop/orders/2025-01.csv", HEADER,
              "1,C1,2025-01-05 10:00:00,100,shipped,RUB,2025-01-05 10:00:00",
              "2,C2,2025-01-06 10:00:00,50,shipped,RUB,2025-01-06 10:00:00")
    config = orders_config(write_config, warehouse_url)
    ingest(config)
    wh = open_warehouse(config)
    untouched = wh.rows("SELECT _loaded_at, _load_id FROM orders WHERE order_id = '2'")[0]
    write_csv(tmp_path / "shop/orders/2025-02.csv", HEADER,
              "1,C1,2025-01-05 10:00:00,100,refunded,RUB,2025-02-03 09:00:00",
              "3,C3,2025-02-04 10:00:00,70,completed,RUB,2025-02-04 10:00:00")
    config = orders_config(write_config, warehouse_url, values={"status": {"refunded": "returned"}})
    [second] = ingest(config)
    assert (second["rows"], second["inserted"], second["updated"]) == (2, 1, 1)
    statuses = dict(wh.rows("SELECT order_id, status FROM orders ORDER BY order_id"))
    assert statuses == {"1": "returned", "2": "shipped", "3": "completed"}
    assert wh.rows("SELECT _loaded_at, _load_id FROM orders WHERE order_id = '2'")[0] == untouched


def test_an_older_version_never_replaces_a_newer_one(write_config, warehouse_url, tmp_path, open_warehouse):
    write_csv(tmp_path / "shop/orders/b.csv", HEADER, "1,C1,2025-01-05 10:00:00,100,returned,RUB,2025-02-01 00:00:00")
    config = orders_config(write_config, warehouse_url)
    ingest(config)
    write_csv(tmp_path / "shop/orders/c_late_copy.csv", HEADER, "1,C1,2025-01-05 10:00:00,100,shipped,RUB,2025-01-06 00:00:00")
    [result] = ingest(config)
    assert (result["inserted"], result["updated"]) == (0, 0)
    assert open_warehouse(config).scalar("SELECT status FROM orders") == "returned"


def test_repeated_and_conflicting_keys_within_a_batch(write_config, warehouse_url, tmp_path, open_warehouse):
    write_csv(tmp_path / "shop/orders/a.csv", HEADER,
              "1,C1,2025-01-05 10:00:00,100,completed,RUB,2025-01-05 10:00:00",
              "1,C1,2025-01-05 10:00:00,100,completed,RUB,2025-01-05 10:00:00",   # exact repeat
              "2,C2,2025-01-05 10:00:00,100,shipped,RUB,2025-01-05 10:00:00",
              "2,C2,2025-01-05 10:00:00,100,delivered,RUB,2025-01-09 10:00:00",  # newer version
              "3,C3,2025-01-05 10:00:00,100,completed,RUB,2025-01-05 10:00:00",
              "3,C3,2025-01-05 10:00:00,999,completed,RUB,2025-01-05 10:00:00")  # conflict
    config = orders_config(write_config, warehouse_url, max_bad_share=1.0)
    [result] = ingest(config)
    assert result["failed_per_rule"] == {"order_id_unique": 2}
    wh = open_warehouse(config)
    assert dict(wh.rows("SELECT order_id, status FROM orders ORDER BY order_id")) == {"1": "completed", "2": "delivered"}
    assert wh.scalar("SELECT count(*) FROM quarantine WHERE record_key = '3'") == 2
    run = wh.rows("SELECT duplicates_dropped, superseded FROM validation_runs")[0]
    assert tuple(run) == (1, 1)


def test_a_changed_file_is_reloaded_and_a_touched_one_is_not(write_config, warehouse_url, tmp_path, open_warehouse):
    path = write_csv(tmp_path / "shop/orders/a.csv", HEADER, "1,C1,2025-01-05 10:00:00,100,completed,RUB,")
    config = orders_config(write_config, warehouse_url)
    ingest(config)
    stat = path.stat()
    os.utime(path, (stat.st_atime, stat.st_mtime + 60))  # touched, same bytes
    [touched] = ingest(config)
    assert touched["rows"] == 0
    write_csv(path, HEADER, "1,C1,2025-01-05 10:00:00,120,completed,RUB,", "2,C2,2025-01-06 10:00:00,5,completed,RUB,")
    [changed] = ingest(config)
    assert (changed["rows"], changed["inserted"], changed["updated"]) == (2, 1, 1)
    assert open_warehouse(config).scalar("SELECT total_amount FROM orders WHERE order_id = '1'") == Decimal("120.00")


def test_files_arriving_after_the_window_end_wait_for_a_later_run(write_config, warehouse_url, tmp_path, open_warehouse):
    path = write_csv(tmp_path / "shop/orders/a.csv", HEADER, "1,C1,2025-01-05 10:00:00,100,completed,RUB,")
    os.utime(path, (1_800_000_000, 1_800_000_000))  # modified in 2027
    config = orders_config(write_config, warehouse_url)
    [early] = ingest(config, end=datetime(2026, 1, 1))
    assert early["rows"] == 0
    [later] = ingest(config, end=datetime(2028, 1, 1))
    assert later["inserted"] == 1


def test_the_window_end_is_utc_on_a_server_in_another_zone(write_config, tmp_path, monkeypatch):
    """The cutoff used to read the naive UTC window end as the server's local time: at
    UTC+10 a file modified an hour before the end was left for a later run."""
    import time

    monkeypatch.setenv("TZ", "Asia/Vladivostok")
    time.tzset()
    try:
        path = write_csv(tmp_path / "shop/orders/a.csv", HEADER, "1,C1,2025-01-05 10:00:00,100,completed,RUB,")
        end = datetime(2026, 1, 1, 12, 0)
        moment = end.replace(tzinfo=UTC).timestamp() - 3600  # an hour before the end, UTC
        os.utime(path, (moment, moment))
        config = orders_config(write_config, f"duckdb:///{tmp_path / 'wh.duckdb'}")
        [result] = ingest(config, end=end)
        assert result["rows"] == 1
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_order_lines_keep_the_newest_version_of_each_composite_key(write_config, warehouse_url, tmp_path, open_warehouse):
    write_csv(tmp_path / "shop/items/a.csv", "order_id,product_id,quantity,price,updated_at",
              "1,P1,1,10,2025-01-05 10:00:00",
              "1,P1,3,10,2025-01-07 10:00:00",   # newer version of (1, P1)
              "1,P2,1,5,2025-01-05 10:00:00",
              "2,P1,2,10,2025-01-05 10:00:00",
              "2,P1,2,10,2025-01-05 10:00:00")   # exact repeat of (2, P1)
    config = write_config({"orders": orders_source(),
                           "order_items": {"kind": "file", "path": "shop/items/*.csv"}}, warehouse=warehouse_url)
    [result] = ingest(config, ["order_items"])
    assert (result["rows"], result["inserted"]) == (5, 3)
    wh = open_warehouse(config)
    rows = [tuple(r) for r in wh.rows("SELECT order_id, product_id, quantity FROM order_items ORDER BY 1, 2")]
    assert rows == [("1", "P1", 3.0), ("1", "P2", 1.0), ("2", "P1", 2.0)]
    assert tuple(wh.rows("SELECT duplicates_dropped, superseded FROM validation_runs")[0]) == (1, 1)


def test_a_first_load_matching_no_file_fails_naming_the_glob_and_the_folder(
        write_config, warehouse_url, tmp_path, open_warehouse):
    """Before, the run logged a warning and succeeded with nothing loaded: a wrong home
    (or a scheduler started in another folder) showed green runs forever."""
    write_csv(tmp_path / "elsewhere/orders/a.csv", HEADER, "1,C1,2025-01-05 10:00:00,100,completed,RUB,")
    config = orders_config(write_config, warehouse_url)
    with pytest.raises(SourceError) as failure:
        ingest(config)
    message = str(failure.value)
    assert message.startswith("orders: no file matches 'shop/orders/*.csv'")
    assert str(tmp_path) in message and "home" in message and "WINBACK_HOME" in message
    wh = open_warehouse(config)
    assert tuple(wh.rows("SELECT status, message FROM load_runs")[0]) == ("failed", message)
    assert wh.scalar("SELECT count(*) FROM orders") == 0


def test_a_later_load_with_no_new_file_is_fine(write_config, warehouse_url, tmp_path, open_warehouse, caplog):
    path = write_csv(tmp_path / "shop/orders/a.csv", HEADER, "1,C1,2025-01-05 10:00:00,100,completed,RUB,")
    config = orders_config(write_config, warehouse_url)
    ingest(config)
    path.unlink()  # drops are often moved away once loaded
    with caplog.at_level(logging.WARNING, logger="winback.ingest.sources.files"):
        [later] = ingest(config)
    assert (later["rows"], later["origins"]) == (0, 0)
    assert "orders: no file matches shop/orders/*.csv" in caplog.text
    assert open_warehouse(config).scalar("SELECT count(*) FROM orders") == 1


def test_a_home_and_files_whose_paths_hold_colon_words_load(
        write_config, warehouse_url, tmp_path, monkeypatch, open_warehouse):
    """`/:word` in a path read as an SQL bind parameter: the landing parts' paths in the
    load's SQL text, and file names inlined into DuckDB statements, broke every load."""
    home = tmp_path / "mnt" / ":shop"
    monkeypatch.setenv("WINBACK_HOME", str(home))
    write_csv(home / "shop/orders/:2025-01.csv", HEADER, "1,C1,2025-01-05 10:00:00,100,completed,RUB,")
    # DuckDB: the warehouse file under home too.
    warehouse = "duckdb:///data/warehouse.duckdb" if warehouse_url.startswith("duckdb") else warehouse_url
    config = orders_config(write_config, warehouse)
    assert config.landing_root == home / "data/landing"
    [result] = ingest(config)
    assert (result["rows"], result["inserted"]) == (1, 1)
    wh = open_warehouse(config)
    assert wh.scalar("SELECT path FROM loaded_files") == "shop/orders/:2025-01.csv"
    assert "shop/orders/:2025-01.csv" in wh.scalar("SELECT origins FROM load_runs")
    [again] = ingest(config)  # the registry matches the name: nothing read twice
    assert again["rows"] == 0
    assert wh.scalar("SELECT count(*) FROM orders") == 1
