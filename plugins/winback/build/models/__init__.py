"""Customer-base models ("buy till you die"): BG/NBD purchases, Gamma-Gamma spend and CLV."""

from winback.build.models.base import ModelFit, ModelFitError
from winback.build.models.bgnbd import (
    BGNBDParams,
    expected_purchases,
    fit_bgnbd,
    p_alive,
    simulate_bgnbd,
)
from winback.build.models.bgnbd import log_likelihood as bgnbd_log_likelihood
from winback.build.models.clv import predicted_clv
from winback.build.models.gamma_gamma import (
    GammaGammaParams,
    expected_average_spend,
    fit_gamma_gamma,
    simulate_gamma_gamma,
)
from winback.build.models.gamma_gamma import (
    log_likelihood as gamma_gamma_log_likelihood,
)

__all__ = [
    "BGNBDParams", "GammaGammaParams", "ModelFit", "ModelFitError",
    "bgnbd_log_likelihood", "expected_average_spend", "expected_purchases", "fit_bgnbd", "fit_gamma_gamma",
    "gamma_gamma_log_likelihood", "p_alive", "predicted_clv", "simulate_bgnbd", "simulate_gamma_gamma",
]
