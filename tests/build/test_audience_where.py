"""Audiences select on any column of their source mart: lists of values, numeric ranges,
days from the as-of day; the members carry what a message or a caller needs. Expected
members are worked out by hand; every build runs on DuckDB and PostgreSQL.

As-of day 2026-06-30 (shop_builder.AS_OF). Every customer buys twice, 30 days apart, so
the cycle of `general` (configured thresholds: at risk after 60 days, lapsed after 120)
has median gap 30 and expected_next_order_date = last purchase day + 30.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from shop_builder import AS_OF, Shop, days_before
from winback.build.builder import build
from winback.build.settings import AUDIENCE_SOURCES
from winback.config import ConfigError

SOURCES = {"orders": {"kind": "file", "path": "shop/orders/*.csv"}}
SEGMENTS = {"churn": {"categories": {"general": {"at_risk_days": 60, "churn_days": 120}}},
            "models": {"enabled": False}}
CALLS = {"channel": "call", "identifiers": ["customer_id"], "holdout": 0}
AUDIENCES = {
    # expected next order: c1 in 5 days, c2 10 days ago, c3 40 days ago, c4 in 22 days
    "due_soon": {**CALLS, "where": {"expected_next_order_date": {"within_days": 10}}},
    # last order: c1 25, c2 40, c3 70, c4 8 days ago; "older than 40" is 41 and more
    "quiet": {**CALLS, "where": {"last_order_at": {"older_than_days": 40}}},
    "toys": {**CALLS, "where": {"main_category": {"in": ["toys"]}}},
    "general_20_to_40": {**CALLS, "where": {"main_category": ["general"],
                                            "days_since_last_order": {"min": 20, "max": 40}}},
    "price_leavers": {**CALLS, "where": {"last_reason": ["price"], "winback_offer": ["discount"]}},
}


def shop() -> Shop:
    s = Shop()
    s.purchases("c1", map(days_before, (55, 25)))
    s.purchases("c2", map(days_before, (70, 40)))
    s.purchases("c3", map(days_before, (100, 70)))
    s.purchases("c4", map(days_before, (38, 8)), "toys")
    for customer in ("c1", "c2", "c3", "c4"):
        s.customer(customer, first_name=customer.upper())
    s.feedback("c3-2", 8, days_before(68))
    s.contact("c3", "reached", days_before(5), reason="price")
    return s


def test_where_tests_any_column_with_lists_ranges_and_days(write_config, open_warehouse, warehouse_url, today_is):
    today_is(AS_OF)
    config = write_config(SOURCES, warehouse=warehouse_url, segments=SEGMENTS, audiences=AUDIENCES)
    wh = open_warehouse(config)
    shop().write(wh)
    build(config, AS_OF, warehouse=wh)

    members: dict[str, set] = {name: set() for name in AUDIENCES}
    for row in wh.rows("SELECT audience, customer_id FROM audience_members"):
        members[row.audience].add(row.customer_id)
    assert members == {
        "due_soon": {"c1", "c2"},  # +5 and -10 are within 10 days (the bound counts); -40, +22 are not
        "quiet": {"c3"},  # 40 days ago is not older than 40
        "toys": {"c4"},
        "general_20_to_40": {"c1", "c2"},  # 25 and 40 days (the bound counts); c3's 70 is out, c4 is toys
        "price_leavers": {"c3"},  # at risk (70 days >= 60), said "price": the discount offer
    }
    [c3] = [dict(r._mapping) for r in wh.rows("SELECT * FROM audience_members WHERE audience = 'quiet'")]
    assert {k: c3[k] for k in ("first_name", "lifecycle_stage", "main_category", "days_since_last_order",
                                "last_feedback_score", "last_order_status", "last_reason", "winback_offer")} == {
        "first_name": "C3", "lifecycle_stage": "at_risk", "main_category": "general", "days_since_last_order": 70,
        "last_feedback_score": 8, "last_order_status": "completed", "last_reason": "price",
        "winback_offer": "discount"}


# How each warehouse names the types of a kind of column.
KIND_TYPES = {"text": ("varchar", "character varying", "text"),
              "number": ("bigint", "integer", "numeric", "decimal", "double"),
              "bool": ("boolean",), "date": ("date",), "timestamp": ("timestamp",)}


def test_declared_columns_are_the_source_marts_columns(write_config, open_warehouse, warehouse_url, today_is):
    """AUDIENCE_SOURCES checks `where` when the config loads; this keeps it equal to what
    the SQL builds: a mart column missing from it (or a declared one the mart lacks, or
    of another kind) is named here."""
    today_is(AS_OF)
    config = write_config(SOURCES, warehouse=warehouse_url, segments=SEGMENTS, audiences=AUDIENCES)
    wh = open_warehouse(config)
    shop().write(wh)
    build(config, AS_OF, warehouse=wh)
    with wh.engine.connect() as conn:
        for mart, declared in AUDIENCE_SOURCES.items():
            built = {name: kind.lower() for name, kind in conn.execute(sa.text(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_name = :t AND table_schema = current_schema()"), {"t": mart})}
            assert sorted(built) == sorted(declared), mart
            wrong = {c: built[c] for c, kind in declared.items() if not built[c].startswith(KIND_TYPES[kind])}
            assert wrong == {}, mart


@pytest.mark.parametrize("where, message", [
    ({"colour": ["red"]}, ("where: colour not a column of customer_segments; expected some of customer_id, "
                          "lifecycle_stage")),
    ({"main_category": {"within_days": 7}}, ("where.main_category: within_days does not apply to a text column; "
                                            "it takes in (or a list of values)")),
    ({"last_order_at": {"min": 3}}, ("where.last_order_at: min does not apply to a timestamp column; "
                                    "it takes within_days, older_than_days")),
    ({"expected_next_order_date": ["2026-07-01"]}, ("where.expected_next_order_date: in does not apply to a date "
                                                   "column")),
    ({"shows_interest": ["yes"]}, "where.shows_interest: 'yes' is not a bool value"),
    ({"last_order_at": {}}, "where.last_order_at: no test"),
    ({"last_order_at": {"older_than_days": -1}}, "greater than or equal to 0"),
], ids=["unknown-column", "days-on-text", "range-on-timestamp", "list-on-date", "bool-values", "empty", "negative"])
def test_where_errors_name_the_column_and_what_it_takes(write_config, where, message):
    with pytest.raises(ConfigError) as error:
        write_config(SOURCES, audiences={"foo": {**CALLS, "where": where}})
    assert message in str(error.value)
