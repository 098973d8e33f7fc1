"""Customers: kind (non-buyer ... loyal), main category, personal rhythm, mood, devices,
registration time and email engagement class; these drive every later draw."""

from __future__ import annotations

import numpy as np

from winback.sample_shop.spec import CATEGORIES, HOUR, NON_BUYER
from winback.sample_shop.table import _Table
from winback.sample_shop.timeline import _acquisition_times, _Timeline

# Shares of the kinds NON_BUYER ... LOYAL (spec.py).
KIND_SHARES = (0.09, 0.16, 0.33, 0.31, 0.11)
WINDOW_SHOPPER_SHARE_OF_NON_BUYERS = 0.35
PERSONAL_RHYTHM_SIGMA = 0.3
UNHAPPY_SHARE = 0.08
SECOND_DEVICE_SHARE = 0.3
EMAIL_SHARE = 0.97
# Open propensity classes: never (these become "archived"), rarely, engaged.
OPEN_CLASS_P = (0.3, 0.3, 0.4)


def _draw_customers(rng, first: int, n: int, tl: _Timeline) -> _Table:
    kind = rng.choice(len(KIND_SHARES), size=n, p=KIND_SHARES).astype(np.int8)
    window = (kind == NON_BUYER) & (rng.random(n) < WINDOW_SHOPPER_SHARE_OF_NON_BUYERS)
    main_share = np.array([c.main_share for c in CATEGORIES])
    reg = _acquisition_times(rng, n, tl)
    # Nobody registers in the first minutes of the window: their sessions would start before it.
    reg = np.maximum(reg, tl.start_ts + 6 * HOUR)
    return _Table({
        "g": first + np.arange(n, dtype=np.int64),
        "kind": kind,
        "window": window,
        "main_cat": rng.choice(len(CATEGORIES), size=n, p=main_share / main_share.sum()).astype(np.int8),
        "personal": rng.lognormal(0.0, PERSONAL_RHYTHM_SIGMA, n),
        "unhappy": rng.random(n) < UNHAPPY_SHARE,
        "devices": 1 + (rng.random(n) < SECOND_DEVICE_SHARE).astype(np.int8),
        "reg": reg,
        "open_class": rng.choice(len(OPEN_CLASS_P), size=n, p=OPEN_CLASS_P).astype(np.int8),
        "has_email": rng.random(n) < EMAIL_SHARE,
    })
