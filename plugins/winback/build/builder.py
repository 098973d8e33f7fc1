"""Rebuild the marts from the staging tables, as of a day, and swap them in atomically.

Each mart is one Jinja-templated SELECT in include/sql/marts/<mart>.sql (the tables
built once to be read by the marts: include/sql/intermediate/), built aside as
`<mart>__new`; the model step fits BG/NBD and Gamma-Gamma between the SQL steps; then one
transaction replaces every mart and appends the build's history (segment_history,
segment_transitions, model_fits, model_checks, build_runs, alerts). Readers never see a half-built set.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pyarrow as pa

from winback.build.snapshot import publish_snapshot
from winback.clock import utcnow
from winback.config import Config
from winback.measure import spells
from winback.measure.call_funnel import refresh_call_funnel
from winback.schema import ENTITIES
from winback.warehouse import Warehouse, sql_literal

log = logging.getLogger(__name__)

# The marts' SQL lives beside dags/ and plugins/ (include/sql); WINBACK_SQL_DIR points
# elsewhere when the package is pip-installed without the repository.
SQL_DIR = Path(os.environ.get("WINBACK_SQL_DIR") or Path(__file__).resolve().parents[3] / "include" / "sql")
BTYD_TABLE = "btyd_scores"
# Built once to be read by the marts, not for people (include/sql/intermediate/; left
# out of the snapshot).
INTERNAL = ("visitor_activity", "customer_purchase_days", "customer_category_days", "cart_items")
# Build order: a mart may read the marts before it.
MARTS = (
    "visitor_activity",  # internal: events read once for identities and visits
    "identity_map",
    "customer_purchase_days",  # internal: purchase days per customer, with the gaps
    "customer_category_days",  # internal: purchases per customer, category and day
    "customer_facts",
    "category_cycles",
    "customer_rfm",
    BTYD_TABLE,  # the model step, not SQL
    "customer_segments",
    "churn_reasons",
    "cart_items",  # internal: every cart of the lookback, for abandoned_carts and the abandonment rate
    "abandoned_carts",
    "browse_abandoners",
    "feedback_due",
    "registered_not_bought",
    "triggers_due",
    "referrals",
    "audience_members",
)
BUILD_DUCKDB_MEMORY = "4GB"
EXPECTED_PURCHASES_DAYS = 90
CLV_HORIZON_DAYS = 365

# What dates a staging row (the entity's "happened at" column) and which of its
# columns describe later facts that an as-of build must not see.
DATED_BY = {
    "customers": ("registered_at", ("unsubscribed_at", "updated_at")),
    "orders": ("created_at", ("delivered_at", "updated_at")),
    "events": ("occurred_at", ()),
    "feedback": ("created_at", ()),
    "mailing_events": ("occurred_at", ()),
    "contact_outcomes": ("contacted_at", ()),
}

HISTORY_TABLES = {
    "build_runs": (
        (("build_id", "text"), ("as_of", "date"), ("started_at", "timestamp"), ("finished_at", "timestamp"),
         ("customers", "integer"), ("lapsed_share", "number"), ("stage_counts", "json"), ("seconds", "number"),
         ("backfill", "boolean"), ("carts_started", "integer"), ("carts_abandoned", "integer"),
         ("cart_abandonment_rate", "number")),
        ("build_id",),
    ),
    "model_checks": (  # build/models/check.py
        (("build_id", "text"), ("as_of", "date"), ("calibration_end", "date"), ("check_days", "integer"),
         ("repeat_purchases", "text"), ("customers", "integer"), ("predicted", "number"), ("actual", "number"),
         ("mean_absolute_error", "number"), ("params", "json"), ("message", "text")),
        ("build_id", "repeat_purchases"),
    ),
    "model_fits": (
        (("build_id", "text"), ("as_of", "date"), ("model", "text"), ("params", "json"),
         ("log_likelihood", "number"), ("customers", "integer"), ("converged", "boolean"),
         ("time_unit", "text"), ("message", "text"), ("fitted_at", "timestamp")),
        ("build_id", "model"),
    ),
    "segment_history": (
        (("as_of", "date"), ("customer_id", "text"), ("lifecycle_stage", "text"), ("build_id", "text")),
        (),
    ),
    "segment_transitions": (
        (("as_of", "date"), ("previous_as_of", "date"), ("from_stage", "text"), ("to_stage", "text"),
         ("customers", "integer")),
        (),
    ),
    "alerts": (
        (("build_id", "text"), ("as_of", "date"), ("kind", "text"), ("message", "text"),
         ("value", "number"), ("previous_value", "number"), ("created_at", "timestamp")),
        (),
    ),
}


def sql_path(mart: str) -> str:
    """Where a mart's SQL is, for people."""
    return f"include/sql/{'intermediate' if mart in INTERNAL else 'marts'}/{mart}.sql"


class BuildError(RuntimeError):
    """The marts cannot be built (no orders loaded, bad SQL); the message says why."""


@dataclass(frozen=True)
class AsOf:
    """The day a build looks from: data dated before `cutoff` (the end of `day`) is
    used; `now` is the moment ages are measured to (the cutoff, or the present)."""

    day: date
    cutoff: datetime
    now: datetime
    backfill: bool = False  # a past day: its marts go aside, never to the live names

    @classmethod
    def of(cls, day: date | None) -> AsOf:
        present = utcnow()
        day = day or present.date()
        cutoff = datetime.combine(day + timedelta(days=1), datetime.min.time())
        # Past once the day is over: a build at its very end (midnight after) still
        # sees the whole day as "today" would.
        return cls(day, cutoff, min(cutoff, present), backfill=cutoff < present)


# -- SQL rendering ---------------------------------------------------------------------------
def _dialect_macros(dialect: str) -> dict[str, Any]:
    """The few expressions DuckDB and PostgreSQL spell differently."""
    if dialect == "duckdb":
        def hours_between(later: str, earlier: str) -> str:
            return f"(date_diff('second', {earlier}, {later}) / 3600.0)"

        def hash_bucket(expr: str) -> str:  # first 32 bits of md5, as an integer
            return f"CAST(('0x' || substr(md5({expr}), 1, 8)) AS BIGINT)"

        def latest(value: str, *order: str, where: str | None = None, first: bool = False) -> str:
            """`value` (NULL too) of the row last (or first) by `order`, among rows `where`."""
            function = "arg_min_null" if first else "arg_max_null"
            return f"{function}({value}, row({', '.join(order)}))" + (f" FILTER (WHERE {where})" if where else "")
    else:
        def hours_between(later: str, earlier: str) -> str:
            return f"(extract(epoch FROM ({later} - {earlier})) / 3600.0)"

        def hash_bucket(expr: str) -> str:
            return f"(('x' || substr(md5({expr}), 1, 8))::bit(32)::bigint & 4294967295)"

        def latest(value: str, *order: str, where: str | None = None, first: bool = False) -> str:
            direction = "ASC" if first else "DESC"
            condition = f" FILTER (WHERE {where})" if where else ""
            return f"(array_agg({value} ORDER BY {', '.join(f'{o} {direction}' for o in order)}){condition})[1]"
    return {"hours_between": hours_between, "hash_bucket": hash_bucket, "latest": latest}


class Renderer:
    """Renders a mart's SQL (sql_path) for one build: staging relations cut at the as-of
    day, the marts of this build, settings and dialect macros."""

    def __init__(self, wh: Warehouse, config: Config, as_of: AsOf):
        self.wh, self.config, self.as_of = wh, config, as_of
        self.env = jinja2.Environment(loader=jinja2.FileSystemLoader([SQL_DIR / "intermediate", SQL_DIR / "marts", SQL_DIR / "measure"]), undefined=jinja2.StrictUndefined,
                                      keep_trailing_newline=True)
        self.env.filters["lit"] = sql_literal
        self.env.filters["present"] = lambda identifier: f"{identifier} IS NOT NULL"
        self.gamma_gamma: dict = {}  # the spend model's parameters, set after the model step
        self.present = {name for name in ENTITIES if wh.table_exists(name)}

    def src(self, entity: str) -> str:
        columns = ENTITIES[entity].columns
        if entity not in self.present:
            return self.wh.empty_relation((c.name, c.type) for c in columns)
        cutoff = sql_literal(self.as_of.cutoff)
        if entity == "order_items":
            # Items carry no date of their own: every mart joins them to src('orders'),
            # which makes the cut; a semi-join here would only repeat it.
            return "(SELECT * FROM order_items)"
        dated_by, later = DATED_BY[entity]
        select = ", ".join(f"CASE WHEN {c.name} < {cutoff} THEN {c.name} END AS {c.name}" if c.name in later
                           else c.name for c in columns)
        where = f"{dated_by} < {cutoff}"
        if entity == "customers":
            where = f"({where} OR {dated_by} IS NULL)"
        return f"(SELECT {select} FROM {entity} WHERE {where})"

    def render(self, mart: str, **extra: Any) -> str:
        settings = self.config.segments
        day, now = self.as_of.day, self.as_of.now
        context = {
            **_dialect_macros(self.wh.dialect),
            "src": self.src,
            "mart": lambda name: f"{name}__new",
            "lit": sql_literal,
            "settings": settings,
            "audiences": self.config.audiences,
            "as_of": sql_literal(day),
            "now": sql_literal(now),
            "purchase_statuses": "(" + ", ".join(sql_literal(s) for s in settings.purchase_statuses) + ")",
            "recent_since": sql_literal(now - timedelta(days=settings.lifecycle.recent_activity_days)),
            "negative_since": sql_literal(now - timedelta(days=settings.lifecycle.negative_window_days)),
            "signal_since": sql_literal(now - timedelta(days=settings.lifecycle.signal_days)),
            "gamma_gamma": self.gamma_gamma,
            **extra,
        }
        return self.env.get_template(f"{mart}.sql").render(context)


# -- the model step ------------------------------------------------------------------------------
def fit_models(wh: Warehouse, conn, as_of: AsOf, enabled: bool, min_repeat: int) -> tuple[list[dict], dict]:
    """Fit BG/NBD on customers grouped by (x, t_x, T) in days and Gamma-Gamma on repeat
    buyers; write per-group scores to btyd_scores__new. Returns the fits (for
    model_fits) and the Gamma-Gamma parameters for the SQL of customer_segments."""
    table = f"{BTYD_TABLE}__new"
    run(conn, f"DROP TABLE IF EXISTS {table}")
    number = wh.column_type("number")
    integer = wh.column_type("integer")
    run(conn, f"CREATE TABLE {table} (x {integer}, t_x {integer}, big_t {integer}, p_alive {number}, "
              f"expected_purchases_90d {number}, expected_purchases_horizon {number})")
    no_spend = {"available": "FALSE", "p": 1.0, "q": 2.0, "v": 1.0}
    if not enabled:
        return [], no_spend
    from winback.build.models import (
        ModelFitError,
        expected_purchases,
        fit_bgnbd,
        fit_gamma_gamma,
        p_alive,
    )

    groups = run(conn, f"""
        SELECT purchase_days - 1 AS x, last_purchase_day - first_purchase_day AS t_x,
               {sql_literal(as_of.day)} - first_purchase_day AS big_t, COUNT(*) AS customers
        FROM customer_facts__new WHERE purchase_days > 0
        GROUP BY 1, 2, 3 ORDER BY 1, 2, 3""").fetchall()
    fits: list[dict] = []
    if not groups:
        return fits, no_spend
    x, t_x, big_t, weights = (np.array(column, dtype=float) for column in zip(*groups))
    repeaters = int(weights[x > 0].sum())
    try:
        if repeaters < min_repeat:
            raise ModelFitError(f"{repeaters} repeat buyers, fewer than models.min_repeat_customers={min_repeat}")
        usable = big_t > 0  # a first purchase today says nothing about the rate yet
        fit = fit_bgnbd(x[usable], t_x[usable], big_t[usable], weights[usable])
        if not fit.converged:
            raise ModelFitError(f"the fit did not converge (parameters {_fit_row(fit)['params']})")
        columns = {
            "p_alive": p_alive(fit.params, x, t_x, big_t),
            "expected_purchases_90d": expected_purchases(fit.params, EXPECTED_PURCHASES_DAYS, x, t_x, big_t),
            "expected_purchases_horizon": expected_purchases(fit.params, CLV_HORIZON_DAYS, x, t_x, big_t),
        }
        if not all(np.isfinite(values).all() for values in columns.values()):
            raise ModelFitError(f"the fitted model gives non-finite scores (parameters {_fit_row(fit)['params']})")
        fits.append({"model": "bgnbd", **_fit_row(fit)})
        wh.write_arrow(conn, table, pa.table({
            "x": x.astype(np.int64), "t_x": t_x.astype(np.int64), "big_t": big_t.astype(np.int64), **columns}))
    except ModelFitError as exc:
        log.warning("BG/NBD not fitted: %s; p_alive and CLV stay empty", exc)
        fits.append({"model": "bgnbd", "params": "{}", "log_likelihood": None, "customers": int(weights.sum()),
                     "converged": False, "message": str(exc)})
        return fits, no_spend
    spend = run(conn, """
        SELECT purchase_days - 1 AS x, CAST(repeat_day_value AS DOUBLE PRECISION) AS m, COUNT(*) AS customers
        FROM customer_facts__new WHERE purchase_days > 1 AND repeat_day_value > 0
        GROUP BY 1, 2 ORDER BY 1, 2""").fetchall()
    try:
        if not spend:
            raise ModelFitError("no repeat purchase with a positive value")
        frequency, monetary, counts = (np.array(column, dtype=float) for column in zip(*spend))
        gg = fit_gamma_gamma(frequency, monetary, counts)
        p, q, v = gg.params.p, gg.params.q, gg.params.v
        if not gg.converged:
            raise ModelFitError(f"the fit did not converge (parameters {_fit_row(gg)['params']})")
        fits.append({"model": "gamma_gamma", **_fit_row(gg)})
        if q <= 1:
            raise ModelFitError(f"Gamma-Gamma q={q:.3f} <= 1: the mean spend is undefined")
        return fits, {"available": "TRUE", "p": repr(float(p)), "q": repr(float(q)), "v": repr(float(v))}
    except ModelFitError as exc:
        log.warning("Gamma-Gamma not fitted: %s; CLV uses the average order value", exc)
        fits.append({"model": "gamma_gamma", "params": "{}", "log_likelihood": None, "customers": 0,
                     "converged": False, "message": str(exc)})
        return fits, no_spend


def _fit_row(fit) -> dict:
    params = {name: round(float(value), 8) for name, value in vars(fit.params).items()}
    return {"params": json.dumps(params, sort_keys=True), "log_likelihood": float(fit.log_likelihood),
            "customers": int(fit.customers), "converged": bool(fit.converged), "message": None}


# -- the build ---------------------------------------------------------------------------------------
def build(config: Config, as_of: date | None = None, *, warehouse: Warehouse | None = None) -> dict:
    """Rebuild every mart as of `as_of` (default today) and swap them in; returns a summary.
    A past day is a back-fill: its marts are written as `<backfill_prefix><mart>` and the
    live marts, the audiences and the sync never see it."""
    wh = warehouse or Warehouse(config.warehouse_url)
    try:
        # Builds of one warehouse take turns: they share the <mart>__new names.
        with wh.exclusive("build", config.build.lock_wait.total_seconds()):
            summary = _build(wh, config, AsOf.of(as_of))
            if wh.dialect == "duckdb" and config.build.snapshot:
                began = time.perf_counter()
                summary["snapshot"] = str(publish_snapshot(wh, config.resolve(config.build.snapshot),
                                                           published_tables(wh, config), summary))
                summary["snapshot_seconds"] = round(time.perf_counter() - began, 3)
        return summary
    finally:
        if warehouse is None:
            wh.dispose()  # DuckDB: let the next task have the file


def mart_table(config: Config, mart: str, moment: AsOf) -> str:
    """Where a build puts a mart: its live name, or the back-fill's."""
    return f"{config.build.backfill_prefix}{mart}" if moment.backfill else mart


def published_tables(wh: Warehouse, config: Config) -> list[str]:
    """What the read-only snapshot holds: the live and back-filled marts people read, and
    the history."""
    names = [name for mart in MARTS if mart not in INTERNAL for name in (mart, config.build.backfill_prefix + mart)]
    measured = [*spells.TABLES, "campaign_outcomes", "campaign_lift", "call_funnel"]
    return [name for name in [*names, *HISTORY_TABLES, *measured] if wh.table_exists(name)]


def _build(wh: Warehouse, config: Config, moment: AsOf) -> dict:
    began, started_at = time.perf_counter(), utcnow()
    if not wh.table_exists("orders"):
        raise BuildError("no orders table in the warehouse: run `python -m winback ingest` first")
    wh.ensure_tables({**HISTORY_TABLES, **spells.TABLES})
    # A staging table loaded by an older version lacks the columns a newer one gave its
    # entity (feedback's separate scores, customers.birth_date) until that entity's next
    # load; add them (empty) so the marts' SQL can read them now.
    for entity in ENTITIES.values():
        if wh.table_exists(entity.name):
            wh.ensure_entity_tables(entity)
    build_id = f"build-{started_at:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    timings: dict[str, float] = {}
    fits: list[dict] = []
    renderer = Renderer(wh, config, moment)
    with wh.begin() as conn:
        if wh.dialect == "duckdb":
            # The ingest keeps DuckDB to 1 GB; the build's joins over every customer
            # would spill at a million customers, and its goal is 6 GB.
            run(conn, f"SET memory_limit = '{BUILD_DUCKDB_MEMORY}'")
        _analyze(wh, conn, sorted(renderer.present))
    # Each mart is built aside in its own transaction: later marts read earlier ones,
    # and DuckDB scans committed tables much faster than a transaction's own new ones
    # (1M customers: customer_facts 16 s -> 10 s). Readers see none of it until the swap.
    for mart in MARTS:
        step = time.perf_counter()
        with wh.begin() as conn:
            if mart == BTYD_TABLE:
                fits, renderer.gamma_gamma = fit_models(wh, conn, moment, config.segments.models.enabled,
                                                        config.segments.models.min_repeat_customers)
            else:
                _create_aside(conn, mart, renderer.render(mart))
            _analyze(wh, conn, [f"{mart}__new"])
        timings[mart] = round(time.perf_counter() - step, 3)
    from winback.build.models import check  # scipy: imported when needed

    step, models = time.perf_counter(), config.segments.models
    with wh.begin() as conn:
        checks = check.check_model(conn, moment.day, models.enabled, models.check_days, models.min_repeat_customers)
    timings["model_checks"] = round(time.perf_counter() - step, 3)
    targets = {mart: mart_table(config, mart, moment) for mart in MARTS}
    with wh.begin() as conn:  # one transaction: every mart swapped in, and the history
        stats = _swap_and_record(conn, build_id, moment, targets, fits, config.segments.lapsed_share_alert,
                                 started_at, began)
        check.record_checks(conn, build_id, moment.day, checks)
    summary = {"build_id": build_id, "as_of": str(moment.day), "backfill": moment.backfill, **stats,
               "tables": targets, "marts": timings}
    if not moment.backfill:  # did it pay: campaign_outcomes and campaign_lift (docs/measurement.md)
        from winback.measure.outcomes import refresh_outcomes

        summary["measurement"] = {**stats.pop("spells"),
                                  **refresh_outcomes(wh, config, moment, targets["customer_purchase_days"]),
                                  "call_funnel_rows": refresh_call_funnel(wh, config, moment.day, moment.cutoff)}
    summary["seconds"] = round(time.perf_counter() - began, 3)
    log.info("build %s as of %s%s: %s customers, stages %s", build_id, moment.day,
             f" (back-fill into {config.build.backfill_prefix}*)" if moment.backfill else "",
             stats["customers"], stats["stage_counts"])
    return summary


def run(conn, sql: str):
    """Run one statement of the build. psycopg reads `%` as a placeholder even without
    parameters, and rendered SQL and messages may hold one (a LIKE, a share)."""
    if conn.dialect.paramstyle in ("format", "pyformat"):
        sql = sql.replace("%", "%%")
    return conn.exec_driver_sql(sql)


def _analyze(wh: Warehouse, conn, tables: list[str]) -> None:
    # PostgreSQL plans the marts' anti-joins from table statistics; freshly loaded or
    # created tables have none until autovacuum comes by, and a nested loop over a
    # million events follows. DuckDB keeps its statistics up to date by itself.
    if wh.dialect == "postgresql":
        for table in tables:
            run(conn, f"ANALYZE {table}")


def _create_aside(conn, mart: str, sql: str) -> None:
    run(conn, f"DROP TABLE IF EXISTS {mart}__new")
    try:
        run(conn, f"CREATE TABLE {mart}__new AS\n{sql}")
    except Exception as exc:
        raise BuildError(f"{sql_path(mart)} failed: {exc}") from exc


def _swap_and_record(conn, build_id: str, moment: AsOf, targets: dict[str, str], fits: list[dict],
                     alert_threshold: float, started_at: datetime, began: float) -> dict:
    """Inside the build's transaction: replace the marts (`targets`: mart -> table),
    then append the history."""
    for mart, table in targets.items():
        run(conn, f"DROP TABLE IF EXISTS {table}")
        run(conn, f"ALTER TABLE {mart}__new RENAME TO {table}")
    day = sql_literal(moment.day)
    stage_counts = dict(run(conn, f"SELECT lifecycle_stage, COUNT(*) FROM {targets['customer_segments']} "
                                  "GROUP BY 1 ORDER BY 1").fetchall())
    customers = sum(stage_counts.values())
    lapsed_share = stage_counts.get("lapsed", 0) / customers if customers else 0.0

    for table in ("segment_history", "segment_transitions"):
        run(conn, f"DELETE FROM {table} WHERE as_of = {day}")
    run(conn, f"""
        INSERT INTO segment_history (as_of, customer_id, lifecycle_stage, build_id)
        SELECT {day}, customer_id, lifecycle_stage, {sql_literal(build_id)} FROM {targets['customer_segments']}""")
    previous = run(conn, 
        f"SELECT MAX(as_of) FROM segment_history WHERE as_of < {day}").scalar()
    if previous is not None:
        run(conn, f"""
            INSERT INTO segment_transitions (as_of, previous_as_of, from_stage, to_stage, customers)
            SELECT {day}, {sql_literal(previous)}, COALESCE(p.lifecycle_stage, 'new_customer'), c.lifecycle_stage, COUNT(*)
            FROM segment_history c
            LEFT JOIN segment_history p ON p.customer_id = c.customer_id AND p.as_of = {sql_literal(previous)}
            WHERE c.as_of = {day}
            GROUP BY 3, 4""")

    now = utcnow()
    for fit in fits:
        run(conn, f"DELETE FROM model_fits WHERE build_id = {sql_literal(build_id)} "
                             f"AND model = {sql_literal(fit['model'])}")
        run(conn, 
            "INSERT INTO model_fits (build_id, as_of, model, params, log_likelihood, customers, converged, "
            "time_unit, message, fitted_at) VALUES (" + ", ".join(sql_literal(v) for v in (
                build_id, moment.day, fit["model"], fit["params"], fit["log_likelihood"], fit["customers"],
                fit["converged"], "day", fit["message"], now)) + ")")

    carts_started, carts_abandoned = run(conn, f"""
        SELECT (SELECT COUNT(DISTINCT cart_key) FROM {targets['cart_items']} WHERE added_at IS NOT NULL),
               (SELECT COUNT(*) FROM {targets['abandoned_carts']})""").one()
    abandonment = carts_abandoned / carts_started if carts_started else None
    alert = lapsed_share_alert(conn, build_id, moment, lapsed_share, alert_threshold, now)
    # Who was in which audience when: a back-fill's audiences never reached a platform.
    opened = None if moment.backfill else spells.record_spells(conn, build_id, moment.day, targets["audience_members"])
    run(conn,
        "INSERT INTO build_runs (build_id, as_of, started_at, finished_at, customers, lapsed_share, "
        "stage_counts, seconds, backfill, carts_started, carts_abandoned, cart_abandonment_rate) VALUES ("
        + ", ".join(sql_literal(v) for v in (
            build_id, moment.day, started_at, now, customers, lapsed_share, json.dumps(stage_counts, sort_keys=True),
            round(time.perf_counter() - began, 3), moment.backfill, carts_started, carts_abandoned, abandonment)) + ")")
    return {"customers": customers, "stage_counts": stage_counts, "lapsed_share": round(lapsed_share, 4),
            "cart_abandonment_rate": None if abandonment is None else round(abandonment, 4),
            "alert": alert, **({"spells": opened} if opened is not None else {})}


def lapsed_share_alert(conn, build_id: str, moment: AsOf, lapsed_share: float, threshold: float,
                       now: datetime) -> str | None:
    """Compare the lapsed share with the latest build of an earlier day; a swing larger
    than the threshold goes to `alerts` and the log."""
    previous = run(conn, f"""
        SELECT lapsed_share FROM build_runs
        WHERE as_of < {sql_literal(moment.day)}
        ORDER BY as_of DESC, finished_at DESC LIMIT 1""").scalar()
    if previous is None or abs(lapsed_share - previous) <= threshold:
        return None
    message = (f"lapsed share moved from {previous:.1%} to {lapsed_share:.1%} as of {moment.day} "
               f"(more than segments.lapsed_share_alert={threshold:.0%})")
    run(conn,
        "INSERT INTO alerts (build_id, as_of, kind, message, value, previous_value, created_at) VALUES ("
        + ", ".join(sql_literal(v) for v in (build_id, moment.day, "lapsed_share_swing", message,
                                             lapsed_share, previous, now)) + ")")
    log.warning(message)
    return message
