"""Did it pay: after every live build, `campaign_outcomes` (per audience, cohort and
group) and `campaign_lift` (per audience, over its complete cohorts, with the
statistics and the verdict) are rebuilt aside and swapped in, in one transaction.

The SQL (include/sql/measure/) is rendered by the build's Renderer, so orders are cut at
the as-of day exactly as the marts cut them. It goes from a year of spells to one row
per audience, cohort and group in one pass (cohort_groups.sql); both tables are made
from that, and the statistics are numpy over one row per audience and group (stats.py).
"""

from __future__ import annotations

import time
from collections import Counter

import numpy as np
import pyarrow as pa

from winback.build.builder import AsOf, Renderer, _analyze, run
from winback.config import Config
from winback.measure import stats
from winback.warehouse import Warehouse, sql_literal

OUTCOME_TABLES = ("campaign_outcomes", "campaign_lift")
SCRATCH = "cohort_groups"  # per audience, cohort and group: what both tables are made from (temporary)

VERDICTS = ("pays", "does_not_pay", "inconclusive", "too_early", "no_control_group", "not_synced")

# campaign_lift, in order: (column, warehouse kind).
LIFT_COLUMNS = (
    ("audience", "text"), ("channel", "text"), ("as_of", "date"), ("window_days", "integer"),
    ("cohorts", "integer"), ("treatment_members", "integer"), ("control_members", "integer"),
    ("treatment_rate", "number"), ("control_rate", "number"), ("lift", "number"),
    ("lift_ci_low", "number"), ("lift_ci_high", "number"), ("p_value", "number"),
    ("incremental_customers", "number"), ("revenue_per_member_lift", "number"),
    ("revenue_per_member_lift_ci_low", "number"), ("revenue_per_member_lift_ci_high", "number"),
    ("incremental_revenue", "number"), ("contact_cost", "number"), ("cost_per_incremental_customer", "number"),
    ("acquisition_cost", "number"), ("min_detectable_lift", "number"), ("confidence", "number"),
    ("verdict", "text"),
)
_ARROW = {"text": pa.string(), "date": pa.date32(), "integer": pa.int64(), "number": pa.float64()}
_NO_SYNC_RUNS = ("(SELECT CAST(NULL AS VARCHAR) AS audience, CAST(NULL AS VARCHAR) AS status, "
                 "CAST(NULL AS TIMESTAMP) AS started_at WHERE 1 = 0)")


def window_days(config: Config, audience: str) -> int:
    own = config.audiences[audience].measurement.window_days
    return config.measurement.window_days if own is None else own


def contact_cost(config: Config, audience: str) -> float:
    spec = config.audiences[audience]
    own = spec.measurement.contact_cost
    return getattr(config.measurement.contact_costs, spec.channel) if own is None else own


def refresh_outcomes(wh: Warehouse, config: Config, moment: AsOf, purchase_days: str | None = None) -> dict:
    """Rebuild campaign_outcomes and campaign_lift as of a live build's day; returns the
    build summary's `measurement` entry (audiences measured, verdicts, seconds).
    `purchase_days`: the build's customer_purchase_days table as of the same day (the
    build passes it: no second pass over the orders); None renders the same SQL here."""
    began = time.perf_counter()
    renderer = Renderer(wh, config, moment)
    purchase_days = purchase_days or f"({renderer.render('customer_purchase_days')})"
    sync_runs = "sync_runs" if wh.table_exists("sync_runs") else _NO_SYNC_RUNS
    with wh.begin() as conn:  # one transaction: readers see both tables change together
        # Temporary, created and dropped in this transaction: a failure leaves none behind.
        run(conn, f"CREATE TEMPORARY TABLE {SCRATCH} AS\n" + renderer.render(
            SCRATCH, windows={name: window_days(config, name) for name in config.audiences},
            sync_runs=sync_runs, cutoff=sql_literal(moment.cutoff), purchase_days=purchase_days))
        _analyze(wh, conn, [SCRATCH])
        _create(conn, "campaign_outcomes", renderer.render("campaign_outcomes", measured=SCRATCH))
        groups = run(conn, renderer.render("lift_groups", measured=SCRATCH)).fetchall()
        measured = run(conn, f"SELECT COUNT(DISTINCT audience) FROM {SCRATCH}").scalar()
        synced = {row[0] for row in run(conn, f"""
            SELECT DISTINCT audience FROM {sync_runs} runs
            WHERE status = 'succeeded' AND started_at < {sql_literal(moment.cutoff)}""").fetchall()}
        lift = lift_table(config, moment.day, groups, synced)
        run(conn, "DROP TABLE IF EXISTS campaign_lift__new")
        run(conn, "CREATE TABLE campaign_lift__new ("
                  + ", ".join(f'{name} {wh.column_type(kind)}' for name, kind in LIFT_COLUMNS) + ")")
        wh.write_arrow(conn, "campaign_lift__new", lift)
        for table in OUTCOME_TABLES:
            run(conn, f"DROP TABLE IF EXISTS {table}")
            run(conn, f"ALTER TABLE {table}__new RENAME TO {table}")
        run(conn, f"DROP TABLE {SCRATCH}")
    verdicts = dict(zip(lift.column("audience").to_pylist(), lift.column("verdict").to_pylist(), strict=True))
    return {"audiences_measured": int(measured),  # with at least one measured spell
            "verdicts": dict(sorted(Counter(verdicts.values()).items())),
            "outcomes_seconds": round(time.perf_counter() - began, 3)}


def lift_table(config: Config, day, groups: list, synced: set[str]) -> pa.Table:
    """campaign_lift's rows, one per configured audience, from lift_groups.sql's rows
    (audience, in_holdout, members, converted, revenue, revenue_squares, cohorts)."""
    names = list(config.audiences)
    index = {name: i for i, name in enumerate(names)}
    size = len(names)
    # [group][figure] per audience; group 0 = treatment, 1 = control
    figures = np.zeros((2, 4, size))
    cohorts = np.zeros(size, dtype=np.int64)
    for audience, in_holdout, members, converted, revenue, squares, audience_cohorts in groups:
        if audience in index:
            i = index[audience]
            figures[int(bool(in_holdout)), :, i] = (members, converted, revenue or 0.0, squares or 0.0)
            cohorts[i] = max(cohorts[i], audience_cohorts)
    (n_t, x_t, sum_t, squares_t), (n_c, x_c, sum_c, squares_c) = figures
    confidence = config.measurement.confidence
    with np.errstate(divide="ignore", invalid="ignore"):
        treatment_rate, control_rate = x_t / n_t, x_c / n_c
        lift, low, high = stats.newcombe_difference(x_t, n_t, x_c, n_c, confidence)
        p_value = stats.two_proportion_p_value(x_t, n_t, x_c, n_c)
        revenue_lift, revenue_low, revenue_high = stats.welch_difference(
            n_t, sum_t, squares_t, n_c, sum_c, squares_c, confidence)
        mde = stats.min_detectable_lift(x_t, n_t, x_c, n_c, confidence)
        incremental = lift * n_t
        costs = np.array([contact_cost(config, name) for name in names]) * n_t
        per_customer = np.where(incremental > 0, costs / incremental, np.nan)
    acquisition = config.measurement.acquisition_cost
    pays = (low > 0) & (per_customer < acquisition)
    verdicts = np.select(
        [np.array([name not in synced for name in names]),
         np.array([config.audiences[name].holdout == 0 for name in names]),
         (n_t + n_c) == 0,
         n_c == 0,
         n_t == 0,
         pays,
         (high <= 0) | ((low > 0) & ~pays)],
        ["not_synced", "no_control_group", "too_early", "no_control_group", "inconclusive", "pays", "does_not_pay"],
        default="inconclusive")
    columns = {
        "audience": names, "channel": [config.audiences[name].channel for name in names],
        "as_of": [day] * size, "window_days": [window_days(config, name) for name in names], "cohorts": cohorts,
        "treatment_members": n_t.astype(np.int64), "control_members": n_c.astype(np.int64),
        "treatment_rate": treatment_rate, "control_rate": control_rate, "lift": lift,
        "lift_ci_low": low, "lift_ci_high": high, "p_value": p_value, "incremental_customers": incremental,
        "revenue_per_member_lift": revenue_lift, "revenue_per_member_lift_ci_low": revenue_low,
        "revenue_per_member_lift_ci_high": revenue_high, "incremental_revenue": revenue_lift * n_t,
        "contact_cost": costs, "cost_per_incremental_customer": per_customer,
        "acquisition_cost": [float(acquisition)] * size, "min_detectable_lift": mde,
        "confidence": [confidence] * size, "verdict": verdicts.tolist(),
    }
    return pa.table({name: pa.array(columns[name], type=_ARROW[kind], from_pandas=True)
                     for name, kind in LIFT_COLUMNS})


def _create(conn, table: str, sql: str) -> None:
    run(conn, f"DROP TABLE IF EXISTS {table}__new")
    run(conn, f"CREATE TABLE {table}__new AS\n{sql}")
