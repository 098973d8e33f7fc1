"""call_funnel on a hand-made month of a call audience: spells written by hand into
audience_history, calls into contact_outcomes, purchases into orders; every figure
worked out by hand from the definitions in docs/measurement.md, on DuckDB and PostgreSQL."""

from __future__ import annotations

from datetime import date, datetime

import pyarrow as pa
import pytest
from shop_builder import Shop
from winback.build.builder import build
from winback.measure.spells import TABLES

SOURCES = {"orders": {"kind": "file", "path": "shop/orders/*.csv"}}
AS_OF = date(2026, 6, 30)
AUDIENCES = {
    "lapsed_calls": {"where": {"lifecycle_stage": ["lapsed"]}, "channel": "call", "identifiers": ["phone"]},
    "lapsed_mail": {"where": {"lifecycle_stage": ["lapsed"]}, "channel": "email"},
}
ARROW = {"text": pa.string(), "boolean": pa.bool_(), "date": pa.date32()}


def at(day: int, hour: int = 12, month: int = 5) -> datetime:
    return datetime(2026, month, day, hour)


def spells(wh, rows: list[tuple]) -> None:
    """(audience, customer, in_holdout, entered_on, left_on) as another build would append them."""
    history = TABLES["audience_history"][0]
    wh.execute(f"CREATE TABLE audience_history ({', '.join(f'{n} {wh.column_type(k)}' for n, k in history)})")
    data = [dict(zip(("audience", "member_key", "in_holdout", "entered_on", "left_on"), row)) for row in rows]
    for row in data:
        row["customer_id"] = row["member_key"]
    schema = pa.schema([(name, ARROW[kind]) for name, kind in history])
    with wh.begin() as conn:
        wh.write_arrow(conn, "audience_history", pa.Table.from_pylist(data, schema=schema))


def may_shop() -> Shop:
    shop = Shop()
    for n in range(1, 11):
        shop.order(f"old-{n}", f"m{n}", datetime(2025, 1, 1))  # everyone bought once, long ago
    return (shop
            .contact("m1", "agreed_to_return", at(5), "price")
            .order("m1-back", "m1", at(20))  # 15 days after the call: bought
            .contact("m2", "no_answer", at(5))
            .contact("m2", "agreed_to_return", at(8), "delivery")  # second try reaches
            .order("m2-late", "m2", at(10, month=7))  # 63 days after: too late (and after the as-of day)
            .contact("m3", "refused", at(6), "quality")
            .contact("m4", "wrong_number", at(6))
            .order("m4-own", "m4", at(9))  # bought after a wrong number: still a call-to-sale
            .contact("m5", "reached", at(7), "forgot")
            .order("m5-cancel", "m5", at(9), status="cancelled")  # not a purchase
            .contact("m6", "agreed_to_return", at(2), "price")  # before m6 entered the list
            .contact("m7", "agreed_to_return", at(20), channel="sms")  # not a call
            .contact("m8", "reached", at(1, month=6))  # after m8 left: not this spell
            .contact("m9", "agreed_to_return", at(12))  # held out, yet called: not listed
            .contact("m10", "reached", at(3, month=6))  # June spell
            .order("m10-b", "m10", at(4, month=6)))


@pytest.fixture
def funnel(write_config, open_warehouse, warehouse_url, today_is):
    today_is(AS_OF)

    def make(history: list[tuple] | None, **top):
        config = write_config(SOURCES, warehouse=warehouse_url, segments={"models": {"enabled": False}},
                              audiences=AUDIENCES, **top)
        wh = open_warehouse(config)
        may_shop().write(wh)
        if history is not None:
            spells(wh, history)
        build(config, AS_OF, warehouse=wh)
        return {(r.audience, r.month): r._mapping for r in wh.rows("SELECT * FROM call_funnel")}

    return make


HISTORY = [
    *((("lapsed_calls", f"m{n}", False, date(2026, 5, 4), None)) for n in (1, 2, 3, 4, 5, 7)),
    ("lapsed_calls", "m6", False, date(2026, 5, 4), None),
    ("lapsed_calls", "m8", False, date(2026, 5, 10), date(2026, 5, 20)),
    ("lapsed_calls", "m9", True, date(2026, 5, 4), None),
    ("lapsed_calls", "m10", False, date(2026, 6, 2), None),
    ("lapsed_mail", "m1", False, date(2026, 5, 4), None),  # an email audience has no call funnel
]


def test_call_funnel_of_a_hand_made_month(funnel):
    rows = funnel(HISTORY)
    assert set(rows) == {("lapsed_calls", date(2026, 5, 1)), ("lapsed_calls", date(2026, 6, 1))}
    may = rows[("lapsed_calls", date(2026, 5, 1))]
    # listed: m1-m8 (m9 is held out); called in the spell: m1, m2, m3, m4, m5
    # reached: m1, m2, m3 (refused), m5; agreed: m1, m2; bought within 30 days: m1, m4
    assert {k: may[k] for k in ("listed", "called", "reached", "agreed_to_return", "bought")} == {
        "listed": 8, "called": 5, "reached": 4, "agreed_to_return": 2, "bought": 2}
    assert (may["reach_rate"], may["agree_rate"], may["conversion_rate"]) == pytest.approx((4 / 5, 2 / 5, 2 / 5))
    assert (may["reference_agree_rate"], may["reference_conversion_rate"]) == (0.6, 0.15)
    june = rows[("lapsed_calls", date(2026, 6, 1))]
    assert (june["listed"], june["called"], june["reached"], june["agreed_to_return"], june["bought"]) == (
        1, 1, 1, 0, 1)


def test_bought_means_a_purchase_within_the_window_after_a_call(funnel):
    # measurement.window_days 10: m1 bought 15 days after its call, no longer counted
    may = funnel(HISTORY, measurement={"window_days": 10})[("lapsed_calls", date(2026, 5, 1))]
    assert may["bought"] == 1 and may["conversion_rate"] == pytest.approx(1 / 5)


def test_no_audience_history_means_an_empty_call_funnel(funnel):
    assert funnel(None) == {}


def test_no_month_without_listed_members(funnel):
    rows = funnel([("lapsed_calls", "m9", True, date(2026, 5, 4), None)])  # only a held-out member
    assert rows == {}
