"""Contact outcomes: the phone team calls lapsed high-value buyers (the call list), and
the quality department lapsed unhappy ones, some days after they fall silent; a call
nobody answers is tried once more. Each row notes what came of a call and the reason
given for leaving: unhappy customers blame quality and service, the others mostly price
or forgetting. About 60 % of those called agree to come back."""

from __future__ import annotations

import numpy as np

from winback.sample_shop.bad_rows import _mark_bad
from winback.sample_shop.spec import BAD_KINDS, CATEGORIES, DAY, HOUR, MINUTE
from winback.sample_shop.table import _Table
from winback.sample_shop.timeline import _Timeline

# Who is called: buyers with a phone, silent for this many of their main category's
# cycles, who are in the top share of a chunk's buyers by spend or were unhappy.
CALL_VALUE_SHARE = 0.2
LAPSED_AFTER_CYCLES = 2.5
MIN_LAPSED_DAYS = 60
CALL_DELAY_DAYS = (3, 21)  # from falling silent to the call
CALL_HOURS = (10, 19)  # local office hours
RETRY_DAYS = (1, 4)
# First call: a wrong number, nobody answering (retried once), or an answer.
WRONG_NUMBER_P = 0.04
NO_ANSWER_P = 0.22
RETRY_NO_ANSWER_P = 0.5
# What an answer turns into; with the no-answers, ~60 % of the called agree.
ANSWER_OUTCOMES = ("agreed_to_return", "refused", "reached")
ANSWER_OUTCOME_P = (0.72, 0.15, 0.13)
REASON_GIVEN_P = 0.85
COMMENT_P = 0.3

OUTCOMES = ("reached", "no_answer", "refused", "agreed_to_return", "wrong_number")
OC_REACHED, OC_NO_ANSWER, OC_REFUSED, OC_AGREED, OC_WRONG = range(5)
REASONS = ("price", "delivery", "quality", "service", "assortment", "forgot", "moved", "other")
REASON_P_UNHAPPY = (0.05, 0.15, 0.4, 0.3, 0.02, 0.0, 0.02, 0.06)
REASON_P_OTHERS = (0.35, 0.1, 0.03, 0.04, 0.1, 0.25, 0.08, 0.05)
# What the caller types, per reason (no personal data: the sample's comments are canned).
REASON_COMMENTS = ("Нашла дешевле в другом магазине", "Доставка слишком долгая",
                   "Последний заказ пришёл с браком", "Не дозвонилась в поддержку",
                   "Не было нужного товара", "Просто забыла про вас", "Переехал в другой город",
                   "Просили перезвонить позже")


def _draw_contacts(rng, part: int, bad_share: float, cust: _Table, orders: _Table, tl: _Timeline) -> _Table:
    """One row per call, sorted by customer then time; a few carry a defect (BAD_KINDS)."""
    n = cust.n
    spend = np.bincount(orders["cust"], weights=orders["amount"], minlength=n)
    last = np.full(n, -1, np.int64)
    np.maximum.at(last, orders["cust"], orders["ts"])
    buyers = last >= 0
    top = spend >= np.quantile(spend[buyers], 1 - CALL_VALUE_SHARE) if buyers.any() else buyers
    cycle = np.array([c.cycle_days for c in CATEGORIES])[cust["main_cat"]] * cust["personal"]
    silent = np.maximum(LAPSED_AFTER_CYCLES * cycle, MIN_LAPSED_DAYS) * DAY
    day = (last + silent).astype(np.int64) // DAY * DAY + rng.integers(*CALL_DELAY_DAYS, n) * DAY
    called_at = day + rng.integers(CALL_HOURS[0] * HOUR, CALL_HOURS[1] * HOUR, n) + rng.integers(0, MINUTE, n)
    on_list = buyers & (top | cust["unhappy"]) & cust["has_phone"] & (called_at <= tl.end_ts)
    idx = np.flatnonzero(on_list)
    first = rng.random(idx.size)
    outcome = np.where(first < WRONG_NUMBER_P, OC_WRONG, np.where(first < WRONG_NUMBER_P + NO_ANSWER_P,
                                                                   OC_NO_ANSWER, -1))
    retry_at = called_at[idx] + rng.integers(*RETRY_DAYS, idx.size) * DAY
    retried = (outcome == OC_NO_ANSWER) & (retry_at <= tl.end_ts)
    retry_answered = retried & (rng.random(idx.size) >= RETRY_NO_ANSWER_P)
    # The answer of whichever call was answered.
    answer = np.array([OUTCOMES.index(o) for o in ANSWER_OUTCOMES])[
        rng.choice(len(ANSWER_OUTCOMES), idx.size, p=ANSWER_OUTCOME_P)]
    unhappy = cust["unhappy"][idx]
    reason = np.where(unhappy, rng.choice(len(REASONS), idx.size, p=REASON_P_UNHAPPY),
                      rng.choice(len(REASONS), idx.size, p=REASON_P_OTHERS))
    reason = np.where(rng.random(idx.size) < REASON_GIVEN_P, reason, -1)
    comment = np.where((reason >= 0) & (rng.random(idx.size) < COMMENT_P), reason, -1)
    first_outcome = np.where(outcome < 0, answer, outcome)
    answered_first = outcome < 0
    cust_rows = np.concatenate([idx, idx[retried]])
    rows = _Table({
        "cust": cust_rows,
        "ts": np.concatenate([called_at[idx], retry_at[retried]]),
        "outcome": np.concatenate([first_outcome, np.where(retry_answered[retried], answer[retried],
                                                           OC_NO_ANSWER)]),
        "reason": np.concatenate([np.where(answered_first, reason, -1),
                                  np.where(retry_answered[retried], reason[retried], -1)]),
        "comment": np.concatenate([np.where(answered_first, comment, -1),
                                   np.where(retry_answered[retried], comment[retried], -1)]),
    })
    rows = rows.take(np.lexsort((rows["ts"], rows["cust"])))
    rows.cols["bad"] = np.zeros(rows.n, np.int8)
    _mark_bad(rng, rows, np.ones(rows.n, bool), bad_share, part, len(BAD_KINDS["contact_outcomes"]))
    return rows
