"""The customer-base models: parameters recovered from simulated customers, closed forms
checked against direct numerical integration of the individual-level model, published
CDNOW numbers, and the errors for unusable data.

Tolerances: parameters recovered from 30,000 simulated customers (fixed seed) within
RECOVERY_RTOL, about 1.5x the worst deviation seen over 18 seeds (r, alpha, q: 2 %;
a: 10 %; b: 12 %; p, v: 8 %); a likelihood with a wrong term is off by far more.
Closed forms against quadrature: 1e-6 relative.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.integrate import quad
from scipy.optimize import approx_fprime
from scipy.special import betaln, gammaln
from winback.build.models import (
    BGNBDParams,
    GammaGammaParams,
    ModelFitError,
    bgnbd_log_likelihood,
    expected_average_spend,
    expected_purchases,
    fit_bgnbd,
    fit_gamma_gamma,
    gamma_gamma_log_likelihood,
    p_alive,
    predicted_clv,
    simulate_bgnbd,
    simulate_gamma_gamma,
)
from winback.build.models.bgnbd import _Likelihood
from winback.build.models.gamma_gamma import _Likelihood as GammaGammaLikelihood

RECOVERY_RTOL = {"r": 0.05, "alpha": 0.05, "a": 0.2, "b": 0.2, "p": 0.15, "q": 0.05, "v": 0.15}
QUADRATURE_RTOL = 1e-6
DAILY = BGNBDParams(r=0.8, alpha=40.0, a=0.8, b=2.5)
CDNOW = BGNBDParams(r=0.243, alpha=4.414, a=0.793, b=2.426)  # weeks; Fader, Hardie & Lee (2005)
CDNOW_SPEND = GammaGammaParams(p=6.25, q=3.74, v=15.44)


def simulated_groups(params: BGNBDParams, customers: int, seed: int) -> pd.DataFrame:
    """Customers observed 30..540 whole days, t_x rounded to days, grouped with counts."""
    rng = np.random.default_rng(seed)
    T = rng.integers(30, 541, customers).astype(float)
    x, t_x = simulate_bgnbd(params, T, rng)
    frame = pd.DataFrame({"x": x, "t_x": np.round(t_x), "T": T})
    return frame.value_counts().rename("n").reset_index()


def assert_params_close(actual, expected, rtol: float | dict[str, float]) -> None:
    for name, want in vars(expected).items():
        got = getattr(actual, name)
        tolerance = rtol[name] if isinstance(rtol, dict) else rtol
        assert got == pytest.approx(want, rel=tolerance), f"{name}: {got:.4g} vs {want:.4g}"


# Direct numerical integration of the individual-level BG/NBD, for one customer. The
# Gamma(r, alpha) integral over lambda is elementary; the Beta(a, b) one over p is done
# by quadrature after p = u^(1/a), which removes the p^(a-1) singularity at 0.

def _over_p(params: BGNBDParams, h) -> float:
    a, b = params.a, params.b
    value, _ = quad(lambda u: h(u ** (1 / a)) * (1 - u ** (1 / a)) ** (b - 1), 0, 1, epsabs=0, epsrel=1e-11,
                    limit=200)
    return value / (a * np.exp(betaln(a, b)))


def _integrated(params: BGNBDParams, t: float, x: int, t_x: float, T: float) -> tuple[float, float, float]:
    """(log-likelihood, P(alive), expected purchases in (T, T+t]) by quadrature."""
    r, alpha = params.r, params.alpha

    def g(s: float) -> float:  # E[lambda^x e^(-lambda s)], up to a factor that cancels
        return np.exp(-(r + x) * (np.log(alpha + s) - np.log(alpha + T)))

    def alive(p: float) -> float:
        return (1 - p) ** x * g(T)

    def data(p: float) -> float:
        return alive(p) + (p * (1 - p) ** (x - 1) * g(t_x) if x > 0 else 0.0)

    def future(p: float) -> float:  # E[purchases in t | alive, p] = (1 - e^(-lambda p t)) / p
        return (1 - p) ** x * (g(T) - g(T + p * t)) / p

    evidence = _over_p(params, data)
    log_l = gammaln(r + x) - gammaln(r) + r * np.log(alpha) - (r + x) * np.log(alpha + T) + np.log(evidence)
    return log_l, _over_p(params, alive) / evidence, _over_p(params, future) / evidence


# --- BG/NBD ---------------------------------------------------------------------------

def test_bgnbd_recovers_simulated_parameters() -> None:
    groups = simulated_groups(DAILY, 30_000, seed=1)
    assert len(groups) < 30_000  # really grouped
    fit = fit_bgnbd(groups.x, groups.t_x, groups["T"], groups.n)
    assert fit.converged and fit.customers == 30_000 and fit.model == "bgnbd"
    assert_params_close(fit.params, DAILY, RECOVERY_RTOL)


def test_bgnbd_grouped_fit_equals_per_customer_fit() -> None:
    groups = simulated_groups(DAILY, 4_000, seed=2)
    rows = groups.loc[groups.index.repeat(groups.n)]
    assert len(rows) == 4_000
    grouped = fit_bgnbd(groups.x, groups.t_x, groups["T"], groups.n)
    per_customer = fit_bgnbd(rows.x, rows.t_x, rows["T"])
    assert_params_close(grouped.params, per_customer.params, 1e-5)
    assert grouped.log_likelihood == pytest.approx(per_customer.log_likelihood, rel=1e-10)
    assert grouped.customers == per_customer.customers == 4_000
    assert bgnbd_log_likelihood(DAILY, groups.x, groups.t_x, groups["T"], groups.n) == pytest.approx(
        bgnbd_log_likelihood(DAILY, rows.x, rows.t_x, rows["T"]), rel=1e-12)
    doubled = fit_bgnbd(groups.x, groups.t_x, groups["T"], 2 * groups.n)
    assert_params_close(doubled.params, grouped.params, 1e-5)
    assert doubled.log_likelihood == pytest.approx(2 * grouped.log_likelihood, rel=1e-10)


def test_bgnbd_gradient_matches_finite_differences() -> None:
    groups = simulated_groups(DAILY, 2_000, seed=3)
    likelihood = _Likelihood(*(groups[c].to_numpy(float) for c in ("x", "t_x", "T", "n")))
    for point in (np.log([0.3, 5.0, 0.6, 3.0]), np.log([2.0, 80.0, 3.0, 0.4])):
        analytic = likelihood.objective(point)[1]
        numeric = approx_fprime(point, lambda v: likelihood.objective(v)[0], 1e-7)
        np.testing.assert_allclose(analytic, numeric, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize(("params", "t", "x", "t_x", "T"), [
    (CDNOW, 39, 2, 30.43, 38.86),
    (CDNOW, 39, 0, 0.0, 38.86),
    (CDNOW, 52, 7, 10.0, 38.0),
    (CDNOW, 1000, 40, 30.0, 31.0),
    (DAILY, 365, 1, 100.0, 400.0),
    (DAILY, 90, 25, 480.0, 500.0),
    (DAILY, 10_000, 300, 480.0, 500.0),  # c - r - x integer and z ~ 1: scipy's 2F1 alone gives NaN
    (CDNOW, 1e4, 300, 38.0, 38.86),
    (BGNBDParams(1.5, 20.0, 2.5, 0.7), 365, 3, 200.0, 250.0),
])
def test_bgnbd_closed_forms_match_numerical_integration(params, t, x, t_x, T) -> None:
    log_l, alive, future = _integrated(params, t, x, t_x, T)
    assert bgnbd_log_likelihood(params, [x], [t_x], [T]) == pytest.approx(log_l, rel=QUADRATURE_RTOL)
    assert p_alive(params, x, t_x, T) == pytest.approx(alive, rel=QUADRATURE_RTOL)
    assert expected_purchases(params, t, x, t_x, T) == pytest.approx(future, rel=QUADRATURE_RTOL)


def test_bgnbd_cdnow_published_conditional_expectation() -> None:
    # Fader, Hardie & Lee (2005), section 5: 1.226 purchases in the next 39 weeks.
    assert expected_purchases(CDNOW, 39, 2, 30.43, 38.86) == pytest.approx(1.226, abs=5e-4)


def test_p_alive_properties() -> None:
    assert np.all(p_alive(DAILY, 0, 0, [0, 10, 1000]) == 1.0)
    over_t = p_alive(DAILY, 3, 50, np.arange(50, 500, 10))
    assert np.all(np.diff(over_t) < 0) and np.all((over_t > 0) & (over_t <= 1))
    over_recency = p_alive(DAILY, 3, np.arange(0, 300, 10), 300)
    assert np.all(np.diff(over_recency) > 0)
    # Bought just now: only the drop-out right after that purchase can have happened.
    assert p_alive(DAILY, 5, 200, 200)[0] == pytest.approx((DAILY.b + 4) / (DAILY.a + DAILY.b + 4))


def test_expected_purchases_properties() -> None:
    horizons = np.array([0.0, 1, 30, 365, 3650, 1e6])
    future = expected_purchases(DAILY, horizons, 4, 120, 200)
    assert future[0] == 0 and np.all(np.diff(future) > 0) and np.all(np.isfinite(future))
    # Eventually 1/p purchases in expectation: bounded by the posterior of p, never infinite.
    assert future[-1] < 100
    # a = 1 is a removable singularity of the closed form.
    near = [expected_purchases(BGNBDParams(0.8, 40, a, 2.5), 90, 4, 120, 200) for a in (1 - 1e-5, 1.0, 1 + 1e-5)]
    assert near[1] == pytest.approx(near[0], rel=1e-4) and near[1] == pytest.approx(near[2], rel=1e-4)
    # Heavy buyers, long horizons: finite and ordered.
    heavy = expected_purchases(DAILY, np.array([[365], [1e4], [1e6]]), [100, 300, 2000], 499, 500)
    assert np.all(np.isfinite(heavy)) and np.all(np.diff(heavy, axis=0) > 0) and np.all(np.diff(heavy, axis=1) > 0)


def test_simulator_matches_unconditional_expectation() -> None:
    # Nothing observed (x = t_x = T = 0) makes the conditional expectation the
    # unconditional E[X(t)]: the simulator and the closed form must agree.
    rng = np.random.default_rng(4)
    T = np.full(50_000, 365.0)
    x, t_x = simulate_bgnbd(DAILY, T, rng)
    assert np.all(t_x <= T) and np.all((t_x == 0) == (x == 0))
    assert x.mean() == pytest.approx(expected_purchases(DAILY, 365, 0, 0, 0)[0], rel=0.03)


@pytest.mark.parametrize(("x", "t_x", "T", "message"), [
    ([1, 2] * 10, [5, 30] * 10, [10, 20] * 10, r"t_x > T in 10 rows"),
    ([1, -2] * 10, [5, 5] * 10, [10, 10] * 10, "x has negative values"),
    ([1, 2] * 10, [5, np.nan] * 10, [10, 10] * 10, "t_x has non-finite values"),
    ([0, 0] * 10, [0, 0] * 10, [10, 10] * 10, "no customer has a repeat purchase"),
    ([0, 2] * 10, [3, 5] * 10, [10, 10] * 10, r"t_x must be 0 where x == 0"),
    ([1, 2], [5, 5], [10, 10], "at least 10 customers, got 2"),
])
def test_bgnbd_unusable_data(x, t_x, T, message) -> None:
    with pytest.raises(ModelFitError, match=message):
        fit_bgnbd(x, t_x, T)


def test_bgnbd_bad_weights() -> None:
    with pytest.raises(ModelFitError, match="weights has 2 values for 20 rows"):
        fit_bgnbd([1] * 20, [5] * 20, [10] * 20, weights=[1, 2])
    with pytest.raises(ModelFitError, match="at least 10 customers, got 0"):
        fit_bgnbd([1] * 20, [5] * 20, [10] * 20, weights=[0] * 20)


def test_bgnbd_degenerate_data_is_not_reported_converged() -> None:
    # Identical customers: no heterogeneity in the purchase rate, so r and alpha run off
    # to infinity together and end at their bound.
    fit = fit_bgnbd([3] * 20, [10] * 20, [10] * 20)
    assert not fit.converged and not fit.as_dict()["converged"]


def test_model_fit_as_dict_is_plain() -> None:
    groups = simulated_groups(DAILY, 2_000, seed=5)
    row = fit_bgnbd(groups.x, groups.t_x, groups["T"], groups.n).as_dict()
    assert set(row) == {"model", "r", "alpha", "a", "b", "log_likelihood", "customers", "converged", "iterations"}
    assert all(type(row[k]) is float for k in ("r", "alpha", "a", "b", "log_likelihood"))
    assert type(row["customers"]) is int and row["customers"] == 2_000 and type(row["converged"]) is bool


# --- Gamma-Gamma ----------------------------------------------------------------------

def simulated_spend(customers: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    frequency = rng.geometric(0.3, customers).astype(float)
    return frequency, simulate_gamma_gamma(CDNOW_SPEND, frequency, rng)


def test_gamma_gamma_recovers_simulated_parameters() -> None:
    frequency, monetary = simulated_spend(30_000, seed=1)
    fit = fit_gamma_gamma(frequency, monetary)
    assert fit.converged and fit.customers == 30_000 and fit.model == "gamma_gamma"
    assert_params_close(fit.params, CDNOW_SPEND, RECOVERY_RTOL)


def test_gamma_gamma_grouped_equals_per_customer_and_ignores_non_repeaters() -> None:
    frequency, monetary = simulated_spend(3_000, seed=2)
    rows = pd.DataFrame({"x": frequency, "m": np.round(monetary, 0)})
    groups = rows.value_counts().rename("n").reset_index()
    assert len(groups) < len(rows)
    per_customer = fit_gamma_gamma(rows.x, rows.m)
    grouped = fit_gamma_gamma(groups.x, groups.m, groups.n)
    assert_params_close(grouped.params, per_customer.params, 1e-5)
    assert grouped.log_likelihood == pytest.approx(per_customer.log_likelihood, rel=1e-10)
    with_zeros = fit_gamma_gamma(np.r_[rows.x, np.zeros(500)], np.r_[rows.m, np.zeros(500)])
    assert_params_close(with_zeros.params, per_customer.params, 1e-5)
    assert with_zeros.customers == 3_000


def test_gamma_gamma_gradient_matches_finite_differences() -> None:
    x, m = simulated_spend(2_000, seed=3)
    likelihood = GammaGammaLikelihood(x, m, np.random.default_rng(3).integers(1, 5, x.size).astype(float))
    for point in (np.log([6.0, 4.0, 15.0]), np.log([0.5, 1.5, 300.0])):
        analytic = likelihood.objective(point)[1]
        numeric = approx_fprime(point, lambda v: likelihood.objective(v)[0], 1e-7)
        np.testing.assert_allclose(analytic, numeric, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize(("x", "m"), [(1, 5.0), (2, 22.35), (10, 80.0), (60, 31.0)])
def test_gamma_gamma_closed_forms_match_numerical_integration(x, m) -> None:
    # Mean spend of x purchases given nu is Gamma(p x, rate x nu); nu ~ Gamma(q, rate v).
    p, q, v = CDNOW_SPEND.p, CDNOW_SPEND.q, CDNOW_SPEND.v

    def joint(nu: float) -> float:
        return np.exp(p * x * np.log(x * nu) + (p * x - 1) * np.log(m) - x * nu * m - gammaln(p * x)
                      + q * np.log(v) + (q - 1) * np.log(nu) - v * nu - gammaln(q))

    mode = (p * x + q - 1) / (x * m + v)
    evidence = quad(joint, 0, 50 * mode, points=[mode], epsabs=0, epsrel=1e-11, limit=200)[0]
    posterior_mean = quad(lambda nu: p / nu * joint(nu), 0, 50 * mode, points=[mode], epsabs=0, epsrel=1e-11,
                          limit=200)[0] / evidence
    assert gamma_gamma_log_likelihood(CDNOW_SPEND, [x], [m]) == pytest.approx(np.log(evidence), rel=QUADRATURE_RTOL)
    assert expected_average_spend(CDNOW_SPEND, x, m) == pytest.approx(posterior_mean, rel=QUADRATURE_RTOL)


def test_expected_average_spend_shrinks_towards_population_mean() -> None:
    population = CDNOW_SPEND.p * CDNOW_SPEND.v / (CDNOW_SPEND.q - 1)  # 35.22 for CDNOW
    assert population == pytest.approx(35.22, abs=0.01)
    assert expected_average_spend(CDNOW_SPEND, 0, 0)[0] == pytest.approx(population)
    frequencies = np.array([1, 2, 5, 20, 100])
    low = expected_average_spend(CDNOW_SPEND, frequencies, 10.0)
    high = expected_average_spend(CDNOW_SPEND, frequencies, 100.0)
    assert np.all((low > 10) & (low < population)) and np.all((high < 100) & (high > population))
    assert np.all(np.diff(low) < 0) and np.all(np.diff(high) > 0)  # more purchases, more own mean
    assert expected_average_spend(CDNOW_SPEND, 1e6, 10.0)[0] == pytest.approx(10.0, rel=1e-3)


@pytest.mark.parametrize(("frequency", "monetary", "message"), [
    ([1, 2] * 3, [10, 20] * 3, "at least 10 customers with repeat purchases, got 6"),
    ([0] * 20, [0] * 20, "got 0"),
    ([1, 2] * 10, [10, 0] * 10, "monetary is 0 for 10 rows"),
    ([1, 2] * 10, [10, -1] * 10, "monetary has negative values"),
    ([1, 2] * 10, [10, np.inf] * 10, "monetary has non-finite values"),
    ([1, 2] * 10, [10, 10] * 10, "same average spend"),
])
def test_gamma_gamma_unusable_data(frequency, monetary, message) -> None:
    with pytest.raises(ModelFitError, match=message):
        fit_gamma_gamma(frequency, monetary)


# --- CLV ------------------------------------------------------------------------------

def test_predicted_clv() -> None:
    x, t_x, T, m = np.array([0, 2, 8]), np.array([0, 30.43, 35]), np.array([38.86] * 3), np.array([0, 22.35, 50])
    plain = predicted_clv(CDNOW, CDNOW_SPEND, x, t_x, T, m, horizon=39)
    np.testing.assert_allclose(plain, expected_purchases(CDNOW, 39, x, t_x, T)
                               * expected_average_spend(CDNOW_SPEND, x, m))
    assert plain[1] == pytest.approx(1.226 * expected_average_spend(CDNOW_SPEND, 2, 22.35)[0], rel=1e-3)
    discounted = predicted_clv(CDNOW, CDNOW_SPEND, x, t_x, T, m, horizon=39, discount_rate_per_unit=0.01)
    assert np.all(discounted < plain) and np.all(discounted > plain * 1.01 ** -39)
    fine = predicted_clv(CDNOW, CDNOW_SPEND, x, t_x, T, m, horizon=39, discount_rate_per_unit=0.01, steps=390)
    assert np.all(fine > discounted)  # finer steps discount each purchase less
    assert predicted_clv(CDNOW, CDNOW_SPEND, x, t_x, T, m, horizon=0)[2] == 0
