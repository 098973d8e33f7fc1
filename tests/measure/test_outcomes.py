"""campaign_outcomes and campaign_lift on hand-built histories: which spells are
measured (a live sync inside the spell), conversions on the window's boundary days,
incomplete cohorts, per-audience overrides and every verdict. Expected figures are
worked out by hand in the comments; warehouse tests run on DuckDB and PostgreSQL.

The as-of day is 2026-06-30; the default window is 30 days.
"""

from __future__ import annotations

import math
from datetime import date, datetime

import pyarrow as pa
import pytest
from shop_builder import AS_OF, Shop
from winback.build.builder import AsOf
from winback.config import ConfigError
from winback.measure import stats
from winback.measure.outcomes import VERDICTS, lift_table, refresh_outcomes
from winback.measure.spells import TABLES
from winback.sync.engine import SYNC_TABLES

SOURCES = {"orders": {"kind": "file", "path": "o/*.csv"}}
HISTORY = pa.schema([("audience", pa.string()), ("member_key", pa.string()), ("customer_id", pa.string()),
                     ("in_holdout", pa.bool_()), ("entered_on", pa.date32()), ("left_on", pa.date32()),
                     ("build_id", pa.string())])
AUDIENCES = {
    "winback": {"where": {"lifecycle_stage": ["lapsed"]}, "channel": "email", "holdout": 0.5},
    "short": {"where": {"lifecycle_stage": ["lapsed"]}, "channel": "sms", "holdout": 0.5,
              "measurement": {"window_days": 5, "contact_cost": 2.5}},
    "dry": {"where": {"lifecycle_stage": ["at_risk"]}, "channel": "email", "holdout": 0.5},
    "everyone_called": {"where": {"lifecycle_stage": ["negative"]}, "channel": "call", "holdout": 0.0},
    "fresh": {"where": {"lifecycle_stage": ["loyal"]}, "channel": "email", "holdout": 0.5},
}


def d(month: int, day: int) -> date:
    return date(2026, month, day)


def at(month: int, day: int, hour: int = 12, minute: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute)


def spell(audience, member, holdout, entered, left=None) -> dict:
    return {"audience": audience, "member_key": member, "customer_id": member, "in_holdout": holdout,
            "entered_on": entered, "left_on": left, "build_id": "b"}


def sync_run(wh, audience: str, started_at: datetime, status: str = "succeeded") -> None:
    wh.execute("INSERT INTO sync_runs (run_id, audience, destination, kind, mode, status, started_at) "
               "VALUES (:id, :audience, 'mail', 'webhook', 'mirror', :status, :started_at)",
               {"id": f"{audience}-{started_at:%m%d%H%M}", "audience": audience, "status": status,
                "started_at": started_at})


@pytest.fixture
def measured(write_config, open_warehouse, warehouse_url, today_is):
    """A warehouse with the hand-built history below, measured as of AS_OF."""
    today_is(AS_OF)
    config = write_config(SOURCES, warehouse=warehouse_url, audiences=AUDIENCES)
    wh = open_warehouse(config)
    wh.ensure_tables({**TABLES, **SYNC_TABLES})
    history = [
        # winback, cohort 05-01 (complete: 05-01 + 30 = 05-31 <= 06-30)
        spell("winback", "t1", False, d(5, 1)),  # buys on the entry day only: not converted
        spell("winback", "t2", False, d(5, 1)),  # buys at 00:00 of day 1: converted, 100
        spell("winback", "t3", False, d(5, 1), d(6, 10)),  # day 30 at 23:59 (300) yes, day 31 no
        spell("winback", "t4", False, d(5, 1)),  # a cancelled order only: not converted
        spell("winback", "k1", True, d(5, 1)),  # two purchases on day 14: converted, 2 orders, 120
        spell("winback", "k2", True, d(5, 1)),  # nothing
        # cohort 04-20, left on 05-01, the day of the first live sync: measured (inclusive)
        spell("winback", "t7", False, d(4, 20), d(5, 1)),
        # left before any live sync: not measured
        spell("winback", "t8", False, d(4, 1), d(4, 10)),
        # in while only a failed run happened (06-11): not measured
        spell("winback", "t6", False, d(6, 10), d(6, 12)),
        # cohort 06-20, synced 06-21, open: incomplete (06-20 + 30 > 06-30)
        spell("winback", "t5", False, d(6, 20)),
        # short: 5-day window, cohort 05-01 synced 05-01
        spell("short", "s1", False, d(5, 1)),  # buys on day 5: converted
        spell("short", "s2", True, d(5, 1)),  # buys on day 6: outside its window
        # dry: dry runs only (never in sync_runs)
        spell("dry", "r1", False, d(5, 1)), spell("dry", "r2", True, d(5, 1)),
        # everyone_called: no holdout at all
        spell("everyone_called", "e1", False, d(5, 1)), spell("everyone_called", "e2", False, d(5, 1)),
        # fresh: synced, but its only cohort is still within its window
        spell("fresh", "f1", False, d(6, 25)), spell("fresh", "f2", True, d(6, 25)),
    ]
    with wh.begin() as conn:
        wh.write_arrow(conn, "audience_history", pa.Table.from_pylist(history, schema=HISTORY))
    for audience, started in (("winback", at(5, 1, 10)), ("winback", at(6, 21, 3)), ("short", at(5, 1, 10)),
                              ("everyone_called", at(5, 2)), ("fresh", at(6, 25, 9))):
        sync_run(wh, audience, started)
    sync_run(wh, "winback", at(6, 11), status="failed")
    sync_run(wh, "winback", at(7, 1, 1))  # after the as-of day: not seen
    shop = Shop()
    shop.order("o1", "t1", at(5, 1, 20), total=50)
    shop.order("o2", "t2", at(5, 2, 0, 0), total=100)
    shop.order("o3", "t3", at(5, 31, 23, 59), total=300)
    shop.order("o4", "t3", at(6, 1, 0, 0), total=999)
    shop.order("o5", "t4", at(5, 10), total=80, status="cancelled")
    shop.order("o6", "k1", at(5, 15, 9), total=50)
    shop.order("o7", "k1", at(5, 15, 18), total=70)
    shop.order("o8", "t5", at(6, 25), total=200)
    shop.order("o9", "t6", at(6, 11), total=10)
    shop.order("o10", "t8", at(4, 5), total=10)
    shop.order("o11", "s1", at(5, 6), total=40)
    shop.order("o12", "s2", at(5, 7), total=40)
    shop.order("o13", "e1", at(5, 20), total=60)
    shop.order("o14", "f1", at(6, 27), total=30)
    shop.order("o15", "t2", at(7, 1, 8), total=500)  # after the as-of day: unseen
    shop.write(wh)
    summary = refresh_outcomes(wh, config, AsOf.of(AS_OF))
    return wh, summary


def outcomes(wh) -> dict[tuple, tuple]:
    rows = wh.rows('SELECT audience, cohort_date, "group", members, converted, conversion_rate, orders, revenue, '
                   "revenue_per_member, window_days, complete FROM campaign_outcomes")
    return {(r[0], r[1], r[2]): (r[3], r[4], r[5], r[6], float(r[7]), r[8], r[9], r[10]) for r in rows}


def lift(wh) -> dict[str, dict]:
    return {r.audience: dict(r._mapping) for r in wh.rows("SELECT * FROM campaign_lift")}


def test_outcomes_per_cohort_and_group(measured):
    wh, _ = measured
    assert outcomes(wh) == {
        # members, converted, rate, orders, revenue, revenue per member, window, complete
        ("winback", d(5, 1), "treatment"): (4, 2, 0.5, 2, 400.0, 100.0, 30, True),
        ("winback", d(5, 1), "control"): (2, 1, 0.5, 2, 120.0, 60.0, 30, True),
        ("winback", d(4, 20), "treatment"): (1, 0, 0.0, 0, 0.0, 0.0, 30, True),
        ("winback", d(6, 20), "treatment"): (1, 1, 1.0, 1, 200.0, 200.0, 30, False),
        ("short", d(5, 1), "treatment"): (1, 1, 1.0, 1, 40.0, 40.0, 5, True),
        ("short", d(5, 1), "control"): (1, 0, 0.0, 0, 0.0, 0.0, 5, True),
        ("everyone_called", d(5, 1), "treatment"): (2, 1, 0.5, 1, 60.0, 30.0, 30, True),
        ("fresh", d(6, 25), "treatment"): (1, 1, 1.0, 1, 30.0, 30.0, 30, False),
        ("fresh", d(6, 25), "control"): (1, 0, 0.0, 0, 0.0, 0.0, 30, False),
    }


def test_lift_over_complete_cohorts(measured):
    wh, summary = measured
    rows = lift(wh)
    w = rows["winback"]
    # complete cohorts 04-20 and 05-01: treatment t1 t2 t3 t4 t7 (2 of 5), control k1 k2 (1 of 2)
    assert (w["cohorts"], w["treatment_members"], w["control_members"]) == (2, 5, 2)
    assert (w["treatment_rate"], w["control_rate"]) == (pytest.approx(0.4), pytest.approx(0.5))
    assert w["lift"] == pytest.approx(-0.1)
    _, low, high = stats.newcombe_difference(2, 5, 1, 2, 0.95)
    assert (w["lift_ci_low"], w["lift_ci_high"]) == (pytest.approx(low), pytest.approx(high))
    assert w["incremental_customers"] == pytest.approx(-0.5)
    # revenue per member: (100 + 300) / 5 = 80 against 120 / 2 = 60
    assert w["revenue_per_member_lift"] == pytest.approx(20.0)
    assert w["incremental_revenue"] == pytest.approx(100.0)
    assert w["contact_cost"] == pytest.approx(5 * 0.3)
    assert w["cost_per_incremental_customer"] is None  # no incremental customer to pay for
    assert (w["acquisition_cost"], w["window_days"], w["channel"], w["as_of"]) == (1500.0, 30, "email", AS_OF)
    assert w["verdict"] == "inconclusive"
    # the 5-day window and the 2.5 contact cost of `short` are its own
    s = rows["short"]
    assert (s["treatment_rate"], s["control_rate"], s["window_days"], s["contact_cost"]) == (1.0, 0.0, 5, 2.5)
    assert {a: r["verdict"] for a, r in rows.items()} == {
        "winback": "inconclusive", "short": "inconclusive", "dry": "not_synced",
        "everyone_called": "no_control_group", "fresh": "too_early"}
    assert rows["everyone_called"]["treatment_rate"] == 0.5 and rows["everyone_called"]["lift"] is None
    assert rows["dry"]["treatment_members"] == 0 and rows["dry"]["lift"] is None
    assert summary["verdicts"] == {"inconclusive": 2, "no_control_group": 1, "not_synced": 1, "too_early": 1}
    assert summary["audiences_measured"] == 4  # all but dry
    assert set(summary["verdicts"]) <= set(VERDICTS)


def test_a_dry_run_only_audience_has_no_measured_spell(measured):
    wh, _ = measured
    assert not [k for k in outcomes(wh) if k[0] == "dry"]


# -- verdicts from the group figures (no warehouse needed) ------------------------------------------
def config_with(write_config, **measurement):
    audiences = {"mail": {"channel": "email", "holdout": 0.2},
                 "calls": {"channel": "call", "identifiers": ["phone"], "holdout": 0.2,
                           "measurement": {"contact_cost": 500}},
                 "no_holdout": {"channel": "email", "holdout": 0.0}}
    return write_config(SOURCES, audiences=audiences, measurement=measurement)


def verdicts(config, groups, synced=("mail", "calls", "no_holdout")) -> dict[str, str]:
    table = lift_table(config, AS_OF, groups, set(synced))
    return dict(zip(table.column("audience").to_pylist(), table.column("verdict").to_pylist(), strict=True))


def group(audience, holdout, members, converted, revenue=0.0, squares=0.0, cohorts=1) -> tuple:
    return (audience, holdout, members, converted, revenue, squares, cohorts)


def test_verdicts(write_config):
    config = config_with(write_config)
    # 30 % against 10 %: lift 0.2, interval well above 0 (n 1000 / 200).
    # mail: 1000 x 0.3 = 300 for 200 incremental customers = 1.5 each < 1500: pays.
    # calls: 1000 x 500 = 500,000 for 200 = 2,500 each >= 1500: does not pay.
    good = [group(a, h, n, x) for a in ("mail", "calls") for h, n, x in ((False, 1000, 300), (True, 200, 20))]
    assert verdicts(config, good) == {"mail": "pays", "calls": "does_not_pay", "no_holdout": "no_control_group"}
    # 10 % against 30 %: the interval lies below 0, whatever it costs
    bad = [group("mail", False, 1000, 100), group("mail", True, 200, 60)]
    assert verdicts(config, bad)["mail"] == "does_not_pay"
    # 10 of 100 against 1 of 10: the interval spans 0
    small = [group("mail", False, 100, 10), group("mail", True, 10, 1)]
    assert verdicts(config, small)["mail"] == "inconclusive"
    # synced, but no complete cohort yet
    assert verdicts(config, [])["mail"] == "too_early"
    # a holdout share, but no control member in the complete cohorts (a tiny audience)
    assert verdicts(config, [group("mail", False, 3, 1)])["mail"] == "no_control_group"
    assert verdicts(config, good, synced=("calls",))["mail"] == "not_synced"


def test_cost_per_incremental_customer_and_acquisition_cost_setting(write_config):
    config = config_with(write_config, acquisition_cost=1.0)
    groups = [group("mail", False, 1000, 300, revenue=30_000, squares=30_000 * 100),
              group("mail", True, 200, 20, revenue=2_000, squares=2_000 * 100)]
    row = lift_table(config, AS_OF, groups, {"mail"}).to_pylist()[0]
    assert row["incremental_customers"] == pytest.approx(200)  # 0.2 x 1000
    assert row["contact_cost"] == pytest.approx(300)
    assert row["cost_per_incremental_customer"] == pytest.approx(1.5)
    assert row["verdict"] == "does_not_pay"  # 1.5 >= the 1.0 a new customer costs here
    # revenue: every buyer spent 100; per member 30 against 10
    assert row["revenue_per_member_lift"] == pytest.approx(20.0)
    assert row["incremental_revenue"] == pytest.approx(20_000)
    assert row["revenue_per_member_lift_ci_low"] < 20 < row["revenue_per_member_lift_ci_high"]


@pytest.mark.parametrize(("measurement", "message"), [
    ({"window_days": 0}, "measurement.window_days: Input should be greater than or equal to 1"),
    ({"acquisition_cost": -1}, "measurement.acquisition_cost: Input should be greater than or equal to 0"),
    ({"confidence": 1.0}, "measurement.confidence: Input should be less than 1"),
    ({"confidence": 0.5}, "measurement.confidence: Input should be greater than 0.5"),
    ({"contact_costs": {"fax": 1}}, "measurement.contact_costs.fax: unknown key"),
    ({"contact_costs": {"sms": -4}}, "measurement.contact_costs.sms: Input should be greater than or equal to 0"),
    ({"window": 30}, "measurement.window: unknown key"),
])
def test_configuration_errors_name_the_key(write_config, measurement, message):
    with pytest.raises(ConfigError) as error:
        write_config(SOURCES, measurement=measurement)
    assert message in str(error.value)


def test_per_audience_override_errors_name_the_key(write_config):
    audiences = {"mail": {"channel": "email", "measurement": {"window_days": 0, "cost": 1}}}
    with pytest.raises(ConfigError) as error:
        write_config(SOURCES, audiences=audiences)
    assert "audiences.mail.measurement.window_days: Input should be greater than or equal to 1" in str(error.value)
    assert "audiences.mail.measurement.cost: unknown key" in str(error.value)


def test_contact_costs_default_per_channel(write_config):
    config = write_config(SOURCES, measurement={"contact_costs": {"call": 80}})
    costs = config.measurement.contact_costs
    assert (costs.email, costs.sms, costs.call, costs.ads) == (0.3, 4.0, 80.0, 0.0)
    assert math.isclose(config.measurement.confidence, 0.95)
