"""Every validation rule, each with a row that breaks it (and a valid row that passes).

The sources here use the canonical column names, so no mapping is needed. Rules do
not depend on the warehouse, so these run on DuckDB only.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, timedelta

import pytest
from winback.ingest.pipeline import ingest
from winback.ingest.settings import ValidationSettings
from winback.ingest.validation import row_rules
from winback.schema import ENTITIES

NOW = datetime.now(UTC).replace(tzinfo=None)

VALID = {
    "customers": {"customer_id": "C1", "email": "a.b@mail.ru", "phone": "+7 912 345-67-89", "first_name": "Иван",
                  "city": "Пермь", "registered_at": "2025-01-01 10:00:00", "birth_date": "1985-03-15", "email_consent": "1", "sms_consent": "0",
                  "ads_consent": "1", "unsubscribed_at": "2025-03-01 10:00:00", "updated_at": "2025-03-02 10:00:00"},
    "orders": {"order_id": "O1", "customer_id": "C1", "created_at": "2025-01-05 10:00:00", "total_amount": "10.50",
               "status": "completed", "currency": "RUB", "updated_at": "2025-01-06 10:00:00",
               "delivered_at": "2025-01-06 10:00:00", "visitor_id": "v1", "promo_code": ""},
    "order_items": {"order_id": "O1", "product_id": "P1", "category": "coffee", "quantity": "2", "price": "5",
                    "updated_at": "2025-01-05 10:00:00"},
    "events": {"visitor_id": "v1", "customer_id": "", "session_id": "s1", "event_type": "page_view",
               "product_id": "", "category": "", "value": "3.5", "occurred_at": "2025-01-05T10:00:00Z"},
    "feedback": {"order_id": "O1", "customer_id": "C1", "score": "9", "comment": "ok",
                 "created_at": "2025-01-07 10:00:00", "service_score": "8", "delivery_score": "9",
                 "product_score": "10"},
    "mailing_events": {"customer_id": "C1", "campaign_id": "camp-1", "event_type": "open",
                       "occurred_at": "2025-01-05 10:00:00"},
    "contact_outcomes": {"customer_id": "C1", "channel": "call", "contacted_at": "2025-02-01 10:00:00",
                         "outcome": "agreed_to_return", "reason": "price", "comment": "will come back"},
}

FUTURE = (NOW + timedelta(days=2)).strftime("%Y-%m-%d %H:%M:%S")
SOON = (NOW + timedelta(hours=12)).strftime("%Y-%m-%d %H:%M:%S")
UNPARSEABLE = {"timestamp": "2025-13-45 10:00:00", "date": "1985-02-30", "money": "ten", "number": "two", "integer": "7.5", "boolean": "maybe"}


def breaking_values(entity_name: str, rule) -> dict[str, str]:
    """Column values that break `rule` (derived from the rule, so every rule is covered)."""
    entity = ENTITIES[entity_name]
    column = rule.kwargs.get("column", "")
    if rule.name.endswith("_present") and "_or_" in rule.name:
        return {c: "" for c in entity.one_of}
    if rule.name == "delivered_after_created":
        return {"delivered_at": "2025-01-04 10:00:00"}
    magnitude = column.endswith("__out_of_range")
    column = column.removesuffix("__raw").removesuffix("__unparsed").removesuffix("__out_of_range")
    suffix = rule.name.removeprefix(column + "_")
    kind = entity.column(column).type if column in entity.column_names else None
    value = {
        "present": "",
        "parses": UNPARSEABLE.get(kind, ""),
        "in_range": "inf" if magnitude else "11" if kind == "integer" else FUTURE,
        "non_negative": "-1",
        "allowed": "bogus",
        "valid": "RUBL",
        "plausible": "ivan@@mail" if column == "email" else "12-34",
    }[suffix]
    if entity_name == "orders" and column == "created_at" and suffix == "in_range":
        return {column: value, "delivered_at": ""}  # else delivered_after_created breaks too
    return {column: value}


def all_rules():
    for entity in ENTITIES.values():
        for rule in row_rules(entity, ValidationSettings()):
            yield pytest.param(entity.name, breaking_values(entity.name, rule), rule.name,
                               id=f"{entity.name}.{rule.name}")


# Boundaries and spellings worth a case of their own.
EXTRA = [
    ("customers", {"email": "ivan mail.ru"}, "email_plausible"),
    ("customers", {"phone": "call me"}, "phone_plausible"),
    ("customers", {"registered_at": "1999-12-31 10:00:00"}, "registered_at_in_range"),
    ("customers", {"registered_at": "yesterday"}, "registered_at_parses"),
    ("feedback", {"score": "0"}, "score_in_range"),
    ("orders", {"total_amount": "1,5"}, "total_amount_parses"),
    # Not a number, infinite, too large: a bad row, never an error that stops the load.
    ("orders", {"total_amount": "NaN"}, "total_amount_parses"),
    ("orders", {"total_amount": "inf"}, "total_amount_in_range"),
    ("orders", {"total_amount": "-Infinity"}, "total_amount_in_range"),
    ("orders", {"total_amount": "10000000000000000"}, "total_amount_in_range"),
    ("order_items", {"quantity": "nan"}, "quantity_parses"),
    ("order_items", {"quantity": "inf"}, "quantity_in_range"),
    ("feedback", {"score": "1e20"}, "score_parses"),
    ("feedback", {"score": "inf"}, "score_parses"),
    ("events", {"value": "nan"}, "value_parses"),
]


def write_rows(path, rows: list[dict]) -> None:
    columns = list(rows[0])
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(buffer.getvalue(), encoding="utf-8")


def run_entity(write_config, tmp_path, open_warehouse, entity: str, rows: list[dict]):
    write_rows(tmp_path / f"shop/{entity}/{entity}.csv", rows)
    sources = {"orders": {"kind": "file", "path": "shop/orders/*.csv", "max_bad_share": 1.0}}
    sources[entity] = {"kind": "file", "path": f"shop/{entity}/*.csv", "max_bad_share": 1.0}
    config = write_config(sources, warehouse=f"duckdb:///{tmp_path / 'wh.duckdb'}")
    [result] = ingest(config, [entity])
    return result, open_warehouse(config)


@pytest.mark.parametrize("entity,broken,rule", [*all_rules(), *(pytest.param(*case, id=f"{case[0]}.{case[2]}:{next(iter(case[1].values()))}") for case in EXTRA)])
def test_a_row_breaking_a_rule_is_quarantined_for_that_rule(write_config, tmp_path, open_warehouse, entity, broken, rule):
    good = dict(VALID[entity])
    bad = dict(good)
    for key in ENTITIES[entity].key:
        if key in bad:
            bad[key] = "BAD"
    if ENTITIES[entity].derived_key_from:  # a key of its own, not the good row's
        bad[{"events": "session_id", "contact_outcomes": "customer_id"}.get(entity, "campaign_id")] = "BAD"
    bad.update(broken)
    result, wh = run_entity(write_config, tmp_path, open_warehouse, entity, [good, bad])
    assert result["failed_per_rule"] == {rule: 1}
    [quarantined] = wh.rows("SELECT rules, row_number, level, field FROM quarantine")
    assert (quarantined.rules, quarantined.row_number) == (rule, 2)
    field = next(r.field for r in row_rules(ENTITIES[entity], ValidationSettings()) if r.name == rule)
    if field is None:  # the record is bad: it stays out
        assert (result["rows_valid"], quarantined.level, quarantined.field) == (1, "row", None)
    else:  # an optional detail is bad: the record loads without it
        assert (result["rows_valid"], result["values_nulled"]) == (2, 1)
        assert (quarantined.level, quarantined.field) == ("field", field)
        key = ENTITIES[entity].key[0]
        stored = wh.scalar(f"SELECT {field} FROM {entity} WHERE {key} = 'BAD'") if key in bad else None
        assert stored is None


@pytest.mark.parametrize("phone", ["8 (912) 345-67-89", "+7 912 3456789", "79123456789", "+44 20 7946 0958", ""])
def test_plausible_phones_pass(write_config, tmp_path, open_warehouse, phone):
    row = {**VALID["customers"], "phone": phone}
    result, _ = run_entity(write_config, tmp_path, open_warehouse, "customers", [row])
    assert result["failed_per_rule"] == {}


def test_emails_are_stored_trimmed_and_lowercased(write_config, tmp_path, open_warehouse):
    row = {**VALID["customers"], "email": "  Ivan.Petrov@Mail.RU "}
    _, wh = run_entity(write_config, tmp_path, open_warehouse, "customers", [row])
    assert wh.scalar("SELECT email FROM customers") == "ivan.petrov@mail.ru"


def test_a_timestamp_less_than_a_day_ahead_is_accepted(write_config, tmp_path, open_warehouse):
    row = {**VALID["orders"], "created_at": SOON, "delivered_at": ""}
    result, _ = run_entity(write_config, tmp_path, open_warehouse, "orders", [row])
    assert result["failed_per_rule"] == {}


def test_events_without_an_id_get_a_stable_content_key(write_config, tmp_path, open_warehouse):
    rows = [VALID["events"], {**VALID["events"], "event_type": "product_view"}]
    _, wh = run_entity(write_config, tmp_path, open_warehouse, "events", rows)
    first = sorted(r[0] for r in wh.rows("SELECT event_id FROM events"))
    assert len(first) == 2 and all(len(i) == 20 for i in first)
    # The same export read again yields the same ids: nothing is duplicated.
    (tmp_path / "shop/events/events.csv").rename(tmp_path / "shop/events/events_copy.csv")
    sources = {"orders": {"kind": "file", "path": "shop/orders/*.csv"},
               "events": {"kind": "file", "path": "shop/events/*.csv"}}
    [again] = ingest(write_config(sources, warehouse=f"duckdb:///{tmp_path / 'wh.duckdb'}"), ["events"])
    assert (again["rows"], again["inserted"], again["updated"]) == (2, 0, 0)
    assert sorted(r[0] for r in wh.rows("SELECT event_id FROM events")) == first


@pytest.mark.parametrize("text,expected", [
    ("2025-01-05 10:00:00", datetime(2025, 1, 5, 7, 0)),          # naive: Moscow local
    ("2025-01-05T10:00:00Z", datetime(2025, 1, 5, 10, 0)),       # explicit UTC
    ("2025-01-05T10:00:00+05:00", datetime(2025, 1, 5, 5, 0)),   # explicit offset
    ("2025-01-05", datetime(2025, 1, 4, 21, 0)),                 # a date: local midnight
])
def test_iso_timestamps_are_stored_in_utc(write_config, tmp_path, open_warehouse, text, expected):
    row = {**VALID["orders"], "created_at": text, "delivered_at": ""}
    write_rows(tmp_path / "shop/orders/o.csv", [row])
    config = write_config({"orders": {"kind": "file", "path": "shop/orders/*.csv"}},
                          warehouse=f"duckdb:///{tmp_path / 'wh.duckdb'}", timezone="Europe/Moscow")
    ingest(config)
    assert open_warehouse(config).scalar("SELECT created_at FROM orders") == expected


@pytest.mark.parametrize("text,fmt", [
    ("1985-03-15", None),                      # ISO
    ("15.03.1985", "%d.%m.%Y %H:%M:%S"),       # the date part of the source's timestamp_format
    ("1985-03-15", "%d.%m.%Y %H:%M:%S"),       # ISO whatever the format
])
def test_a_birth_date_is_a_calendar_day_never_shifted_by_the_zone(write_config, tmp_path, open_warehouse, text, fmt):
    write_rows(tmp_path / "shop/customers/c.csv", [{"customer_id": "C1", "birth_date": text}])
    customers = {"kind": "file", "path": "shop/customers/*.csv", **({"timestamp_format": fmt} if fmt else {})}
    config = write_config({"orders": {"kind": "file", "path": "shop/orders/*.csv"}, "customers": customers},
                          warehouse=f"duckdb:///{tmp_path / 'wh.duckdb'}", timezone="Europe/Moscow")
    ingest(config, ["customers"])
    assert open_warehouse(config).scalar("SELECT birth_date FROM customers") == date(1985, 3, 15)


@pytest.mark.parametrize("text,expected", [("1", True), ("да", True), ("Yes", True), ("0", False), ("нет", False), ("", None)])
def test_consent_flags_accept_common_spellings(write_config, tmp_path, open_warehouse, text, expected):
    row = {**VALID["customers"], "email_consent": text}
    _, wh = run_entity(write_config, tmp_path, open_warehouse, "customers", [row])
    assert wh.scalar("SELECT email_consent FROM customers") is expected


def test_configured_currency_list_narrows_the_iso_codes(write_config, tmp_path, open_warehouse):
    write_rows(tmp_path / "shop/orders/o.csv", [VALID["orders"], {**VALID["orders"], "order_id": "O2", "currency": "USD"}])
    config = write_config({"orders": {"kind": "file", "path": "shop/orders/*.csv", "max_bad_share": 1.0}},
                          warehouse=f"duckdb:///{tmp_path / 'wh.duckdb'}", validation={"currencies": ["RUB"]})
    [result] = ingest(config)
    assert result["failed_per_rule"] == {"currency_valid": 1}
