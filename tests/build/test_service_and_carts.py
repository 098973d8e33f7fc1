"""Service quality as a churn signal (late deliveries, separate feedback scores), happy
one-off buyers of long-cycle goods among the advocates, and the richer carts (per-category
timing, the second step, quantities, the abandonment rate, per-category browse look-back).

Every expected value is worked out by hand from the rules in build/settings.py and
include/sql (never by running the SQL again); every test runs on DuckDB and PostgreSQL.
Dates are days (or hours) before the as-of day 2026-06-30, its end being the as-of moment.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from shop_builder import AS_OF, Shop, days_before, hours_before
from test_build_marts import FIXED_CYCLE, NO_MODELS, SOURCES, Marts, approx, stages
from winback.config import ConfigError


@pytest.fixture
def marts(write_config, open_warehouse, warehouse_url, today_is):
    """marts(segments) -> Marts on this test's warehouse; today is AS_OF, so builds are live."""
    today_is(AS_OF)

    def make(segments: dict) -> Marts:
        config = write_config(SOURCES, warehouse=warehouse_url, segments=segments)
        return Marts(config, open_warehouse(config))

    return make


def delivered(shop: Shop, order_id: str, customer_id: str, ordered: float, arrived: float,
              categories: tuple[str, ...] = ("general",)) -> Shop:
    """An order placed `ordered` days before the as-of day and delivered `arrived` days before it."""
    return shop.order(order_id, customer_id, days_before(ordered), status="delivered",
                      delivered_at=days_before(arrived), items=[(f"{c}-item", c) for c in categories])


# -- late deliveries -----------------------------------------------------------------------------------
def delivery_shop() -> Shop:
    shop = Shop()
    for customer in ("late", "on_time", "old_late", "sofa_and_lamp", "lamp_late"):
        shop.purchases(customer, [days_before(200)])  # an earlier purchase: nobody is a newcomer
    delivered(shop, "late-2", "late", 50, 46)  # 4 days against 3 promised: late, 46 days ago
    delivered(shop, "on_time-2", "on_time", 200, 197)  # exactly 3 days: on time
    delivered(shop, "on_time-3", "on_time", 50, 48)
    delivered(shop, "old_late-2", "old_late", 199, 190)  # 9 days, but outside the 90-day window
    delivered(shop, "old_late-3", "old_late", 50, 49)
    # 10 days: a sofa is promised in 14 days, and its lamp travels with it
    delivered(shop, "sofa_and_lamp-2", "sofa_and_lamp", 50, 40, ("furniture", "general"))
    delivered(shop, "lamp_late-2", "lamp_late", 50, 40)  # 10 days for a lamp alone: late
    return shop


DELIVERY = {"delivery": {"promised_days": 3, "categories": {"furniture": 14}}, **FIXED_CYCLE}


def test_late_deliveries_are_counted_and_make_a_customer_negative(marts):
    m = marts(DELIVERY).load(delivery_shop())
    m.build()

    facts = m.by("customer_facts")
    assert {c: (f["late_deliveries"], f["last_delivery_days"]) for c, f in facts.items()} == {
        "late": (1, approx(4)), "on_time": (0, approx(2)), "old_late": (1, approx(1)),
        "sofa_and_lamp": (0, approx(10)), "lamp_late": (1, approx(10))}
    assert facts["late"]["last_late_delivery_at"] == days_before(46)
    segments = m.by("customer_segments")
    assert {c: s["is_negative"] for c, s in segments.items()} == {
        "late": True, "on_time": False, "old_late": False, "sofa_and_lamp": False, "lamp_late": True}
    assert stages(m)["late"] == "negative"
    assert stages(m)["on_time"] == "regular"  # two purchases, 50 days ago: within the 60-day cycle


def test_late_delivery_rule_can_be_switched_off(marts):
    m = marts({**DELIVERY, "lifecycle": {"late_delivery_is_negative": False}}).load(delivery_shop())
    m.build()

    assert m.column("customer_facts", "late_deliveries")["late"] == 1  # still counted
    assert not any(m.column("customer_segments", "is_negative").values())
    assert stages(m)["late"] == "regular"


# -- separate feedback scores ------------------------------------------------------------------------
def test_the_lowest_of_the_feedback_scores_counts_for_the_negative_rule(marts):
    shop = Shop()
    for customer in ("low_service", "all_good", "product_six", "overall_only"):
        shop.purchases(customer, map(days_before, (200, 50)))
    (shop.feedback("low_service-2", 9, days_before(45), service_score=4)
         .feedback("all_good-2", 8, days_before(45), service_score=7, delivery_score=9, product_score=10)
         .feedback("product_six-2", 10, days_before(45), product_score=6)
         .feedback("overall_only-2", 7, days_before(45)))
    m = marts(FIXED_CYCLE).load(shop)
    m.build()

    facts = m.by("customer_facts")
    assert {c: (f["last_feedback_score"], f["last_feedback_lowest_score"]) for c, f in facts.items()} == {
        "low_service": (9, 4), "all_good": (8, 7), "product_six": (10, 6), "overall_only": (7, 7)}
    # negative at or below lifecycle.negative_max_score = 6
    assert stages(m) == {"low_service": "negative", "all_good": "regular", "product_six": "negative",
                         "overall_only": "regular"}


# -- advocates -------------------------------------------------------------------------------------------
def test_happy_one_off_buyers_of_long_cycle_goods_are_advocates(marts):
    shop = Shop()
    for customer, score in (("regular_happy", 9), ("regular_meh", 8)):
        shop.purchases(customer, map(days_before, (200, 50))).feedback(f"{customer}-2", score, days_before(45))
    for customer, category, score in (("sofa_happy", "furniture", 10), ("sofa_meh", "furniture", 7),
                                      ("coffee_happy", "general", 10), ("tv_happy", "electronics", 10)):
        shop.purchases(customer, [days_before(100)], category).feedback(f"{customer}-1", score, days_before(95))
    for customer in ("regular_happy", "regular_meh", "sofa_happy", "sofa_meh", "coffee_happy", "tv_happy"):
        shop.customer(customer, email=f"{customer}@example.com", email_consent=True)
    # furniture's configured cycle: 400 days (typical gap = its at-risk days), longer than a
    # year; electronics has no cycle of its own (the shop's), but is named long-cycle
    cycles = {"general": {"at_risk_days": 60, "churn_days": 120}, "furniture": {"at_risk_days": 400, "churn_days": 800}}
    m = marts({"churn": {"categories": cycles}, "advocates": {"long_cycle_categories": ["electronics"]},
               **NO_MODELS}).load(shop)
    m.build()

    assert stages(m) == {"regular_happy": "regular", "regular_meh": "regular", "sofa_happy": "one_off",
                         "sofa_meh": "one_off", "coffee_happy": "one_off", "tv_happy": "one_off"}
    assert m.column("customer_segments", "is_advocate") == {
        "regular_happy": True, "regular_meh": False, "sofa_happy": True, "sofa_meh": False,
        "coffee_happy": False, "tv_happy": True}
    members = m.rows("audience_members", "WHERE audience = 'advocates_referral'")
    assert sorted(r["customer_id"] for r in members) == ["regular_happy", "sofa_happy", "tv_happy"]


def test_registered_not_bought_has_a_default_audience(marts):
    shop = (Shop()
            .customer("browser", email="browser@example.com", email_consent=True, registered_at=days_before(20))
            .event("product_view", days_before(12), customer_id="browser", product_id="p1")
            .purchases("buyer", [days_before(100)]))
    m = marts(NO_MODELS).load(shop)
    m.build()

    members = m.rows("audience_members", "WHERE audience = 'registered_reminder'")
    assert [(r["customer_id"], r["product_ids"], r["channel"]) for r in members] == [("browser", "p1", "email")]


# -- carts -------------------------------------------------------------------------------------------------
def test_cart_timing_per_category_steps_quantities_and_the_abandonment_rate(marts):
    shop = (Shop()
            # k1: the same toy added twice: quantity 2, 4 hours ago (past 3): step 1
            .event("add_to_cart", hours_before(5), customer_id="k1", product_id="toy", category="toys", value=100)
            .event("add_to_cart", hours_before(4), customer_id="k1", product_id="toy", category="toys", value=100)
            # k2: a sofa 30 hours ago: furniture waits 48 hours
            .event("add_to_cart", hours_before(30), customer_id="k2", product_id="sofa", category="furniture",
                   value=30000)
            # k3: a sofa and a toy 50 hours ago: the cart waits for the sofa (48 h); 50 < 48 + 24: step 1
            .event("add_to_cart", hours_before(50), customer_id="k3", product_id="sofa", category="furniture",
                   value=30000)
            .event("add_to_cart", hours_before(50), customer_id="k3", product_id="toy", category="toys", value=100)
            # k4: a toy 30 hours ago: past 3 + 24 hours: step 2
            .event("add_to_cart", hours_before(30), customer_id="k4", product_id="toy", category="toys", value=100)
            # k5: added, removed, added again: one toy
            .event("add_to_cart", hours_before(7), customer_id="k5", product_id="toy", category="toys", value=100)
            .event("remove_from_cart", hours_before(6), customer_id="k5", product_id="toy")
            .event("add_to_cart", hours_before(5), customer_id="k5", product_id="toy", category="toys", value=100)
            # k6: bought what they added: a cart started, not abandoned
            .event("add_to_cart", hours_before(10), customer_id="k6", product_id="toy", category="toys", value=100)
            .order("k6-1", "k6", hours_before(8), items=[("toy", "toys", 100)]))
    m = marts({"carts": {"categories": {"furniture": {"abandon_after_hours": 48}}}, **NO_MODELS}).load(shop)
    summary = m.build()

    carts = m.by("abandoned_carts", "cart_key")
    assert {key: (c["items"], c["quantity"], c["cart_value"], c["abandon_after_hours"], c["step"])
            for key, c in carts.items()} == {
        "c:k1": (1, 2, Decimal("200.00"), approx(3), 1),
        "c:k3": (2, 2, Decimal("30100.00"), approx(48), 1),
        "c:k4": (1, 1, Decimal("100.00"), approx(3), 2),
        "c:k5": (1, 1, Decimal("100.00"), approx(3), 1)}
    # six carts started (k1-k6), four abandoned
    run = m.rows("build_runs")[0]
    assert (run["carts_started"], run["carts_abandoned"]) == (6, 4)
    assert run["cart_abandonment_rate"] == approx(4 / 6)
    assert summary["cart_abandonment_rate"] == approx(0.6667)


def test_without_a_follow_up_every_cart_is_at_step_one(marts):
    shop = Shop().event("add_to_cart", hours_before(30), customer_id="k4", product_id="toy", value=100)
    m = marts({"carts": {"follow_up_hours": None}, **NO_MODELS}).load(shop)
    m.build()
    assert m.column("abandoned_carts", "step", "cart_key") == {"c:k4": 1}


def test_browse_look_back_per_category(marts):
    shop = (Shop()
            .event("product_view", days_before(60), customer_id="f1", product_id="sofa", category="furniture")
            .event("product_view", days_before(20), customer_id="t1", product_id="toy", category="toys")
            .event("product_view", days_before(3), customer_id="t2", product_id="toy", category="toys")
            .event("product_view", days_before(30), customer_id="mix", product_id="sofa", category="furniture")
            .event("product_view", days_before(30), customer_id="mix", product_id="toy", category="toys"))
    m = marts({"carts": {"categories": {"furniture": {"browse_lookback_days": 90}}}, **NO_MODELS}).load(shop)
    m.build()

    # furniture views count 90 days back, the rest 7 (carts.browse_lookback_days)
    browsers = m.by("browse_abandoners", "browser_key")
    assert {key: (b["products_viewed"], b["product_ids"]) for key, b in browsers.items()} == {
        "c:f1": (1, "sofa"), "c:t2": (1, "toy"), "c:mix": (1, "sofa")}


# -- settings ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("segments, message", [
    ({"delivery": {"promised_days": 0}}, "segments.delivery.promised_days"),
    ({"delivery": {"categories": {"furniture": -1}}}, "segments.delivery.categories.furniture"),
    ({"carts": {"categories": {"furniture": {"abandon_after_hours": 0}}}},
     "segments.carts.categories.furniture.abandon_after_hours"),
    ({"carts": {"follow_up_hours": -1}}, "segments.carts.follow_up_hours"),
    ({"advocates": {"min_score": 11}}, "segments.advocates.min_score"),
], ids=["promised-days", "category-promise", "category-abandon", "follow-up", "advocate-score"])
def test_service_and_cart_settings_are_validated(write_config, segments, message):
    with pytest.raises(ConfigError) as error:
        write_config(SOURCES, segments=segments)
    assert message in str(error.value)

