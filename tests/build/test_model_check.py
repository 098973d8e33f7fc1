"""The out-of-sample model check (`model_checks`): on a hand-built shop the customers and
actual repeat purchases per calibration bucket are counted by hand, on simulated BG/NBD
customers the predictions add up to what happened, and a check that cannot run says why.

Hand-built shop: as of 2026-06-30 with `check_days: 30`, the calibration period ends
2026-05-31 (days_before(30)) and the check period is days_before(29) .. days_before(0).
"""

from __future__ import annotations

import json
from datetime import timedelta

import numpy as np
import pytest
from shop_builder import AS_OF, Shop, days_before
from winback.build.builder import build
from winback.build.models import BGNBDParams, expected_purchases
from winback.config import ConfigError

SOURCES = {"orders": {"kind": "file", "path": "shop/orders/*.csv"}}
COPIES = 10  # each hand-made history 10 times: enough customers for a fit (counts below are for 10)


@pytest.fixture
def shop_build(write_config, open_warehouse, warehouse_url, today_is):
    """shop_build(shop, **models settings) -> model_checks rows by bucket, built as of AS_OF (live)."""
    today_is(AS_OF)

    def run(shop: Shop, as_of=AS_OF, **models) -> dict[str, dict]:
        config = write_config(SOURCES, warehouse=warehouse_url, segments={"models": models})
        wh = open_warehouse(config)
        shop.write(wh)
        summary = build(config, as_of, warehouse=wh)
        rows = wh.rows(f"SELECT * FROM model_checks WHERE build_id = '{summary['build_id']}'")
        return {row.repeat_purchases: dict(row._mapping) for row in rows}

    return run


def hand_shop() -> Shop:
    """Eight histories (days before the as-of day; 30 is the calibration end), COPIES of
    each, the n-th copy shifted by a few days so the calibration fit has an optimum."""
    shop = Shop()
    for n in range(COPIES):
        # x=0, nothing after; a cancelled order in the check period is no purchase
        shop.purchases(f"once{n}", [days_before(100 + 7 * n)])
        shop.order(f"once{n}-cancelled", f"once{n}", days_before(5), status="cancelled")
        # x=1; 1 in the check period (10); an order after the as-of day is not seen
        shop.purchases(f"one{n}", map(days_before, (100 + 7 * n, 50 + 3 * n, 10, -5)))
        # x=1 (the calibration end 30 is in the calibration); 2 in the check (29, 0: the as-of day)
        shop.purchases(f"edge{n}", map(days_before, (60 + 7 * n, 30, 29, 0)))
        # first purchase in the check period: not a customer of the check
        shop.purchases(f"late{n}", map(days_before, (20, 10)))
        # first purchase on the calibration end: x=0, T=0; 1 in the check
        shop.purchases(f"new{n}", map(days_before, (30, 5)))
        # x=3; two orders on one day in the check period are 1 purchase day
        shop.purchases(f"three{n}", map(days_before, (200 + 10 * n, 150 + 8 * n, 100 + 5 * n, 60 + 2 * n, 15, 15)))
        # every 20 days from 330 + 10 n to 50 + 10 n: x = 14 + n/2 or so, all '7+'; none since
        shop.purchases(f"steady{n}", map(days_before, range(330 + 10 * n, 35, -20)))
        # n % 4 + 2 purchases 15 days apart, long gone: x = 1, 2, 3, 4, 1, 2, 3, 4, 1, 2
        shop.purchases(f"gone{n}", (days_before(300 + 5 * n - 15 * k) for k in range(n % 4 + 2)))
    return shop


def test_hand_built_shop_counts_customers_and_actual_per_bucket(shop_build):
    checks = shop_build(hand_shop(), check_days=30)

    everything = checks["all"]
    assert everything["message"] is None
    assert everything["calibration_end"] == AS_OF - timedelta(days=30)
    assert everything["check_days"] == 30
    # bucket: (customers, actual repeat purchase days in the check period)
    expected = {"0": (20, 10),   # once (0 each), new (1 each)
                "1": (23, 30),   # one (1 each), edge (2 each), gone n = 0, 4, 8 (0)
                "2": (3, 0),     # gone n = 1, 5, 9
                "3": (12, 10),   # three (1 each), gone n = 2, 6
                "4": (2, 0),     # gone n = 3, 7
                "7+": (10, 0),   # steady
                "all": (70, 50)}
    assert {bucket: (row["customers"], row["actual"]) for bucket, row in checks.items()} == expected

    # three{n}: x=3, t_x = (200 + 10 n) - (60 + 2 n), T = (200 + 10 n) - 30; gone n = 2, 6: x=3, t_x=45, T=270 + 5 n.
    params = BGNBDParams(**json.loads(everything["params"]))
    n = np.arange(COPIES)
    three = expected_purchases(params, 30.0, 3, 140 + 8 * n, 170 + 10 * n)
    gone = expected_purchases(params, 30.0, 3, 45, 270 + 5 * np.array([2, 6]))
    assert checks["3"]["predicted"] == pytest.approx(three.sum() + gone.sum(), rel=1e-6)
    errors = np.concatenate([np.abs(three - 1), gone])  # three bought once, gone never
    assert checks["3"]["mean_absolute_error"] == pytest.approx(errors.mean(), rel=1e-6)
    assert checks["3"]["params"] is None  # the parameters are on the 'all' row
    assert everything["predicted"] == pytest.approx(sum(row["predicted"] for b, row in checks.items() if b != "all"))


def test_back_fill_build_records_its_own_check(shop_build):
    as_of = AS_OF - timedelta(days=10)
    checks = shop_build(hand_shop(), as_of=as_of, check_days=20)
    everything = checks["all"]
    assert everything["as_of"] == as_of and everything["calibration_end"] == AS_OF - timedelta(days=30)
    # Seen as of days_before(10), check period days_before(29) .. days_before(10): one's 10,
    # edge's 29, three's 15, each once per copy; new's 5 and once's cancelled order are later.
    assert (everything["customers"], everything["actual"]) == (70, 30)


@pytest.mark.parametrize("models, message", [
    ({"check_days": 0}, "no check: segments.models.check_days is 0 or null"),
    ({"check_days": None}, "no check: segments.models.check_days is 0 or null"),
    ({"enabled": False}, "no check: the models are off (segments.models.enabled: false)"),
    ({"check_days": 500}, "no check: no customer had bought by the calibration end 2025-02-15"),
], ids=["zero", "null", "models-off", "before-first-purchase"])
def test_check_that_cannot_run_says_why(shop_build, models, message):
    checks = shop_build(hand_shop(), **models)
    assert list(checks) == ["all"]
    assert checks["all"]["message"] == message
    assert checks["all"]["predicted"] is None


def test_too_few_repeat_buyers_records_customers_and_actual(shop_build):
    checks = shop_build(hand_shop(), check_days=30, min_repeat_customers=51)
    assert list(checks) == ["all"]
    row = checks["all"]
    # repeat buyers by the calibration end: one, edge, three, steady, gone
    assert row["message"] == "not fitted: 50 repeat buyers by 2026-05-31, fewer than models.min_repeat_customers=51"
    assert (row["customers"], row["actual"], row["predicted"]) == (70, 50, None)


def test_check_days_must_not_be_negative(write_config):
    with pytest.raises(ConfigError) as error:
        write_config(SOURCES, segments={"models": {"check_days": -1}})
    assert "segments.models.check_days" in str(error.value)


# -- simulated BG/NBD customers ------------------------------------------------------------------------
# Fader, Hardie & Lee's CDNOW-like parameters with alpha = 4 weeks in days: heterogeneous
# rates (r = 0.25) a few times a year, rarely two purchases a day (which one purchase day hides).
TRUE = BGNBDParams(r=0.25, alpha=28.0, a=0.8, b=2.5)
# Each row's actual count is a sum of overdispersed Poisson-like counts, so its deviation
# from the prediction grows like sqrt(predicted). Over 20 seeds of this simulation
# (5,000 customers, 2 years, 90 check days) the worst |actual - predicted| / sqrt(predicted)
# was 3.1 for the total (9 %) and 3.6 for a bucket of at least 100 customers; 5 leaves
# room for seeds beyond those while a check that is 25 % off in the total still fails.
Z_TOLERANCE = 5.0
POPULATED = 100  # customers in a bucket for it to be compared


def simulated_shop(params: BGNBDParams, customers: int, days: int, seed: int) -> Shop:
    """The BG/NBD generative process in continuous days: first purchase on a uniformly
    drawn day of the last `days`, then exponential gaps at rate lambda ~ Gamma(r, alpha),
    dropping out after each repeat purchase with probability p ~ Beta(a, b)."""
    rng = np.random.default_rng(seed)
    born = rng.integers(0, days, customers)  # days before the as-of day
    rates = rng.gamma(params.r, 1 / params.alpha, customers)
    drop = rng.beta(params.a, params.b, customers)
    shop = Shop()
    for n in range(customers):
        age, ages = float(born[n]), [int(born[n])]
        while (age := age - rng.exponential(1 / rates[n])) >= 0:
            ages.append(int(age))
            if rng.random() < drop[n]:
                break
        shop.purchases(f"s{n}", map(days_before, ages))
    return shop


def test_predictions_add_up_on_simulated_bgnbd_customers(shop_build):
    checks = shop_build(simulated_shop(TRUE, 5000, 730, seed=7), check_days=90)
    everything = checks["all"]
    assert everything["message"] is None
    assert everything["actual"] > 1000  # enough purchases for the tolerance to mean something
    compared = [bucket for bucket, row in checks.items() if row["customers"] >= POPULATED]
    assert {"all", "0", "1", "2", "7+"} <= set(compared)
    for bucket in compared:
        predicted, actual = checks[bucket]["predicted"], checks[bucket]["actual"]
        assert abs(actual - predicted) <= Z_TOLERANCE * predicted ** 0.5, (bucket, predicted, actual)
