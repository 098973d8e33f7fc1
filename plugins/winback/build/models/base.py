"""What every model fit shares: the result record, the error, input checks and the optimizer."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import minimize

Array = NDArray[np.float64]

# Below this many customers a 3- or 4-parameter fit says nothing.
MIN_CUSTOMERS = 10
# Log-parameters are boxed so a degenerate data set ends at a bound instead of overflowing.
LOG_BOUND = 15.0
# Largest gradient entry (of the mean log-likelihood per customer, in log-parameters)
# still accepted as an optimum when L-BFGS-B stops for line-search reasons.
GRADIENT_TOLERANCE = 1e-5


class ModelFitError(ValueError):
    """The data cannot be fitted (unusable input) or the optimizer failed."""


@dataclass(frozen=True)
class ModelFit:
    """One fitted model, flat enough to become a row of a `model_fits` table."""

    model: str
    params: Any
    log_likelihood: float
    customers: int
    converged: bool
    iterations: int

    def as_dict(self) -> dict[str, Any]:
        return {"model": self.model, **{k: float(v) for k, v in asdict(self.params).items()},
                "log_likelihood": float(self.log_likelihood), "customers": int(self.customers),
                "converged": bool(self.converged), "iterations": int(self.iterations)}


def dot(u: Array, v: Array) -> float:
    """Sum of products without BLAS, whose threads stall the fit on a busy machine."""
    return float(np.einsum("i,i->", u, v))


def as_columns(names: tuple[str, ...], *values: ArrayLike) -> list[Array]:
    """Float arrays of one common shape (at least 1-d); finite and non-negative, else ModelFitError."""
    try:
        arrays = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in values))
    except (TypeError, ValueError) as exc:
        raise ModelFitError(f"{', '.join(names)} must be numeric arrays of one length: {exc}") from None
    for name, array in zip(names, arrays):
        if not np.all(np.isfinite(array)):
            raise ModelFitError(f"{name} has non-finite values (NaN or infinity)")
        if np.any(array < 0):
            raise ModelFitError(f"{name} has negative values")
    return [np.atleast_1d(a) for a in arrays]


def weights_for(weights: ArrayLike | None, n: int) -> Array:
    """Counts per row (ones when None); rows of weight 0 count for nothing."""
    if weights is None:
        return np.ones(n)
    w = np.ravel(as_columns(("weights",), weights)[0])
    if w.shape != (n,):
        raise ModelFitError(f"weights has {w.size} values for {n} rows")
    return w


def maximize(objective: Callable[[Array], tuple[float, Array]],
             start: Array, model: str) -> tuple[Array, float, bool, int]:
    """Minimize `objective` (mean negative log-likelihood and its gradient in log-parameters).

    Returns the parameters, the minimum, whether it is an interior optimum (a parameter
    at its bound means the likelihood keeps rising towards 0 or infinity) and the
    iteration count. Raises ModelFitError when the optimizer gives up away from an optimum.
    """
    bounds = [(-LOG_BOUND, LOG_BOUND)] * len(start)
    result = minimize(objective, start, jac=True, method="L-BFGS-B", bounds=bounds,
                      options={"maxiter": 2000, "ftol": 1e-14, "gtol": 1e-10})
    if not (np.isfinite(result.fun) and np.all(np.isfinite(result.x))):
        raise ModelFitError(f"{model}: the likelihood became non-finite during the fit ({result.message})")
    interior = np.abs(result.x) < LOG_BOUND - 1e-6
    gradient_small = bool(np.all(np.abs(result.jac[interior]) < GRADIENT_TOLERANCE))
    if not (result.success or gradient_small):
        raise ModelFitError(f"{model}: the optimizer did not converge after {result.nit} iterations: "
                            f"{result.message}")
    return result.x, float(result.fun), bool(np.all(interior)), int(result.nit)
