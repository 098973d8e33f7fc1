"""Feedback: a score (and sometimes a comment) some days after delivery; unhappy
customers and refunds answer more often and score lower."""

from __future__ import annotations

import numpy as np

from winback.sample_shop.spec import _INT_NA, COMMENTS, DAY, HOUR, ST_REFUNDED
from winback.sample_shop.table import _Table
from winback.sample_shop.timeline import _Timeline

# Feedback.
FEEDBACK_SHARE = {"happy": 0.28, "unhappy": 0.6}
SCORE_P_HAPPY = (0.015, 0.01, 0.015, 0.02, 0.04, 0.06, 0.10, 0.19, 0.22, 0.33)
SCORE_P_UNHAPPY = (0.22, 0.15, 0.14, 0.11, 0.1, 0.08, 0.06, 0.05, 0.05, 0.04)
COMMENT_SHARE = 0.5
# Some shops ask for separate scores: service, delivery, product. A late parcel's
# delivery score is low whatever the overall one says.
DETAILED_SHARE = 0.4
LATE_AFTER = 3 * DAY


def _draw_feedback(rng, orders: _Table, tr: _Table, cust: _Table, tl: _Timeline) -> _Table:
    delivered = tr["delivered"]
    unhappy = cust["unhappy"][orders["cust"]]
    share = np.where(unhappy, FEEDBACK_SHARE["unhappy"], FEEDBACK_SHARE["happy"])
    created = np.where(delivered < _INT_NA, delivered, 0) + rng.integers(2 * HOUR, 5 * DAY, orders.n)
    gives = (delivered <= tl.end_ts) & (rng.random(orders.n) < share) & (created <= tl.end_ts)
    idx = np.flatnonzero(gives)
    refunded = tr["codes"][idx, 4] == ST_REFUNDED
    sad = unhappy[idx] | refunded
    score = np.where(sad, rng.choice(10, idx.size, p=SCORE_P_UNHAPPY),
                     rng.choice(10, idx.size, p=SCORE_P_HAPPY)) + 1
    band = np.where(score <= 4, 0, np.where(score <= 7, 1, 2))
    pools = [COMMENTS["low"], COMMENTS["mid"], COMMENTS["high"]]
    starts = np.cumsum([0] + [len(p) for p in pools])[:-1]
    sizes = np.array([len(p) for p in pools])
    comment = starts[band] + rng.integers(0, 1 << 30, idx.size) % sizes[band]
    comment = np.where(rng.random(idx.size) < COMMENT_SHARE, comment, -1)
    detail = _detailed_scores(rng.spawn(1)[0], score, delivered[idx] - orders["ts"][idx] > LATE_AFTER)
    return _Table({"order": idx, "score": score.astype(np.int64), "comment": comment,
                   "created": created[idx], "bad": np.zeros(idx.size, np.int8), **detail})


def _detailed_scores(side, score: np.ndarray, late: np.ndarray) -> dict[str, np.ndarray]:
    """Service, delivery and product scores near the overall one for a share of the
    feedback (_INT_NA elsewhere). Drawn from a generator of their own (`side`, spawned
    without advancing the shop's), so the rest of the shop does not move."""
    n = score.size
    detailed = side.random(n) < DETAILED_SHARE
    out = {}
    for name in ("service", "delivery", "product"):
        value = np.clip(score + side.integers(-1, 2, n), 1, 10)
        if name == "delivery":
            value = np.where(late, side.integers(1, 5, n), value)
        out[name] = np.where(detailed, value, _INT_NA).astype(np.int64)
    return out
