"""A simulated campaign with a known effect, measured through the warehouse: 40,000
spells in four weekly cohorts, 20 % held out; held-out members buy with probability
0.10, treated ones with 0.13 (true lift 0.03), each buyer spending an exponential
amount with mean 1,000 (true revenue-per-member lift 30). The measured intervals must
cover the truth, and the counts must equal the simulation's own."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import numpy as np
import pyarrow as pa
from shop_builder import AS_OF
from winback.build.builder import AsOf
from winback.measure.outcomes import refresh_outcomes
from winback.measure.spells import TABLES
from winback.schema import ENTITIES
from winback.sync.engine import SYNC_TABLES

MEMBERS, HOLDOUT, CONTROL_RATE, TRUE_LIFT, MEAN_SPEND = 40_000, 0.2, 0.10, 0.03, 1000.0


def simulate(seed: int = 12):
    rng = np.random.default_rng(seed)
    keys = np.array([f"c{i}" for i in range(MEMBERS)])
    cohort = rng.integers(0, 4, MEMBERS)
    entered = np.array([date(2026, 5, 1) + timedelta(days=7 * int(c)) for c in cohort])
    holdout = rng.random(MEMBERS) < HOLDOUT
    converted = rng.random(MEMBERS) < np.where(holdout, CONTROL_RATE, CONTROL_RATE + TRUE_LIFT)
    spend = np.round(rng.exponential(MEAN_SPEND, MEMBERS), 2)
    day_bought = rng.integers(1, 31, MEMBERS)  # within the 30-day window
    return keys, entered, holdout, converted, spend, day_bought


def test_measured_lift_covers_the_simulated_truth(write_config, open_warehouse, warehouse_url, today_is):
    today_is(AS_OF)
    config = write_config({"orders": {"kind": "file", "path": "o/*.csv"}}, warehouse=warehouse_url,
                          audiences={"winback": {"channel": "email", "holdout": HOLDOUT}})
    wh = open_warehouse(config)
    wh.ensure_tables({**TABLES, **SYNC_TABLES})
    wh.ensure_entity_tables(ENTITIES["orders"])
    keys, entered, holdout, converted, spend, day_bought = simulate()
    history = pa.table({"audience": ["winback"] * MEMBERS, "member_key": keys, "customer_id": keys,
                        "in_holdout": holdout, "entered_on": entered, "build_id": ["b"] * MEMBERS})
    bought_at = [datetime.combine(day, datetime.min.time()) + timedelta(days=int(n), hours=10)
                 for day, n in zip(entered[converted], day_bought[converted], strict=True)]
    orders = pa.table({"order_id": [f"o{i}" for i in range(int(converted.sum()))], "customer_id": keys[converted],
                       "created_at": pa.array(bought_at, pa.timestamp("us")), "status": ["completed"] * len(bought_at),
                       "total_amount": pa.array([f"{v:.2f}" for v in spend[converted]]).cast(pa.decimal128(18, 2))})
    with wh.begin() as conn:
        wh.write_arrow(conn, "audience_history", history)
        wh.write_arrow(conn, "orders", orders)
    for week in range(4):
        wh.execute("INSERT INTO sync_runs (run_id, audience, destination, kind, mode, status, started_at) "
                   "VALUES (:id, 'winback', 'mail', 'csv', 'mirror', 'succeeded', :at)",
                   {"id": f"r{week}", "at": datetime(2026, 5, 1, 9) + timedelta(days=7 * week)})
    refresh_outcomes(wh, config, AsOf.of(AS_OF))
    row = dict(wh.rows("SELECT * FROM campaign_lift")[0]._mapping)

    treated = ~holdout
    assert (row["treatment_members"], row["control_members"]) == (int(treated.sum()), int(holdout.sum()))
    assert abs(row["lift"] - (converted[treated].mean() - converted[holdout].mean())) < 1e-12
    assert row["lift_ci_low"] < TRUE_LIFT < row["lift_ci_high"]
    assert row["lift_ci_low"] > 0 and row["verdict"] == "pays"  # 0.3 per mail, ~30 per incremental customer
    revenue = np.where(converted, spend, 0.0)
    assert abs(row["revenue_per_member_lift"] - (revenue[treated].mean() - revenue[holdout].mean())) < 1e-6
    true_revenue_lift = TRUE_LIFT * MEAN_SPEND
    assert row["revenue_per_member_lift_ci_low"] < true_revenue_lift < row["revenue_per_member_lift_ci_high"]
    assert 0 < row["min_detectable_lift"] < TRUE_LIFT  # the sizes were large enough to see it
