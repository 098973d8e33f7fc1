"""What the report page shows, read from the warehouse: aggregates only (counts, shares,
sums), never a customer's row. Every query returns a few rows per build, entity or
audience, so the page costs the same at a million customers.

A table another stage has not written yet (no campaign measured, no calls logged)
reads as None, and the page says "not measured yet" in its place.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

from winback.config import Config
from winback.warehouse import Warehouse, sql_literal

# Customers still buying on their rhythm, or only overdue: not lapsed, archived,
# negative, nor a one-off buyer showing no sign of coming back.
ACTIVE_STAGES = ("newcomer", "regular", "loyal", "at_risk")
REVENUE_DAYS = 30  # the headline's "revenue of the last 30 days", as-of day included
CALIBRATION_ORDER = ("0", "1", "2", "3", "4", "5", "6", "7+")


@dataclass
class Headline:
    build_id: str
    as_of: date
    customers: int
    active: int
    lapsed_share: float
    previous_as_of: date | None
    previous_lapsed_share: float | None
    revenue_30d: float
    # carts abandoned / carts started in the build's carts.lookback_days (null: no cart started)
    carts_started: int | None = None
    cart_abandonment_rate: float | None = None

    @property
    def lapsed_share_change(self) -> float | None:
        if self.previous_lapsed_share is None:
            return None
        return self.lapsed_share - self.previous_lapsed_share


@dataclass
class ReportData:
    """Everything the page draws; None where the warehouse has nothing to show yet."""

    headline: Headline | None
    stage_sizes: list[dict] | None
    flows: list[dict] | None
    lapsed_share: list[dict] | None
    alerts: list[dict] = field(default_factory=list)
    category_cycles: list[dict] | None = None
    campaign_lift: list[dict] | None = None
    campaign_outcomes: list[dict] | None = None
    call_funnel: list[dict] | None = None
    churn_reasons: list[dict] | None = None
    loads: list[dict] | None = None
    quarantine: list[dict] | None = None
    last_loads: list[dict] | None = None
    model_fits: list[dict] | None = None
    model_checks: list[dict] | None = None


def _dicts(wh: Warehouse, sql: str) -> list[dict]:
    return [dict(row._mapping) for row in wh.rows(sql)]


def _table(wh: Warehouse, table: str, sql: str) -> list[dict] | None:
    """The query's rows when `table` exists and has any; None otherwise."""
    if not wh.table_exists(table):
        return None
    return _dicts(wh, sql) or None


def _day(value: Any) -> date:
    return value.date() if isinstance(value, datetime) else value


def headline(wh: Warehouse, config: Config) -> Headline | None:
    """The latest live build's figures (a back-fill describes a past day, not today);
    the lapsed share compared with the latest build of an earlier day, as the alert does."""
    if not wh.table_exists("build_runs"):
        return None
    latest = wh.rows("SELECT build_id, as_of, customers, lapsed_share, stage_counts, carts_started, "
                     "cart_abandonment_rate FROM build_runs "
                     "WHERE NOT COALESCE(backfill, FALSE) ORDER BY as_of DESC, finished_at DESC LIMIT 1")
    if not latest:
        return None
    run = latest[0]
    as_of = _day(run.as_of)
    previous = wh.rows(f"SELECT as_of, lapsed_share FROM build_runs WHERE as_of < {sql_literal(as_of)} "
                       "ORDER BY as_of DESC, finished_at DESC LIMIT 1")
    stages = json.loads(run.stage_counts or "{}")
    return Headline(
        build_id=run.build_id, as_of=as_of, customers=int(run.customers),
        active=sum(int(stages.get(stage, 0)) for stage in ACTIVE_STAGES),
        lapsed_share=float(run.lapsed_share),
        previous_as_of=_day(previous[0].as_of) if previous else None,
        previous_lapsed_share=float(previous[0].lapsed_share) if previous else None,
        revenue_30d=revenue(wh, config, as_of),
        carts_started=run.carts_started,
        cart_abandonment_rate=None if run.cart_abandonment_rate is None else float(run.cart_abandonment_rate),
    )


def revenue(wh: Warehouse, config: Config, as_of: date, days: int = REVENUE_DAYS) -> float:
    """Purchases (segments.purchase_statuses) made in the `days` days ending with `as_of`."""
    if not wh.table_exists("orders"):
        return 0.0
    start = datetime.combine(as_of - timedelta(days=days - 1), time())
    end = datetime.combine(as_of + timedelta(days=1), time())
    statuses = ", ".join(sql_literal(s) for s in config.segments.purchase_statuses)
    total = wh.scalar(f"SELECT SUM(total_amount) FROM orders WHERE status IN ({statuses}) "
                      f"AND created_at >= {sql_literal(start)} AND created_at < {sql_literal(end)}")
    return float(total or 0)


def stage_sizes(wh: Warehouse) -> list[dict] | None:
    """Customers per stage at every as-of day: the stage counts the latest build of that
    day recorded (build_runs), not segment_history, whose million rows a build would
    make this chart group again for every build of the year."""
    rows = _table(wh, "build_runs", "SELECT as_of, stage_counts FROM build_runs ORDER BY as_of, finished_at")
    latest = {row["as_of"]: row["stage_counts"] for row in rows or []}  # a rebuild of a day replaces it
    sizes = [{"as_of": as_of, "lifecycle_stage": stage, "customers": int(customers)}
             for as_of, counts in latest.items() for stage, customers in sorted(json.loads(counts or "{}").items())]
    return sizes or None


def flows(wh: Warehouse, as_of: date | None) -> list[dict] | None:
    """Moves between stages from the previous as-of day to `as_of` (the latest build)."""
    if as_of is None:
        return None
    return _table(wh, "segment_transitions", f"""
        SELECT previous_as_of, from_stage, to_stage, customers FROM segment_transitions
        WHERE as_of = {sql_literal(as_of)} ORDER BY customers DESC, from_stage, to_stage""")


def lapsed_share(wh: Warehouse) -> list[dict] | None:
    """One point per as-of day: the latest build of that day (a rebuild replaces it)."""
    rows = _table(wh, "build_runs", """
        SELECT as_of, lapsed_share, customers, backfill, finished_at FROM build_runs
        ORDER BY as_of, finished_at""")
    if rows is None:
        return None
    return list({row["as_of"]: row for row in rows}.values())


def alerts(wh: Warehouse) -> list[dict]:
    return _table(wh, "alerts", "SELECT as_of, kind, message, value, previous_value FROM alerts "
                                "ORDER BY as_of, created_at") or []


def category_cycles(wh: Warehouse) -> list[dict] | None:
    return _table(wh, "category_cycles", """
        SELECT category, support, basis, typical_gap_days, at_risk_days, churn_days FROM category_cycles
        ORDER BY churn_days DESC, category""")


def loads(wh: Warehouse) -> list[dict] | None:
    """Rows read, loaded and quarantined per entity and day of the load. A re-check reads
    rows already counted when they were first quarantined: only what it loads counts."""
    if not wh.table_exists("load_runs"):
        return None
    wh.ensure_meta_tables()  # load_runs.mode, on a warehouse last loaded by an older version
    fresh = "COALESCE(mode, '') <> 'recheck'"
    return _table(wh, "load_runs", f"""
        SELECT entity, CAST(started_at AS DATE) AS day,
               SUM(CASE WHEN {fresh} THEN COALESCE(rows_extracted, 0) ELSE 0 END) AS rows_extracted,
               SUM(CASE WHEN status = 'loaded' THEN COALESCE(rows_inserted, 0) ELSE 0 END) AS rows_loaded,
               SUM(CASE WHEN {fresh} THEN COALESCE(rows_quarantined, 0) ELSE 0 END) AS rows_quarantined,
               COUNT(*) AS runs,
               SUM(CASE WHEN status IN ('failed', 'rejected') THEN 1 ELSE 0 END) AS failed_runs
        FROM load_runs GROUP BY 1, 2 ORDER BY 2, 1""")


def quarantine(wh: Warehouse) -> list[dict] | None:
    """Quarantined rows and nulled values per entity, rule and day. A row that broke two
    rules counts under both (rules are stored joined by ', ')."""
    rows = _table(wh, "quarantine", """
        SELECT entity, rules, COALESCE(level, 'row') AS level, CAST(quarantined_at AS DATE) AS day,
               COUNT(*) AS n
        FROM quarantine GROUP BY 1, 2, 3, 4""")
    if rows is None:
        return None
    counts: dict[tuple, int] = {}
    for row in rows:
        for rule in (row["rules"] or "unknown").split(", "):
            key = (row["day"], row["entity"], rule, row["level"])
            counts[key] = counts.get(key, 0) + int(row["n"])
    return [{"day": day, "entity": entity, "rule": rule, "level": level, "rows": n}
            for (day, entity, rule, level), n in sorted(counts.items())]


def last_loads(wh: Warehouse) -> list[dict] | None:
    """Each entity's most recent load, whatever its outcome."""
    return _table(wh, "load_runs", """
        SELECT entity, status, source_kind, started_at, finished_at, rows_extracted, rows_valid,
               rows_quarantined, rows_inserted AS rows_loaded, rows_updated
        FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY entity ORDER BY started_at DESC, load_id DESC) AS n
              FROM load_runs) latest
        WHERE n = 1 ORDER BY entity""")


def model_fits(wh: Warehouse, build_id: str | None) -> list[dict] | None:
    if build_id is None:
        return None
    rows = _table(wh, "model_fits", f"""
        SELECT model, params, log_likelihood, customers, converged, message FROM model_fits
        WHERE build_id = {sql_literal(build_id)} ORDER BY model""")
    for row in rows or []:
        row["params"] = json.loads(row["params"]) if row["params"] else {}
    return rows


def model_checks(wh: Warehouse) -> list[dict] | None:
    """The latest build's calibration table, in the literature's order (0, 1, ... 7+, all)."""
    rows = _table(wh, "model_checks", """
        SELECT * FROM model_checks WHERE build_id = (
            SELECT build_id FROM model_checks ORDER BY as_of DESC, build_id DESC LIMIT 1)""")
    if rows is None:
        return None
    order = {name: i for i, name in enumerate((*CALIBRATION_ORDER, "all"))}
    return sorted(rows, key=lambda row: order.get(str(row["repeat_purchases"]), len(order)))


def read(wh: Warehouse, config: Config) -> ReportData:
    """Everything the page shows."""
    top = headline(wh, config)
    return ReportData(
        headline=top,
        stage_sizes=stage_sizes(wh),
        flows=flows(wh, top.as_of if top else None),
        lapsed_share=lapsed_share(wh),
        alerts=alerts(wh),
        category_cycles=category_cycles(wh),
        campaign_lift=_table(wh, "campaign_lift", "SELECT * FROM campaign_lift ORDER BY audience"),
        campaign_outcomes=_table(wh, "campaign_outcomes",
                                 'SELECT * FROM campaign_outcomes ORDER BY audience, cohort_date, "group"'),
        call_funnel=_table(wh, "call_funnel", "SELECT * FROM call_funnel ORDER BY audience, month"),
        churn_reasons=_table(wh, "churn_reasons",
                             "SELECT * FROM churn_reasons ORDER BY main_category, lifecycle_stage, reason"),
        loads=loads(wh),
        quarantine=quarantine(wh),
        last_loads=last_loads(wh),
        model_fits=model_fits(wh, top.build_id if top else None),
        model_checks=model_checks(wh),
    )
