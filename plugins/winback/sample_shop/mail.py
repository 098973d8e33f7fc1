"""Mailings: the campaign calendar shared by all chunks, who receives each campaign
(consent, win-back audience), and their sends, opens, clicks and unsubscribes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from winback.sample_shop.spec import (
    _CAMPAIGN_STREAM,
    _INT_NA,
    DAY,
    HOUR,
    ME_CLICK,
    ME_OPEN,
    ME_SENT,
    ME_UNSUBSCRIBE,
    MINUTE,
)
from winback.sample_shop.table import _Table
from winback.sample_shop.timeline import _Timeline

# Mailings: about four campaigns a month; the third goes to lapsing customers only.
CAMPAIGN_DAYS = (3, 10, 17, 24)
CAMPAIGN_NEWSLETTER, CAMPAIGN_PROMO, CAMPAIGN_WINBACK, CAMPAIGN_NEWS = range(4)
WINBACK_AFTER_DAYS = 60
NEWS_AUDIENCE_SHARE = 0.5
EMAIL_CONSENT_SHARE_OF_EMAILS = 0.88  # ~5 pp unsubscribe later -> ~80 % at the end
UNSUBSCRIBE_SHARE = 0.05
# Per open propensity class (customers.OPEN_CLASS_P): never, rarely, engaged.
OPEN_P = (0.0, 0.1, 0.4)
CLICK_P_GIVEN_OPEN = (0.0, 0.15, 0.25)


@dataclass(frozen=True)
class _Campaigns:
    names: list[str]
    send_ts: np.ndarray
    kind: np.ndarray  # position in the month: CAMPAIGN_NEWSLETTER ... CAMPAIGN_NEWS


def _campaign_schedule(seed: int, tl: _Timeline) -> _Campaigns:
    rng = np.random.default_rng([seed, *_CAMPAIGN_STREAM])
    names, sends, kinds = [], [], []
    for m, label in enumerate(tl.months):
        jitter = rng.integers(0, 3, len(CAMPAIGN_DAYS))
        minutes = rng.integers(0, 180, len(CAMPAIGN_DAYS))
        for i, day in enumerate(CAMPAIGN_DAYS):
            ts = int(tl.month_starts[m]) + (day - 1 + int(jitter[i])) * DAY + 10 * HOUR + int(minutes[i]) * MINUTE
            if tl.start_ts <= ts <= tl.end_ts:
                names.append(f"camp-{label}-{i + 1}")
                sends.append(ts)
                kinds.append(i)
    return _Campaigns(names, np.array(sends, np.int64), np.array(kinds, np.int8))


def _last_order_before(orders: _Table, n: int, when: int) -> np.ndarray:
    """Per customer of the chunk, time of the last order before `when` (-1 if none)."""
    before = orders["ts"] < when
    last = np.full(n, -1, np.int64)
    np.maximum.at(last, orders["cust"][before], orders["ts"][before])
    return last


def _draw_mailing(rng, cust: _Table, orders: _Table, camp: _Campaigns, tl: _Timeline) -> _Table:
    n, c = cust.n, camp.send_ts.size
    consent = cust["has_email"] & (rng.random(n) < EMAIL_CONSENT_SHARE_OF_EMAILS)
    cust.cols["email_consent0"] = consent
    receives = consent[:, None] & (cust["reg"][:, None] < camp.send_ts[None, :])
    news_pick = rng.random((n, c)) < NEWS_AUDIENCE_SHARE
    for j in range(c):
        if camp.kind[j] == CAMPAIGN_WINBACK:
            last = _last_order_before(orders, n, int(camp.send_ts[j]))
            quiet = np.where(last >= 0, last < camp.send_ts[j] - WINBACK_AFTER_DAYS * DAY,
                             cust["reg"] < camp.send_ts[j] - 14 * DAY)
            receives[:, j] &= quiet
        elif camp.kind[j] == CAMPAIGN_NEWS:
            receives[:, j] &= news_pick[:, j]
    unsub_campaign = _choose_unsubscribes(rng, receives)
    after_unsub = np.arange(c)[None, :] > unsub_campaign[:, None]
    receives &= ~(after_unsub & (unsub_campaign >= 0)[:, None])

    who, which = np.nonzero(receives)
    sent = camp.send_ts[which] + rng.integers(0, 30 * MINUTE, who.size)
    klass = cust["open_class"][who]
    opened = rng.random(who.size) < np.array(OPEN_P)[klass]
    open_ts = sent + (rng.exponential(5 * HOUR, who.size) + MINUTE).astype(np.int64)
    opened &= open_ts <= tl.end_ts
    clicked = opened & (rng.random(who.size) < np.array(CLICK_P_GIVEN_OPEN)[klass])
    click_ts = open_ts + rng.integers(10, 15 * MINUTE, who.size)
    clicked &= click_ts <= tl.end_ts
    unsub = unsub_campaign[who] == which
    unsub_ts = np.minimum(sent + rng.integers(2 * MINUTE, 2 * DAY, who.size), tl.end_ts)
    unsub_at = np.full(n, _INT_NA, np.int64)
    unsub_at[who[unsub]] = unsub_ts[unsub]
    cust.cols["unsubscribed"] = unsub_at

    parts = [(np.ones(who.size, bool), sent, ME_SENT), (opened, open_ts, ME_OPEN),
             (clicked, click_ts, ME_CLICK), (unsub, unsub_ts, ME_UNSUBSCRIBE)]
    rows_who = np.concatenate([who[m] for m, _, _ in parts])
    rows = _Table({
        "cust": rows_who,
        "campaign": np.concatenate([which[m] for m, _, _ in parts]),
        "event": np.concatenate([np.full(int(m.sum()), code, np.int8) for m, _, code in parts]),
        "ts": np.concatenate([t[m] for m, t, _ in parts]),
    })
    rows = rows.take(np.lexsort((rows["event"], rows["campaign"], rows["cust"], rows["ts"])))
    rows.cols["bad"] = np.zeros(rows.n, np.int8)
    return rows


def _choose_unsubscribes(rng, receives: np.ndarray) -> np.ndarray:
    """Per customer, the campaign after which they unsubscribed (-1: never)."""
    n = receives.shape[0]
    if receives.shape[1] == 0:
        return np.full(n, -1, np.int64)
    counts = receives.sum(axis=1)
    eligible = counts > 0
    p = min(1.0, UNSUBSCRIBE_SHARE * n / max(int(eligible.sum()), 1))
    chosen = eligible & (rng.random(n) < p)
    nth = (rng.random(n) * counts).astype(np.int64)  # 0-based among received campaigns
    rank = np.cumsum(receives, axis=1) - 1
    hit = receives & (rank == nth[:, None]) & chosen[:, None]
    return np.where(chosen, hit.argmax(axis=1), -1)
