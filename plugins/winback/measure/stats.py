"""The statistics of campaign_lift, vectorized over audiences (numpy arrays in, arrays
out; NaN where a figure cannot be computed, e.g. an empty group).

- Wilson score interval for one proportion (Wilson 1927).
- Newcombe's hybrid score interval for a difference of proportions, "method 10" of
  Newcombe (1998), Statistics in Medicine 17:873-890, built from the two Wilson intervals.
- Two-sided p-value of the pooled two-proportion z test.
- Welch's interval for a difference of means (revenue per member), from per-group sums
  and sums of squares, with the Welch-Satterthwaite degrees of freedom.
- The minimum detectable lift at the current group sizes (normal approximation, pooled
  rate, two-sided alpha = 1 - confidence, power 0.8).
"""

from __future__ import annotations

import numpy as np
from scipy import stats

POWER = 0.8


def _z(confidence: float) -> float:
    return float(stats.norm.ppf(1 - (1 - confidence) / 2))


def wilson(successes, n, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval (low, high) of successes/n; NaN where n == 0."""
    x, n = np.asarray(successes, dtype=float), np.asarray(n, dtype=float)
    z = _z(confidence)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = x / n
        denominator = 1 + z * z / n
        centre = (p + z * z / (2 * n)) / denominator
        half = z / denominator * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def newcombe_difference(x1, n1, x2, n2, confidence: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """p1 - p2 and its hybrid score interval (Newcombe 1998, method 10)."""
    x1, n1, x2, n2 = (np.asarray(v, dtype=float) for v in (x1, n1, x2, n2))
    with np.errstate(divide="ignore", invalid="ignore"):
        p1, p2 = x1 / n1, x2 / n2
    l1, u1 = wilson(x1, n1, confidence)
    l2, u2 = wilson(x2, n2, confidence)
    difference = p1 - p2
    low = difference - np.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    high = difference + np.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return difference, low, high


def two_proportion_p_value(x1, n1, x2, n2) -> np.ndarray:
    """Two-sided p-value of H0: p1 == p2 (pooled z test); 1 where both rates are 0 or 1."""
    x1, n1, x2, n2 = (np.asarray(v, dtype=float) for v in (x1, n1, x2, n2))
    with np.errstate(divide="ignore", invalid="ignore"):
        pooled = (x1 + x2) / (n1 + n2)
        se = np.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
        z = (x1 / n1 - x2 / n2) / se
        p = 2 * stats.norm.sf(np.abs(z))
    return np.where(se == 0, 1.0, p)


def welch_difference(n1, sum1, squares1, n2, sum2, squares2, confidence: float
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """mean1 - mean2 and Welch's interval, from each group's size, sum and sum of
    squares; the interval is NaN unless both groups have two members or more."""
    n1, s1, q1, n2, s2, q2 = (np.asarray(v, dtype=float) for v in (n1, sum1, squares1, n2, sum2, squares2))
    with np.errstate(divide="ignore", invalid="ignore"):
        m1, m2 = s1 / n1, s2 / n2
        # Sample variances; clipped at 0 against rounding when every value is equal.
        v1 = np.maximum(q1 - n1 * m1 * m1, 0) / (n1 - 1)
        v2 = np.maximum(q2 - n2 * m2 * m2, 0) / (n2 - 1)
        a, b = v1 / n1, v2 / n2
        se = np.sqrt(a + b)
        df = (a + b) ** 2 / (a * a / (n1 - 1) + b * b / (n2 - 1))
        t = stats.t.ppf(1 - (1 - confidence) / 2, df)
        half = np.where(se == 0, 0.0, t * se)
    half = np.where((n1 >= 2) & (n2 >= 2), half, np.nan)
    difference = m1 - m2
    return difference, difference - half, difference + half


def min_detectable_lift(x1, n1, x2, n2, confidence: float, power: float = POWER) -> np.ndarray:
    """The smallest true lift these group sizes detect with `power` at alpha = 1 -
    confidence (two-sided), at the pooled conversion rate; NaN before any conversion
    (the rate the formula needs is unknown then)."""
    x1, n1, x2, n2 = (np.asarray(v, dtype=float) for v in (x1, n1, x2, n2))
    with np.errstate(divide="ignore", invalid="ignore"):
        pooled = (x1 + x2) / (n1 + n2)
        mde = (_z(confidence) + stats.norm.ppf(power)) * np.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    return np.where(pooled > 0, mde, np.nan)
