"""Deliberately bad rows: a small share of each entity marked with one defect of its
kinds (BAD_KINDS), for the validation to catch; the writer applies the defects."""

from __future__ import annotations

import numpy as np

from winback.sample_shop.spec import (
    BAD_KINDS,
    EV_PAGE,
    EV_PRODUCT,
    EV_SEARCH,
    ME_CLICK,
    ME_OPEN,
    S_PURCHASE,
)
from winback.sample_shop.table import _Table


def _bad_counts(n_bad: int, kinds: int, part: int) -> np.ndarray:
    """Split evenly over kinds; the remainder rotates with the part so totals stay even."""
    counts = np.full(kinds, n_bad // kinds, np.int64)
    extra = n_bad % kinds
    for i in range(extra):
        counts[(part + i) % kinds] += 1
    return counts


def _mark_bad(rng, table: _Table, eligible: np.ndarray, share: float, part: int, kinds: int) -> None:
    """Set table['bad'] to 1..kinds on round(share * rows) rows chosen among eligible."""
    if kinds == 0 or table.n == 0:
        return
    pool = np.flatnonzero(eligible)
    if pool.size < round(share * table.n):
        pool = np.arange(table.n)
    n_bad = min(round(share * table.n), pool.size)
    rows = rng.choice(pool, n_bad, replace=False)
    counts = _bad_counts(n_bad, kinds, part)
    table.cols["bad"][rows] = np.repeat(np.arange(1, kinds + 1), counts).astype(np.int8)


def _inject_bad_rows(rng, part, share, cust, order_rows, sessions, events, feedback, mailing) -> None:
    _mark_bad(rng, cust, np.ones(cust.n, bool), share, part, len(BAD_KINDS["customers"]))
    _mark_bad(rng, order_rows, np.ones(order_rows.n, bool), share, part, len(BAD_KINDS["orders"]))
    # Only harmless events: losing a cart, a purchase or an order's only view would
    # change behaviour.
    light = np.isin(events["event"], (EV_PAGE, EV_PRODUCT, EV_SEARCH))
    light &= sessions["kind"][events["sess"]] != S_PURCHASE
    _mark_bad(rng, events, light, share, part, len(BAD_KINDS["events"]))
    _mark_bad(rng, feedback, np.ones(feedback.n, bool), share, part, len(BAD_KINDS["feedback"]))
    engagement = np.isin(mailing["event"], (ME_OPEN, ME_CLICK))
    _mark_bad(rng, mailing, engagement, share, part, len(BAD_KINDS["mailing_events"]))
