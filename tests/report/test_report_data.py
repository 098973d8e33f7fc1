"""The report's queries on a hand-written history, on DuckDB and PostgreSQL: every
expected value is worked out by hand from the rows written here."""

from __future__ import annotations

import json
from datetime import date, datetime

import pytest
from report_support import write_measured_tables
from shop_builder import AS_OF, Shop, days_before
from winback.build.builder import HISTORY_TABLES, run
from winback.report import data
from winback.warehouse import sql_literal

SOURCES = {"orders": {"kind": "file", "path": "shop/orders/*.csv"}}
DAY_BEFORE = date(2026, 6, 29)
STAGES_BEFORE = {"lapsed": 20, "regular": 30, "loyal": 10, "newcomer": 5, "at_risk": 15, "one_off": 12,
                 "archived": 5, "negative": 3}
STAGES_NOW = {**STAGES_BEFORE, "lapsed": 25, "at_risk": 10}


def _insert(wh, table: str, rows: list[tuple | dict]) -> None:
    """Rows as tuples in the table's column order, or as dicts of the columns given."""
    with wh.begin() as conn:
        for row in rows:
            columns = f" ({', '.join(row)})" if isinstance(row, dict) else ""
            values = row.values() if isinstance(row, dict) else row
            run(conn, f"INSERT INTO {table}{columns} VALUES ({', '.join(sql_literal(v) for v in values)})")


def _build_run(build_id, as_of, finished, lapsed_share, stages, backfill, carts=(None, None)):
    started, abandoned = carts
    return (build_id, as_of, finished, finished, sum(stages.values()), lapsed_share,
            json.dumps(stages), 1.0, backfill, started, abandoned, abandoned / started if started else None)


@pytest.fixture
def history(write_config, open_warehouse, warehouse_url):
    config = write_config(SOURCES, warehouse=warehouse_url)
    wh = open_warehouse(config)
    wh.ensure_tables(HISTORY_TABLES)
    wh.ensure_meta_tables()
    _insert(wh, "build_runs", [
        _build_run("b-may", date(2026, 5, 1), datetime(2026, 6, 2), 0.10, STAGES_BEFORE, True),
        _build_run("b-29", DAY_BEFORE, datetime(2026, 6, 29, 23), 0.20, STAGES_BEFORE, False),
        # a first build of the as-of day, replaced by a rebuild that finished later
        _build_run("b-30-first", AS_OF, datetime(2026, 6, 30, 8), 0.50, STAGES_BEFORE, False),
        _build_run("b-30", AS_OF, datetime(2026, 6, 30, 20), 0.25, STAGES_NOW, False, carts=(40, 30)),
        # a back-fill run last: it describes a past day, not today's headline
        _build_run("b-mid-may", date(2026, 5, 15), datetime(2026, 6, 30, 22), 0.15, STAGES_BEFORE, True),
    ])
    _insert(wh, "alerts", [("b-29", DAY_BEFORE, "lapsed_share_swing", "moved", 0.20, 0.10, datetime(2026, 6, 29))])
    _insert(wh, "segment_history", [
        (DAY_BEFORE, "c1", "regular", "b-29"), (DAY_BEFORE, "c2", "regular", "b-29"),
        (DAY_BEFORE, "c3", "at_risk", "b-29"),
        (AS_OF, "c1", "regular", "b-30"), (AS_OF, "c2", "at_risk", "b-30"), (AS_OF, "c3", "lapsed", "b-30"),
        (AS_OF, "c4", "newcomer", "b-30"),
    ])
    _insert(wh, "segment_transitions", [
        (DAY_BEFORE, date(2026, 5, 15), "new_customer", "regular", 2),
        (AS_OF, DAY_BEFORE, "regular", "regular", 1), (AS_OF, DAY_BEFORE, "regular", "at_risk", 1),
        (AS_OF, DAY_BEFORE, "at_risk", "lapsed", 1), (AS_OF, DAY_BEFORE, "new_customer", "newcomer", 1),
    ])
    _insert(wh, "model_fits", [
        ("b-29", DAY_BEFORE, "bgnbd", json.dumps({"r": 1.0}), -10.0, 90, True, "day", None, datetime(2026, 6, 29)),
        ("b-30", AS_OF, "bgnbd", json.dumps({"r": 0.5, "alpha": 7.0}), -9.0, 100, True, "day", None,
         datetime(2026, 6, 30)),
        ("b-30", AS_OF, "gamma_gamma", None, None, 0, False, "day", "too few repeat buyers", datetime(2026, 6, 30)),
    ])
    load = lambda load_id, entity, status, started, extracted, valid, bad, written, updated, mode=None: {
        "load_id": load_id, "entity": entity, "source_kind": "file", "status": status, "rows_extracted": extracted,
        "rows_valid": valid, "rows_quarantined": bad, "rows_inserted": written, "rows_updated": updated,
        "origins": "[]", "started_at": started, "finished_at": started, "mode": mode}
    _insert(wh, "load_runs", [
        load("l1", "orders", "loaded", datetime(2026, 6, 29, 1), 100, 97, 3, 97, 0),
        # a re-check of 3 quarantined orders: 2 loaded, 1 still bad (already counted by l1)
        load("l1-recheck", "orders", "loaded", datetime(2026, 6, 30, 0, 30), 3, 2, 1, 2, 0, "recheck"),
        load("l2", "orders", "loaded", datetime(2026, 6, 29, 13), 10, 10, 0, 10, 4),
        load("l3", "orders", "loaded", datetime(2026, 6, 30, 1), 20, 18, 2, 18, 0),
        load("l4", "customers", "loaded", datetime(2026, 6, 29, 1), 50, 50, 0, 50, 0),
        load("l5", "customers", "rejected", datetime(2026, 6, 30, 1), 10, 2, 8, None, None),
    ])
    bad = lambda entity, number, rules, day, level="row": (
        entity, f"h{number}", "file", "f.csv", number, "l1", f"k{number}", rules, "", "{}", day, level,
        None if level == "row" else "email")
    _insert(wh, "quarantine", [
        bad("orders", 1, "total_amount_non_negative, status_allowed", datetime(2026, 6, 29, 1)),
        bad("orders", 2, "total_amount_non_negative", datetime(2026, 6, 29, 2)),
        bad("orders", 3, "total_amount_non_negative", datetime(2026, 6, 30, 1)),
        bad("customers", 4, "email_format", datetime(2026, 6, 30, 1), "field"),
    ])
    Shop() \
        .order("in-as-of-day", "c1", days_before(0), total=100) \
        .order("in-first-day", "c1", days_before(29), total=200) \
        .order("first-minute", "c2", datetime(2026, 6, 1), total=50, status="shipped") \
        .order("day-too-early", "c2", days_before(30), total=400) \
        .order("cancelled", "c3", days_before(1), total=800, status="cancelled") \
        .order("after-as-of", "c3", datetime(2026, 7, 1), total=1600, status="paid") \
        .write(wh)
    return config, wh


def test_headline_is_the_latest_live_build_against_the_previous_day(history):
    config, wh = history
    top = data.headline(wh, config)
    assert (top.build_id, top.as_of, top.customers) == ("b-30", AS_OF, 100)
    assert top.active == 5 + 30 + 10 + 10  # newcomer + regular + loyal + at_risk
    assert top.lapsed_share == pytest.approx(0.25)
    assert (top.previous_as_of, top.previous_lapsed_share) == (DAY_BEFORE, pytest.approx(0.20))
    assert top.lapsed_share_change == pytest.approx(0.05)
    # 100 + 200 + 50: purchases dated 2026-06-01 00:00 up to the end of 2026-06-30
    assert top.revenue_30d == pytest.approx(350.0)
    assert (top.carts_started, top.cart_abandonment_rate) == (40, pytest.approx(0.75))  # 30 of 40 carts


def test_history_sections(history):
    _, wh = history
    # the stage counts each day's latest build recorded: on the as-of day the rebuild's
    sizes = {(row["as_of"], row["lifecycle_stage"]): row["customers"] for row in data.stage_sizes(wh)}
    assert sizes == {**{(day, stage): n for day in (date(2026, 5, 1), date(2026, 5, 15), DAY_BEFORE)
                        for stage, n in STAGES_BEFORE.items()},
                     **{(AS_OF, stage): n for stage, n in STAGES_NOW.items()}}
    assert (sizes[(AS_OF, "lapsed")], sizes[(AS_OF, "at_risk")], sizes[(DAY_BEFORE, "lapsed")]) == (25, 10, 20)
    flows = {(row["from_stage"], row["to_stage"]): row["customers"] for row in data.flows(wh, AS_OF)}
    assert flows == {("regular", "regular"): 1, ("regular", "at_risk"): 1, ("at_risk", "lapsed"): 1,
                     ("new_customer", "newcomer"): 1}
    assert [(row["as_of"], row["lapsed_share"]) for row in data.lapsed_share(wh)] == [
        (date(2026, 5, 1), 0.10), (date(2026, 5, 15), 0.15), (DAY_BEFORE, 0.20), (AS_OF, 0.25)]
    assert [(a["as_of"], a["value"]) for a in data.alerts(wh)] == [(DAY_BEFORE, 0.20)]
    fits = data.model_fits(wh, "b-30")
    assert [(f["model"], f["params"]) for f in fits] == [("bgnbd", {"r": 0.5, "alpha": 7.0}), ("gamma_gamma", {})]


def test_data_health_per_entity_rule_and_day(history):
    _, wh = history
    loads = {(row["entity"], row["day"]): (row["rows_loaded"], row["rows_quarantined"], row["failed_runs"])
             for row in data.loads(wh)}
    # a re-check's rows were counted when first quarantined: only what it loaded counts again
    assert loads == {("orders", DAY_BEFORE): (107, 3, 0), ("orders", AS_OF): (20, 2, 0),
                     ("customers", DAY_BEFORE): (50, 0, 0), ("customers", AS_OF): (0, 8, 1)}
    # the row that broke two rules counts under both
    assert [(r["day"], r["entity"], r["rule"], r["level"], r["rows"]) for r in data.quarantine(wh)] == [
        (DAY_BEFORE, "orders", "status_allowed", "row", 1),
        (DAY_BEFORE, "orders", "total_amount_non_negative", "row", 2),
        (AS_OF, "customers", "email_format", "field", 1),
        (AS_OF, "orders", "total_amount_non_negative", "row", 1)]
    assert [(r["entity"], r["status"], r["rows_extracted"]) for r in data.last_loads(wh)] == [
        ("customers", "rejected", 10), ("orders", "loaded", 20)]


def test_measured_tables_render_when_present_and_read_as_none_when_absent_or_empty(history):
    config, wh = history
    absent = data.read(wh, config)
    assert (absent.campaign_lift, absent.campaign_outcomes, absent.call_funnel, absent.churn_reasons,
            absent.model_checks) == (None, None, None, None, None)
    write_measured_tables(wh, empty=("campaign_lift",))
    present = data.read(wh, config)
    assert present.campaign_lift is None
    assert [(r["audience"], r["group"], r["cohort_date"]) for r in present.campaign_outcomes][:2] == [
        ("lapsed_winback", "control", date(2026, 9, 1)), ("lapsed_winback", "treatment", date(2026, 9, 1))]
    assert [r["bought"] for r in present.call_funnel] == [18, 20]
    assert len(present.churn_reasons) == 3
    # only the latest build's check, in the literature's order
    assert [(r["build_id"], r["repeat_purchases"]) for r in present.model_checks] == [
        ("build-new", "0"), ("build-new", "1"), ("build-new", "2"), ("build-new", "7+"), ("build-new", "all")]


def test_an_empty_warehouse_reads_as_nothing_measured(write_config, open_warehouse, warehouse_url):
    config = write_config(SOURCES, warehouse=warehouse_url)
    read = data.read(open_warehouse(config), config)
    assert read.headline is None and read.stage_sizes is None and read.loads is None and read.flows is None
