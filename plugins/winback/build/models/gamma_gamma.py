"""Gamma-Gamma: what a customer spends per purchase, shrunk towards the population.

Fader, Hardie & Lee (2005), "RFM and CLV: using iso-value curves for customer base
analysis". Each purchase value is Gamma(p, rate nu) around the customer's own mean p/nu,
and nu ~ Gamma(q, rate v) across customers; spend is assumed independent of frequency.

Conventions: frequency = x, the number of repeat purchases (as in BG/NBD); monetary =
the average value of those repeat purchases (the first purchase is left out, as lifetimes
does). Only customers with frequency > 0 carry information; the others are ignored by
the fit and get the population mean p v / (q - 1) as their expected spend.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import digamma, gammaln

from winback.build.models.base import (
    MIN_CUSTOMERS,
    Array,
    ModelFit,
    ModelFitError,
    as_columns,
    dot,
    maximize,
    weights_for,
)


@dataclass(frozen=True)
class GammaGammaParams:
    p: float
    q: float
    v: float

    def __post_init__(self) -> None:
        if not all(np.isfinite(value) and value > 0 for value in (self.p, self.q, self.v)):
            raise ValueError(f"Gamma-Gamma parameters must be positive and finite: {self}")


def _repeaters(frequency: ArrayLike, monetary: ArrayLike, weights: ArrayLike | None) -> tuple[Array, Array, Array]:
    x, m = (np.ravel(v) for v in as_columns(("frequency", "monetary"), frequency, monetary))
    w = weights_for(weights, x.size)
    keep = (x > 0) & (w > 0)
    x, m, w = x[keep], m[keep], w[keep]
    if np.any(m == 0):
        raise ModelFitError(f"monetary is 0 for {int(np.sum(m == 0))} rows with repeat purchases; "
                            "Gamma-Gamma needs positive spend")
    return x, m, w


class _Likelihood:
    """Total log-likelihood of the repeaters' mean spend and its gradient in log-parameters;
    the optimizer minimizes `objective`, the negative mean per customer.

    The Gamma functions depend on x alone and are computed once per distinct x; per row
    only log(v + x m) is left.
    """

    def __init__(self, x: Array, m: Array, w: Array) -> None:
        self.total = float(w.sum())
        self.x_values, index = np.unique(x, return_inverse=True)
        self.w_per_x = np.bincount(index, weights=w, minlength=self.x_values.size)
        self.xm, self.w, self.wx = x * m, w, w * x
        log_m = np.log(m)
        self.wx_log_m, self.w_log_m = dot(self.wx, log_m), dot(w, log_m)
        self.wx_log_x = dot(self.w_per_x * self.x_values, np.log(self.x_values))

    def __call__(self, log_params: Array) -> tuple[float, Array]:
        p, q, v = np.exp(log_params)
        xv, wv, total = self.x_values, self.w_per_x, self.total
        px = p * xv
        log_vxm = np.log(v + self.xm)
        wx_log_vxm, w_log_vxm = dot(self.wx, log_vxm), dot(self.w, log_vxm)
        ll = (dot(wv, gammaln(px + q) - gammaln(px)) + total * (q * np.log(v) - gammaln(q))
              + p * (self.wx_log_m + self.wx_log_x) - self.w_log_m - p * wx_log_vxm - q * w_log_vxm)
        psi = digamma(px + q)
        inverse = 1 / (v + self.xm)
        d_p = dot(wv * xv, psi - digamma(px)) + self.wx_log_m + self.wx_log_x - wx_log_vxm
        d_q = dot(wv, psi) + total * (np.log(v) - digamma(q)) - w_log_vxm
        d_v = total * q / v - p * dot(self.wx, inverse) - q * dot(self.w, inverse)
        return float(ll), np.array([d_p, d_q, d_v]) * np.array([p, q, v])

    def objective(self, log_params: Array) -> tuple[float, Array]:
        ll, grad = self(log_params)
        return -ll / self.total, -grad / self.total


def log_likelihood(params: GammaGammaParams, frequency: ArrayLike, monetary: ArrayLike,
                   weights: ArrayLike | None = None) -> float:
    """Total log-likelihood of the customers with frequency > 0 (density of their mean spend)."""
    x, m, w = _repeaters(frequency, monetary, weights)
    if w.sum() == 0:
        return 0.0
    return _Likelihood(x, m, w)(np.log([params.p, params.q, params.v]))[0]


def fit_gamma_gamma(frequency: ArrayLike, monetary: ArrayLike, weights: ArrayLike | None = None) -> ModelFit:
    """Maximum-likelihood Gamma-Gamma fit on the customers with frequency > 0."""
    x, m, w = _repeaters(frequency, monetary, weights)
    total = float(w.sum())
    if total < MIN_CUSTOMERS:
        raise ModelFitError(f"Gamma-Gamma needs at least {MIN_CUSTOMERS} customers with repeat purchases, "
                            f"got {total:g}")
    if np.ptp(m) == 0:
        raise ModelFitError("every customer has the same average spend: Gamma-Gamma cannot be fitted")
    # Population mean p v / (q - 1) equal to the observed mean spend.
    p0, q0 = 2.0, 3.0
    start = np.log([p0, q0, dot(w, m) / total * (q0 - 1) / p0])
    likelihood = _Likelihood(x, m, w)
    log_params, objective, converged, iterations = maximize(likelihood.objective, start, "Gamma-Gamma")
    params = GammaGammaParams(*(float(v) for v in np.exp(log_params)))
    return ModelFit("gamma_gamma", params, -objective * total, round(total), converged, iterations)


def expected_average_spend(params: GammaGammaParams, frequency: ArrayLike, monetary: ArrayLike) -> Array:
    """Posterior mean spend per purchase: a weighted average of the population mean
    p v / (q - 1) and the customer's own mean, whose weight p x / (p x + q - 1) grows
    with the number of purchases seen."""
    x, m = as_columns(("frequency", "monetary"), frequency, monetary)
    p, q, v = params.p, params.q, params.v
    if q <= 1:
        raise ValueError(f"q = {q:g} <= 1: the population mean spend is infinite")
    return p * (v + np.where(x > 0, x * m, 0.0)) / (p * x + q - 1)


def simulate_gamma_gamma(params: GammaGammaParams, frequency: ArrayLike, rng: np.random.Generator) -> Array:
    """Average value of `frequency` purchases per customer (0 where frequency is 0).

    The sum of x Gamma(p, nu) values is Gamma(p x, nu), so one draw per customer suffices.
    """
    x = np.ravel(as_columns(("frequency",), frequency)[0])
    nu = rng.gamma(params.q, 1 / params.v, x.size)
    monetary = np.zeros(x.size)
    repeat = x > 0
    monetary[repeat] = rng.gamma(params.p * x[repeat], 1 / nu[repeat]) / x[repeat]
    return monetary
