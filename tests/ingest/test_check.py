"""`python -m winback check`: what a load would do, said before loading anything. Its
findings are compared with what ingest really does on the same files, and its errors
with ingest's errors for the malformed inputs the suite knows."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime, timedelta

import pytest
from support import orders_source, write_csv
from winback.cli import main
from winback.ingest.check import check
from winback.ingest.pipeline import ingest
from winback.ingest.sources import SourceError

FUTURE = (datetime.now(UTC) + timedelta(days=30)).strftime("%Y-%m-%d %H:%M:%S")
ORDERS = ("id,client_id,date,sum,status",
          "1,C1,2025-01-05 10:00:00,100,completed",
          "2,C2,2025-01-06 10:00:00,50,lost",
          "3,C3,2025-01-07 10:00:00,70,refundd",
          "4,C4,05/01/2025,30,completed",
          "5,C5,1997-01-01 10:00:00,-5,completed",
          f"6,,{FUTURE},20,completed",
          "7,C7,2025-01-08 10:00:00,abc,paid")


def shop_config(write_config, tmp_path, warehouse_url=None, **orders):
    write_csv(tmp_path / "shop/orders/o.csv", *ORDERS)
    write_csv(tmp_path / "shop/events/e.csv", "visitor,event,ts",
              "v1,page_view,2025-01-05 10:00:00", "v1,catalog,2025-01-05 10:01:00")
    write_csv(tmp_path / "shop/customers/c.csv", "client_id,email", "C1,a@shop.ru", "C2,b@shop.ru")
    sources = {
        "orders": orders_source(timestamp_format="%Y-%m-%d %H:%M:%S",
                                columns={"order_id": "id", "customer_id": "client_id", "created_at": "date",
                                         "total_amount": "sum"}, **orders),
        "customers": {"kind": "file", "path": "shop/customers/*.csv", "columns": {"customer_id": "client_id"}},
        "events": {"kind": "file", "path": "shop/events/*.csv",
                   "columns": {"visitor_id": "visitor", "event_type": "event", "occurred_at": "ts"}},
    }
    top = {"warehouse": warehouse_url} if warehouse_url else {}
    return write_config(sources, validation={"max_bad_share": 1.0}, **top)


def test_check_finds_what_ingest_then_quarantines_and_loads_nothing(write_config, tmp_path, warehouse_url):
    config = shop_config(write_config, tmp_path, warehouse_url)
    report = check(config)
    orders = {e.entity: e for e in report.entities}["orders"]
    assert orders.would_load and orders.rows == 7
    assert orders.unknown_values == {"status": {"lost": 1, "refundd": 1}}
    assert "    refundd: returned    # 1 rows; closest canonical value" in orders.values_snippet
    assert "    # lost: ?    # 1 rows; one of cancelled," in orders.values_snippet
    assert orders.unparsed["created_at"]["count"] == 1 and orders.unparsed["created_at"]["examples"] == ["05/01/2025"]
    assert orders.unparsed["total_amount"]["examples"] == ["abc"]
    assert (orders.out_of_range["created_at"]["before"], orders.out_of_range["created_at"]["after"]) == (1, 1)
    # nothing was loaded: check opens no warehouse
    assert not (tmp_path / "warehouse.duckdb").exists()

    # the same rules, the same counts as the load that follows
    results = {r["entity"]: r for r in ingest(config, ["orders"])}
    assert orders.per_rule == results["orders"]["failed_per_rule"]
    assert orders.bad_rows == results["orders"]["rows_quarantined"]


def test_check_says_what_the_build_will_lack(write_config, tmp_path):
    report = check(shop_config(write_config, tmp_path))
    assert report.lacks == [
        ("customers have no email_consent: nobody counts as consenting to email, so email audiences will be empty "
        "(map the shop's subscription flag)"),
        "customers have no phone: call lists and sms audiences will be empty",
        "customers have no ads_consent: ads audiences will be empty",
        "customers have no birth_date: the birthday trigger will be empty",
        "orders have no delivered_at: feedback_due, the thank_you trigger and late deliveries will be empty",
        "orders have no promo_code: discount dependence and referral codes cannot be measured",
        ("no order_items source: no categories, so churn follows the shop-wide cycle and the replenishment "
        "trigger is empty"),
        "events have no product_id: abandoned_carts and browse_abandoners will be empty",
        "events have no product_view: browse_abandoners will be empty",
        ("neither events nor orders link a visitor to a customer: site visits count for no customer "
        "(map customer_id on events or visitor_id on orders)"),
        ("no feedback source: customers are negative only by cancelled or returned orders and late deliveries, "
        "never by a low score"),
    ]


def test_the_command_exits_2_when_an_entity_would_not_load_and_prints_json(write_config, tmp_path, capsys):
    config = shop_config(write_config, tmp_path, max_bad_share=0.1)
    assert main(["--config", str(config.path), "check"]) == 2
    out = capsys.readouterr().out
    assert "orders (file: shop/orders/*.csv): 1 origin(s), 7 rows read" in out
    assert "would quarantine 6 of 7 rows (85.7%; limit 10.0%, validation.max_bad_share)" in out
    assert "created_at: 1 values do not parse as timestamp_format '%Y-%m-%d %H:%M:%S', e.g. '05/01/2025'" in out
    assert "created_at: 1 before 2000-01-01 (validation.earliest_timestamp)" in out
    assert "=> would FAIL" in out and "a@shop.ru" not in out  # counted, never printed

    assert main(["--config", str(config.path), "check", "--entity", "events", "--json", "--sample", "1"]) == 0
    found = json.loads(capsys.readouterr().out)
    [events] = found["entities"]
    assert (events["entity"], events["rows"], events["sampled"], found["ok"]) == ("events", 1, True, True)


ORDERS_SOURCE = orders_source(columns={"order_id": "id", "customer_id": "client_id", "created_at": "date",
                                       "total_amount": "sum"})
MALFORMED = {
    "broken-line": ("orders", lambda d: write_csv(d / "shop/orders/a.csv", "id,client_id,date,sum",
                                                  "1,C1,2025-01-05,10", "2,C2,2025-01-06,20,extra"), {}),
    "encoding": ("orders", lambda d: write_csv(d / "shop/orders/a.csv", "id,client_id,date,sum",
                                               "1,Пётр,2025-01-05,10", encoding="cp1251"), {}),
    "missing-column": ("orders", lambda d: write_csv(d / "shop/orders/a.csv", "id,client,date,sum",
                                                     "1,C1,2025-01-05,10"), {}),
    "json-line": ("events", lambda d: (d / "shop/events").mkdir(parents=True) or (d / "shop/events/e.jsonl").write_text(
        '{"ts": "2025-01-05T10:00:00Z", "event": "page_view", "v": "v1"}\n{"ts": ,}\n'),
        {"kind": "file", "path": "shop/events/*.jsonl", "format": "jsonl",
         "columns": {"occurred_at": "ts", "event_type": "event", "visitor_id": "v"}}),
    "parquet": ("order_items", lambda d: (d / "shop/items").mkdir(parents=True) or (d / "shop/items/i.parquet")
                .write_bytes(b"PAR1 this is not parquet"),
                {"kind": "file", "path": "shop/items/*.parquet", "format": "parquet"}),
    "no-file": ("orders", lambda d: None, {}),
    "record-longer-than-the-block": ("orders", lambda d: write_csv(
        d / "shop/orders/a.csv", "id,client_id,date,sum,note", "1,C1,2025-01-05,10,short",
        f'2,C2,2025-01-06,20,"{"x" * (5 << 19)}"'), {**ORDERS_SOURCE, "block_size_mb": 1}),
    "gzip-named-csv": ("orders", lambda d: (d / "shop/orders").mkdir(parents=True) or (d / "shop/orders/a.csv")
                       .write_bytes(gzip.compress(b"id,client_id,date,sum\n1,C1,2025-01-05,10\n")), {}),
    "plain-named-gz": ("orders", lambda d: write_csv(d / "shop/orders/a.csv.gz", "id,client_id,date,sum",
                                                     "1,C1,2025-01-05,10"),
                       {**ORDERS_SOURCE, "path": "shop/orders/*"}),
}


def test_check_counts_nan_infinity_and_field_level_values_as_the_load_does(write_config, tmp_path):
    write_csv(tmp_path / "shop/orders/a.csv", "id,client_id,date,sum",
              "o1,c1,2025-01-05,100.50", "o2,c1,2025-01-06,NaN", "o3,c2,2025-01-07,inf", "o4,c2,2025-01-08,1e20")
    write_csv(tmp_path / "shop/customers/c.csv", "client_id,email,phone",
              "c1,ok@shop.ru,+79120000001", "c2,not-an-email,+79120000002", "c3,x@shop.ru,12")
    config = write_config({"orders": {**ORDERS_SOURCE, "max_bad_share": 1.0},
                           "customers": {"kind": "file", "path": "shop/customers/*.csv", "max_bad_share": 1.0,
                                         "columns": {"customer_id": "client_id"}}},
                          warehouse=f"duckdb:///{tmp_path / 'wh.duckdb'}")
    found = {e.entity: e for e in check(config).entities}
    loaded = {r["entity"]: r for r in ingest(config)}
    assert found["orders"].per_rule == loaded["orders"]["failed_per_rule"] == {
        "total_amount_parses": 1, "total_amount_in_range": 2}
    assert found["orders"].unparsed["total_amount"] == {"count": 1, "type": "money", "examples": ["NaN"],
                                                       "too_large": 2}
    # a bad email or phone is set to null and the customer loads: values_nulled, not bad rows
    assert found["customers"].bad_rows == loaded["customers"]["rows_quarantined"] == 0
    assert found["customers"].nulled == {"email_plausible": 1, "phone_plausible": 1}
    assert sum(found["customers"].nulled.values()) == loaded["customers"]["values_nulled"]


@pytest.mark.parametrize("case", list(MALFORMED))
def test_check_names_the_same_file_line_and_problem_as_ingest(write_config, tmp_path, case):
    entity, make, source = MALFORMED[case]
    make(tmp_path)
    orders = source if entity == "orders" and source else ORDERS_SOURCE
    config = write_config({"orders": orders, **({entity: source} if entity != "orders" else {})},
                          warehouse=f"duckdb:///{tmp_path / 'wh.duckdb'}")
    with pytest.raises(SourceError) as failure:
        ingest(config, [entity])
    [found] = check(config, [entity]).entities
    assert found.error == str(failure.value) and not found.would_load
