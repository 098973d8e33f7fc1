"""Bad values in otherwise loadable data: numbers that are not numbers, one shop column
feeding two canonical ones, and optional fields that break their rule. Nothing valid is
lost, every bad value is in the quarantine with where it came from, on DuckDB and on
PostgreSQL."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support import orders_source, write_csv
from winback.ingest.pipeline import ValidationThresholdError, ingest

ORDERS_HEADER = "id,client_id,date,sum"


def quarantine(wh, entity: str) -> list:
    return wh.rows("SELECT origin, row_number, record_key, rules, level, field, raw_record FROM quarantine "
                   "WHERE entity = :e ORDER BY origin, row_number, field", {"e": entity})


def test_nan_infinity_and_huge_numbers_are_bad_rows_not_a_crashed_load(write_config, warehouse_url, tmp_path,
                                                                        open_warehouse):
    """One NaN used to fail the whole entity (`Could not cast value nan to DECIMAL(18,2)`),
    leave load_runs at `extracted` and crash every later run the same way."""
    write_csv(tmp_path / "shop/orders/a.csv", ORDERS_HEADER,
              "o1,c1,2025-01-05 10:00:00,100.50", "o2,c1,2025-01-06 10:00:00,NaN", "o3,c2,2025-01-07 10:00:00,inf",
              "o4,c2,2025-01-08 10:00:00,1e20", "o5,c3,2025-01-09 10:00:00,-Infinity", "o6,c3,2025-01-10 10:00:00,7")
    write_csv(tmp_path / "shop/feedback/f.csv", "order_id,score,created_at",
              "o1,9,2025-01-07 10:00:00", "o6,1e20,2025-01-11 10:00:00", "o5,nan,2025-01-11 10:00:00")
    config = write_config({"orders": orders_source(max_bad_share=1.0),
                           "feedback": {"kind": "file", "path": "shop/feedback/*.csv", "max_bad_share": 1.0}},
                          warehouse=warehouse_url)
    orders, feedback = ingest(config)
    wh = open_warehouse(config)

    assert orders["failed_per_rule"] == {"total_amount_parses": 1, "total_amount_in_range": 3}
    assert sorted((r.order_id, str(r.total_amount)) for r in wh.rows("SELECT order_id, total_amount FROM orders")) == [
        ("o1", "100.50"), ("o6", "7.00")]
    assert [(r.origin, r.row_number, r.record_key, r.rules) for r in quarantine(wh, "orders")] == [
        ("shop/orders/a.csv", 2, "o2", "total_amount_parses"),
        ("shop/orders/a.csv", 3, "o3", "total_amount_in_range"),
        ("shop/orders/a.csv", 4, "o4", "total_amount_in_range"),
        ("shop/orders/a.csv", 5, "o5", "total_amount_in_range")]
    assert json.loads(quarantine(wh, "orders")[0].raw_record)["sum"] == "NaN"
    assert feedback["failed_per_rule"] == {"score_parses": 2}
    assert [r.order_id for r in wh.rows("SELECT order_id FROM feedback")] == ["o1"]
    assert {r.status for r in wh.rows("SELECT status FROM load_runs")} == {"loaded"}


def test_nan_and_infinity_in_a_parquet_export_are_bad_rows(write_config, warehouse_url, tmp_path, open_warehouse):
    folder = tmp_path / "shop/orders"
    folder.mkdir(parents=True)
    pq.write_table(pa.table({"id": ["o1", "o2", "o3"], "client_id": ["c1", "c1", "c2"],
                             "date": ["2025-01-05 10:00:00"] * 3,
                             "sum": pa.array([12.5, float("nan"), float("inf")], pa.float64())}), folder / "o.parquet")
    config = write_config({"orders": orders_source("shop/orders/*.parquet", format="parquet", max_bad_share=1.0)},
                          warehouse=warehouse_url)
    [orders] = ingest(config)
    assert orders["failed_per_rule"] == {"total_amount_parses": 1, "total_amount_in_range": 1}
    assert [r.order_id for r in open_warehouse(config).rows("SELECT order_id FROM orders")] == ["o1"]


CUSTOMERS_HEADER = "id,mail,tel,agree"


def customers_source(**extra) -> dict:
    # One consent checkbox feeds both the email and the SMS consent.
    return {"kind": "file", "path": "shop/customers/*.csv",
            "columns": {"customer_id": "id", "email": "mail", "phone": "tel", "email_consent": "agree",
                        "sms_consent": "agree"}, **extra}


def test_one_shop_column_mapped_to_two_canonical_columns_survives_bad_rows(write_config, warehouse_url, tmp_path,
                                                                          open_warehouse):
    """Worked until the first bad row, then crashed building its quarantine record
    (`Duplicate struct entry name`)."""
    write_csv(tmp_path / "shop/customers/c.csv", CUSTOMERS_HEADER,
              "c1,a@shop.ru,,1", ",nobody@shop.ru,,0", "c3,b@shop.ru,,maybe")
    write_csv(tmp_path / "shop/orders/o.csv", ORDERS_HEADER, "o1,c1,2025-01-05 10:00:00,10")
    config = write_config({"orders": orders_source(), "customers": customers_source(max_bad_share=1.0)},
                          warehouse=warehouse_url)
    ingest(config, ["customers"])
    wh = open_warehouse(config)

    stored = {r.customer_id: (r.email_consent, r.sms_consent) for r in wh.rows(
        "SELECT customer_id, email_consent, sms_consent FROM customers")}
    assert stored == {"c1": (True, True), "c3": (None, None)}  # unreadable consent is no consent
    row, *fields = quarantine(wh, "customers")
    assert (row.row_number, row.rules, row.level) == (2, "customer_id_present", "row")
    assert json.loads(row.raw_record) == {"id": None, "mail": "nobody@shop.ru", "tel": None, "agree": "0"}
    assert [(f.row_number, f.field, f.rules, json.loads(f.raw_record)) for f in fields] == [
        (3, "email_consent", "email_consent_parses", {"agree": "maybe"}),
        (3, "sms_consent", "sms_consent_parses", {"agree": "maybe"})]


def test_a_bad_optional_field_is_set_to_null_and_the_customer_kept(write_config, warehouse_url, tmp_path,
                                                                  open_warehouse):
    """A valid customer with an implausible phone used to be quarantined whole and drop out
    of every email audience (the demo lost 40 customers this way)."""
    write_csv(tmp_path / "shop/customers/c.csv", CUSTOMERS_HEADER,
              "c1,a@shop.ru,+7 912 345-67-89 доб. 12,1", "c2,b@shop.ru,12345,1", "c3,not-an-address,+79123456789,1",
              *(f"k{i},k{i}@shop.ru,+7912000{i:04d},1" for i in range(40)))
    write_csv(tmp_path / "shop/orders/o.csv", ORDERS_HEADER, "o1,c1,2025-01-05 10:00:00,10")
    config = write_config({"orders": orders_source(), "customers": customers_source()}, warehouse=warehouse_url)
    [customers] = ingest(config, ["customers"])
    wh = open_warehouse(config)

    assert (customers["rows_valid"], customers["rows_quarantined"], customers["values_nulled"]) == (43, 0, 3)
    stored = {r.customer_id: (r.email, r.phone) for r in wh.rows(
        "SELECT customer_id, email, phone FROM customers WHERE customer_id LIKE 'c%'")}
    assert stored == {"c1": ("a@shop.ru", None), "c2": ("b@shop.ru", None), "c3": (None, "+79123456789")}
    assert [(f.row_number, f.record_key, f.field, f.rules, f.level, json.loads(f.raw_record))
            for f in quarantine(wh, "customers")] == [
        (1, "c1", "phone", "phone_plausible", "field", {"tel": "+7 912 345-67-89 доб. 12"}),
        (2, "c2", "phone", "phone_plausible", "field", {"tel": "12345"}),
        (3, "c3", "email", "email_plausible", "field", {"mail": "not-an-address"})]
    [run] = wh.rows("SELECT rows_failed, values_nulled, failed_per_rule FROM validation_runs")
    assert (run.rows_failed, run.values_nulled) == (0, 3)
    assert json.loads(run.failed_per_rule) == {"email_plausible": 1, "phone_plausible": 2}


def test_an_optional_field_broken_in_most_rows_fails_the_load_as_a_mapping_mistake(write_config, warehouse_url,
                                                                                  tmp_path, open_warehouse):
    write_csv(tmp_path / "shop/customers/c.csv", CUSTOMERS_HEADER,
              *(f"k{i},k{i}@shop.ru,{i},1" for i in range(20)))  # the id column mapped as the phone
    write_csv(tmp_path / "shop/orders/o.csv", ORDERS_HEADER, "o1,c1,2025-01-05 10:00:00,10")
    config = write_config({"orders": orders_source(), "customers": customers_source()}, warehouse=warehouse_url)
    with pytest.raises(ValidationThresholdError, match=r"phone_plausible would set phone to null in 20 of 20 rows"):
        ingest(config, ["customers"])
    assert not open_warehouse(config).scalar("SELECT count(*) FROM customers")
