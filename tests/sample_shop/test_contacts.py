"""Who the sample shop calls and what they say, on hand-built customers: the call list is
silent valuable (or unhappy) buyers with a phone, about 60 % of them agree to return, and
the reasons follow why they left."""

from __future__ import annotations

from collections import Counter
from datetime import date

import numpy as np
from winback.sample_shop.contacts import OC_AGREED, REASONS, _draw_contacts
from winback.sample_shop.spec import DAY, ShopSpec
from winback.sample_shop.table import _Table
from winback.sample_shop.timeline import _timeline

TL = _timeline(ShopSpec(months=12, end=date(2025, 6, 30)))
N = 4000


def customers(**overrides) -> _Table:
    columns = {"main_cat": np.zeros(N, np.int8),  # pet food: a 28-day cycle
               "personal": np.ones(N), "unhappy": np.arange(N) % 2 == 1, "has_phone": np.ones(N, bool)}
    columns.update(overrides)
    return _Table(columns)


def one_order_each(days_before_end: np.ndarray, amount: np.ndarray | None = None) -> _Table:
    return _Table({"cust": np.arange(N), "ts": TL.end_ts - days_before_end.astype(np.int64) * DAY,
                   "amount": np.full(N, 1000.0) if amount is None else amount})


def reasons(calls: _Table, who: np.ndarray) -> Counter:
    stated = calls["reason"][np.isin(calls["cust"], who) & (calls["reason"] >= 0)]
    return Counter(REASONS[r] for r in stated)


def test_silent_customers_are_called_and_reasons_follow_why_they_left():
    calls = _draw_contacts(np.random.default_rng(1), 0, 0.0, customers(), one_order_each(np.full(N, 200)), TL)
    assert np.unique(calls["cust"]).size == N  # all silent 200 days, all equally valuable
    agreed = np.unique(calls["cust"][calls["outcome"] == OC_AGREED]).size / N
    assert 0.55 < agreed < 0.65
    unhappy, happy = reasons(calls, np.arange(1, N, 2)), reasons(calls, np.arange(0, N, 2))
    assert (unhappy["quality"] + unhappy["service"]) / unhappy.total() > 0.6
    assert (happy["price"] + happy["forgot"]) / happy.total() > 0.5
    assert (happy["quality"] + happy["service"]) / happy.total() < 0.1


def test_recent_buyers_cheap_happy_ones_and_those_without_a_phone_are_not_called():
    recent = np.where(np.arange(N) < N // 2, 20, 200)  # half bought 20 days ago
    amount = np.where(np.arange(N) % 4 == 0, 10_000.0, 100.0)  # a quarter spent much more
    no_phone = np.arange(N) % 8 == 3
    calls = _draw_contacts(np.random.default_rng(2), 0, 0.0, customers(has_phone=~no_phone),
                           one_order_each(recent, amount), TL)
    called = np.unique(calls["cust"])
    assert (called >= N // 2).all()  # only the silent half
    assert not no_phone[called].any()
    expected = {c for c in range(N // 2, N) if (c % 4 == 0 or c % 2 == 1) and c % 8 != 3}
    assert set(called) == expected  # the big spenders and the unhappy
