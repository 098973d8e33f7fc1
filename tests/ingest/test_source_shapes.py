"""Shapes of real exports that needed a script before: CDNOW's whitespace-aligned order
log without order ids (`delimiter: whitespace`, `generate_keys`), event names nobody
mapped (`values: {_other: ...}`), and rows a shop wants left out (`where`); through
extract -> validate -> load on DuckDB and PostgreSQL."""

from __future__ import annotations

import os
from datetime import datetime
from decimal import Decimal

import pytest
from support import write_csv
from winback.config import ConfigError
from winback.ingest.pipeline import ingest
from winback.ingest.sources import SourceError

# CDNOW_master.txt as Fader & Hardie publish it: customer id right-aligned, the day as
# YYYYMMDD, CDs bought, dollars; columns aligned with spaces, no header, no order id.
# Customer 2 bought twice on one day: two orders with the same content.
CDNOW = (
    "    1 19970101  1   11.77\n"
    "    2 19970112  1   12.00\n"
    "    2 19970112  1   12.00\n"
    "    3 19970102  2   20.76\n"
    "    3\t19970330  2   20.76  \n"
)


def cdnow_source(**extra) -> dict:
    return {"kind": "file", "path": "shop/cdnow/*.txt", "format": "csv", "delimiter": "whitespace",
            "header": False, "column_names": ["customer", "day", "cds", "dollars"], "generate_keys": True,
            "timestamp_format": "%Y%m%d",
            "columns": {"customer_id": "customer", "created_at": "day", "total_amount": "dollars"}, **extra}


def test_cdnow_loads_with_generated_keys_that_a_second_read_keeps(write_config, warehouse_url, tmp_path,
                                                                  open_warehouse):
    log = tmp_path / "shop/cdnow/CDNOW_master.txt"
    log.parent.mkdir(parents=True)
    log.write_text(CDNOW)
    # 1997 is before the default earliest_timestamp (2000): the setting says when a shop began
    config = write_config({"orders": cdnow_source()}, warehouse=warehouse_url, default_currency="USD",
                          validation={"earliest_timestamp": "1990-01-01"})
    [result] = ingest(config)
    assert (result["rows"], result["rows_valid"], result["rows_quarantined"]) == (5, 5, 0)
    wh = open_warehouse(config)
    rows = wh.rows("SELECT order_id, customer_id, created_at, total_amount, currency FROM orders "
                   "ORDER BY created_at, order_id")
    assert [(r.customer_id, r.created_at, r.total_amount, r.currency) for r in rows] == [
        ("1", datetime(1997, 1, 1), Decimal("11.77"), "USD"),
        ("3", datetime(1997, 1, 2), Decimal("20.76"), "USD"),
        ("2", datetime(1997, 1, 12), Decimal("12.00"), "USD"),
        ("2", datetime(1997, 1, 12), Decimal("12.00"), "USD"),  # the same content twice: two orders
        ("3", datetime(1997, 3, 30), Decimal("20.76"), "USD"),
    ]
    keys = {r.order_id for r in rows}
    assert len(keys) == 5

    # The log grows by a line: read again, the old lines keep their keys, one order is added.
    log.write_text(CDNOW + "    4 19970105  1   9.99\n")
    os.utime(log, (log.stat().st_atime, log.stat().st_mtime + 5))
    [again] = ingest(config)
    assert (again["inserted"], again["updated"]) == (1, 0)
    after = {r[0] for r in wh.rows("SELECT order_id FROM orders")}
    assert keys < after and len(after) == 6


def test_a_short_aligned_line_is_named_by_its_line(write_config, warehouse_url, tmp_path):
    write_csv(tmp_path / "shop/cdnow/broken.txt", "    1 19970101  1   11.77", "    2 19970112     12.00")
    config = write_config({"orders": cdnow_source()}, warehouse=warehouse_url)
    with pytest.raises(SourceError, match=r"broken\.txt: line 2: expected 4 fields separated by spaces or tabs, got 3"):
        ingest(config)


def events_source(values: dict | None = None, where: dict | None = None) -> dict:
    source = {"kind": "file", "path": "shop/events/*.csv", "format": "csv",
              "columns": {"visitor_id": "visitor", "event_type": "event", "occurred_at": "ts"},
              "values": {"event_type": {"catalog": "page_view", **(values or {})}}}
    return {**source, "where": where} if where else source


EVENTS = ("visitor,event,ts,host",
          "v1,catalog,2025-03-01 10:00:00,shop.ru",
          "v1,product_view,2025-03-01 10:01:00,shop.ru",
          "v1,scroll,2025-03-01 10:02:00,shop.ru",
          "v2,video_play,2025-03-01 10:03:00,staging.shop.ru",
          "v2,,2025-03-01 10:04:00,shop.ru")


@pytest.mark.parametrize("other,expected_types,quarantined,filtered", [
    (None, ["page_view", "product_view"], 2, 0),  # unmapped names are quarantined (the default)
    ("quarantine", ["page_view", "product_view"], 2, 0),
    ("drop", ["page_view", "product_view"], 0, 2),  # left out, counted, not quarantined
    ("page_view", ["page_view", "page_view", "page_view", "product_view"], 0, 0),
], ids=["default", "quarantine", "drop", "canonical"])
def test_unmapped_values_follow_other(write_config, warehouse_url, tmp_path, open_warehouse, other, expected_types,
                                      quarantined, filtered):
    write_csv(tmp_path / "shop/events/e.csv", *EVENTS)
    config = write_config({"orders": {"kind": "file", "path": "shop/orders/*.csv"},
                           "events": events_source({"_other": other} if other else None)},
                          warehouse=warehouse_url, validation={"max_bad_share": 1.0})
    [result] = ingest(config, ["events"])
    wh = open_warehouse(config)
    assert sorted(r[0] for r in wh.rows("SELECT event_type FROM events")) == expected_types
    # the empty event name is no value to map: always the required-column rule's
    assert result["rows_quarantined"] == quarantined + 1
    assert wh.scalar("SELECT rows_filtered FROM load_runs WHERE entity = 'events'") == filtered


@pytest.mark.parametrize("where,types,filtered", [
    ({"host": ["shop.ru"]}, ["page_view", "page_view", "product_view"], 1),
    ({"host": {"in": ["shop.ru"]}}, ["page_view", "page_view", "product_view"], 1),
    ({"host": {"not_in": ["staging.shop.ru"]}, "event": {"not_in": ["scroll"]}}, ["page_view", "product_view"], 2),
], ids=["list", "in", "not-in-two-columns"])
def test_where_keeps_only_the_rows_a_shop_wants(write_config, warehouse_url, tmp_path, open_warehouse, where,
                                                types, filtered):
    write_csv(tmp_path / "shop/events/e.csv", *EVENTS)
    config = write_config({"orders": {"kind": "file", "path": "shop/orders/*.csv"},
                           "events": events_source({"_other": "page_view"}, where)},
                          warehouse=warehouse_url, validation={"max_bad_share": 1.0})
    [result] = ingest(config, ["events"])
    wh = open_warehouse(config)
    assert sorted(r[0] for r in wh.rows("SELECT event_type FROM events")) == types
    assert wh.scalar("SELECT rows_filtered FROM load_runs WHERE entity = 'events'") == filtered
    # v2's row without an event name: a null is in no `not_in` list, so it is kept, and quarantined
    assert result["rows_quarantined"] == 1
    # host is read for the filter only: it is in no table
    assert "host" not in wh.scalar("SELECT raw_record FROM quarantine")


def test_where_on_a_column_the_file_lacks_names_the_file(write_config, warehouse_url, tmp_path):
    write_csv(tmp_path / "shop/events/e.csv", *EVENTS)
    config = write_config({"orders": {"kind": "file", "path": "shop/orders/*.csv"},
                           "events": events_source(where={"site": ["shop.ru"]})}, warehouse=warehouse_url)
    with pytest.raises(SourceError, match=r"e\.csv: column 'site' \(sources\.events\.where\) not found"):
        ingest(config, ["events"])


@pytest.mark.parametrize("source,message", [
    ({"kind": "file", "path": "o/*.csv", "values": {"status": {"canceled": "canceld"}}},
     "sources.orders.values.status.canceled: 'canceld' is not one of cancelled, completed"),
    ({"kind": "file", "path": "o/*.csv", "values": {"status": {"_other": "lost"}}},
     "sources.orders.values.status._other: 'lost' is not drop, quarantine or one of cancelled"),
    ({"kind": "file", "path": "o/*.csv", "generate_keys": True, "columns": {"order_id": "id"}},
     "sources.orders.generate_keys: order_id is mapped (to 'id'); drop one of the two"),
    ({"kind": "sql", "url": "sqlite:///shop.db", "table": "orders", "generate_keys": True},
     "sources.orders.generate_keys: only file sources make keys"),
    ({"kind": "file", "path": "o/*.csv", "where": {"host": {"in": ["a"], "not_in": ["b"]}}},
     "give exactly one of in, not_in"),
    ({"kind": "file", "path": "o/*.txt", "delimiter": "spaces"}, "one character, or 'whitespace'"),
], ids=["value", "other", "key-mapped", "sql", "where-both", "delimiter"])
def test_source_shape_settings_are_checked_when_the_configuration_loads(write_config, source, message):
    with pytest.raises(ConfigError) as error:
        write_config({"orders": source})
    assert message in str(error.value)
