"""BG/NBD: how many purchases a customer still makes, and whether they are still around.

Fader, Hardie & Lee (2005), "Counting your customers the easy way". While active, a
customer buys as a Poisson process with rate lambda ~ Gamma(r, rate alpha); after each
repeat purchase they drop out for good with probability p ~ Beta(a, b).

Conventions, per customer:
  x    number of repeat purchases (distinct purchase days after the first one),
  t_x  time from the first purchase to the last one (0 when x == 0),
  T    time from the first purchase to the as-of date.
The time unit is whatever the caller uses (the pipeline uses days); r and the
predictions do not depend on it, alpha scales with it.

Fitting takes customers grouped by identical (x, t_x, T) with their counts as weights:
with whole days there are far fewer groups than customers, which is what makes a
million customers fit in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import betaln, digamma, expit, gammaln, hyp2f1

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
class BGNBDParams:
    r: float
    alpha: float
    a: float
    b: float

    def __post_init__(self) -> None:
        values = (self.r, self.alpha, self.a, self.b)
        if not all(np.isfinite(v) and v > 0 for v in values):
            raise ValueError(f"BG/NBD parameters must be positive and finite: {self}")


def _rfm(x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> tuple[Array, Array, Array]:
    x, t_x, T = as_columns(("x", "t_x", "T"), x, t_x, T)
    if np.any(t_x > T):
        raise ModelFitError(f"t_x > T in {int(np.sum(t_x > T))} rows: the last purchase is after the as-of date")
    if np.any((x == 0) & (t_x != 0)):
        raise ModelFitError(f"t_x must be 0 where x == 0 ({int(np.sum((x == 0) & (t_x != 0)))} rows are not)")
    return x, t_x, T


class _Likelihood:
    """Total log-likelihood of weighted rows and its gradient in log-parameters; the
    optimizer minimizes `objective`, the negative mean per customer.

    Per row, ll = A(x) - (r+x) log(alpha+T) + [x > 0] log(1 + e^d), with
    d = log(a / (b+x-1)) + (r+x) log((alpha+T) / (alpha+t_x)) the log-odds of having
    dropped out. Everything else depends on x, T or t_x alone, so it is computed once per
    distinct value (a few hundred to a few thousand) and gathered; per row only d is left.
    """

    def __init__(self, x: Array, t_x: Array, T: Array, weights: Array) -> None:
        keep = weights > 0
        x, t_x, T, w = x[keep], t_x[keep], T[keep], weights[keep]
        self.total = float(w.sum())
        self.x_values, x_index = np.unique(x, return_inverse=True)
        self.w_per_x = np.bincount(x_index, weights=w, minlength=self.x_values.size)
        self.T_values, T_index = np.unique(T, return_inverse=True)
        self.w_per_T = np.bincount(T_index, weights=w, minlength=self.T_values.size)
        self.wx_per_T = np.bincount(T_index, weights=w * x, minlength=self.T_values.size)
        repeat = x > 0
        self.t_x_values, t_x_index = np.unique(t_x[repeat], return_inverse=True)
        self.w = w[repeat]
        self.x_index, self.T_index, self.t_x_index = x_index[repeat], T_index[repeat], t_x_index

    def __call__(self, log_params: Array, gradient: bool = True) -> tuple[float, Array]:
        r, alpha, a, b = np.exp(log_params)
        xv, w, total = self.x_values, self.w, self.total
        xs = np.maximum(xv, 1.0)  # b + x - 1 only matters where x > 0
        log_T, log_t_x = np.log(alpha + self.T_values), np.log(alpha + self.t_x_values)
        rx = r + xv
        log_ratio = log_T[self.T_index] - log_t_x[self.t_x_index]
        rx_row = rx[self.x_index]
        odds = (np.log(a) - np.log(b + xs - 1))[self.x_index] + rx_row * log_ratio
        ll = (total * (r * np.log(alpha) - gammaln(r) - betaln(a, b))
              + dot(self.w_per_x, gammaln(rx) + betaln(a, b + xv))
              - dot(r * self.w_per_T + self.wx_per_T, log_T) + dot(w, np.logaddexp(0.0, odds)))
        if not gradient:
            return float(ll), np.empty(0)
        dead = w * expit(odds)  # weight times P(dropped out after the last purchase)
        inv_T, inv_t_x = 1 / (alpha + self.T_values), 1 / (alpha + self.t_x_values)
        psi_abx = dot(self.w_per_x, digamma(a + b + xv))
        d_r = (total * (np.log(alpha) - digamma(r)) + dot(self.w_per_x, digamma(rx))
               - dot(self.w_per_T, log_T) + dot(dead, log_ratio))
        d_alpha = (total * r / alpha - dot(r * self.w_per_T + self.wx_per_T, inv_T)
                   + dot(dead * rx_row, inv_T[self.T_index] - inv_t_x[self.t_x_index]))
        d_a = total * digamma(a + b) - psi_abx + dead.sum() / a
        d_b = (total * (digamma(a + b) - digamma(b)) - psi_abx + dot(self.w_per_x, digamma(b + xv))
               - dot(dead, (1 / (b + xs - 1))[self.x_index]))
        grad = np.array([d_r, d_alpha, d_a, d_b]) * np.array([r, alpha, a, b])
        return float(ll), grad

    def objective(self, log_params: Array) -> tuple[float, Array]:
        ll, grad = self(log_params)
        return -ll / self.total, -grad / self.total


def log_likelihood(params: BGNBDParams, x: ArrayLike, t_x: ArrayLike, T: ArrayLike,
                   weights: ArrayLike | None = None) -> float:
    """Total log-likelihood of the (weighted) customers, constants included."""
    x, t_x, T = (np.ravel(v) for v in _rfm(x, t_x, T))
    likelihood = _Likelihood(x, t_x, T, weights_for(weights, x.size))
    return likelihood(np.log([params.r, params.alpha, params.a, params.b]), gradient=False)[0]


def fit_bgnbd(x: ArrayLike, t_x: ArrayLike, T: ArrayLike, weights: ArrayLike | None = None) -> ModelFit:
    """Maximum-likelihood BG/NBD fit; `weights` counts the customers behind each row."""
    x, t_x, T = (np.ravel(v) for v in _rfm(x, t_x, T))
    w = weights_for(weights, x.size)
    customers = float(w.sum())
    if customers < MIN_CUSTOMERS:
        raise ModelFitError(f"BG/NBD needs at least {MIN_CUSTOMERS} customers, got {customers:g}")
    purchases = dot(w, x)
    if purchases == 0:
        raise ModelFitError("no customer has a repeat purchase: BG/NBD cannot be fitted")
    likelihood = _Likelihood(x, t_x, T, w)
    # Purchase rate r/alpha ~ repeat purchases per unit of time observed; p ~ 1/3.
    start = np.log([1.0, dot(w, T) / purchases, 1.0, 2.0])
    log_params, objective, converged, iterations = maximize(likelihood.objective, start, "BG/NBD")
    params = BGNBDParams(*(float(v) for v in np.exp(log_params)))
    return ModelFit("bgnbd", params, -objective * likelihood.total, round(customers), converged, iterations)


def p_alive(params: BGNBDParams, x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> Array:
    """Probability that the customer has not dropped out by T (1 without repeat purchases)."""
    x, t_x, T = _rfm(x, t_x, T)
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    xs = np.maximum(x, 1.0)
    log_odds_dead = np.log(a) - np.log(b + xs - 1) + (r + xs) * (np.log(alpha + T) - np.log(alpha + t_x))
    return np.where(x > 0, expit(-log_odds_dead), 1.0)


def _hyp2f1(A: Array, B: float, C: Array, z: Array) -> Array:
    """scipy's 2F1, bridged where it fails: with z > ~0.9, a large C and C - A - B an
    integer (e.g. r == a in BG/NBD) it returns NaN, though the function is continuous in C
    there; the mean of its values at C(1 -+ 1e-9) is then off by far less than 1e-10."""
    value = hyp2f1(A, B, C, z)
    bad = ~np.isfinite(value)
    if np.any(bad):
        A, C, z = A[bad], C[bad], z[bad]
        value[bad] = (hyp2f1(A, B, C * (1 - 1e-9), z) + hyp2f1(A, B, C * (1 + 1e-9), z)) / 2
    return value


def expected_purchases(params: BGNBDParams, t: ArrayLike, x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> Array:
    """Expected repeat purchases in (T, T + t] given the customer's history (eq. 10 of the paper).

    The Gauss function is used in its Euler-transformed form,
    ((alpha+T)/(alpha+T+t))^(r+x) 2F1(r+x, b+x; c; z) = (1-z)^(a-1) 2F1(c-r-x, a-1; c; z),
    c = a+b+x-1: the textbook form overflows to NaN for heavy buyers.
    """
    x, t_x, T = _rfm(x, t_x, T)
    (t,) = as_columns(("t",), t)
    t, x, t_x, T = np.broadcast_arrays(t, x, t_x, T)
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    if abs(a - 1) < 1e-8:  # removable singularity of the closed form
        a = 1 + 1e-8
    c = a + b + x - 1
    one_minus_z = (alpha + T) / (alpha + T + t)
    z = t / (alpha + T + t)
    with np.errstate(all="ignore"):
        tail = one_minus_z ** (a - 1) * _hyp2f1(c - r - x, a - 1, c, z)
        alive_count = c / (a - 1) * (1 - tail)
    return np.where(t > 0, alive_count, 0.0) * p_alive(params, x, t_x, T)


def simulate_bgnbd(params: BGNBDParams, T: ArrayLike, rng: np.random.Generator) -> tuple[Array, Array]:
    """Draw (x, t_x) for customers observed for T each, from the BG/NBD generative process.

    A customer makes N ~ Geometric(p) repeat purchases before dropping out and the Poisson
    process would make M ~ Poisson(lambda T) in (0, T]; x = min(N, M), and the x-th of M
    uniform arrival times is T * Beta(x, M - x + 1).
    """
    T = np.ravel(as_columns(("T",), T)[0])
    n = T.size
    lam = rng.gamma(params.r, 1 / params.alpha, n)
    p = np.maximum(rng.beta(params.a, params.b, n), 1e-12)
    m = rng.poisson(lam * T)
    x = np.minimum(rng.geometric(p), m)
    t_x = np.zeros(n)
    repeat = x > 0
    t_x[repeat] = T[repeat] * rng.beta(x[repeat], m[repeat] - x[repeat] + 1)
    return x.astype(np.float64), t_x
