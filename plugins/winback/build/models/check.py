"""Is BG/NBD right for this shop? Every build fits it again on the purchases up to
`segments.models.check_days` before its as-of day, predicts each customer's repeat
purchase days in the days that follow and compares with what they bought: the
calibration/holdout table of Fader, Hardie & Lee (2005), appended to `model_checks`.
"""

from __future__ import annotations

import json
import logging
from datetime import date, timedelta

import numpy as np
import sqlalchemy as sa

from winback.build.models.base import ModelFitError
from winback.build.models.bgnbd import expected_purchases, fit_bgnbd

log = logging.getLogger(__name__)

TABLE = "model_checks"  # its columns: builder.HISTORY_TABLES
# Calibration repeat purchases 0..6 each have a row, more share the '7+' row: the
# buckets of the literature's calibration table.
TOP_BUCKET = 7


def check_model(conn, as_of: date, enabled: bool, check_days: int | None, min_repeat: int) -> list[dict]:
    """The model_checks rows of one build (without build_id and as_of). Reads the build's
    customer_purchase_days__new (purchase days up to the as-of day)."""
    if not check_days:
        return [_skipped(None, check_days, "no check: segments.models.check_days is 0 or null")]
    end = as_of - timedelta(days=check_days)
    if not enabled:
        return [_skipped(end, check_days, "no check: the models are off (segments.models.enabled: false)")]
    # Per customer who had bought by the calibration end: x, t_x and T (days) as of that
    # end and the purchase days after it, grouped so Python sees groups, not customers.
    day = f"DATE '{end.isoformat()}'"
    groups = conn.exec_driver_sql(f"""
        WITH customers AS (
            SELECT COUNT(*) FILTER (WHERE day <= {day}) - 1 AS x,
                   MAX(day) FILTER (WHERE day <= {day}) - MIN(day) AS t_x,
                   {day} - MIN(day) AS big_t,
                   COUNT(*) FILTER (WHERE day > {day}) AS actual
            FROM customer_purchase_days__new
            GROUP BY customer_id
            HAVING MIN(day) <= {day}
        )
        SELECT x, t_x, big_t, actual, COUNT(*) FROM customers GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4""").fetchall()
    if not groups:
        return [_skipped(end, check_days, f"no check: no customer had bought by the calibration end {end}")]
    x, t_x, big_t, actual, weights = (np.array(column, dtype=float) for column in zip(*groups))
    try:
        repeaters = int(weights[x > 0].sum())
        if repeaters < min_repeat:
            raise ModelFitError(f"{repeaters} repeat buyers by {end}, fewer than "
                                f"models.min_repeat_customers={min_repeat}")
        # The rows differ by `actual` too: fit and predict once per distinct (x, t_x, T),
        # found without sorting again as the rows come sorted by them.
        starts = np.r_[True, (np.diff(x) != 0) | (np.diff(t_x) != 0) | (np.diff(big_t) != 0)]
        inverse = np.cumsum(starts) - 1
        history = np.stack([x[starts], t_x[starts], big_t[starts]])
        customers = np.bincount(inverse, weights=weights)
        usable = history[2] > 0  # as in the build's fit: a first purchase that day says nothing yet
        fit = fit_bgnbd(*history[:, usable], customers[usable])
        params = json.dumps({name: round(float(value), 8) for name, value in vars(fit.params).items()},
                            sort_keys=True)
        if not fit.converged:
            raise ModelFitError(f"the calibration fit did not converge (parameters {params})")
        predicted = expected_purchases(fit.params, float(check_days), *history)[inverse]
        if not np.isfinite(predicted).all():
            raise ModelFitError(f"the calibration fit gives non-finite predictions (parameters {params})")
    except ModelFitError as exc:
        log.warning("BG/NBD not checked: %s", exc)
        row = _skipped(end, check_days, f"not fitted: {exc}")
        return [{**row, "customers": int(weights.sum()), "actual": float(weights @ actual)}]
    bucket = np.minimum(x, TOP_BUCKET).astype(int)
    rows = []
    for label, members in [("all", np.ones(x.size, dtype=bool)),
                           *((_label(b), bucket == b) for b in np.unique(bucket))]:
        w = weights[members]
        rows.append({"calibration_end": end, "check_days": check_days, "repeat_purchases": label,
                     "customers": int(w.sum()), "predicted": float(w @ predicted[members]),
                     "actual": float(w @ actual[members]),
                     "mean_absolute_error": float(w @ np.abs(predicted[members] - actual[members]) / w.sum()),
                     "params": params if label == "all" else None, "message": None})
    return rows


def record_checks(conn, build_id: str, as_of: date, rows: list[dict]) -> None:
    """Inside the build's history transaction: replace this build's rows."""
    conn.execute(sa.text(f"DELETE FROM {TABLE} WHERE build_id = :build_id"), {"build_id": build_id})
    rows = [{"build_id": build_id, "as_of": as_of, **row} for row in rows]
    names = list(rows[0])
    conn.execute(sa.text(f"INSERT INTO {TABLE} ({', '.join(names)}) VALUES ({', '.join(':' + n for n in names)})"),
                 rows)


def _label(bucket: int) -> str:
    return f"{bucket}+" if bucket == TOP_BUCKET else str(bucket)


def _skipped(end: date | None, check_days: int | None, message: str) -> dict:
    return {"calibration_end": end, "check_days": check_days, "repeat_purchases": "all", "customers": None,
            "predicted": None, "actual": None, "mean_absolute_error": None, "params": None, "message": message}
