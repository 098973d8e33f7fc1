"""Why customers leave and what to offer them: churn_reasons and
customer_segments.winback_offer on a hand-built shop with contact outcomes, on DuckDB and
PostgreSQL. Expected values are worked out by hand from include/sql/marts/churn_reasons.sql,
customer_segments.sql and the defaults in build/settings.py.

Dates are days before the as-of day 2026-06-30 (shop_builder.days_before). With the fixed
cycle below a customer whose last order is 200 days old is lapsed (> 120), 90 days old
at risk (> 60), 10 days old regular.
"""

from __future__ import annotations

import pytest
from shop_builder import AS_OF, Shop, days_before
from winback.build.builder import build
from winback.config import ConfigError

SOURCES = {"orders": {"kind": "file", "path": "shop/orders/*.csv"}}
CYCLE = {"at_risk_days": 60, "churn_days": 120}
SEGMENTS = {"models": {"enabled": False}, "churn": {"categories": {"general": CYCLE, "toys": CYCLE}}}
LAPSED, AT_RISK, REGULAR = (300, 200), (200, 90), (100, 10)


def shop() -> Shop:
    s = Shop()
    for n, (customer, history, category) in enumerate((
        ("l_price", LAPSED, "general"), ("l_price2", LAPSED, "general"), ("l_late", LAPSED, "general"),
        ("l_moved", LAPSED, "general"), ("l_old", LAPSED, "general"), ("l_none", LAPSED, "general"),
        ("a_service", AT_RISK, "general"), ("a_future", AT_RISK, "general"), ("r_price", REGULAR, "general"),
        ("t1", LAPSED, "toys"), ("t2", LAPSED, "toys"), ("t3", LAPSED, "toys"),
    )):
        s.customer(customer, phone=f"+7900000{n:04d}")
        s.purchases(customer, map(days_before, history), category)
    return (s
            .contact("l_price", "refused", days_before(100), "quality")
            .contact("l_price", "agreed_to_return", days_before(20), "price")  # the last reason counts
            .contact("l_price2", "reached", days_before(10), "price", channel="sms")
            .contact("l_late", "reached", days_before(30), "delivery")
            .contact("l_late", "no_answer", days_before(5))  # no reason: says nothing new
            .contact("l_moved", "reached", days_before(40), "moved")
            .contact("l_old", "reached", days_before(400), "price")  # before the 365-day period
            .contact("a_service", "refused", days_before(15), "service", comment="rude courier")
            .contact("a_future", "reached", days_before(50), "price")
            .contact("a_future", "reached", days_before(-2), "delivery")  # after the as-of day: unseen
            .contact("r_price", "reached", days_before(5), "price")
            .contact("t1", "reached", days_before(10), "quality")
            .contact("t2", "reached", days_before(70), "quality")
            .contact("t3", "reached", days_before(80), "assortment"))


@pytest.fixture
def built(write_config, open_warehouse, warehouse_url, today_is):
    """built(segments=..., audiences=...) -> the warehouse after loading shop() and one
    build as of AS_OF."""
    today_is(AS_OF)

    def make(segments: dict | None = None, **top):
        config = write_config(SOURCES, warehouse=warehouse_url, segments={**SEGMENTS, **(segments or {})}, **top)
        wh = open_warehouse(config)
        shop().write(wh)
        build(config, AS_OF, warehouse=wh)
        return wh

    return make


def reasons(wh) -> dict[tuple, tuple]:
    rows = wh.rows("SELECT main_category, lifecycle_stage, reason, customers, share FROM churn_reasons")
    return {(r.main_category, r.lifecycle_stage, r.reason): (r.customers, pytest.approx(r.share)) for r in rows}


def offers(wh) -> dict[str, tuple]:
    rows = wh.rows("SELECT customer_id, lifecycle_stage, winback_offer FROM customer_segments")
    return {r.customer_id: (r.lifecycle_stage, r.winback_offer) for r in rows}


def test_churn_reasons_count_the_last_reason_per_category_and_stage(built):
    wh = built()
    assert reasons(wh) == {
        # l_price (price, not its earlier quality), l_price2 (by SMS), l_late, l_moved;
        # l_old's reason is older than 365 days, l_none gave none.
        ("general", "lapsed", "price"): (2, 2 / 4),
        ("general", "lapsed", "delivery"): (1, 1 / 4),
        ("general", "lapsed", "moved"): (1, 1 / 4),
        # a_future's delivery is after the as-of day
        ("general", "at_risk", "service"): (1, 1 / 2),
        ("general", "at_risk", "price"): (1, 1 / 2),
        ("general", "regular", "price"): (1, 1.0),
        ("toys", "lapsed", "quality"): (2, 2 / 3),
        ("toys", "lapsed", "assortment"): (1, 1 / 3),
    }


def test_churn_reasons_period_is_configurable(built):
    wh = built({"churn_reasons": {"period_days": 60}})  # from 2026-05-02: 59 days before the as-of day or later
    assert reasons(wh)[("toys", "lapsed", "quality")] == (1, 1.0)  # t2 (70 days) and t3 (80) drop out
    assert ("toys", "lapsed", "assortment") not in reasons(wh)
    assert reasons(wh)[("general", "lapsed", "price")] == (2, 2 / 4)


def test_winback_offer_follows_the_last_stated_reason_for_lapsed_and_at_risk_only(built):
    assert offers(built()) == {
        "l_price": ("lapsed", "discount"),
        "l_price2": ("lapsed", "discount"),
        "l_late": ("lapsed", "free_delivery"),
        "l_moved": ("lapsed", "reminder"),  # a reason the map does not name
        "l_old": ("lapsed", "discount"),  # an old reason still says what they want
        "l_none": ("lapsed", "reminder"),  # never stated one
        "a_service": ("at_risk", "quality_call"),
        "a_future": ("at_risk", "discount"),
        "r_price": ("regular", None),  # buying: no win-back offer
        "t1": ("lapsed", "quality_call"),
        "t2": ("lapsed", "quality_call"),
        "t3": ("lapsed", "reminder"),
    }


def test_winback_offers_map_is_configurable(built):
    wh = built({"winback_offers": {"price": "coupon_10", "moved": "no_offer", "none": "newsletter"}})
    got = offers(wh)
    assert {c: got[c][1] for c in ("l_price", "l_late", "l_moved", "l_none", "a_service", "r_price")} == {
        "l_price": "coupon_10", "l_late": "newsletter", "l_moved": "no_offer", "l_none": "newsletter",
        "a_service": "newsletter", "r_price": None}


def test_an_audience_selects_by_winback_offer_and_carries_it(built):
    audiences = {"price_calls": {"where": {"winback_offer": ["discount"]}, "channel": "call",
                                 "identifiers": ["phone"], "holdout": 0},
                 "winback_all": {"where": {"lifecycle_stage": ["at_risk", "regular"]}, "channel": "call",
                                 "identifiers": ["phone"], "holdout": 0}}
    wh = built(audiences=audiences)
    rows = wh.rows("SELECT audience, customer_id, winback_offer FROM audience_members ORDER BY 1, 2")
    assert [tuple(r) for r in rows] == [
        ("price_calls", "a_future", "discount"), ("price_calls", "l_old", "discount"),
        ("price_calls", "l_price", "discount"), ("price_calls", "l_price2", "discount"),
        ("winback_all", "a_future", "discount"), ("winback_all", "a_service", "quality_call"),
        ("winback_all", "r_price", None)]


@pytest.mark.parametrize("offers,message", [
    ({"price": "discount"}, "segments.winback_offers: `none` is required"),
    ({"prize": "discount", "none": "reminder"}, "segments.winback_offers: unknown reason prize"),
    ({"price": "10% off", "none": "reminder"}, "segments.winback_offers.price"),
], ids=["no-none", "unknown-reason", "offer-name"])
def test_winback_offers_errors_name_the_key(write_config, offers, message):
    with pytest.raises(ConfigError) as error:
        write_config(SOURCES, segments={"winback_offers": offers})
    assert message in str(error.value)


def test_churn_reasons_period_must_be_positive(write_config):
    with pytest.raises(ConfigError) as error:
        write_config(SOURCES, segments={"churn_reasons": {"period_days": 0}})
    assert "segments.churn_reasons.period_days" in str(error.value)
