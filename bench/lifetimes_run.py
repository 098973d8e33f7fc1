"""The lifetimes side of bench.models, in its own process: read the orders, build the
per-customer summary, fit BG/NBD (and Gamma-Gamma); prints timings and parameters as JSON.

    python bench/lifetimes_run.py ORDERS.parquet AS_OF

Run with any interpreter: without lifetimes importable it re-executes itself (same
process, so a parent measuring it keeps measuring) with bench/out/venv-lifetimes.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

VENV_PYTHON = Path(__file__).resolve().parent / "out" / "venv-lifetimes" / "bin" / "python"


def main(path: str, as_of: str) -> dict:
    import pandas as pd
    from lifetimes import BetaGeoFitter, GammaGammaFitter
    from lifetimes.utils import summary_data_from_transaction_data

    began = time.perf_counter()
    orders = pd.read_parquet(path)
    read = time.perf_counter() - began
    began = time.perf_counter()
    summary = summary_data_from_transaction_data(orders, "customer_id", "date", monetary_value_col="amount",
                                                 observation_period_end=as_of, freq="D")
    summarized = time.perf_counter() - began
    began = time.perf_counter()
    bgf = BetaGeoFitter(penalizer_coef=0.0).fit(summary["frequency"], summary["recency"], summary["T"])
    fit = time.perf_counter() - began
    repeaters = summary[summary["frequency"] > 0]
    began = time.perf_counter()
    ggf = GammaGammaFitter(penalizer_coef=0.0).fit(repeaters["frequency"], repeaters["monetary_value"])
    gg_fit = time.perf_counter() - began
    return {"read_s": read, "summary_s": summarized, "fit_s": fit, "gg_fit_s": gg_fit, "customers": len(summary),
            "params": {k: float(v) for k, v in bgf.params_.items()},
            "gg_params": {k: float(v) for k, v in ggf.params_.items()}}


if __name__ == "__main__":
    try:
        import lifetimes  # noqa: F401
    except ImportError:
        os.execv(VENV_PYTHON, [str(VENV_PYTHON), __file__, *sys.argv[1:]])
    print(json.dumps(main(*sys.argv[1:3])))
