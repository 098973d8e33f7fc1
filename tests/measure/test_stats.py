"""The statistics against published examples and independent computations:
Newcombe (1998), Statistics in Medicine 17:873-890, Table II (method 10, the hybrid
score interval) and 17:857-872, Table I (Wilson score interval); Welch against scipy;
the pooled z test against Pearson's chi-square (the same test for a 2x2 table)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as scipy_stats
from winback.measure import stats


@pytest.mark.parametrize(("x1", "n1", "x2", "n2", "difference", "low", "high"), [
    (56, 70, 48, 80, 0.2000, 0.0524, 0.3339),   # example (a)
    (9, 10, 3, 10, 0.6000, 0.1705, 0.8090),     # (b)
    (6, 7, 2, 7, 0.5714, 0.0582, 0.8062),       # (c)
    (5, 56, 0, 29, 0.0893, -0.0381, 0.1926),    # (d)
])
def test_newcombe_method_10_reproduces_the_published_intervals(x1, n1, x2, n2, difference, low, high):
    got = stats.newcombe_difference(x1, n1, x2, n2, 0.95)
    assert [round(float(v), 4) for v in got] == [difference, low, high]


@pytest.mark.parametrize(("x", "n", "low", "high"), [
    (81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605), (0, 20, 0.0, 0.1611), (1, 29, 0.0061, 0.1718),
])
def test_wilson_reproduces_the_published_intervals(x, n, low, high):
    assert [round(float(v), 4) for v in stats.wilson(x, n, 0.95)] == [low, high]


def test_vectorized_over_audiences_with_empty_groups_as_nan():
    difference, low, high = stats.newcombe_difference([56, 0], [70, 0], [48, 3], [80, 10], 0.95)
    assert round(float(low[0]), 4) == 0.0524 and np.isnan([difference[1], low[1], high[1]]).all()


def test_pooled_z_test_equals_pearson_chi_square():
    expected = scipy_stats.chi2_contingency([[56, 14], [48, 32]], correction=False)[1]
    assert float(stats.two_proportion_p_value(56, 70, 48, 80)) == pytest.approx(expected, rel=1e-9)
    assert float(stats.two_proportion_p_value(0, 50, 0, 10)) == 1.0  # nobody converted: no evidence


def test_welch_interval_from_sums_equals_scipy_on_the_values():
    rng = np.random.default_rng(7)
    a, b = rng.exponential(100, 40), rng.exponential(80, 15)
    difference, low, high = stats.welch_difference(len(a), a.sum(), (a * a).sum(), len(b), b.sum(), (b * b).sum(), 0.9)
    expected = scipy_stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.9)
    assert float(difference) == pytest.approx(a.mean() - b.mean())
    assert (float(low), float(high)) == (pytest.approx(expected.low), pytest.approx(expected.high))
    # by hand: 1 2 3 against 1 1 -> 2 - 1 = 1, se sqrt(1/3), df 2, t(0.975, 2) = 4.3027
    difference, low, high = stats.welch_difference(3, 6, 14, 2, 2, 2, 0.95)
    assert (float(difference), round(float(low), 4), round(float(high), 4)) == (1.0, -1.4841, 3.4841)
    assert np.isnan(stats.welch_difference(1, 5, 25, 3, 3, 3, 0.95)[1])  # one member: no variance


def test_min_detectable_lift():
    # (z 0.975 + z 0.8) x sqrt(0.05 x 0.95 x (1/1000 + 1/1000)) = 2.8016 x 0.009747 = 0.0273
    assert round(float(stats.min_detectable_lift(50, 1000, 50, 1000, 0.95)), 4) == 0.0273
    # a quarter of the members at the same rate: twice the detectable lift
    quarter, full = stats.min_detectable_lift([10, 40], [250, 1000], [10, 40], [250, 1000], 0.95)
    assert float(quarter) == pytest.approx(2 * float(full))
    assert np.isnan(stats.min_detectable_lift(0, 100, 0, 100, 0.95))
