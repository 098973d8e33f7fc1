"""Triggers (triggers_due), loyalty tiers, discount dependence and referrals on small
hand-built shops; every expected value is worked out by hand from the rules in
build/settings.py (segments.triggers, loyalty, discounts, referrals) and the SQL, on
DuckDB and PostgreSQL. As of 2026-06-30 (the build's moment: 2026-07-01 00:00) unless a
test says otherwise."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from shop_builder import Shop, days_before, hours_before
from test_build_marts import FIXED_CYCLE, NO_MODELS, SOURCES, Marts
from winback.config import ConfigError

D = date.fromisoformat


@pytest.fixture
def marts(write_config, open_warehouse, warehouse_url, today_is):
    """marts(segments, reuse=...) -> Marts on this test's warehouse, as test_build_marts's."""
    today_is(date(2026, 6, 30))

    def make(segments: dict | None = None, reuse: Marts | None = None, **top) -> Marts:
        config = write_config(SOURCES, warehouse=warehouse_url, segments=segments or NO_MODELS, **top)
        return Marts(config, reuse.wh if reuse else open_warehouse(config))

    return make


def consenting(shop: Shop, *customers: str) -> Shop:
    """Give these customers an email address and email consent (a record of their own
    unless the shop has one)."""
    records = {row["customer_id"]: row for row in shop.rows["customers"]}
    for customer in customers:
        if customer not in records:
            shop.customer(customer)
            records[customer] = shop.rows["customers"][-1]
        records[customer].update(email=f"{customer}@shop.ru", email_consent=True)
    return shop


def due(m, table: str = "triggers_due") -> set[tuple]:
    return {(r["customer_id"], r["trigger"], r["due_on"], r["occasion_on"], r["milestone"], r["years"],
             r["category"], r["order_id"]) for r in m.rows(table)}


# -- triggers ------------------------------------------------------------------------------------------
def trigger_shop() -> Shop:
    shop = Shop()
    # birthdays: due from 3 days before (2026-06-27 .. 2026-06-30 for the 30th) to the day itself
    shop.customer("b_today", birth_date=D("1990-06-30"))
    shop.customer("b_in3", birth_date=D("1985-07-03"))  # due from 06-30: today
    shop.customer("b_in4", birth_date=D("1985-07-04"))  # due from 07-01
    shop.customer("b_yesterday", birth_date=D("1990-06-29"))  # next one is 2027-06-29
    # milestones [2, 5, 10]: due the day after the N-th purchase day
    shop.purchases("m2", map(days_before, (40, 1)))  # 2nd purchase day yesterday
    shop.purchases("m2_late", map(days_before, (40, 2)))  # was due yesterday
    shop.purchases("m3", map(days_before, (60, 40, 1)))  # 3rd: not a milestone
    shop.purchases("m_sameday", [days_before(30), days_before(1, hour=10), days_before(1, hour=15)])  # 2 days
    # anniversaries every 365 days since the first purchase day
    shop.purchases("a1", [days_before(365)])
    shop.purchases("a2", [days_before(730)])
    shop.purchases("a364", [days_before(364)])
    shop.purchases("a366", [days_before(366)])
    shop.purchases("a729", [days_before(729)])  # 729 // 365 = 1: the first one was 364 days ago
    # replenishment: pet_food is re-bought every 30 days (configured), plumbing every 700;
    # expected next order = last + 30; due 5 days before it
    shop.purchases("r_due", [days_before(25)], "pet_food")  # expected 07-05, due 06-30
    shop.purchases("r_early", [days_before(24)], "pet_food")  # due 07-01
    shop.purchases("r_plumbing", [days_before(695)], "plumbing")  # expected 07-05, but not a consumable
    # thank_you: a purchase delivered in the last 48 h (the latest one)
    shop.order("t1-a", "t1", days_before(5), delivered_at=hours_before(47))
    shop.order("t1-b", "t1", days_before(3), delivered_at=hours_before(10))
    shop.order("t_old", "t_old", days_before(5), delivered_at=hours_before(49))
    shop.order("t_cancel", "t_cancel", days_before(5), delivered_at=hours_before(5), status="cancelled")
    return shop


TRIGGER_SEGMENTS = {"churn": {"categories": {"pet_food": {"at_risk_days": 30, "churn_days": 45},
                                             "plumbing": {"at_risk_days": 700, "churn_days": 900}}},
                    **NO_MODELS}


def test_triggers_due_as_of_a_day(marts):
    m = marts(TRIGGER_SEGMENTS).load(trigger_shop())
    m.build()
    assert due(m) == {
        ("b_today", "birthday", D("2026-06-27"), D("2026-06-30"), None, 36, None, None),
        ("b_in3", "birthday", D("2026-06-30"), D("2026-07-03"), None, 41, None, None),
        ("m2", "milestone", D("2026-06-30"), D("2026-06-29"), 2, None, None, None),
        ("m_sameday", "milestone", D("2026-06-30"), D("2026-06-29"), 2, None, None, None),
        ("a1", "anniversary", D("2026-06-30"), D("2026-06-30"), None, 1, None, None),
        ("a2", "anniversary", D("2026-06-30"), D("2026-06-30"), None, 2, None, None),
        ("r_due", "replenishment", D("2026-06-30"), D("2026-07-05"), None, None, "pet_food", None),
        ("t1", "thank_you", D("2026-06-30"), D("2026-06-30"), None, None, None, "t1-b"),
    }
    stages = {r["customer_id"]: r["lifecycle_stage"] for r in m.rows("triggers_due")}
    assert stages["b_today"] is None and stages["a2"] == "one_off"  # a birthday needs no purchase


def test_trigger_settings_move_the_windows(marts):
    segments = {**TRIGGER_SEGMENTS, "triggers": {
        "birthday_days_before": 4, "milestones": [3], "anniversary_days": 364, "replenishment_max_cycle_days": 30,
        "replenishment_days_before": 6, "thank_you_within_hours": 50, "stay_due_days": 2}}
    m = marts(segments).load(trigger_shop())
    m.build()
    assert due(m) == {
        ("b_today", "birthday", D("2026-06-26"), D("2026-06-30"), None, 36, None, None),
        ("b_in3", "birthday", D("2026-06-29"), D("2026-07-03"), None, 41, None, None),
        ("b_in4", "birthday", D("2026-06-30"), D("2026-07-04"), None, 41, None, None),
        ("m3", "milestone", D("2026-06-30"), D("2026-06-29"), 3, None, None, None),
        # every 364 days, due for 2 days: 364 (1st), 365 (1st, yesterday), 729 (2nd, yesterday),
        # 730 = 2 * 364 + 2 (too late); 366 = 364 + 2 (too late)
        ("a364", "anniversary", D("2026-06-30"), D("2026-06-30"), None, 1, None, None),
        ("a1", "anniversary", D("2026-06-29"), D("2026-06-29"), None, 1, None, None),
        ("a729", "anniversary", D("2026-06-29"), D("2026-06-29"), None, 2, None, None),
        # pet_food's 30 days is not below 30: no replenishment
        ("t1", "thank_you", D("2026-06-30"), D("2026-06-30"), None, None, None, "t1-b"),
        ("t_old", "thank_you", D("2026-06-28"), D("2026-06-28"), None, None, None, "t_old"),
    }


def test_birthdays_across_the_new_year_and_on_29_february(marts, today_is):
    shop = (Shop().customer("new_year", birth_date=D("1990-01-02"))
            .customer("leap", birth_date=D("2000-02-29")).customer("march", birth_date=D("1999-03-02")))
    m = marts().load(shop)
    today_is(D("2026-12-30"))
    m.build(D("2026-12-30"))
    assert due(m) == {("new_year", "birthday", D("2026-12-30"), D("2027-01-02"), None, 37, None, None)}
    today_is(D("2027-02-26"))
    m.build(D("2027-02-26"))
    # 2027 has no 29 February: the birthday is kept on the 28th
    assert due(m) == {("leap", "birthday", D("2027-02-25"), D("2027-02-28"), None, 27, None, None)}


def test_each_trigger_has_a_default_audience(marts):
    shop = consenting(trigger_shop(), "b_in3", "m2", "a1", "r_due", "t1", "t_old")
    m = marts(TRIGGER_SEGMENTS).load(shop)
    m.build()
    rows = m.rows("audience_members", "WHERE audience IN ('birthday_greeting', 'milestone_thanks', "
                                      "'anniversary_greeting', 'replenishment_reminder', 'thank_you_care')")
    assert {(r["audience"], r["customer_id"]) for r in rows} == {
        ("birthday_greeting", "b_in3"), ("milestone_thanks", "m2"), ("anniversary_greeting", "a1"),
        ("replenishment_reminder", "r_due"), ("thank_you_care", "t1")}


def test_an_audience_on_two_triggers_has_each_member_once_with_what_the_message_needs(marts):
    # b_in3's birthday (07-03) and a 2nd purchase yesterday (06-29): one member, the earliest
    # occasion (the milestone) wins; the others carry their own trigger's columns
    shop = consenting(trigger_shop(), "b_in3", "m2", "a1", "r_due")
    shop.purchases("b_in3", map(days_before, (40, 1)))
    audiences = {"greetings": {"source": "triggers_due", "where": {"trigger": ["birthday", "milestone", "anniversary",
                                                                               "replenishment"]},
                               "channel": "email", "holdout": 0}}
    m = marts(TRIGGER_SEGMENTS, audiences=audiences).load(shop)
    m.build()
    rows = m.rows("audience_members", "WHERE audience = 'greetings'")
    got = {r["customer_id"]: (r["trigger"], r["occasion_on"], r["milestone"], r["years"], r["category"])
           for r in rows}
    assert len(rows) == len(got)
    assert got == {"b_in3": ("milestone", "2026-06-29", 2, None, None), "m2": ("milestone", "2026-06-29", 2, None, None),
                   "a1": ("anniversary", "2026-06-30", None, 1, None),
                   "r_due": ("replenishment", "2026-07-05", None, None, "pet_food")}


def test_members_carry_loyalty_and_late_deliveries_whatever_the_source(marts):
    shop = consenting(Shop(), "l_close", "late")
    shop.order("l_close-1", "l_close", days_before(10), total=18000)
    shop.order("late-1", "late", days_before(30), total=500, delivered_at=days_before(20))  # 10 days > 3 promised
    audiences = {"all": {"where": {"lifecycle_stage": ["newcomer", "one_off", "negative"]}, "channel": "email",
                         "holdout": 0}}
    m = marts(audiences=audiences).load(shop)
    m.build()
    got = {r["customer_id"]: (r["loyalty_tier"], r["next_loyalty_tier"], r["amount_to_next_tier"],
                              r["late_deliveries"]) for r in m.rows("audience_members")}
    assert got == {"l_close": ("bronze", "silver", Decimal("2000.00"), 0),
                   "late": ("bronze", "silver", Decimal("19500.00"), 1)}


@pytest.mark.parametrize("segments,message", [
    ({"triggers": {"milestones": [0, 2]}}, "segments.triggers.milestones"),
    ({"triggers": {"anniversary_days": 0}}, "segments.triggers.anniversary_days"),
    ({"loyalty": {"tiers": {"bronze": 0, "silver": 0}}}, "two tiers share a threshold"),
    ({"loyalty": {"tiers": {"Gold!": 1}}}, "segments.loyalty.tiers"),
    ({"loyalty": {"close_share": 1}}, "segments.loyalty.close_share"),
    ({"discounts": {"driven_share": 0}}, "segments.discounts.driven_share"),
], ids=["milestone-0", "anniversary-0", "tier-tie", "tier-name", "close-share", "driven-share"])
def test_setting_errors_name_the_key(write_config, segments, message):
    with pytest.raises(ConfigError) as error:
        write_config(SOURCES, segments=segments)
    assert message in str(error.value)


def test_an_audience_on_an_unknown_trigger_is_a_configuration_error(write_config):
    with pytest.raises(ConfigError) as error:
        write_config(SOURCES, audiences={"bd": {"source": "triggers_due", "where": {"trigger": ["birthdy"]},
                                                "channel": "email"}})
    assert "unknown trigger birthdy" in str(error.value)


# -- loyalty tiers -------------------------------------------------------------------------------------
def test_loyalty_tiers_and_the_distance_to_the_next(marts):
    # tiers bronze 0, silver 20000, gold 60000; close within 10 % of the next threshold
    shop = consenting(Shop(), "l_low", "l_close", "l_not", "l_silver", "l_gold", "l_cancel")
    shop.order("l_low-1", "l_low", days_before(10), total=5000)
    shop.order("l_close-1", "l_close", days_before(10), total=18000)
    shop.order("l_not-1", "l_not", days_before(10), total=17999)
    shop.order("l_silver-1", "l_silver", days_before(20), total=30000).order(
        "l_silver-2", "l_silver", days_before(10), total=25000)
    shop.order("l_gold-1", "l_gold", days_before(10), total=60000)
    shop.order("l_cancel-1", "l_cancel", days_before(20), total=5000, status="cancelled").order(
        "l_cancel-2", "l_cancel", days_before(10), total=19000)  # a cancelled order is no revenue
    m = marts().load(shop)
    m.build()
    got = {c: (r["loyalty_tier"], r["next_loyalty_tier"], r["amount_to_next_tier"], r["close_to_next_tier"])
           for c, r in m.by("customer_segments").items()}
    assert got == {
        "l_low": ("bronze", "silver", Decimal("15000.00"), False),
        "l_close": ("bronze", "silver", Decimal("2000.00"), True),  # 2000 <= 10 % of 20000
        "l_not": ("bronze", "silver", Decimal("2001.00"), False),
        "l_silver": ("silver", "gold", Decimal("5000.00"), True),  # 5000 <= 6000
        "l_gold": ("gold", None, None, False),
        "l_cancel": ("bronze", "silver", Decimal("1000.00"), True),
    }
    members = m.rows("audience_members", "WHERE audience = 'loyalty_next_tier'")
    assert {r["customer_id"] for r in members} == {"l_close", "l_silver", "l_cancel"}

    m = marts({"loyalty": {"tiers": {"member": 1000, "vip": 50000}, "close_share": 0.5}, **NO_MODELS}, reuse=m)
    m.build()
    got = {c: (r["loyalty_tier"], r["next_loyalty_tier"], r["amount_to_next_tier"], r["close_to_next_tier"])
           for c, r in m.by("customer_segments").items()}
    assert got["l_low"] == ("member", "vip", Decimal("45000.00"), False)
    assert got["l_silver"] == ("vip", None, None, False)
    assert got["l_close"] == ("member", "vip", Decimal("32000.00"), False)  # 32000 > 25000


# -- discount dependence -------------------------------------------------------------------------------
def discount_shop() -> Shop:
    shop = Shop()
    promo = {"promo_code": "SALE10"}
    # 5 purchases, 3 with a promo code (0.6), and an early cancelled promo order that does not count
    shop.order("d_driven-0", "d_driven", days_before(420), status="cancelled", **promo)
    for n, (day, code) in enumerate([(400, promo), (380, promo), (360, {}), (340, promo), (200, {})], 1):
        shop.order(f"d_driven-{n}", "d_driven", days_before(day), items=[("x", "general")], **code)
    shop.order("d_two-1", "d_two", days_before(300), items=[("x", "general")], **promo).order(
        "d_two-2", "d_two", days_before(200), items=[("x", "general")], **promo)  # 1.0, but only 2 orders
    for n, (day, code) in enumerate([(400, promo), (380, promo), (360, {}), (340, {}), (200, {})], 1):
        shop.order(f"d_few-{n}", "d_few", days_before(day), items=[("x", "general")], **code)  # 0.4
    shop.order("d_empty-1", "d_empty", days_before(200), items=[("x", "general")], promo_code="")
    for customer in ("d_driven", "d_two", "d_few", "d_empty"):
        shop.contact(customer, "reached", days_before(30), reason="price")
    return shop


def test_discount_driven_customers_get_no_discount_offer(marts):
    m = marts(FIXED_CYCLE).load(discount_shop())
    m.build()
    got = {c: (r["lifecycle_stage"], r["promo_order_share"], r["is_discount_driven"], r["winback_offer"])
           for c, r in m.by("customer_segments").items()}
    assert got == {
        "d_driven": ("lapsed", pytest.approx(0.6), True, "reminder"),
        "d_two": ("lapsed", pytest.approx(1.0), False, "discount"),
        "d_few": ("lapsed", pytest.approx(0.4), False, "discount"),
        "d_empty": ("one_off", pytest.approx(0.0), False, None),  # an empty code is no code
    }
    assert m.column("customer_facts", "promo_order_share")["d_driven"] == pytest.approx(0.6)

    m = marts({**FIXED_CYCLE, "discounts": {"driven_offer": None}}, reuse=m)
    m.build()
    assert m.column("customer_segments", "winback_offer")["d_driven"] == "discount"

    m = marts({**FIXED_CYCLE, "discounts": {"driven_min_orders": 2, "driven_share": 0.5,
                                            "driven_offer": "free_delivery"}}, reuse=m)
    m.build()
    got = {c: (r["is_discount_driven"], r["winback_offer"]) for c, r in m.by("customer_segments").items()}
    assert got["d_driven"] == (True, "free_delivery") and got["d_two"] == (True, "free_delivery")
    assert got["d_few"] == (False, "discount")


# -- referrals -----------------------------------------------------------------------------------------
def test_referrals_link_new_customers_to_their_referrer(marts):
    shop = Shop().purchases("ref1", [days_before(100)])
    shop.order("f1-1", "f1", days_before(50), promo_code="ref-ref1")  # the prefix in any case
    shop.order("f2-1", "f2", days_before(50))
    shop.event("product_view", days_before(51), customer_id="f2", utm_source="referral", utm_campaign="ref1")
    shop.order("f3-1", "f3", days_before(50)).order("f3-2", "f3", days_before(40), promo_code="REF-ref1")  # not new
    shop.order("f4-1", "f4", days_before(50), promo_code="REF-f4")  # themselves
    shop.order("f5-1", "f5", days_before(50), promo_code="REF-ghost")  # a referrer without orders
    shop.order("f6-1", "f6", days_before(50))
    shop.event("product_view", days_before(49), customer_id="f6", utm_source="referral", utm_campaign="ref1")
    shop.order("f7-1", "f7", days_before(50))
    shop.event("product_view", days_before(51), customer_id="f7", utm_source="newsletter", utm_campaign="ref1")
    m = marts().load(shop)
    m.build()
    got = {(r["referrer_id"], r["referred_id"], r["first_order_id"], r["via"], r["referrer_is_customer"])
           for r in m.rows("referrals")}
    assert got == {("ref1", "f1", "f1-1", "promo_code", True), ("ref1", "f2", "f2-1", "utm", True),
                   ("ghost", "f5", "f5-1", "promo_code", False)}

    m = marts({"referrals": {"promo_prefix": None, "utm_sources": ["newsletter"]}, **NO_MODELS}, reuse=m)
    m.build()
    assert {(r["referrer_id"], r["referred_id"], r["via"]) for r in m.rows("referrals")} == {
        ("ref1", "f7", "utm")}
