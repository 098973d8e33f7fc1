"""The ga4_export source: GA4's BigQuery export, written here in its exact nested schema
as Parquet and as the JSON lines `bq extract` writes (INT64 as strings, nulls left out),
ingested end to end on DuckDB and PostgreSQL into events, orders and order_items."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from support import table_rows
from winback.config import ConfigError
from winback.ingest.check import check
from winback.ingest.pipeline import extract, ingest
from winback.ingest.sources import SourceError, Window, make_extractor

REPO = Path(__file__).resolve().parents[2]
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# The export's schema (https://support.google.com/analytics/answer/7029846): STRING,
# INTEGER (int64), FLOAT (float64), BOOLEAN; RECORDs as structs, REPEATED as lists.
S, I, F, B = pa.string(), pa.int64(), pa.float64(), pa.bool_()


def record(**fields) -> pa.DataType:
    return pa.struct([(name, kind) for name, kind in fields.items()])


VALUE = record(string_value=S, int_value=I, float_value=F, double_value=F)
PARAMS = pa.list_(record(key=S, value=VALUE))
GA4_SCHEMA = pa.schema([
    ("event_date", S), ("event_timestamp", I), ("event_name", S), ("event_params", PARAMS),
    ("event_previous_timestamp", I), ("event_value_in_usd", F), ("event_bundle_sequence_id", I),
    ("event_server_timestamp_offset", I), ("user_id", S), ("user_pseudo_id", S),
    ("privacy_info", record(analytics_storage=S, ads_storage=S, uses_transient_token=S)),
    ("user_properties", pa.list_(record(key=S, value=record(string_value=S, int_value=I, float_value=F,
                                                              double_value=F, set_timestamp_micros=I)))),
    ("user_first_touch_timestamp", I), ("user_ltv", record(revenue=F, currency=S)),
    ("device", record(category=S, mobile_brand_name=S, mobile_model_name=S, mobile_marketing_name=S,
                      mobile_os_hardware_model=S, operating_system=S, operating_system_version=S,
                      vendor_id=S, advertising_id=S, language=S, is_limited_ad_tracking=S,
                      time_zone_offset_seconds=I, browser=S, browser_version=S,
                      web_info=record(browser=S, browser_version=S, hostname=S))),
    ("geo", record(city=S, country=S, continent=S, region=S, sub_continent=S, metro=S)),
    ("app_info", record(id=S, version=S, install_store=S, firebase_app_id=S, install_source=S)),
    ("traffic_source", record(name=S, medium=S, source=S)),
    ("stream_id", S), ("platform", S), ("event_dimensions", record(hostname=S)),
    ("ecommerce", record(total_item_quantity=I, purchase_revenue_in_usd=F, purchase_revenue=F,
                         refund_value_in_usd=F, refund_value=F, shipping_value_in_usd=F, shipping_value=F,
                         tax_value_in_usd=F, tax_value=F, unique_items=I, transaction_id=S)),
    ("items", pa.list_(record(
        item_id=S, item_name=S, item_brand=S, item_variant=S, item_category=S, item_category2=S,
        item_category3=S, item_category4=S, item_category5=S, price_in_usd=F, price=F, quantity=I,
        item_revenue_in_usd=F, item_revenue=F, item_refund_in_usd=F, item_refund=F, coupon=S,
        affiliation=S, location_id=S, item_list_id=S, item_list_name=S, item_list_index=S,
        promotion_id=S, promotion_name=S, creative_name=S, creative_slot=S, item_params=PARAMS))),
    ("collected_traffic_source", record(
        manual_campaign_id=S, manual_campaign_name=S, manual_source=S, manual_medium=S, manual_term=S,
        manual_content=S, manual_source_platform=S, manual_creative_format=S, manual_marketing_tactic=S,
        gclid=S, dclid=S, srsltid=S)),
    ("is_active_user", B), ("batch_event_index", I), ("batch_ordering_id", I), ("batch_page_id", I),
    ("session_traffic_source_last_click", record(manual_campaign=record(
        campaign_id=S, campaign_name=S, source=S, medium=S, term=S, content=S, source_platform=S,
        creative_format=S, marketing_tactic=S))),
])


def micros(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(microseconds=1)


def param(key: str, value) -> dict:
    kind = "string_value" if isinstance(value, str) else "int_value" if isinstance(value, int) else "double_value"
    return {"key": key, "value": {kind: value}}


def item(item_id: str, name: str, category: str, price: float, quantity: int = 1, revenue: bool = False) -> dict:
    return {"item_id": item_id, "item_name": name, "item_category": category, "price": price,
            "price_in_usd": price * 1.08, "quantity": quantity,
            "item_revenue": price * quantity if revenue else None, "item_list_index": "1",
            "item_params": [param("size", "42")]}


def event(name: str, at: datetime, visitor: str, session: int, *, user_id: str | None = None,
          items: tuple = (), params: tuple = (), utm: tuple | None = None, ecommerce: dict | None = None) -> dict:
    """One row of events_YYYYMMDD as GA4 writes it."""
    return {
        "event_date": at.strftime("%Y%m%d"), "event_timestamp": micros(at), "event_name": name,
        "event_params": [param("ga_session_id", session), param("page_location", "https://shop.example/p"),
                         *params],
        "event_bundle_sequence_id": 7, "event_server_timestamp_offset": 1234,
        "user_id": user_id, "user_pseudo_id": visitor,
        "privacy_info": {"analytics_storage": "Yes", "ads_storage": "Yes", "uses_transient_token": "No"},
        "user_properties": [{"key": "crm_id", "value": {"string_value": f"crm-{user_id}",
                                                        "set_timestamp_micros": micros(at)}}] if user_id else [],
        "user_first_touch_timestamp": micros(datetime(2026, 10, 1, tzinfo=UTC)),
        "device": {"category": "mobile", "operating_system": "Android", "language": "ru-ru",
                   "is_limited_ad_tracking": "No", "web_info": {"browser": "Chrome", "hostname": "shop.example"}},
        "geo": {"city": "Kazan", "country": "Russia", "continent": "Europe"},
        "traffic_source": {"name": "(organic)", "medium": "organic", "source": "google"},
        "stream_id": "1234567890", "platform": "WEB",
        "ecommerce": ecommerce,
        "items": list(items),
        "collected_traffic_source": ({"manual_source": utm[0], "manual_medium": utm[1],
                                      "manual_campaign_name": utm[2]} if utm else None),
        "is_active_user": True, "batch_event_index": 0, "batch_ordering_id": 1, "batch_page_id": 1,
    }


DAY1 = datetime(2026, 11, 1, 8, 0, 0, 123456, tzinfo=UTC)
DAY2 = datetime(2026, 11, 2, 19, 30, tzinfo=UTC)
SHOES, SOCKS, HAT = ("SKU-1", "Shoes", "Footwear", 49.99), ("SKU-2", "Socks", "Hosiery", 5.5), ("SKU-3", "Hat", "Hats", 19.0)
FIRST_DAY = [
    event("page_view", DAY1, "1001.1", 1793500000, utm=("newsletter", "email", "winback_nov")),
    event("session_start", DAY1, "1001.1", 1793500000),
    event("view_item", DAY1 + timedelta(seconds=30), "1001.1", 1793500000,
          items=(item(*SHOES), item(*SOCKS)), params=(param("currency", "EUR"), param("value", 55.49))),
    event("add_to_cart", DAY1 + timedelta(minutes=1), "1001.1", 1793500000, user_id="C-42",
          items=(item(*SHOES, quantity=2),), params=(param("currency", "EUR"), param("value", 99.98))),
    event("newsletter_popup", DAY1 + timedelta(minutes=2), "1001.1", 1793500000),
    event("purchase", DAY1 + timedelta(minutes=5), "1001.1", 1793500000, user_id="C-42",
          items=(item(*SHOES, quantity=2, revenue=True), item(*SOCKS, revenue=True)),
          params=(param("currency", "EUR"), param("value", 105.48), param("coupon", "AUTUMN"),
                  param("transaction_id", "T-1001")),
          ecommerce={"transaction_id": "T-1001", "purchase_revenue": 105.48, "total_item_quantity": 3,
                     "unique_items": 2, "purchase_revenue_in_usd": 113.92}),
]
SECOND_DAY = [
    event("page_view", DAY2, "2002.7", 1793600000),
    event("begin_checkout", DAY2 + timedelta(minutes=3), "2002.7", 1793600000, items=(item(*HAT),),
          params=(param("currency", "EUR"), param("value", 19.0))),
    event("purchase", DAY2 + timedelta(minutes=4), "2002.7", 1793600000, items=(item(*HAT, revenue=True),),
          params=(param("currency", "EUR"), param("value", 19.0)),
          ecommerce={"transaction_id": "T-1002", "purchase_revenue": 19.0, "total_item_quantity": 1}),
]


def bq_json(value, kind: pa.DataType):
    """A value as `bq extract --destination_format NEWLINE_DELIMITED_JSON` writes it:
    INT64 as a string, nulls left out, repeated fields as arrays."""
    if pa.types.is_struct(kind):
        fields = {kind.field(i).name: kind.field(i).type for i in range(kind.num_fields)}
        return {k: bq_json(v, fields[k]) for k, v in value.items() if v is not None}
    if pa.types.is_list(kind):
        return [bq_json(v, kind.value_type) for v in value]
    if pa.types.is_integer(kind):
        return str(value)
    return value


def write_parquet(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=GA4_SCHEMA), path, row_group_size=2)


def write_jsonl_gz(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    struct = pa.struct(list(GA4_SCHEMA))
    lines = [json.dumps(bq_json(row, struct), ensure_ascii=False) for row in rows]
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))


def ga4(fmt: str, path: str, **extra) -> dict:
    return {"kind": "ga4_export", "path": path, "format": fmt, **extra}


def test_the_exported_bq_json_holds_int64_as_strings(tmp_path):
    write_jsonl_gz(tmp_path / "e.jsonl.gz", SECOND_DAY)
    first = json.loads(gzip.decompress((tmp_path / "e.jsonl.gz").read_bytes()).splitlines()[0])
    assert first["event_timestamp"] == str(micros(DAY2))
    assert first["event_params"][0] == {"key": "ga_session_id", "value": {"int_value": "1793600000"}}
    assert "user_id" not in first and first["items"] == []


EVENT_COLUMNS = ("visitor_id", "customer_id", "session_id", "event_type", "product_id", "category", "value",
                 "occurred_at", "utm_source", "utm_medium", "utm_campaign")
ORGANIC = ("google", "organic", "(organic)")


def naive(moment: datetime) -> datetime:
    return moment.replace(tzinfo=None)


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_ga4_export_loads_events_orders_and_order_items(write_config, warehouse_url, tmp_path, open_warehouse, fmt):
    if fmt == "parquet":
        write_parquet(tmp_path / "ga4/events_20261101.parquet", FIRST_DAY)
        write_parquet(tmp_path / "ga4/events_20261102.parquet", SECOND_DAY)
        path = "ga4/events_*.parquet"
    else:
        write_jsonl_gz(tmp_path / "ga4/events_20261101.jsonl.gz", FIRST_DAY)
        write_jsonl_gz(tmp_path / "ga4/events_20261102.jsonl.gz", SECOND_DAY)
        path = "ga4/events_*.jsonl.gz"
    config = write_config(
        {"events": ga4(fmt, path, max_bad_share=0.2), "orders": ga4(fmt, path), "order_items": ga4(fmt, path)},
        warehouse=warehouse_url, default_currency="RUB")
    results = {r["entity"]: r for r in ingest(config)}
    wh = open_warehouse(config)

    columns = ", ".join(EVENT_COLUMNS)
    events = [tuple(r) for r in wh.rows(f"SELECT {columns} FROM events ORDER BY occurred_at, product_id")]
    view, cart, buy = DAY1 + timedelta(seconds=30), DAY1 + timedelta(minutes=1), DAY1 + timedelta(minutes=5)
    assert events == [
        # the event's own campaign (collected_traffic_source) first, else the user's first one
        ("1001.1", None, "1793500000", "page_view", None, None, None, naive(DAY1),
         "newsletter", "email", "winback_nov"),
        # one event per item, with the item's price as the value
        ("1001.1", None, "1793500000", "product_view", "SKU-1", "Footwear", Decimal("49.99"), naive(view), *ORGANIC),
        ("1001.1", None, "1793500000", "product_view", "SKU-2", "Hosiery", Decimal("5.50"), naive(view), *ORGANIC),
        ("1001.1", "C-42", "1793500000", "add_to_cart", "SKU-1", "Footwear", Decimal("49.99"), naive(cart),
         *ORGANIC),
        ("1001.1", "C-42", "1793500000", "purchase", "SKU-1", "Footwear", Decimal("49.99"), naive(buy), *ORGANIC),
        ("1001.1", "C-42", "1793500000", "purchase", "SKU-2", "Hosiery", Decimal("5.50"), naive(buy), *ORGANIC),
        ("2002.7", None, "1793600000", "page_view", None, None, None, naive(DAY2), *ORGANIC),
        ("2002.7", None, "1793600000", "checkout_start", "SKU-3", "Hats", Decimal("19.00"),
         naive(DAY2 + timedelta(minutes=3)), *ORGANIC),
        ("2002.7", None, "1793600000", "purchase", "SKU-3", "Hats", Decimal("19.00"),
         naive(DAY2 + timedelta(minutes=4)), *ORGANIC),
    ]
    # Every item row has an id of its own, stable across loads (derived from its content).
    assert wh.scalar("SELECT count(DISTINCT event_id) FROM events") == 9
    # session_start is one of GA4's own events without a canonical type: skipped. An
    # unknown name is quarantined with its rule, as from any source.
    assert results["events"]["rows"] == 10 and results["events"]["failed_per_rule"] == {"event_type_allowed": 1}
    [bad] = wh.rows("SELECT * FROM quarantine WHERE entity = 'events'")
    assert (bad.rules, bad.source_kind) == ("event_type_allowed", "ga4_export")
    assert json.loads(bad.raw_record)["event_type"] == "newsletter_popup"
    assert bad.origin.endswith("events_20261101." + ("parquet" if fmt == "parquet" else "jsonl.gz"))

    orders = [tuple(r) for r in wh.rows(
        "SELECT order_id, customer_id, visitor_id, created_at, total_amount, currency, status, promo_code "
        "FROM orders ORDER BY order_id")]
    assert orders == [
        ("T-1001", "C-42", "1001.1", naive(buy), Decimal("105.48"), "EUR", "completed", "AUTUMN"),
        # a guest checkout: the browser is the customer
        ("T-1002", "v:2002.7", "2002.7", naive(DAY2 + timedelta(minutes=4)), Decimal("19.00"), "EUR",
         "completed", None),
    ]
    items = [tuple(r) for r in wh.rows(
        "SELECT order_id, product_id, category, quantity, price FROM order_items ORDER BY order_id, product_id")]
    assert items == [("T-1001", "SKU-1", "Footwear", 2, Decimal("49.99")),
                     ("T-1001", "SKU-2", "Hosiery", 1, Decimal("5.50")),
                     ("T-1002", "SKU-3", "Hats", 1, Decimal("19.00"))]

    # A re-run reads no file twice and leaves every table as it was.
    tables = {"events": "event_id", "orders": "order_id", "order_items": "order_id, product_id",
              "quarantine": "record_hash", "loaded_files": "entity, path"}
    before = [table_rows(wh, t, order) for t, order in tables.items()]
    again = ingest(config)
    assert [r["rows"] for r in again] == [0, 0, 0]
    assert [table_rows(wh, t, order) for t, order in tables.items()] == before


def test_values_columns_and_skip_events_override_the_preset(write_config, warehouse_url, tmp_path, open_warehouse):
    write_parquet(tmp_path / "ga4/events_20261101.parquet", FIRST_DAY)
    events = ga4("parquet", "ga4/*.parquet", skip_events=["session_start", "page_view", "newsletter_popup"],
                 # a custom event counted as a canonical one (mapped, so loaded though listed),
                 # and a preset type replaced
                 values={"event_type": {"newsletter_popup": "signup", "view_item": "search"}},
                 # the customer's id from a user property, the category from the item's name
                 columns={"customer_id": "user_properties.crm_id", "category": "items.item_name"})
    # only logged-in buyers' orders
    orders = ga4("parquet", "ga4/*.parquet", columns={"customer_id": "user_id"}, max_bad_share=1.0)
    write_parquet(tmp_path / "ga4/events_20261102.parquet", SECOND_DAY)
    config = write_config({"events": events, "orders": orders}, warehouse=warehouse_url)
    results = {r["entity"]: r for r in ingest(config)}
    assert (results["events"]["rows"], results["events"]["rows_quarantined"]) == (8, 0)
    assert results["orders"]["failed_per_rule"] == {"customer_id_present": 1}
    wh = open_warehouse(config)
    assert [tuple(r) for r in wh.rows("SELECT order_id, customer_id FROM orders")] == [("T-1001", "C-42")]
    rows = [tuple(r) for r in wh.rows(
        "SELECT event_type, customer_id, product_id, category FROM events "
        "WHERE occurred_at < '2026-11-02' ORDER BY occurred_at, product_id")]
    assert rows == [("search", None, "SKU-1", "Shoes"), ("search", None, "SKU-2", "Socks"),
                    ("add_to_cart", "crm-C-42", "SKU-1", "Shoes"), ("signup", None, None, None),
                    ("purchase", "crm-C-42", "SKU-1", "Shoes"), ("purchase", "crm-C-42", "SKU-2", "Socks")]


def test_many_events_are_read_in_bounded_chunks_one_row_per_item(write_config, warehouse_url, tmp_path, open_warehouse):
    views = [event("view_item", DAY1 + timedelta(seconds=n), f"{n}.1", 1793500000 + n,
                   items=(item(*SHOES), item(*SOCKS))) for n in range(1500)]
    write_parquet(tmp_path / "ga4/events_20261101.parquet", views)
    config = write_config({"events": ga4("parquet", "ga4/*.parquet", chunk_rows=1000),
                           "orders": ga4("parquet", "ga4/*.parquet")}, warehouse=warehouse_url)
    extractor = make_extractor(config, "events")
    [origin] = extractor.origins(Window(), {})
    batches = [(b.first_row, b.table.num_rows) for b in extractor.read(origin, Window())]
    # At most chunk_rows unnested rows at a time, numbered on from batch to batch.
    assert max(rows for _, rows in batches) <= 1000 and sum(rows for _, rows in batches) == 3000
    assert [first for first, _ in batches] == [1 + sum(rows for _, rows in batches[:i]) for i in range(len(batches))]
    result = {r["entity"]: r for r in ingest(config)}["events"]
    assert result["inserted"] == 3000
    wh = open_warehouse(config)
    assert wh.scalar("SELECT count(DISTINCT visitor_id) FROM events WHERE product_id = 'SKU-2'") == 1500


def test_a_mapped_path_missing_from_the_export_is_named(write_config, warehouse_url, tmp_path):
    write_parquet(tmp_path / "ga4/events_20261101.parquet", FIRST_DAY)
    write_jsonl_gz(tmp_path / "ga4/events_20261101.jsonl.gz", FIRST_DAY)
    for fmt, pattern in (("parquet", "ga4/*.parquet"), ("jsonl", "ga4/*.jsonl.gz")):
        events = ga4(fmt, pattern, columns={"category": "items.item_categry"})
        config = write_config({"events": events, "orders": ga4(fmt, pattern)}, warehouse=warehouse_url)
        with pytest.raises(SourceError, match=r"events_20261101.*'items.item_categry' \(mapped to category\) not found"):
            extract(config, "events")


def test_ga4_export_feeds_only_events_and_orders_and_reads_its_own_times(write_config):
    with pytest.raises(ConfigError, match="sources.customers.kind: ga4_export holds events and purchases; it feeds events, orders, order_items"):
        write_config({"orders": ga4("parquet", "ga4/*.parquet"), "customers": ga4("parquet", "ga4/*.parquet")})
    with pytest.raises(ConfigError, match="sources.orders.timestamp_format: .*microseconds"):
        write_config({"orders": ga4("parquet", "ga4/*.parquet", timestamp_format="%Y-%m-%d")})


def test_the_preset_configuration_loads_a_ga4_export(write_config, warehouse_url, tmp_path, open_warehouse):
    preset = yaml.safe_load((REPO / "include/config/presets/ga4.yaml").read_text(encoding="utf-8"))
    write_parquet(tmp_path / "data/ga4/events_20261101.parquet", FIRST_DAY)
    write_parquet(tmp_path / "data/ga4/events_20261102.parquet", SECOND_DAY)
    top = {k: v for k, v in preset.items() if k not in ("home", "sources", "warehouse")}
    # Its paths are relative to the project home: the test's folder stands in for it.
    assert {s["path"] for s in preset["sources"].values()} == {"data/ga4/events_*.parquet"}
    sources = {name: {**source, "max_bad_share": 0.2} for name, source in preset["sources"].items()}
    config = write_config(sources, warehouse=warehouse_url, **top)
    found = {e.entity: e for e in check(config).entities}
    assert found["events"].would_load and found["events"].unknown_values == {"event_type": {"newsletter_popup": 1}}
    results = {r["entity"]: r for r in ingest(config)}
    assert {e: r["inserted"] for e, r in results.items()} == {"orders": 2, "order_items": 3, "events": 9}
    assert found["events"].per_rule == results["events"]["failed_per_rule"]
    wh = open_warehouse(config)
    assert wh.scalar("SELECT sum(total_amount) FROM orders") == Decimal("124.48")


def test_a_file_that_is_not_a_ga4_export_is_named(write_config, warehouse_url, tmp_path):
    (tmp_path / "ga4").mkdir()
    pq.write_table(pa.table({"id": ["1"], "sum": [10.0]}), tmp_path / "ga4/events_20261101.parquet")
    config = write_config({"orders": ga4("parquet", "ga4/*.parquet")}, warehouse=warehouse_url)
    with pytest.raises(SourceError, match="events_20261101.parquet: not a GA4 export: it has no event_name column"):
        extract(config, "orders")


def test_where_keeps_one_stream_of_a_property_with_an_app_and_a_site(write_config, tmp_path, open_warehouse):
    app = {**event("page_view", DAY1, "app.1", 1793500001), "stream_id": "999", "platform": "ANDROID"}
    write_parquet(tmp_path / "ga4/events_20261101.parquet", [*FIRST_DAY, app])
    events = ga4("parquet", "ga4/*.parquet", where={"stream_id": ["1234567890"]}, max_bad_share=1.0)
    config = write_config({"events": events, "orders": ga4("parquet", "ga4/*.parquet")},
                          warehouse=f"duckdb:///{tmp_path / 'wh.duckdb'}")
    results = {r["entity"]: r for r in ingest(config)}
    wh = open_warehouse(config)
    assert wh.scalar("SELECT count(*) FROM events WHERE visitor_id = 'app.1'") == 0
    assert wh.scalar("SELECT rows_filtered FROM load_runs WHERE entity = 'events'") == 1
    assert results["events"]["rows_quarantined"] == 1  # the site's custom newsletter_popup, as without where
