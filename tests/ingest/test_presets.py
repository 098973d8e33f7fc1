"""The ready-made configurations in include/config/presets/, each loading a small file
written in the exact shape of the export it is for (headers, encoding, separators,
number and date formats, statuses), as a new user would: copy, check, ingest."""

from __future__ import annotations

import shutil
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import pytest
from conftest import REPO
from winback.config import load_config
from winback.ingest.check import check
from winback.ingest.pipeline import ingest

PRESETS = REPO / "include/config/presets"


def use_preset(name: str, tmp_path: Path, monkeypatch, warehouse_url: str):
    copy = tmp_path / f"{name}.yaml"
    shutil.copy(PRESETS / f"{name}.yaml", copy)
    monkeypatch.setenv("WINBACK_HOME", str(tmp_path))
    monkeypatch.setenv("WINBACK_WAREHOUSE_URL", warehouse_url)
    return load_config(copy)


def load_preset(name: str, tmp_path: Path, monkeypatch, warehouse_url: str, open_warehouse):
    """Copy, check (every entity would load), ingest (nothing quarantined): the warehouse."""
    config = use_preset(name, tmp_path, monkeypatch, warehouse_url)
    found = check(config)
    assert found.ok
    if name == "shopify":  # the orders export names no product category
        assert any(lack.startswith("order items have no category") for lack in found.lacks)
    results = ingest(config)
    assert {r["entity"]: r["rows_quarantined"] for r in results} == {r["entity"]: 0 for r in results}
    return open_warehouse(config)


def write(path: Path, *lines: str, encoding: str = "utf-8", newline: str = "\n") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes("".join(line + newline for line in lines).encode(encoding))


SHOPIFY_HEADER = (
    "Name,Email,Financial Status,Paid at,Fulfillment Status,Fulfilled at,Accepts Marketing,Currency,Subtotal,"
    "Shipping,Taxes,Total,Discount Code,Discount Amount,Shipping Method,Created at,Lineitem quantity,"
    "Lineitem name,Lineitem price,Lineitem compare at price,Lineitem sku,Lineitem requires shipping,"
    "Lineitem taxable,Lineitem fulfillment status,Billing Name,Billing Street,Billing Address1,Billing Address2,"
    "Billing Company,Billing City,Billing Zip,Billing Province,Billing Country,Billing Phone,Shipping Name,"
    "Shipping Street,Shipping Address1,Shipping Address2,Shipping Company,Shipping City,Shipping Zip,"
    "Shipping Province,Shipping Country,Shipping Phone,Notes,Note Attributes,Cancelled at,Payment Method,"
    "Payment Reference,Refunded Amount,Vendor,Outstanding Balance,Employee,Location,Device ID,Id,Tags,Risk Level,"
    "Source,Lineitem discount,Tax 1 Name,Tax 1 Value,Tax 2 Name,Tax 2 Value,Tax 3 Name,Tax 3 Value,Tax 4 Name,"
    "Tax 4 Value,Tax 5 Name,Tax 5 Value,Phone,Receipt Number,Duties,Billing Province Name,Shipping Province Name,"
    "Payment ID,Payment Terms Name,Next Payment Due At,Payment References"
)


def shopify_row(name, email, status, accepts, total, code, created, qty, item, price, sku, phone=""):
    fields = {"Name": name, "Email": email, "Financial Status": status, "Accepts Marketing": accepts,
              "Currency": "EUR" if status else "", "Total": total, "Discount Code": code, "Created at": created,
              "Lineitem quantity": qty, "Lineitem name": item, "Lineitem price": price, "Lineitem sku": sku,
              "Billing Name": "Anna Test" if status else "", "Billing Street": "1, Main St" if status else "",
              "Phone": phone}
    return ",".join(f'"{fields[c]}"' if "," in fields.get(c, "") else fields.get(c, "")
                    for c in SHOPIFY_HEADER.split(","))


def test_shopify_orders_export(tmp_path, monkeypatch, warehouse_url, open_warehouse):
    write(tmp_path / "exports/shopify/orders_export_1.csv", *[
        SHOPIFY_HEADER,
        shopify_row("#1001", "anna@example.com", "paid", "yes", "53.91", "WELCOME10", "2025-10-07 09:50:26 +0200",
                    "3", "Collagen mask", "34.90", "MASK-1", "+33610826417"),
        # the same order's second line item: the order's fields are blank
        shopify_row("#1001", "anna@example.com", "", "", "", "", "", "1", "Serum", "19.01", "SER-2"),
        shopify_row("#1002", "bob@example.com", "refunded", "no", "12.00", "", "2025-10-08 10:00:00 +0200",
                    "1", "Soap", "12.00", "SOAP-3"),
    ])
    wh = load_preset("shopify", tmp_path, monkeypatch, warehouse_url, open_warehouse)
    assert [tuple(r) for r in wh.rows("SELECT order_id, customer_id, created_at, total_amount, status, currency, "
                                      "promo_code FROM orders ORDER BY order_id")] == [
        ("#1001", "anna@example.com", datetime(2025, 10, 7, 7, 50, 26), Decimal("53.91"), "paid", "EUR", "WELCOME10"),
        ("#1002", "bob@example.com", datetime(2025, 10, 8, 8, 0), Decimal("12.00"), "returned", "EUR", None)]
    assert [tuple(r) for r in wh.rows("SELECT order_id, product_id, quantity, price FROM order_items "
                                      "ORDER BY order_id, product_id")] == [
        ("#1001", "MASK-1", 3.0, Decimal("34.90")), ("#1001", "SER-2", 1.0, Decimal("19.01")),
        ("#1002", "SOAP-3", 1.0, Decimal("12.00"))]
    assert [tuple(r) for r in wh.rows("SELECT customer_id, email, email_consent FROM customers "
                                      "ORDER BY customer_id")] == [
        ("anna@example.com", "anna@example.com", True), ("bob@example.com", "bob@example.com", False)]


def test_bitrix_orders_in_cp1251_with_decimal_commas(tmp_path, monkeypatch, warehouse_url, open_warehouse):
    write(tmp_path / "exports/bitrix/orders_2025-01.csv", *[
        "ID;Дата создания;Дата изменения;Статус;Сумма;Валюта;ID покупателя;Дата доставки;Купон",
        "101;05.01.2025 14:30:00;06.01.2025 10:00:00;F;1 234,50;RUB;7;06.01.2025 09:00:00;",
        "102;06.01.2025 09:15:00;06.01.2025 09:15:00;Принят, ожидается оплата;990,00;RUB;8;;ВЕСНА10",
        "103;07.01.2025 11:00:00;08.01.2025 12:00:00;Отменен;15 000,00;RUB;7;;",
    ], encoding="cp1251", newline="\r\n")
    write(tmp_path / "exports/bitrix/users.csv", *[
        "ID;E-Mail;Телефон;Имя;Город;Дата регистрации;Подписка на рассылку;Дата рождения",
        "7;olga@example.ru;+7 (912) 000-00-01;Ольга;Москва;01.12.2024 10:00:00;Да;15.03.1985",
        "8;petr@example.ru;;Пётр;Казань;02.12.2024 10:00:00;Нет;",
    ], encoding="cp1251", newline="\r\n")
    wh = load_preset("bitrix", tmp_path, monkeypatch, warehouse_url, open_warehouse)
    assert [tuple(r) for r in wh.rows("SELECT order_id, customer_id, created_at, total_amount, status, "
                                      "delivered_at, promo_code FROM orders ORDER BY order_id")] == [
        ("101", "7", datetime(2025, 1, 5, 11, 30), Decimal("1234.50"), "completed", datetime(2025, 1, 6, 6, 0), None),
        ("102", "8", datetime(2025, 1, 6, 6, 15), Decimal("990.00"), "pending", None, "ВЕСНА10"),
        ("103", "7", datetime(2025, 1, 7, 8, 0), Decimal("15000.00"), "cancelled", None, None)]
    rows = wh.rows("SELECT customer_id, first_name, email_consent, birth_date FROM customers ORDER BY customer_id")
    assert [(r.customer_id, r.first_name, r.email_consent, str(r.birth_date)) for r in rows] == [
        ("7", "Ольга", True, "1985-03-15"), ("8", "Пётр", False, "None")]


def test_woocommerce_order_export(tmp_path, monkeypatch, warehouse_url, open_warehouse):
    header = ("order_id,order_number,order_date,paid_date,status,shipping_total,shipping_tax_total,fee_total,"
              "fee_tax_total,tax_total,cart_discount,order_discount,discount_total,order_total,order_subtotal,"
              "order_currency,payment_method,payment_method_title,transaction_id,customer_ip_address,"
              "customer_user_agent,shipping_method,customer_id,customer_user,customer_email,billing_first_name,"
              "billing_last_name,billing_company,billing_email,billing_phone,billing_address_1,billing_address_2,"
              "billing_postcode,billing_city,billing_state,billing_country,customer_note,coupon_items,line_item_1")
    rows = [
        ("2001,2001,2025-02-01 10:00:00,2025-02-01 10:05:00,completed,300,0,0,0,0,0,0,0,1800.00,1500.00,RUB,cod,"
        "Cash on delivery,,10.0.0.1,Mozilla,Flat rate,15,15,ivan@example.ru,Ivan,Petrov,,ivan@example.ru,"
        "+79120000015,Lenina 1,,101000,Moscow,,RU,,code:SPRING10|amount:100.00,name:Mug|product_id:12|quantity:2|total:1500"),
        ("2002,2002,2025-02-02 12:00:00,,on-hold,0,0,0,0,0,0,0,0,500.00,500.00,RUB,bacs,Bank transfer,,10.0.0.2,"
        "Mozilla,,0,0,guest@example.ru,Guest,,,guest@example.ru,,,,,,,RU,,,name:Tea|product_id:13|quantity:1|total:500"),
        ("2003,2003,2025-02-03 09:00:00,,refunded,0,0,0,0,0,0,0,0,700.00,700.00,RUB,cod,Cash on delivery,,10.0.0.1,"
        "Mozilla,,15,15,ivan@example.ru,Ivan,Petrov,,ivan@example.ru,+79120000015,Lenina 1,,101000,Moscow,,RU,,,"
        "name:Pot|product_id:14|quantity:1|total:700"),
    ]
    write(tmp_path / "exports/woocommerce/order_export_2025-02.csv", header, *rows)
    wh = load_preset("woocommerce", tmp_path, monkeypatch, warehouse_url, open_warehouse)
    # the guest checkout (customer 0) is left out on purpose, not quarantined
    assert [tuple(r) for r in wh.rows("SELECT order_id, customer_id, created_at, total_amount, status "
                                      "FROM orders ORDER BY order_id")] == [
        ("2001", "15", datetime(2025, 2, 1, 7, 0), Decimal("1800.00"), "completed"),
        ("2003", "15", datetime(2025, 2, 3, 6, 0), Decimal("700.00"), "returned")]
    assert wh.scalar("SELECT rows_filtered FROM load_runs WHERE entity = 'orders'") == 1
    assert [tuple(r) for r in wh.rows("SELECT customer_id, email, first_name FROM customers")] == [
        ("15", "ivan@example.ru", "Ivan")]


@pytest.mark.parametrize("preset", sorted(p.stem for p in PRESETS.glob("*.yaml")))
def test_every_preset_is_a_valid_configuration_that_says_how_to_start(preset, tmp_path, monkeypatch):
    use_preset(preset, tmp_path, monkeypatch, f"duckdb:///{tmp_path / 'wh.duckdb'}")
    text = (PRESETS / f"{preset}.yaml").read_text(encoding="utf-8")
    assert text.startswith("# ") and "check" in text.split("\n\n")[0]
