"""Customer lifetime value: BG/NBD purchases over a horizon times Gamma-Gamma spend."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from winback.build.models.bgnbd import BGNBDParams, expected_purchases
from winback.build.models.gamma_gamma import GammaGammaParams, expected_average_spend


def predicted_clv(bgnbd_params: BGNBDParams, gg_params: GammaGammaParams, x: ArrayLike, t_x: ArrayLike,
                  T: ArrayLike, monetary: ArrayLike, horizon: float, discount_rate_per_unit: float = 0.0,
                  steps: int = 12) -> NDArray[np.float64]:
    """Expected spend in (T, T + horizon] per customer, in the caller's time unit.

    Without discounting: expected purchases over the horizon times expected spend per
    purchase. With a discount rate d per time unit the horizon is cut into `steps` equal
    pieces, and the purchases expected in each piece are discounted by (1 + d)^-t at the
    piece's end (conservative: a purchase is valued as if made at the end of its piece).
    """
    if horizon < 0 or discount_rate_per_unit < 0 or steps < 1:
        raise ValueError("horizon and discount_rate_per_unit must be >= 0, steps >= 1")
    spend = expected_average_spend(gg_params, x, monetary)
    if discount_rate_per_unit == 0:
        return expected_purchases(bgnbd_params, horizon, x, t_x, T) * spend
    ends = np.linspace(0.0, horizon, steps + 1)
    cumulative = [expected_purchases(bgnbd_params, t, x, t_x, T) for t in ends]
    discounted = sum((cumulative[k] - cumulative[k - 1]) * (1 + discount_rate_per_unit) ** -ends[k]
                     for k in range(1, steps + 1))
    return discounted * spend
