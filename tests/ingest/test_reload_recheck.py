"""A fix of the mapping reaches data already loaded or quarantined: `quarantine recheck`
loads the quarantined rows that pass now and keeps the others with the rules they break
now; `ingest --reload` reads registered files or a database window again; `quarantine
purge` forgets old rows. No key twice in staging, no row lost, on DuckDB and PostgreSQL;
the CLI is driven as an operator would."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
import winback.ingest.pipeline
import winback.ingest.quarantine
from support import ORDERS_COLUMNS, write_csv
from winback.cli import main
from winback.ingest.canonical import MappingError
from winback.ingest.pipeline import ingest
from winback.ingest.recheck import recheck, recheck_entities

HEADER = "id,client_id,date,sum,state,modified"
STATES = {"done": "completed", "sent": "shipped"}


def orders(**extra) -> dict:
    source = {"kind": "file", "path": "shop/orders/*.csv", "max_bad_share": 1.0,
              "columns": {**ORDERS_COLUMNS, "status": "state", "updated_at": "modified"},
              "values": {"status": dict(STATES)}}
    return {**source, **extra}


def quarantined(wh, entity: str = "orders") -> list[tuple]:
    return [tuple(r) for r in wh.rows(
        "SELECT record_key, rules, level, load_id FROM quarantine WHERE entity = :e ORDER BY record_key, rules",
        {"e": entity})]


def staged(wh, columns: str = "order_id, status, total_amount") -> list[tuple]:
    return [tuple(r) for r in wh.rows(f"SELECT {columns} FROM orders ORDER BY order_id")]


def keys_once(wh, table: str = "orders", key: str = "order_id") -> bool:
    return wh.scalar(f"SELECT count(*) - count(DISTINCT {key}) FROM {table}") == 0


def cli(config, *argv: str) -> int:
    return main(["--config", str(config.path), *argv])


def test_recheck_loads_a_status_the_mapping_now_knows_and_empties_the_quarantine(
        write_config, warehouse_url, tmp_path, open_warehouse, capsys):
    write_csv(tmp_path / "shop/orders/a.csv", HEADER,
              "o1,c1,2025-01-05 10:00:00,100,done,", "o2,c1,2025-01-06 10:00:00,20,weird,",
              "o3,c2,2025-01-07 10:00:00,30,sent,")
    config = write_config({"orders": orders()}, warehouse=warehouse_url)
    assert cli(config, "ingest") == 0
    wh = open_warehouse(config)
    [(key, rules, level, first_load)] = quarantined(wh)
    assert (key, rules, level) == ("o2", "status_allowed", "row")
    # The unknown value is found by querying the quarantine's raw record.
    assert json.loads(wh.scalar("SELECT raw_record FROM quarantine"))["state"] == "weird"

    config = write_config({"orders": orders(values={"status": {**STATES, "weird": "cancelled"}})},
                          warehouse=warehouse_url)
    capsys.readouterr()
    assert cli(config, "quarantine", "recheck", "--entity", "orders") == 0
    printed = capsys.readouterr().out
    assert "1 rechecked" in printed and "1 released" in printed and "0 still quarantined" in printed

    assert quarantined(wh) == []
    assert staged(wh, "order_id, status") == [("o1", "completed"), ("o2", "cancelled"), ("o3", "shipped")]
    assert keys_once(wh)
    run = wh.rows("SELECT load_id, status, mode, rows_extracted, rows_inserted FROM load_runs "
                  "WHERE mode = 'recheck'")[0]
    assert (run.status, run.rows_extracted, run.rows_inserted) == ("loaded", 1, 1)
    assert wh.scalar("SELECT rows_checked FROM validation_runs WHERE load_id = :id", {"id": run.load_id}) == 1
    # The recheck read the quarantine, not the files: the registry still holds a.csv of the first load.
    assert wh.scalar("SELECT load_id FROM loaded_files") == first_load

    capsys.readouterr()
    assert cli(config, "quarantine", "recheck") == 0  # nothing left: nothing changes
    assert "nothing quarantined to re-check" in capsys.readouterr().out
    assert staged(wh, "order_id, status") == [("o1", "completed"), ("o2", "cancelled"), ("o3", "shipped")]


def test_a_row_still_failing_stays_with_its_rules_updated_and_an_older_version_loads_under_a_newer(
        write_config, warehouse_url, tmp_path, open_warehouse):
    write_csv(tmp_path / "shop/orders/a.csv", HEADER,
              "o1,c1,2025-01-05 10:00:00,100,weird,2025-01-05 10:00:00",
              "o2,c1,2025-01-06 10:00:00,abc,weird,2025-01-06 10:00:00",
              # o3's first version is bad; its newer version (b.csv) loads.
              "o3,c2,2025-01-07 10:00:00,30,weird,2025-01-07 10:00:00")
    write_csv(tmp_path / "shop/orders/b.csv", HEADER, "o3,c2,2025-01-07 10:00:00,35,done,2025-01-09 10:00:00")
    config = write_config({"orders": orders()}, warehouse=warehouse_url)
    ingest(config)
    wh = open_warehouse(config)
    assert [(k, r) for k, r, _, _ in quarantined(wh)] == [
        ("o1", "status_allowed"), ("o2", "status_allowed, total_amount_parses"), ("o3", "status_allowed")]

    config = write_config({"orders": orders(values={"status": {**STATES, "weird": "pending"}})},
                          warehouse=warehouse_url)
    result = recheck(config, "orders")
    assert (result["rechecked"], result["released"], result["still_quarantined"]) == (3, 2, 1)
    assert result["failed_per_rule"] == {"total_amount_parses": 1}

    # o2 stays once, under the rule it breaks now, found by the recheck.
    assert quarantined(wh) == [("o2", "total_amount_parses", "row", result["load_id"])]
    assert json.loads(wh.scalar("SELECT raw_record FROM quarantine"))["sum"] == "abc"
    # o1 loads; o3's older version passes but leaves the newer staging row alone.
    assert staged(wh, "order_id, status, total_amount, updated_at") == [
        ("o1", "pending", 100, datetime(2025, 1, 5, 10, 0)),
        ("o3", "completed", 35, datetime(2025, 1, 9, 10, 0))]
    assert keys_once(wh)


def test_a_column_mapped_differently_cannot_be_rechecked_and_the_error_names_the_record(
        write_config, warehouse_url, tmp_path, open_warehouse, capsys):
    write_csv(tmp_path / "shop/orders/a.csv", HEADER + ",order_state",
              "o1,c1,2025-01-05 10:00:00,100,done,,done", "o2,c1,2025-01-06 10:00:00,20,weird,,sent")
    config = write_config({"orders": orders()}, warehouse=warehouse_url)
    ingest(config)
    wh = open_warehouse(config)
    before = quarantined(wh)
    assert [k for k, *_ in before] == ["o2"]

    fixed = orders()
    fixed["columns"]["status"] = "order_state"
    config = write_config({"orders": fixed}, warehouse=warehouse_url)
    with pytest.raises(MappingError, match=r"'o2' \(shop/orders/a.csv, row 2\).*'order_state' \(mapped to status\)"):
        recheck(config, "orders")
    assert cli(config, "quarantine", "recheck", "--entity", "orders") == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and "'o2'" in error and "ingest --reload --entity orders" in error
    assert quarantined(wh) == before  # nothing changed, no run recorded
    assert wh.scalar("SELECT count(*) FROM load_runs WHERE mode = 'recheck'") == 0

    # The way out the message names: read the file again under the new mapping.
    assert cli(config, "ingest", "--reload", "--entity", "orders") == 0
    assert quarantined(wh) == []
    assert staged(wh, "order_id, status") == [("o1", "completed"), ("o2", "shipped")]


def test_reload_reads_registered_files_again_under_a_fixed_mapping_without_duplicates_or_losses(
        write_config, warehouse_url, tmp_path, open_warehouse, capsys):
    # The mapping took the net amount, empty for some orders; the right one is the gross `sum`.
    header = HEADER + ",net"
    write_csv(tmp_path / "shop/orders/a.csv", header,
              "o1,c1,2025-01-05 10:00:00,100,done,,90", "o2,c1,2025-01-06 10:00:00,20,done,,",
              "o3,c2,2025-01-07 10:00:00,-5,done,,")
    write_csv(tmp_path / "shop/orders/b.csv", header,
              "o2,c1,2025-01-06 10:00:00,25,sent,2025-01-08 10:00:00,",  # a newer version of o2
              "o4,c3,2025-01-08 10:00:00,40,sent,,35")
    wrong = orders()
    wrong["columns"]["total_amount"] = "net"
    config = write_config({"orders": wrong}, warehouse=warehouse_url)
    ingest(config)
    wh = open_warehouse(config)
    assert staged(wh) == [("o1", "completed", 90), ("o4", "shipped", 35)]
    assert sorted(k for k, *_ in quarantined(wh)) == ["o2", "o2", "o3"]

    config = write_config({"orders": orders()}, warehouse=warehouse_url)
    assert ingest(config)[0]["rows"] == 0  # a plain run: the files are registered, nothing is new
    assert cli(config, "ingest", "--reload") == 2  # everything of every entity: not by accident
    assert "--reload reads everything of an entity again: name it with --entity" in capsys.readouterr().err
    assert cli(config, "ingest", "--reload", "--entity", "orders") == 0
    [reload] = wh.rows("SELECT load_id, rows_extracted, rows_quarantined FROM load_runs WHERE mode = 'reload'")
    assert (reload.rows_extracted, reload.rows_quarantined) == (5, 1)
    assert staged(wh) == [("o1", "completed", 100), ("o2", "shipped", 25), ("o4", "shipped", 40)]
    assert keys_once(wh)
    # o3's negative amount is still bad: quarantined once, now by the reload's rule and load.
    assert quarantined(wh) == [("o3", "total_amount_non_negative", "row", reload.load_id)]
    assert {tuple(r) for r in wh.rows("SELECT path, load_id FROM loaded_files")} == {
        ("shop/orders/a.csv", reload.load_id), ("shop/orders/b.csv", reload.load_id)}

    assert cli(config, "ingest", "--reload", "--entity", "orders") == 0  # again: same result
    assert staged(wh) == [("o1", "completed", 100), ("o2", "shipped", 25), ("o4", "shipped", 40)]
    assert [(k, r) for k, r, _, _ in quarantined(wh)] == [("o3", "total_amount_non_negative")]
    assert ingest(config)[0]["rows"] == 0


def test_reload_with_a_window_reads_only_files_registered_as_modified_in_it(
        write_config, warehouse_url, tmp_path, open_warehouse):
    old = write_csv(tmp_path / "shop/orders/old.csv", HEADER, "o1,c1,2025-01-05 10:00:00,100,weird,")
    new = write_csv(tmp_path / "shop/orders/new.csv", HEADER, "o2,c1,2025-02-05 10:00:00,20,weird,")
    for path, moment in ((old, datetime(2025, 1, 6, tzinfo=UTC)), (new, datetime(2025, 2, 6, tzinfo=UTC))):
        os.utime(path, (moment.timestamp(), moment.timestamp()))
    config = write_config({"orders": orders()}, warehouse=warehouse_url)
    ingest(config)
    wh = open_warehouse(config)
    assert [k for k, *_ in quarantined(wh)] == ["o1", "o2"]

    config = write_config({"orders": orders(values={"status": {**STATES, "weird": "paid"}})},
                          warehouse=warehouse_url)
    [result] = ingest(config, ["orders"], datetime(2025, 2, 1), None, reload=True)
    assert (result["rows"], result["origins"]) == (1, 1)
    assert staged(wh, "order_id, status") == [("o2", "paid")]
    assert [k for k, *_ in quarantined(wh)] == ["o1"]  # old.csv was not read again


def test_reload_of_a_database_window_reads_it_again_and_leaves_the_watermark(
        write_config, warehouse_url, tmp_path, open_warehouse, monkeypatch):
    shop = sa.create_engine(f"sqlite:///{tmp_path / 'shop.db'}")
    table = sa.Table("shop_orders", sa.MetaData(), sa.Column("id", sa.String(20), primary_key=True),
                     sa.Column("client_id", sa.String(20)), sa.Column("created", sa.DateTime),
                     sa.Column("amount", sa.Numeric(10, 2)), sa.Column("state", sa.String(20)),
                     sa.Column("modified", sa.DateTime))
    table.metadata.create_all(shop)
    with shop.begin() as conn:
        conn.execute(table.insert(), [
            {"id": id_, "client_id": client, "created": at, "amount": amount, "state": state, "modified": at}
            for id_, client, at, amount, state in (("o1", "c1", datetime(2025, 1, 5, 10), 10, "done"),
                                                   ("o2", "c1", datetime(2025, 1, 20, 10), 20, "weird"),
                                                   ("o3", "c2", datetime(2025, 2, 20, 10), 30, "weird"))])
    shop.dispose()
    monkeypatch.setattr(winback.ingest.pipeline, "utcnow", lambda: datetime(2025, 3, 10, 12, 0))

    def sql_config(states: dict):
        return write_config({"orders": {
            "kind": "sql", "url": f"sqlite:///{tmp_path / 'shop.db'}", "table": "shop_orders", "max_bad_share": 1.0,
            "columns": {"order_id": "id", "customer_id": "client_id", "created_at": "created",
                        "total_amount": "amount", "status": "state", "updated_at": "modified"},
            "values": {"status": states}}}, warehouse=warehouse_url)

    config = sql_config(STATES)
    ingest(config)
    wh = open_warehouse(config)
    watermark = wh.scalar("SELECT watermark FROM watermarks WHERE entity = 'orders'")
    assert watermark == datetime(2025, 3, 10, 12, 0)
    assert [k for k, *_ in quarantined(wh)] == ["o2", "o3"]

    config = sql_config({**STATES, "weird": "returned"})
    assert ingest(config)[0]["rows"] == 0  # the watermark says: nothing new
    assert cli(config, "ingest", "--reload", "--entity", "orders", "--start", "2025-01-01",
               "--end", "2025-02-01") == 0
    run = wh.rows("SELECT interval_start, interval_end, rows_extracted FROM load_runs WHERE mode = 'reload'")[0]
    assert tuple(run) == (datetime(2025, 1, 1), datetime(2025, 2, 1), 2)
    assert staged(wh, "order_id, status") == [("o1", "completed"), ("o2", "returned")]
    assert keys_once(wh)
    assert [k for k, *_ in quarantined(wh)] == ["o3"]  # outside the window: still there
    assert wh.scalar("SELECT watermark FROM watermarks WHERE entity = 'orders'") == watermark

    # Without --start, a reload reads from ingest.start_date: o3 too.
    [whole] = ingest(config, ["orders"], reload=True)
    assert whole["rows"] == 3
    assert staged(wh, "order_id, status") == [("o1", "completed"), ("o2", "returned"), ("o3", "returned")]
    assert quarantined(wh) == []
    assert wh.scalar("SELECT watermark FROM watermarks WHERE entity = 'orders'") == watermark


def test_recheck_and_reload_of_events_give_one_row_per_event_under_their_derived_key(
        write_config, warehouse_url, tmp_path, open_warehouse):
    """Events have no id: their key is a hash of their canonical values, which a fix of
    `values:` changes. Recheck and a reload afterwards must agree on it."""
    write_csv(tmp_path / "shop/events/e.csv", "visitor,kind,at",
              "v1,view,2025-01-05 10:00:00", "v1,wishlist,2025-01-05 10:01:00", "v2,view,2025-01-05 11:00:00")
    source = {"kind": "file", "path": "shop/events/*.csv", "max_bad_share": 1.0,
              "columns": {"visitor_id": "visitor", "event_type": "kind", "occurred_at": "at"},
              "values": {"event_type": {"view": "page_view"}}}
    config = write_config({"orders": orders(), "events": source}, warehouse=warehouse_url)
    ingest(config, ["events"])
    wh = open_warehouse(config)
    raw = json.loads(wh.scalar("SELECT raw_record FROM quarantine WHERE entity = 'events'"))
    assert raw["kind"] == "wishlist"

    source["values"]["event_type"]["wishlist"] = "add_to_cart"
    config = write_config({"orders": orders(), "events": source}, warehouse=warehouse_url)
    assert recheck(config, "events")["released"] == 1
    events = [tuple(r) for r in wh.rows("SELECT event_id, event_type FROM events ORDER BY occurred_at")]
    assert [t for _, t in events] == ["page_view", "add_to_cart", "page_view"]

    ingest(config, ["events"], reload=True)
    assert [tuple(r) for r in wh.rows("SELECT event_id, event_type FROM events ORDER BY occurred_at")] == events
    assert keys_once(wh, "events", "event_id")
    assert quarantined(wh, "events") == []


def test_purge_removes_only_rows_quarantined_before_the_day(
        write_config, warehouse_url, tmp_path, open_warehouse, monkeypatch, capsys):
    clock = {"now": datetime(2025, 1, 10, 8, 0)}
    monkeypatch.setattr(winback.ingest.quarantine, "utcnow", lambda: clock["now"])
    config = write_config({"orders": orders()}, warehouse=warehouse_url)
    write_csv(tmp_path / "shop/orders/a.csv", HEADER, "o1,c1,2025-01-05 10:00:00,100,weird,")
    ingest(config)
    clock["now"] = datetime(2025, 2, 10, 8, 0)
    write_csv(tmp_path / "shop/orders/b.csv", HEADER, "o2,c1,2025-02-05 10:00:00,-1,done,")
    ingest(config)
    wh = open_warehouse(config)
    assert [k for k, *_ in quarantined(wh)] == ["o1", "o2"]

    assert cli(config, "quarantine", "purge", "--before", "2025-02-01") == 0
    assert capsys.readouterr().out.split() == ["orders:", "1", "purged"]
    assert [k for k, *_ in quarantined(wh)] == ["o2"]
    assert cli(config, "quarantine", "purge", "--before", "2025-02-01") == 0
    assert "nothing was quarantined before 2025-02-01" in capsys.readouterr().out
    assert [k for k, *_ in quarantined(wh)] == ["o2"]


def test_recheck_after_other_drop_releases_the_names_left_out_on_a_filtered_source(
        write_config, warehouse_url, tmp_path, open_warehouse):
    # a clickstream with its own event names, filtered by a column that is not mapped
    write_csv(tmp_path / "shop/events/e.csv", "visitor,event,ts,host",
              "v1,page_view,2025-03-01 10:00:00,shop.ru", "v1,scroll,2025-03-01 10:01:00,shop.ru",
              "v1,basket,2025-03-01 10:02:00,shop.ru", "v2,page_view,2025-03-01 10:03:00,staging.shop.ru")
    events = {"kind": "file", "path": "shop/events/*.csv", "max_bad_share": 1.0, "where": {"host": ["shop.ru"]},
              "columns": {"visitor_id": "visitor", "event_type": "event", "occurred_at": "ts"}}
    orders_only = {"kind": "file", "path": "shop/orders/*.csv"}
    config = write_config({"orders": orders_only, "events": events}, warehouse=warehouse_url)
    ingest(config, ["events"])
    wh = open_warehouse(config)
    assert wh.scalar("SELECT count(*) FROM quarantine WHERE entity = 'events'") == 2

    # basket is an add to cart; everything else unknown is dropped on purpose
    fixed = write_config({"orders": orders_only, "events": {
        **events, "values": {"event_type": {"basket": "add_to_cart", "_other": "drop"}}}}, warehouse=warehouse_url)
    [result] = [r for r in recheck_entities(fixed, ["events"])]
    assert (result["rechecked"], result["released"], result["dropped"], result["still_quarantined"]) == (2, 2, 1, 0)
    assert wh.scalar("SELECT count(*) FROM quarantine WHERE entity = 'events'") == 0
    assert sorted(r[0] for r in wh.rows("SELECT event_type FROM events")) == ["add_to_cart", "page_view"]
