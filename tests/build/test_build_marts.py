"""The segment build on small hand-built shops: every expected value below is worked out
by hand from the rules in build/settings.py and include/sql/marts/*.sql (never by running the
SQL again), and every test that builds runs on DuckDB and on PostgreSQL.

Dates are given as days before the as-of day 2026-06-30 (shop_builder.days_before), so
"days since the last order" is the number written in the test.
"""

from __future__ import annotations

import math
import random
from datetime import date, timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa
from shop_builder import AS_OF, NOW, Shop, days_before, hours_before
from winback.build.builder import MARTS, build
from winback.config import ConfigError
from winback.warehouse import Warehouse

SOURCES = {"orders": {"kind": "file", "path": "shop/orders/*.csv"}}
NO_MODELS = {"models": {"enabled": False}}
# Fixed thresholds for the category every `Shop.purchases` buys by default, so the
# lifecycle tests do not depend on learned cycles: at risk after 60 days, lapsed after 120.
FIXED_CYCLE = {"churn": {"categories": {"general": {"at_risk_days": 60, "churn_days": 120}}}, **NO_MODELS}


# -- helpers ---------------------------------------------------------------------------------
class Marts:
    """A configured warehouse: load a shop, build, read the marts."""

    def __init__(self, config, warehouse: Warehouse):
        self.config, self.wh = config, warehouse

    def load(self, shop: Shop) -> Marts:
        shop.write(self.wh)
        return self

    def build(self, as_of: date = AS_OF) -> dict:
        return build(self.config, as_of, warehouse=self.wh)

    def rows(self, table: str, where: str = "") -> list[dict]:
        return [dict(r._mapping) for r in self.wh.rows(f"SELECT * FROM {table} {where}")]

    def by(self, table: str, key: str = "customer_id") -> dict:
        return {row[key]: row for row in self.rows(table)}

    def column(self, table: str, column: str, key: str = "customer_id") -> dict:
        return {k: row[column] for k, row in self.by(table, key).items()}

    def table(self, table: str) -> list[tuple]:
        """Every row of a table, sorted, for whole-table comparisons."""
        return sorted((tuple(r) for r in self.wh.rows(f"SELECT * FROM {table}")), key=_sort_key)


def _sort_key(row: tuple) -> tuple:
    return tuple((value is None, str(value)) for value in row)


@pytest.fixture
def marts(write_config, open_warehouse, warehouse_url, today_is):
    """marts(segments=..., audiences=...) -> Marts on this test's warehouse (models off
    unless `segments` says otherwise); pass `reuse=` a Marts to change only the settings.
    Today is AS_OF: builds as of it are live."""
    today_is(AS_OF)

    def make(segments: dict | None = None, reuse: Marts | None = None, **top) -> Marts:
        config = write_config(SOURCES, warehouse=warehouse_url, segments=segments or NO_MODELS, **top)
        return Marts(config, reuse.wh if reuse else open_warehouse(config))

    return make


def approx(value: float) -> object:
    return pytest.approx(value, rel=1e-9, abs=1e-9)


def stages(m: Marts) -> dict[str, str]:
    return m.column("customer_segments", "lifecycle_stage")


# -- 1. churn relative to the category's cycle ------------------------------------------------------
def pet_food_and_plumbing() -> Shop:
    shop = Shop()
    # Pet food every ~3 weeks: 10 repeat gaps, sorted 19 20 21 21 21 21 21 22 24 28.
    shop.purchases("pf1", map(days_before, (68, 48, 27, 5)), "pet_food")  # gaps 20 21 22
    shop.purchases("pf2", map(days_before, (76, 55, 34, 10)), "pet_food")  # gaps 21 21 24
    shop.purchases("pf3", map(days_before, (71, 52, 31, 3)), "pet_food")  # gaps 19 21 28
    shop.purchases("pf_lapsed", map(days_before, (111, 90)), "pet_food")  # gap 21, silent for 90 days
    shop.purchases("pf_once", [days_before(10)], "pet_food")
    # Plumbing every 2-3 years: gaps 730 800 900 1000 1095.
    shop.purchases("pl_200", map(days_before, (930, 200)), "plumbing")
    shop.purchases("pl2", map(days_before, (900, 100)), "plumbing")
    shop.purchases("pl3", map(days_before, (1200, 300)), "plumbing")
    shop.purchases("pl4", map(days_before, (1100, 100)), "plumbing")
    shop.purchases("pl5", map(days_before, (1400, 305)), "plumbing")
    return shop


def test_pet_food_lapses_in_weeks_plumbing_in_years(marts):
    m = marts({"churn": {"min_category_support": 5}, **NO_MODELS}).load(pet_food_and_plumbing())
    m.build()

    cycles = m.by("category_cycles", "category")
    assert set(cycles) == {"pet_food", "plumbing", "*"}
    # percentile_cont over the n sorted gaps: the value at position p * (n - 1), interpolated.
    columns = ("support", "repeat_customers", "customers", "median_gap_days", "p80_gap_days", "p90_gap_days",
               "basis", "typical_gap_days", "at_risk_days", "churn_days")
    expected = {
        "pet_food": (10, 4, 5, 21, 22.4, 24.4, "data", 21, 22.4, 24.4),
        "plumbing": (5, 5, 5, 900, 1019, 1057, "data", 900, 1019, 1057),
        # all 15 gaps: 19 20 21 21 21 21 21 22 24 28 730 800 900 1000 1095
        "*": (15, 9, 10, 22, 820, 960, "shop", 22, 820, 960),
    }
    for category, values in expected.items():
        for column, value in zip(columns, values, strict=True):
            assert cycles[category][column] == (value if isinstance(value, str) else approx(value)), (
                category, column)

    segments = m.by("customer_segments")
    lapsed = segments["pf_lapsed"]  # 2 purchases: too few gaps for an own rhythm
    assert (lapsed["lifecycle_stage"], lapsed["is_churned"], lapsed["churn_basis"]) == ("lapsed", True, "category")
    assert lapsed["days_since_last_order"] == 90
    assert lapsed["churn_threshold_days"] == approx(24.4)
    assert lapsed["at_risk_threshold_days"] == approx(22.4)
    assert lapsed["main_category"] == "pet_food"

    plumber = segments["pl_200"]
    assert (plumber["lifecycle_stage"], plumber["is_churned"], plumber["churn_basis"]) == ("regular", False, "category")
    assert plumber["days_since_last_order"] == 200
    assert plumber["churn_threshold_days"] == approx(1057)
    # 100 days without plumbing is normal; 90 days without pet food is not.
    assert segments["pl4"]["is_churned"] is False


# -- 2. a customer's own rhythm ---------------------------------------------------------------------------
def test_own_rhythm_with_enough_repeat_gaps(marts):
    shop = (Shop()
            .purchases("own_at_risk", map(days_before, (61, 51, 39, 25)))  # gaps 10 12 14, median 12
            .purchases("own_lapsed", map(days_before, (67, 57, 45, 31)))  # same gaps, 31 days silent
            .purchases("own_floor", map(days_before, (41, 37, 17, 13)))  # gaps 4 20 4: 4 x 2.5 < 14
            .purchases("two_gaps", map(days_before, (80, 70, 60)))  # gaps 10 10: not enough
            .purchases("half_gap", map(days_before, (112, 92, 71, 52, 30))))  # gaps 20 21 19 22, median 20.5
    m = marts().load(shop)
    m.build()
    segments = m.by("customer_segments")

    # at risk: max(14, 12 x 1.5) = 18; lapsed: max(14, 12 x 2.5) = 30
    at_risk = segments["own_at_risk"]
    assert at_risk["churn_basis"] == "own"
    assert at_risk["at_risk_threshold_days"] == approx(18)
    assert at_risk["churn_threshold_days"] == approx(30)
    assert (at_risk["lifecycle_stage"], at_risk["is_churned"]) == ("at_risk", False)
    assert at_risk["expected_next_order_date"] == AS_OF - timedelta(days=25 - 12)

    lapsed = segments["own_lapsed"]
    assert (lapsed["churn_basis"], lapsed["lifecycle_stage"], lapsed["is_churned"]) == ("own", "lapsed", True)

    floor = segments["own_floor"]  # min_threshold_days keeps 13 days of silence from being churn
    assert floor["churn_basis"] == "own"
    assert floor["churn_threshold_days"] == approx(14)
    assert floor["at_risk_threshold_days"] == approx(14)
    assert (floor["lifecycle_stage"], floor["is_churned"]) == ("regular", False)

    # Shop gaps 4 4 10 10 10 10 12 12 14 14 19 20 20 21 22: p90 = 20.6 -> lapsed after 20.6 days.
    two = segments["two_gaps"]
    assert two["churn_basis"] == "shop"
    assert two["churn_threshold_days"] == approx(20.6)
    assert two["lifecycle_stage"] == "lapsed"

    # The next order is expected a typical gap after the last one, half a day rounded up.
    half = segments["half_gap"]
    assert (half["churn_basis"], half["churn_threshold_days"], half["lifecycle_stage"]) == (
        "own", approx(51.25), "loyal")
    assert half["expected_next_order_date"] == AS_OF - timedelta(days=30 - 21)


# -- 3. fallbacks: shop-wide cycle, then defaults ------------------------------------------------------
def test_category_below_support_uses_the_shop_cycle(marts):
    shop = (Shop()
            .purchases("b1", map(days_before, (100, 70)), "books")  # gap 30
            .purchases("b2", map(days_before, (120, 80)), "books")  # gap 40
            .purchases("b3", map(days_before, (150, 100)), "books")  # gap 50
            .purchases("g1", map(days_before, (180, 80)), "garden"))  # gap 100, one gap only
    m = marts({"churn": {"min_category_support": 3}, **NO_MODELS}).load(shop)
    m.build()

    cycles = m.by("category_cycles", "category")
    # books: gaps 30 40 50 -> median 40, p80 46, p90 48, own cycle
    books = cycles["books"]
    assert (books["basis"], books["support"]) == ("data", 3)
    assert (books["at_risk_days"], books["churn_days"]) == (approx(46), approx(48))
    # shop: gaps 30 40 50 100 -> median 45, p80 70, p90 85
    shop_row = cycles["*"]
    assert (shop_row["basis"], shop_row["support"]) == ("shop", 4)
    assert (shop_row["median_gap_days"], shop_row["p80_gap_days"], shop_row["p90_gap_days"]) == (
        approx(45), approx(70), approx(85))
    garden = cycles["garden"]
    assert (garden["basis"], garden["support"], garden["median_gap_days"]) == ("shop", 1, approx(100))
    assert (garden["typical_gap_days"], garden["at_risk_days"], garden["churn_days"]) == (
        approx(45), approx(70), approx(85))

    segments = m.by("customer_segments")
    g1 = segments["g1"]
    assert (g1["churn_basis"], g1["at_risk_threshold_days"], g1["churn_threshold_days"]) == (
        "shop", approx(70), approx(85))
    assert g1["lifecycle_stage"] == "at_risk"  # 80 days: past 70, not past 85
    b1 = segments["b1"]
    assert (b1["churn_basis"], b1["churn_threshold_days"], b1["lifecycle_stage"]) == ("category", approx(48), "lapsed")


def test_shop_without_repeat_purchases_uses_the_defaults(marts):
    shop = (Shop()
            .purchases("s200", [days_before(200)]).event("page_view", days_before(50), customer_id="s200")
            .purchases("s100", [days_before(100)]).event("page_view", days_before(50), customer_id="s100")
            .purchases("quiet", [days_before(100)]))
    m = marts().load(shop)
    m.build()

    shop_row = m.by("category_cycles", "category")["*"]
    assert (shop_row["basis"], shop_row["support"], shop_row["customers"], shop_row["median_gap_days"]) == (
        "default", 0, 3, None)
    assert (shop_row["typical_gap_days"], shop_row["at_risk_days"], shop_row["churn_days"]) == (
        approx(90), approx(90), approx(180))
    assert m.by("category_cycles", "category")["general"]["basis"] == "default"

    segments = m.by("customer_segments")
    assert {c: s["churn_basis"] for c, s in segments.items()} == {"s200": "default", "s100": "default",
                                                                 "quiet": "default"}
    assert segments["s200"]["churn_threshold_days"] == approx(180)
    # single buyers who came back to the site are judged by the defaults, not as one-offs
    assert stages(m) == {"s200": "lapsed", "s100": "at_risk", "quiet": "one_off"}


# -- 4. lifecycle stages and their precedence ------------------------------------------------------------
def lifecycle_shop() -> Shop:
    shop = (Shop()
            .purchases("newcomer", [days_before(10)])
            .purchases("one_off", [days_before(100)])
            .purchases("single_visited", [days_before(100)])
            .event("page_view", days_before(20), customer_id="single_visited")
            .purchases("single_clicked", [days_before(100)])
            .mailing("single_clicked", "m1", "click", days_before(20))
            .purchases("bad_score", map(days_before, (200, 50)))
            .feedback("bad_score-2", 3, days_before(45))
            .purchases("old_bad_score", map(days_before, (200, 50)))
            .feedback("old_bad_score-1", 3, days_before(100))  # outside the 90-day window
            .purchases("returned", [days_before(100)])
            .order("returned-2", "returned", days_before(40), status="returned")
            .order("cancelled_only", "cancelled_only", days_before(50), status="cancelled")
            .purchases("complained", map(days_before, (200, 50)))
            .mailing("complained", "m1", "complaint", days_before(30))
            .purchases("archived", map(days_before, (300, 200)))
            .mailing("archived", "m0", "sent", days_before(150))
            .mailing("archived", "m0", "open", days_before(149))
            .purchases("ignored_four", map(days_before, (300, 200)))
            .purchases("loyal", map(days_before, (50, 40, 30, 20, 10)))
            .purchases("regular", map(days_before, (80, 30)))
            .purchases("at_risk", map(days_before, (150, 70)))
            .purchases("lapsed", map(days_before, (300, 150)))
            .purchases("negative_newcomer", [days_before(5)])
            .feedback("negative_newcomer-1", 2, days_before(3)))
    for n, days in enumerate((100, 80, 60, 40, 20), start=1):  # five mailings since the open
        shop.mailing("archived", f"m{n}", "sent", days_before(days))
    for n, days in enumerate((100, 80, 60, 40), start=1):  # four ignored: not enough
        shop.mailing("ignored_four", f"m{n}", "sent", days_before(days))
    return shop


def test_lifecycle_stages_follow_the_documented_precedence(marts):
    m = marts(FIXED_CYCLE).load(lifecycle_shop())
    m.build()
    assert stages(m) == {
        "newcomer": "newcomer",
        "one_off": "one_off",
        "single_visited": "at_risk",  # a visit after the order: not a one-off; 100 days > 60
        "single_clicked": "at_risk",  # a mailing click after the order counts the same
        "bad_score": "negative",
        "old_bad_score": "regular",
        "returned": "negative",
        "cancelled_only": "negative",
        "complained": "negative",
        "archived": "archived",
        "ignored_four": "lapsed",
        "loyal": "loyal",
        "regular": "regular",
        "at_risk": "at_risk",
        "lapsed": "lapsed",
        "negative_newcomer": "negative",  # negative wins over newcomer
    }
    segments = m.by("customer_segments")
    assert {c for c, row in segments.items() if row["is_negative"]} == {
        "bad_score", "returned", "cancelled_only", "complained", "negative_newcomer"}
    assert {row["is_negative"] for c, row in segments.items()} == {True, False}  # a flag, never NULL
    assert segments["single_visited"]["shows_interest"] is True
    assert segments["one_off"]["shows_interest"] is False
    assert segments["cancelled_only"]["purchase_days"] == 0
    assert segments["cancelled_only"]["value_tier"] == "none"
    assert segments["archived"]["is_churned"] is True
    facts = m.by("customer_facts")
    assert facts["archived"]["mailings_since_engagement"] == 5
    assert facts["ignored_four"]["mailings_since_engagement"] == 4
    assert facts["returned"]["last_order_status"] == "returned"
    assert (facts["bad_score"]["last_feedback_score"], facts["bad_score"]["purchase_days"]) == (3, 2)


def test_newcomer_window_includes_its_last_day(marts):
    # newcomer_days: "first purchase at most this many days ago"
    shop = Shop().purchases("day_30", [days_before(30)]).purchases("day_31", [days_before(31)])
    m = marts(FIXED_CYCLE).load(shop)
    m.build()
    assert stages(m) == {"day_30": "newcomer", "day_31": "one_off"}


# -- 5. RFM ----------------------------------------------------------------------------------------
RFM_CUSTOMERS = {  # customer: (days before as-of of each purchase, amount of each)
    "A": ((300,), 100),
    "B": ((200,), 100),
    "C": ((100,), 300),
    "D": ((100,), 50),
    "E": ((60, 20), 500),
    "F": ((45, 35, 25, 15, 5), 400),
}


def rfm_shop(order: list[str]) -> Shop:
    shop = Shop()
    for customer in order:
        days, amount = RFM_CUSTOMERS[customer]
        shop.purchases(customer, map(days_before, days), price=amount)
    return shop


def test_rfm_scores_share_ties_and_name_segments(marts):
    m = marts()
    m.load(rfm_shop(list("ABCDEF")))
    m.build()
    first = m.table("customer_rfm")

    # 6 customers: score = 1 + floor(5 (rank - 1) / 6), rank 1..6 -> 1 1 2 3 4 5, ties share the lowest rank.
    # R (longest absent first): A 300 -> 1, B 200 -> 2, C = D 100 -> 3, E 20 -> 5, F 5 -> 6
    # F: A-D one purchase day -> rank 1, E 2 -> rank 5, F 5 -> rank 6
    # M: D 50 -> 1, A = B 100 -> 2, C 300 -> 4, E 1000 -> 5, F 2000 -> 6
    expected = {
        "A": (300, 1, 1, 1, 1, "111", "lost"),
        "B": (200, 1, 1, 1, 1, "111", "lost"),
        "C": (100, 1, 2, 1, 3, "213", "hibernating"),
        "D": (100, 1, 2, 1, 1, "211", "hibernating"),
        "E": (20, 2, 4, 4, 4, "444", "loyal"),
        "F": (5, 5, 5, 5, 5, "555", "champions"),
    }
    rfm = m.by("customer_rfm")
    assert {c: (r["recency_days"], r["frequency"], r["r_score"], r["f_score"], r["m_score"], r["rfm_cell"],
                r["rfm_segment"]) for c, r in rfm.items()} == expected
    assert rfm["F"]["monetary"] == Decimal("2000.00")
    assert m.column("customer_segments", "rfm_segment") == {c: v[-1] for c, v in expected.items()}

    # The same shop inserted in the opposite order scores the same.
    with m.wh.begin() as conn:
        for table in ("orders", "order_items"):
            conn.exec_driver_sql(f"DELETE FROM {table}")
    m.load(rfm_shop(list("FEDCBA")))
    m.build()
    assert m.table("customer_rfm") == first


# -- 6. abandoned carts ---------------------------------------------------------------------------------
def test_abandoned_carts(marts):
    shop = (Shop()
            .event("add_to_cart", hours_before(12), customer_id="k1", product_id="p1", category="toys", value=3000)
            .event("add_to_cart", hours_before(10), customer_id="k1", product_id="p2", category="books", value=1500)
            .event("add_to_cart", hours_before(5), customer_id="k2", product_id="p3", value=1000)
            # k3 bought p4 after adding it; p5 stays in the cart
            .event("add_to_cart", hours_before(20), customer_id="k3", product_id="p4", value=700)
            .event("add_to_cart", hours_before(20), customer_id="k3", product_id="p5", value=200)
            .order("k3-1", "k3", hours_before(10), items=[("p4", "toys", 700)])
            # k4 removed p6 again
            .event("add_to_cart", hours_before(10), customer_id="k4", product_id="p6", value=900)
            .event("remove_from_cart", hours_before(9), customer_id="k4", product_id="p6")
            .event("add_to_cart", hours_before(10), customer_id="k4", product_id="p7", value=500)
            # k5 added an hour ago: may still order
            .event("add_to_cart", hours_before(1), customer_id="k5", product_id="p8", value=5000)
            # an anonymous visitor who logs in later is that customer
            .event("add_to_cart", hours_before(10), visitor_id="v1", product_id="p9", value=250)
            .event("login", hours_before(8), visitor_id="v1", customer_id="k6")
            # older than the 14-day lookback
            .event("add_to_cart", days_before(20), customer_id="k7", product_id="p1", value=3000))
    m = marts().load(shop)
    m.build()

    carts = m.by("abandoned_carts", "cart_key")
    assert set(carts) == {"c:k1", "c:k2", "c:k3", "c:k4", "c:k6"}
    summary = {key: (c["customer_id"], c["items"], c["product_ids"], c["cart_value"], c["offer"],
                     c["amount_to_free_delivery"]) for key, c in carts.items()}
    assert summary == {
        "c:k1": ("k1", 2, "p1,p2", Decimal("4500.00"), "reminder", Decimal("0.00")),
        "c:k2": ("k2", 1, "p3", Decimal("1000.00"), "free_delivery_topup", Decimal("3000.00")),
        "c:k3": ("k3", 1, "p5", Decimal("200.00"), "free_delivery_topup", Decimal("3800.00")),
        "c:k4": ("k4", 1, "p7", Decimal("500.00"), "free_delivery_topup", Decimal("3500.00")),
        "c:k6": ("k6", 1, "p9", Decimal("250.00"), "free_delivery_topup", Decimal("3750.00")),
    }
    k1 = carts["c:k1"]
    assert (k1["categories"], k1["first_added_at"], k1["last_added_at"]) == (
        "books,toys", hours_before(12), hours_before(10))
    assert k1["hours_since_last_add"] == approx(10)
    assert carts["c:k6"]["visitor_id"] == "v1"


def test_a_visitor_seen_with_a_customer_in_any_source_is_that_customer(marts):
    shop = (Shop()
            # v1's id is on k1's customer record (the CRM keeps the analytics client id)
            .customer("k1", visitor_id="v1", updated_at=days_before(30))
            .event("add_to_cart", hours_before(10), visitor_id="v1", product_id="p1", value=250)
            # v2 is on k2's record, but logged in as k3 later: the latest sighting wins
            .customer("k2", visitor_id="v2", updated_at=days_before(30))
            .event("login", days_before(2), visitor_id="v2", customer_id="k3")
            .event("add_to_cart", hours_before(10), visitor_id="v2", product_id="p2", value=300)
            # v3 ordered as k4 (an order carrying the visitor)
            .order("k4-1", "k4", days_before(40), visitor_id="v3", items=[("p3", "toys")])
            .event("add_to_cart", hours_before(10), visitor_id="v3", product_id="p4", value=400)
            # v4 is on a record without any date: linked all the same
            .customer("k5", visitor_id="v4")
            .event("add_to_cart", hours_before(10), visitor_id="v4", product_id="p5", value=500)
            # v5 nobody knows
            .event("add_to_cart", hours_before(10), visitor_id="v5", product_id="p6", value=600))
    m = marts().load(shop)
    m.build()
    links = {r["visitor_id"]: r["customer_id"] for r in m.rows("identity_map")}
    assert links == {"v1": "k1", "v2": "k3", "v3": "k4", "v4": "k5"}
    carts = {key: c["customer_id"] for key, c in m.by("abandoned_carts", "cart_key").items()}
    assert carts == {"c:k1": "k1", "c:k3": "k3", "c:k4": "k4", "c:k5": "k5", "v:v5": None}


# -- 7. browse abandonment ------------------------------------------------------------------------------
def test_browse_abandoners_and_window_shoppers(marts):
    shop = (Shop()
            .event("product_view", hours_before(50), customer_id="b1", session_id="sb1", product_id="p2")
            .event("product_view", hours_before(49), customer_id="b1", session_id="sb1", product_id="p1")
            .event("product_view", hours_before(48), customer_id="b1", session_id="sb1", product_id="p1")
            .event("product_view", hours_before(48), customer_id="put_in_cart", product_id="p3")
            .event("add_to_cart", hours_before(47), customer_id="put_in_cart", product_id="p3", value=10)
            .event("product_view", hours_before(48), customer_id="ordered", product_id="p4")
            .order("ordered-1", "ordered", hours_before(40), items=[("p4", "toys")])
            .event("product_view", hours_before(10), customer_id="too_recent", product_id="p5"))
    # w1 browses in five sessions over two months and never orders
    for n, moment in enumerate((days_before(60), days_before(40), days_before(20), days_before(10),
                                hours_before(30)), start=1):
        shop.event("product_view", moment, visitor_id="w1", session_id=f"w1-{n}", product_id="p6")
        shop.event("product_view", moment, visitor_id="w2", session_id=f"w2-{n}", product_id="p7")
    # w2 browses as much but did order once from that browser (before this week's views)
    shop.order("w2-order", "cw2", days_before(50), visitor_id="w2", items=[("p7", "toys")])
    m = marts().load(shop)
    m.build()

    browsers = m.by("browse_abandoners", "browser_key")
    assert set(browsers) == {"c:b1", "v:w1", "c:cw2"}
    b1 = browsers["c:b1"]
    assert (b1["customer_id"], b1["products_viewed"], b1["product_ids"], b1["is_window_shopper"]) == (
        "b1", 2, "p1,p2", False)
    assert (b1["first_view_at"], b1["last_view_at"]) == (hours_before(50), hours_before(48))
    w1 = browsers["v:w1"]
    assert (w1["customer_id"], w1["visitor_id"], w1["products_viewed"], w1["is_window_shopper"]) == (
        None, "w1", 1, True)
    assert browsers["c:cw2"]["is_window_shopper"] is False


# -- 8. feedback due ---------------------------------------------------------------------------------------
def test_feedback_due_within_a_day_of_the_first_delivery(marts):
    shop = (Shop()
            .order("f1-1", "f1", days_before(3), status="delivered", delivered_at=hours_before(5), total=1200)
            .order("f2-1", "f2", days_before(3), status="delivered", delivered_at=hours_before(5))
            .feedback("f2-1", 9, hours_before(2))
            .order("f3-1", "f3", days_before(3), status="delivered", delivered_at=hours_before(30))
            .order("f4-1", "f4", days_before(100), status="delivered", delivered_at=days_before(98))
            .order("f4-2", "f4", days_before(3), status="delivered", delivered_at=hours_before(5)))
    m = marts().load(shop)
    m.build()
    due = m.rows("feedback_due")
    assert [(d["customer_id"], d["order_id"], d["ordered_at"], d["delivered_at"], d["total_amount"])
            for d in due] == [("f1", "f1-1", days_before(3), NOW - timedelta(hours=5), Decimal("1200.00"))]


# -- 9. registered, visited two weeks ago, never bought -----------------------------------------------
def test_registered_not_bought(marts):
    shop = (Shop()
            .customer("r1", registered_at=days_before(20))
            .event("product_view", days_before(14, hour=10), customer_id="r1", product_id="p2")
            .event("add_to_cart", days_before(14, hour=11), customer_id="r1", product_id="p1", value=10)
            .customer("visited_recently", registered_at=days_before(20))
            .event("product_view", days_before(5), customer_id="visited_recently", product_id="p1")
            .customer("bought", registered_at=days_before(20))
            .event("product_view", days_before(14), customer_id="bought", product_id="p1")
            .order("bought-1", "bought", days_before(13))
            .customer("registered_long_ago", registered_at=days_before(40))
            .event("product_view", days_before(14), customer_id="registered_long_ago", product_id="p1"))
    m = marts().load(shop)
    m.build()
    rows = m.rows("registered_not_bought")
    assert [(r["customer_id"], r["registered_at"], r["last_visit_at"], r["products_viewed"], r["product_ids"])
            for r in rows] == [("r1", days_before(20), days_before(14, hour=11), 2, "p1,p2")]


# -- 10. audiences: consent, identifiers, holdout ------------------------------------------------------
WINBACK_AUDIENCES = {
    "winback_email": {"where": {"lifecycle_stage": ["lapsed", "archived"]}, "channel": "email", "holdout": 0},
    "winback_ads": {"where": {"lifecycle_stage": ["lapsed", "archived"]}, "channel": "ads",
                    "identifiers": ["email", "phone"], "holdout": 0},
    "winback_calls": {"where": {"lifecycle_stage": ["lapsed"]}, "channel": "call", "identifiers": ["phone"],
                      "holdout": 0},
}


def test_audiences_respect_consent_and_identifiers(marts):
    people = {
        "a1": {"email": "a1@shop.ru", "email_consent": True, "ads_consent": True},
        "a2": {"email": "a2@shop.ru", "email_consent": False, "ads_consent": True},
        "a3": {"email": "a3@shop.ru", "email_consent": True, "ads_consent": False, "unsubscribed_at": days_before(10)},
        "a4": {"email": "a4@shop.ru", "email_consent": True},  # unsubscribed through the ESP
        "a5": {"email": "a5@shop.ru", "email_consent": True, "ads_consent": True},  # archived
        "a6": {"phone": "+79001234567", "email_consent": True, "ads_consent": True},  # no email address
        "a7": {"email": "a7@shop.ru", "email_consent": True},  # ads consent unknown
    }
    shop = Shop()
    for customer, columns in people.items():
        shop.customer(customer, **columns).purchases(customer, map(days_before, (300, 150)))  # all lapsed
    shop.mailing("a4", "m0", "unsubscribe", days_before(100))
    for n in range(5):
        shop.mailing("a5", f"m{n + 1}", "sent", days_before(100 - 10 * n))
    m = marts(FIXED_CYCLE, audiences=WINBACK_AUDIENCES).load(shop)
    m.build()

    assert stages(m)["a5"] == "archived"
    members: dict[str, set] = {name: set() for name in WINBACK_AUDIENCES}
    for row in m.rows("audience_members"):
        members[row["audience"]].add(row["customer_id"])
        assert row["in_holdout"] is False  # holdout 0
    assert members == {
        "winback_email": {"a1", "a7"},  # no consent, unsubscribed (twice), archived, no address: out
        "winback_ads": {"a1", "a2", "a5", "a6"},  # ads consent only; archived stays in ads
        "winback_calls": {"a6"},  # the only phone number
    }
    a6 = m.by("audience_members", "audience")["winback_calls"]
    assert (a6["member_key"], a6["phone"], a6["channel"], a6["lifecycle_stage"]) == (
        "a6", "+79001234567", "call", "lapsed")


HOLDOUT_SHARE, HOLDOUT_TOLERANCE = 0.2, 0.03  # binomial sd over 2,000 members: 0.009


def newcomers(first: int, count: int) -> Shop:
    shop = Shop()
    for n in range(first, first + count):
        customer = f"n{n:05d}"
        shop.customer(customer, email=f"{customer}@shop.ru", email_consent=True)
        shop.order(f"{customer}-1", customer, days_before(10))
    return shop


def test_holdout_is_stable_and_near_the_configured_share(marts):
    audiences = {"welcome": {"where": {"lifecycle_stage": ["newcomer"]}, "channel": "email",
                             "holdout": HOLDOUT_SHARE}}
    m = marts(audiences=audiences).load(newcomers(0, 2000))
    m.build()
    first = m.column("audience_members", "in_holdout", "member_key")
    assert len(first) == 2000
    share = sum(first.values()) / len(first)
    assert abs(share - HOLDOUT_SHARE) <= HOLDOUT_TOLERANCE, share

    # More members and another day: everyone keeps their side of the split.
    m.load(newcomers(2000, 100))
    m.build(AS_OF + timedelta(days=1))
    second = m.column("audience_members", "in_holdout", "member_key")
    assert len(second) == 2100
    assert {k: second[k] for k in first} == first


# -- 11. point in time -------------------------------------------------------------------------------------
def mixed_shop() -> Shop:
    """A bit of everything: categories, lifecycle signals, carts, browsing, consent."""
    shop = lifecycle_shop()
    for customer, columns in {"loyal": {"email": "l@shop.ru", "email_consent": True, "ads_consent": True},
                              "lapsed": {"email": "x@shop.ru", "phone": "+79000000001", "email_consent": True},
                              "archived": {"email": "a@shop.ru", "email_consent": True, "ads_consent": True},
                              "newcomer": {"email": "n@shop.ru", "email_consent": True,
                                               "registered_at": days_before(12)}}.items():
        shop.customer(customer, **columns)
    shop.purchases("pets", map(days_before, (90, 70, 49, 30, 8)), "pet_food", price=1500)
    shop.purchases("pets2", map(days_before, (61, 40, 20)), "pet_food", price=900)
    shop.order("newcomer-2", "newcomer", days_before(2), status="delivered", delivered_at=hours_before(6),
               items=[("p1", "toys", 700), ("p2", "pet_food", 300, 2)])
    shop.event("add_to_cart", hours_before(10), customer_id="loyal", product_id="p3", value=4200)
    shop.event("add_to_cart", hours_before(10), visitor_id="v9", product_id="p4", value=100)
    shop.event("product_view", hours_before(40), visitor_id="v9", product_id="p4")
    shop.event("login", hours_before(9), visitor_id="v9", customer_id="lapsed")
    shop.event("product_view", days_before(3), visitor_id="v10", product_id="p5")
    return shop


def test_build_as_of_a_day_ignores_later_data(marts):
    m = marts(FIXED_CYCLE).load(mixed_shop())
    m.build()
    before = {mart: m.table(mart) for mart in MARTS}

    after = days_before(-3)  # three days after the as-of day
    later = (Shop()
             .order("loyal-late", "loyal", after, items=[("p3", "toys", 4200)])
             .order("lapsed-late", "lapsed", days_before(-1, hour=0), status="returned")
             .purchases("newcomer_after", [after])
             .customer("newcomer_after", registered_at=after, email="na@shop.ru", email_consent=True)
             .feedback("pets-5", 1, after)
             .mailing("ignored_four", "m9", "sent", after)
             .mailing("single_visited", "m9", "complaint", after)
             .event("page_view", after, customer_id="one_off")
             .event("product_view", after, visitor_id="v10", product_id="p5")
             .event("login", after, visitor_id="v10", customer_id="regular"))
    m.load(later)
    m.build()
    for mart in MARTS:
        assert m.table(mart) == before[mart], mart


# -- 12. swap and history ----------------------------------------------------------------------------------
def history_shop() -> Shop:
    return (Shop()
            .purchases("x", map(days_before, (200, 100)))  # regular -> at_risk
            .purchases("y", map(days_before, (300, 130)))  # at_risk -> lapsed
            .purchases("z", map(days_before, (250, 50)))  # one_off -> regular
            .purchases("w", [days_before(20)]))  # not a customer yet -> newcomer


EARLIER = AS_OF - timedelta(days=60)


def test_history_and_transitions_between_builds(marts):
    m = marts({**FIXED_CYCLE, "lapsed_share_alert": 1}).load(history_shop())
    first = m.build(EARLIER)
    second = m.build(AS_OF)

    assert (first["customers"], first["lapsed_share"], first["alert"]) == (3, 0.0, None)
    assert (second["customers"], second["lapsed_share"], second["alert"]) == (4, 0.25, None)
    history = {(r["as_of"], r["customer_id"]): r["lifecycle_stage"] for r in m.rows("segment_history")}
    assert history == {
        (EARLIER, "x"): "regular", (EARLIER, "y"): "at_risk", (EARLIER, "z"): "one_off",
        (AS_OF, "x"): "at_risk", (AS_OF, "y"): "lapsed", (AS_OF, "z"): "regular", (AS_OF, "w"): "newcomer",
    }
    transitions = {(r["as_of"], r["previous_as_of"], r["from_stage"], r["to_stage"]): r["customers"]
                   for r in m.rows("segment_transitions")}
    assert transitions == {
        (AS_OF, EARLIER, "regular", "at_risk"): 1,
        (AS_OF, EARLIER, "at_risk", "lapsed"): 1,
        (AS_OF, EARLIER, "one_off", "regular"): 1,
        (AS_OF, EARLIER, "new_customer", "newcomer"): 1,
    }
    runs = sorted((r["as_of"], r["customers"], r["lapsed_share"], r["build_id"]) for r in m.rows("build_runs"))
    assert runs == [(EARLIER, 3, 0.0, first["build_id"]), (AS_OF, 4, 0.25, second["build_id"])]
    assert m.rows("alerts") == []
    # the swap left no half-built tables behind
    assert [t for t in sa.inspect(m.wh.engine).get_table_names() if t.endswith("__new")] == []

    # Rebuilding a day replaces that day's history instead of adding to it.
    m.build(AS_OF)
    assert len(m.rows("segment_history", f"WHERE as_of = DATE '{AS_OF}'")) == 4
    assert len(m.rows("segment_transitions")) == 4
    assert len(m.rows("build_runs")) == 3


def test_a_jump_of_the_lapsed_share_writes_an_alert(marts, request):
    m = marts({**FIXED_CYCLE, "lapsed_share_alert": 0.1}).load(history_shop())
    m.build(EARLIER)
    second = m.build(AS_OF)  # lapsed share 0 -> 1/4
    assert "lapsed share moved from 0.0% to 25.0%" in second["alert"]
    alerts = m.rows("alerts")
    assert [(a["as_of"], a["kind"], a["value"], a["previous_value"], a["build_id"]) for a in alerts] == [
        (AS_OF, "lapsed_share_swing", 0.25, 0.0, second["build_id"])]


# -- 12b. back-fills, builds at once, the read-only snapshot ---------------------------------------------
def test_a_past_as_of_build_leaves_the_live_marts_and_audiences_alone(marts):
    """A back-test must never change what the sync reads: before, a past as-of swapped
    into the live names and the next sync planned to remove most of every audience."""
    m = marts(FIXED_CYCLE).load(mixed_shop())
    live = m.build(AS_OF)
    before = {mart: m.table(mart) for mart in MARTS}
    assert before["audience_members"], "the live build has audiences"

    past = m.build(EARLIER)

    assert (live["backfill"], past["backfill"]) == (False, True)
    assert {mart: m.table(mart) for mart in MARTS} == before
    assert past["tables"] == {mart: f"backfill_{mart}" for mart in MARTS}
    # The back-fill's own marts are aside, as of its day: fewer customers had bought by then.
    assert len(m.rows("backfill_customer_segments")) == past["customers"] < live["customers"]
    runs = {r["as_of"]: r["backfill"] for r in m.rows("build_runs")}
    assert runs == {AS_OF: False, EARLIER: True}
    assert {r["as_of"] for r in m.rows("segment_history")} == {AS_OF, EARLIER}  # history may record it


def test_the_backfill_prefix_comes_from_configuration(marts):
    m = marts(FIXED_CYCLE, build={"backfill_prefix": "asof_"}).load(history_shop())
    assert m.build(EARLIER)["tables"]["customer_segments"] == "asof_customer_segments"
    assert len(m.rows("asof_customer_segments")) == 3
    assert not m.wh.table_exists("customer_segments")


@pytest.mark.postgres
def test_two_builds_at_once_on_postgresql_take_turns(write_config, pg_schema_url, today_is):
    """Two builds used to share the <mart>__new names: one crashed with UndefinedTable,
    the other swapped in its sibling's customer_facts beside its own segments."""
    from concurrent.futures import ThreadPoolExecutor

    today_is(AS_OF)
    config = write_config(SOURCES, warehouse=pg_schema_url, segments=FIXED_CYCLE)
    setup = Warehouse(config.warehouse_url)
    mixed_shop().write(setup)
    setup.dispose()
    with ThreadPoolExecutor(2) as pool:
        summaries = [f.result() for f in [pool.submit(build, config, AS_OF) for _ in range(2)]]
    wh = Warehouse(config.warehouse_url)
    try:
        assert sorted(r.build_id for r in wh.rows("SELECT build_id FROM build_runs")) == sorted(
            s["build_id"] for s in summaries)
        assert wh.scalar("SELECT count(*) FROM customer_segments") == summaries[0]["customers"]
        assert [t for t in sa.inspect(wh.engine).get_table_names() if t.endswith("__new")] == []
    finally:
        wh.dispose()


@pytest.mark.postgres
def test_a_build_that_cannot_get_its_turn_says_who_holds_it(write_config, pg_schema_url, today_is):
    from winback.warehouse import WarehouseLocked

    today_is(AS_OF)
    config = write_config(SOURCES, warehouse=pg_schema_url, segments=FIXED_CYCLE, build={"lock_wait": "PT0S"})
    wh = Warehouse(config.warehouse_url)
    mixed_shop().write(wh)
    try:
        with wh.exclusive("build", 0), pytest.raises(WarehouseLocked) as raised:
            build(config, AS_OF)
        assert "another build of this warehouse is running (PostgreSQL backend PID" in str(raised.value)
        assert "try again when it has" in str(raised.value)
        assert build(config, AS_OF)["customers"] > 0  # once it is released, the next build runs
    finally:
        wh.dispose()


def test_each_duckdb_build_publishes_a_read_only_snapshot_readers_never_block(write_config, tmp_path, today_is):
    """An analyst's connection to the warehouse file blocked the pipeline; the snapshot is
    what analysts open instead, replaced whole after each build while they read."""
    import subprocess
    import sys

    today_is(AS_OF)
    config = write_config(SOURCES, warehouse="duckdb:///data/warehouse.duckdb", segments=FIXED_CYCLE)
    wh = Warehouse(config.warehouse_url)
    mixed_shop().write(wh)
    wh.dispose()
    first = build(config, AS_OF)
    snapshot = tmp_path / "data" / "snapshot.duckdb"
    assert first["snapshot"] == str(snapshot)
    assert snapshot.stat().st_mode & 0o777 == 0o600

    # An analyst keeps the snapshot open in another process while the pipeline goes on.
    script = ("import duckdb, sys; c = duckdb.connect(sys.argv[1], read_only=True); "
              "print(c.sql('SELECT build_id FROM snapshot_info').fetchone()[0], flush=True); sys.stdin.read(); "
              "print(c.sql('SELECT build_id FROM snapshot_info').fetchone()[0], flush=True)")
    reader = subprocess.Popen([sys.executable, "-c", script, str(snapshot)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert reader.stdout.readline().strip() == first["build_id"]
        second = build(config, AS_OF)  # neither blocked nor failing
        past = build(config, EARLIER)
        reader.stdin.close()
        assert reader.stdout.readline().strip() == first["build_id"]  # its snapshot stayed whole
    finally:
        reader.kill()
        reader.wait()

    import duckdb

    with duckdb.connect(str(snapshot), read_only=True) as con:
        assert con.sql("SELECT build_id, backfill FROM snapshot_info").fetchone() == (past["build_id"], True)
        tables = {row[0] for row in con.sql("SHOW TABLES").fetchall()}
        assert {"customer_segments", "audience_members", "backfill_customer_segments", "segment_history",
                "build_runs"} <= tables
        assert con.sql("SELECT count(*) FROM build_runs").fetchone()[0] == 3
        assert con.sql("SELECT count(*) FROM customer_segments").fetchone()[0] == second["customers"]
    assert [p.name for p in snapshot.parent.iterdir() if p.name.endswith(".tmp")] == []


# -- 13. optional entities and the models --------------------------------------------------------------
def test_orders_alone_build_every_mart(marts):
    shop = (Shop()
            .order("o1", "c1", days_before(200)).order("o2", "c1", days_before(100))
            .order("o3", "c2", days_before(10)))
    m = marts().load(shop)
    assert [t for t in ("customers", "order_items", "events", "feedback", "mailing_events", "contact_outcomes")
            if m.wh.table_exists(t)] == []
    summary = m.build()
    assert summary["customers"] == 2
    assert {mart: len(m.rows(mart)) for mart in MARTS} == {
        "visitor_activity": 0, "identity_map": 0, "customer_purchase_days": 3, "customer_category_days": 0, "customer_facts": 2, "category_cycles": 1, "customer_rfm": 2, "btyd_scores": 0,
        "customer_segments": 2, "churn_reasons": 0, "cart_items": 0, "abandoned_carts": 0, "browse_abandoners": 0,
        "feedback_due": 0, "registered_not_bought": 0, "triggers_due": 0, "referrals": 0, "audience_members": 0}
    assert stages(m) == {"c1": "regular", "c2": "newcomer"}
    assert m.column("customer_segments", "main_category") == {"c1": None, "c2": None}


def repeat_buyers_shop(customers: int = 60, seed: int = 1) -> Shop:
    """Customers who buy at a steady rate until they drop out (the BG/NBD story)."""
    rng = random.Random(seed)
    shop = Shop()
    for n in range(customers):
        day, rate, drop = rng.randint(40, 700), rng.gammavariate(2, 1 / 60), rng.betavariate(1, 3)
        days = [day]
        while rng.random() >= drop and (day := day - max(1, int(rng.expovariate(rate)))) >= 0:
            days.append(day)
        shop.purchases(f"r{n:02d}", map(days_before, days), price=rng.choice((500, 900, 2000)))
    # the same history, the second customer silent for longer
    shop.purchases("recent", map(days_before, (200, 150, 100, 50, 10)))
    shop.purchases("silent", map(days_before, (390, 340, 290, 240, 200)))
    return shop


def test_models_fill_p_alive_when_fitted(marts):
    m = marts({"models": {"min_repeat_customers": 10}}).load(repeat_buyers_shop())
    m.build()
    fits = {f["model"]: f for f in m.rows("model_fits")}
    assert fits["bgnbd"]["converged"] is True, fits["bgnbd"]["message"]
    segments = m.by("customer_segments")
    for customer, row in segments.items():
        assert 0 <= row["p_alive"] <= 1, customer
        assert row["expected_purchases_90d"] >= 0, customer
        assert row["predicted_clv_365d"] is not None, customer
    assert segments["recent"]["p_alive"] > segments["silent"]["p_alive"]


def steady_buyers_shop(customers: int = 40, seed: int = 0) -> Shop:
    """Everyone buys on a fixed rhythm up to the as-of day: nobody ever seems to drop out."""
    rng = random.Random(seed)
    shop = Shop()
    for n in range(customers):
        first, gap = rng.randint(100, 700), rng.randint(20, 60)
        shop.purchases(f"s{n:02d}", map(days_before, range(first, -1, -gap)))
    return shop


def test_degenerate_model_fit_does_not_break_the_build(marts):
    m = marts({"models": {"min_repeat_customers": 10}}).load(steady_buyers_shop())
    m.build()
    for customer, row in m.by("customer_segments").items():
        assert row["p_alive"] is None or 0 <= row["p_alive"] <= 1, (customer, row["p_alive"])
        assert row["expected_purchases_90d"] is None or row["expected_purchases_90d"] >= 0, customer


def test_models_disabled_or_unfittable_leave_p_alive_empty(marts):
    m = marts(NO_MODELS).load(repeat_buyers_shop())
    m.build()
    assert {row["p_alive"] for row in m.rows("customer_segments")} == {None}
    assert m.rows("model_fits") == []

    too_few = marts({"models": {"min_repeat_customers": 1000}}, reuse=m)
    too_few.build()
    fit = {f["model"]: f for f in too_few.rows("model_fits")}["bgnbd"]
    assert fit["converged"] is False and "fewer than models.min_repeat_customers=1000" in fit["message"]
    assert {row["p_alive"] for row in too_few.rows("customer_segments")} == {None}


# -- 14. configuration errors -------------------------------------------------------------------------------
@pytest.mark.parametrize("settings, message", [
    ({"segments": {"rfm": {"segments": {"all_but_f1": {"r": [1, 5], "f": [2, 5]}}}}},
     "segments.rfm.segments: no segment covers R1F1, R2F1, R3F1, R4F1, R5F1"),
    ({"segments": {"rfm": {"segments": {"all": {"r": [1, 5], "f": [1, 5]}, "top": {"r": [5, 5], "f": [5, 5]}}}}},
     "segments.rfm.segments: cells in more than one segment: R5F5 (all, top)"),
    ({"audiences": {"foo": {"channel": "email", "where": {"colour": ["red"]}}}},
     "audiences.foo.where: colour not a column of customer_segments"),
    ({"audiences": {"foo": {"channel": "email", "where": {"lifecycle_stage": ["zombie"]}}}},
     "audiences.foo.where.lifecycle_stage: unknown stage zombie"),
    ({"segments": {"purchase_statuses": ["paid", "teleported"]}},
     "segments.purchase_statuses: unknown status teleported"),
], ids=["rfm-gap", "rfm-overlap", "where-column", "lifecycle-stage", "purchase-status"])
def test_configuration_errors_name_the_key(write_config, settings, message):
    with pytest.raises(ConfigError) as error:
        write_config(SOURCES, **settings)
    assert message in str(error.value)


# -- 15. DuckDB and PostgreSQL agree --------------------------------------------------------------------
def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


@pytest.mark.postgres
def test_duckdb_and_postgresql_build_identical_marts(write_config, open_warehouse, pg_schema_url, tmp_path, today_is):
    today_is(AS_OF)
    segments = {**FIXED_CYCLE, "models": {"min_repeat_customers": 10}}
    built = {}
    for name, url in {"duckdb": f"duckdb:///{tmp_path / 'compare.duckdb'}", "postgres": pg_schema_url}.items():
        config = write_config(SOURCES, name=f"{name}.yaml", warehouse=url, segments=segments)
        m = Marts(config, open_warehouse(config)).load(mixed_shop()).load(repeat_buyers_shop())
        m.build()
        built[name] = {mart: m.table(mart) for mart in MARTS}
    assert built["duckdb"]["btyd_scores"], "the models were fitted"
    for mart in MARTS:
        duck, pg = built["duckdb"][mart], built["postgres"][mart]
        assert len(duck) == len(pg), mart
        for left, right in zip(duck, pg):
            differing = [(i, a, b) for i, (a, b) in enumerate(zip(left, right)) if not _same(a, b)]
            assert len(left) == len(right) and not differing, (mart, left[0], differing)


def test_a_warehouse_loaded_by_an_older_version_builds_before_its_next_load(marts):
    """Staging tables loaded before an entity gained columns (feedback's separate scores,
    customers.birth_date) lack them until that entity's next load; the build adds them,
    empty, instead of failing on the marts' SQL."""
    m = marts().load(Shop()
                     .purchases("c1", [days_before(10)])
                     .feedback("c1-1", 9, days_before(9)))
    for table, column in (("feedback", "service_score"), ("customers", "birth_date")):
        if m.wh.table_exists(table):
            m.wh.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    m.build()
    assert m.column("customer_segments", "last_feedback_score") == {"c1": 9}
    assert "service_score" in {c for c in m.rows("feedback")[0]}
