"""Site visits: sessions (signups, purchases, abandoned carts, browsing, anonymous
visitors) within the events budget, their traffic sources, and one row per event."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from winback.sample_shop.catalog import _Catalog
from winback.sample_shop.mail import _Campaigns
from winback.sample_shop.spec import (
    CATEGORIES,
    DAY,
    EV_ATC,
    EV_CHECKOUT,
    EV_LOGIN,
    EV_PAGE,
    EV_PRODUCT,
    EV_PURCHASE,
    EV_REMOVE,
    EV_SEARCH,
    EV_SIGNUP,
    HOUR,
    MINUTE,
    MOSCOW_UTC_OFFSET,
    PRIMARY_DEVICE_SHARE,
    S_ABANDON,
    S_BROWSE,
    S_PURCHASE,
    S_SIGNUP,
    UTM_CHANNELS,
)
from winback.sample_shop.table import _Table
from winback.sample_shop.timeline import _acquisition_times, _Timeline

if TYPE_CHECKING:
    from winback.sample_shop.chunk import _IdCounters

# Site events. Budget order: signups and one purchase session per order are
# mandatory; then abandoned carts (up to ABANDON_BUDGET_CAP of what is left), then
# browsing. If the mandatory part alone exceeds the target, the optional part still
# gets MIN_OPTIONAL_EVENT_SHARE of it so every behaviour stays present.
ABANDONED_CART_SHARE = 0.70  # of sessions with add_to_cart
ABANDON_BUDGET_CAP = 0.9
MIN_OPTIONAL_EVENT_SHARE = 0.05
FOLLOWUP_ORDER_SHARE = 0.10  # orders preceded by an abandoned cart with the same items
ANONYMOUS_ABANDON_SHARE = 0.25
PRE_REGISTRATION_BROWSE_SHARE = 0.3
ANON_VISITORS_PER_CUSTOMER = 0.5
RECENT_REGISTRATION_DAYS = 45
BROWSE_SHARES = {"buyers": 0.45, "window": 0.3, "anonymous": 0.25}
WINDOW_SHOPPER_WEIGHT = 25.0
ACTIVE_TAIL_DAYS = 45  # customers keep visiting a while after their last order
PURCHASE_LOGIN_SHARE = 0.2
SESSION_MODE_P = (0.7, 0.15, 0.15)  # logged in / logs in during the session / anonymous
EVENT_GAP_MEAN_S = 40.0

M_LOGGED, M_LOGIN, M_ANON, M_SIGNUP = range(4)
# Event slots in session order; auth is early (after the landing page) or late (before
# the cart).
SLOTS = ("search", "page", "auth_early", "views", "auth_late", "atc", "remove", "checkout", "purchase")
(SLOT_SEARCH, SLOT_PAGE, SLOT_AUTH_EARLY, SLOT_VIEWS, SLOT_AUTH_LATE, SLOT_ATC, SLOT_REMOVE, SLOT_CHECKOUT,
 SLOT_PURCHASE) = range(len(SLOTS))
SLOT_EVENT = (EV_SEARCH, EV_PAGE, EV_LOGIN, EV_PRODUCT, EV_LOGIN, EV_ATC, EV_REMOVE, EV_CHECKOUT,
              EV_PURCHASE)
BASKET = 4


def _sessions(n: int, **cols) -> _Table:
    """A block of sessions; unspecified counts are zero and there is no basket."""
    # Small dtypes: a chunk holds hundreds of thousands of sessions.
    t = _Table({
        "kind": np.zeros(n, np.int8), "visitor": np.zeros(n, np.int64),
        "customer": np.full(n, -1, np.int64), "mode": np.full(n, M_ANON, np.int8),
        "anchor": np.zeros(n, np.int64), "anchor_end": np.zeros(n, bool),
        "basket": np.full((n, BASKET), -1, np.int32), "n_basket": np.zeros(n, np.int8),
        "cat": np.zeros(n, np.int8), "order": np.full(n, -1, np.int32),
        "utm": np.zeros(n, np.int8),
    })
    for slot in SLOTS:
        t.cols[slot] = np.zeros(n, np.int16)
    for key, value in cols.items():
        default = t.cols[key]
        t.cols[key] = np.broadcast_to(np.asarray(value).astype(default.dtype), default.shape).copy()
    return t


def _concat(tables: list[_Table]) -> _Table:
    keys = tables[0].cols.keys()
    return _Table({k: np.concatenate([t.cols[k] for t in tables]) for k in keys})


def _session_events(t: _Table) -> np.ndarray:
    return np.sum([t[s] for s in SLOTS], axis=0, dtype=np.int64)


def _take_within(t: _Table, budget: float, limit: int | None = None) -> _Table:
    """The first sessions of a (randomly ordered) block whose events fit the budget."""
    used = np.cumsum(_session_events(t))
    keep = int(np.searchsorted(used, budget, side="right"))
    if limit is not None:
        keep = min(keep, max(int(limit), 0))
    return t.take(np.arange(keep))


def _draw_events(rng, cust, orders, lines, catalog, camp, tl, spec, ids) -> tuple[_Table, _Table]:
    n = cust.n
    buys = np.bincount(orders["cust"], minlength=n) > 0
    visitors = _Visitors(rng, cust, spec.customers, ids)
    mandatory = [
        _signup_sessions(cust),
        _purchase_sessions(rng, orders, lines, cust, visitors),
        _recent_registrant_sessions(rng, cust, buys, visitors, catalog, tl),
    ]
    used = sum(int(_session_events(s).sum()) for s in mandatory)
    target = spec.events_per_customer * n
    optional = max(target - used, MIN_OPTIONAL_EVENT_SHARE * target)

    carts_with_purchase = orders.n
    carts_already = int((mandatory[2]["atc"] > 0).sum())
    wanted = ABANDONED_CART_SHARE / (1 - ABANDONED_CART_SHARE) * carts_with_purchase - carts_already
    active = _active_windows(cust, orders, buys, tl)
    # A cart-only visit has at least a view and an add: never draw more than fit the budget.
    wanted = min(wanted, ABANDON_BUDGET_CAP * optional / 2)
    abandon = _abandon_sessions(rng, cust, orders, lines, active, visitors, catalog, tl, int(max(wanted, 0)))
    abandon = _take_within(abandon, ABANDON_BUDGET_CAP * optional, limit=wanted)
    browse_budget = optional - _session_events(abandon).sum()
    browse = _browse_sessions(rng, cust, active, buys, visitors, catalog, tl, browse_budget)

    sessions = _concat(mandatory + [abandon, browse])
    sessions = sessions.take(np.flatnonzero(_session_events(sessions) > 0))
    sessions.cols["session_id"] = ids.session + 1 + np.arange(sessions.n, dtype=np.int64)
    ids.session += sessions.n
    _assign_utm(rng, sessions, camp, tl)
    events = _expand_sessions(rng, sessions, orders, catalog, tl)
    # Only what the events file needs per session stays in memory until it is written.
    keep = ("kind", "visitor", "customer", "session_id", "utm", "campaign")
    return _Table({k: sessions[k] for k in keep}), events


class _Visitors:
    """Cookie ids: two per customer (devices), then anonymous visitors after all customers."""

    def __init__(self, rng, cust: _Table, total_customers: int, ids: _IdCounters) -> None:
        self.cust = cust
        self.second = (cust["devices"] == 2)
        self.n_anonymous = max(1, round(ANON_VISITORS_PER_CUSTOMER * cust.n))
        self.anon_base = 2 * total_customers + ids.anonymous_visitor
        ids.anonymous_visitor += self.n_anonymous
        # Heavy-tailed visit propensity: a few anonymous visitors browse a lot.
        self.anon_weight = rng.pareto(1.5, self.n_anonymous) + 0.2

    def of(self, rng, pos: np.ndarray, device: np.ndarray | None = None) -> np.ndarray:
        if device is None:
            device = (self.second[pos] & (rng.random(pos.size) > PRIMARY_DEVICE_SHARE)).astype(np.int64)
        return 2 * self.cust["g"][pos] + 1 + device

    def anonymous(self, rng, n: int) -> np.ndarray:
        p = self.anon_weight / self.anon_weight.sum()
        return self.anon_base + 1 + rng.choice(self.n_anonymous, n, p=p)


def _signup_sessions(cust: _Table) -> _Table:
    """Every customer signed up from their first device: a landing page, then the signup."""
    return _sessions(cust.n, kind=S_SIGNUP, visitor=2 * cust["g"] + 1, customer=cust["g"],
                     mode=M_SIGNUP, anchor=cust["reg"], anchor_end=True, page=1, auth_early=1,
                     cat=cust["main_cat"])


def _purchase_sessions(rng, orders, lines, cust, visitors) -> _Table:
    n = orders.n
    login = rng.random(n) < PURCHASE_LOGIN_SHARE
    basket = np.full((n, BASKET), -1, np.int64)
    basket[lines["order"], lines["pos"]] = lines["sku"]
    c = orders["cust"]
    return _sessions(
        n, kind=S_PURCHASE, visitor=visitors.of(rng, c, orders["device"]), customer=cust["g"][c],
        mode=np.where(login, M_LOGIN, M_LOGGED), anchor=orders["ts"], anchor_end=True,
        basket=basket, n_basket=orders["n_lines"], cat=orders["cat"], order=np.arange(n),
        views=1, auth_late=login.astype(np.int64), atc=orders["n_lines"], checkout=1, purchase=1,
    )


def _random_baskets(rng, cat: np.ndarray, catalog: _Catalog) -> np.ndarray:
    """Four distinct skus of each session's category."""
    size = catalog.size[cat]
    base = rng.integers(0, 1 << 30, cat.size) % size
    step = 1 + rng.integers(0, 1 << 30, cat.size) % np.maximum(size // BASKET - 1, 1)
    j = np.arange(BASKET)[None, :]
    return catalog.offset[cat][:, None] + (base[:, None] + j * step[:, None]) % size[:, None]


def _recent_registrant_sessions(rng, cust, buys, visitors, catalog, tl) -> _Table:
    """Registered lately, no order, came back to look around about two weeks ago."""
    pos = np.flatnonzero(~buys & (cust["reg"] >= tl.end_ts - RECENT_REGISTRATION_DAYS * DAY))
    k = pos.size
    reg = cust["reg"][pos]
    two_weeks = tl.end_ts - rng.integers(10 * DAY, 18 * DAY, k)
    late = reg + HOUR + (rng.random(k) * np.maximum(tl.end_ts - reg - 2 * HOUR, 0)).astype(np.int64)
    anchor = np.where(two_weeks > reg + HOUR, two_weeks, late)
    cat = cust["main_cat"][pos].astype(np.int64)
    atc = (rng.random(k) < 0.4).astype(np.int64)
    return _sessions(k, kind=np.where(atc > 0, S_ABANDON, S_BROWSE), visitor=visitors.of(rng, pos),
                     customer=cust["g"][pos], mode=M_LOGGED, anchor=anchor, page=1,
                     views=2 + rng.integers(0, 2, k), atc=atc, basket=_random_baskets(rng, cat, catalog),
                     n_basket=BASKET, cat=cat)


def _active_windows(cust, orders, buys, tl) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per customer: [from, to] of their site visits and a weight for how often they come."""
    n = cust.n
    last = np.full(n, -1, np.int64)
    np.maximum.at(last, orders["cust"], orders["ts"])
    frm = cust["reg"] + MINUTE
    to = np.where(buys, np.minimum(tl.end_ts, last + ACTIVE_TAIL_DAYS * DAY),
                  np.where(cust["window"], tl.end_ts, np.minimum(tl.end_ts, cust["reg"] + 60 * DAY)))
    to = np.maximum(to, frm + HOUR)
    weight = np.where(buys, 1.0 + np.bincount(orders["cust"], minlength=n),
                      np.where(cust["window"], WINDOW_SHOPPER_WEIGHT, 1.0))
    return frm, to, weight


def _set_mode(rng, s: _Table) -> None:
    """Logged in, logging in during the visit (before the cart if any) or anonymous."""
    mode = rng.choice(3, s.n, p=SESSION_MODE_P).astype(np.int8)  # M_LOGGED, M_LOGIN, M_ANON
    s.cols["mode"] = mode
    login = mode == M_LOGIN
    s.cols["auth_late"] = (login & (s["atc"] > 0)).astype(np.int16)
    s.cols["auth_early"] = (login & (s["atc"] == 0)).astype(np.int16)


def _abandon_sessions(rng, cust, orders, lines, active, visitors, catalog, tl, wanted: int) -> _Table:
    """Carts without an order: some are bought hours or days later, most are not."""
    frm, to, weight = active
    # Followed by an order with the same items.
    gap = orders["ts"] - cust["reg"][orders["cust"]]
    can = np.flatnonzero(gap >= 2 * HOUR)
    k_follow = min(round(FOLLOWUP_ORDER_SHARE * orders.n), can.size, wanted)
    pick = np.sort(rng.choice(can, k_follow, replace=False)) if k_follow else np.zeros(0, np.int64)
    delay = np.minimum(rng.integers(HOUR, 72 * HOUR, k_follow), gap[pick] - 30 * MINUTE)
    basket = np.full((orders.n, BASKET), -1, np.int64)
    basket[lines["order"], lines["pos"]] = lines["sku"]
    c = orders["cust"][pick]
    follow = _sessions(
        k_follow, kind=S_ABANDON, visitor=visitors.of(rng, c, orders["device"][pick]),
        customer=cust["g"][c], mode=M_LOGGED, anchor=orders["ts"][pick] - delay,
        basket=basket[pick], n_basket=orders["n_lines"][pick], cat=orders["cat"][pick],
        views=orders["n_lines"][pick], atc=orders["n_lines"][pick],
        checkout=(rng.random(k_follow) < 0.3).astype(np.int64),
    )
    rest = max(wanted - k_follow, 0)
    k_anon = round(rest * ANONYMOUS_ABANDON_SHARE)
    owners = rng.choice(cust.n, rest - k_anon, p=weight / weight.sum())
    known = _cart_only(rng, rest - k_anon, catalog, _session_category(rng, cust["main_cat"][owners]))
    known.cols.update(
        visitor=visitors.of(rng, owners), customer=cust["g"][owners],
        anchor=frm[owners] + (rng.random(owners.size) * (to[owners] - frm[owners])).astype(np.int64),
    )
    _set_mode(rng, known)
    anon = _cart_only(rng, k_anon, catalog, rng.choice(len(CATEGORIES), k_anon))
    anon.cols.update(visitor=visitors.anonymous(rng, k_anon), anchor=_acquisition_times(rng, k_anon, tl))
    others = _concat([known, anon])
    return _concat([follow, others.take(rng.permutation(others.n))])


def _session_category(rng, main_cat: np.ndarray) -> np.ndarray:
    return np.where(rng.random(main_cat.size) < 0.65, main_cat,
                    rng.integers(0, len(CATEGORIES), main_cat.size)).astype(np.int64)


def _cart_only(rng, k: int, catalog: _Catalog, cat: np.ndarray) -> _Table:
    atc = 1 + (rng.random(k) < 0.2) + (rng.random(k) < 0.05)
    return _sessions(
        k, kind=S_ABANDON, basket=_random_baskets(rng, cat, catalog), n_basket=BASKET, cat=cat,
        # One product page, the rest added straight from the listing.
        search=(rng.random(k) < 0.1).astype(np.int64), views=1,
        atc=atc, remove=((atc >= 2) & (rng.random(k) < 0.3)).astype(np.int64),
        checkout=(rng.random(k) < 0.12).astype(np.int64),
    )


def _browse_only(rng, k: int, cat: np.ndarray, view_p: float) -> _Table:
    return _sessions(k, kind=S_BROWSE, cat=cat, search=(rng.random(k) < 0.35).astype(np.int64),
                     page=(rng.random(k) < 0.6).astype(np.int64), views=rng.geometric(view_p, k))


def _browse_sessions(rng, cust, active, buys, visitors, catalog, tl, budget: float) -> _Table:
    """Looking without a cart: before registering, between orders, window shoppers, anonymous."""
    frm, to, weight = active
    blocks = []
    # Anonymous visits from the cookie the customer later signs up with.
    pre = np.flatnonzero(rng.random(cust.n) < PRE_REGISTRATION_BROWSE_SHARE)
    reg = cust["reg"][pre]
    at = reg - rng.integers(HOUR, 20 * DAY, pre.size)
    keep = at >= tl.start_ts + HOUR
    pre, at = pre[keep], at[keep]
    pre_s = _browse_only(rng, pre.size, _session_category(rng, cust["main_cat"][pre]), 0.45)
    pre_s.cols.update(visitor=2 * cust["g"][pre] + 1, anchor=at)
    pre_s = _take_within(pre_s, budget * BROWSE_SHARES["buyers"] / 2)
    blocks.append(pre_s)
    budget -= _session_events(pre_s).sum()

    groups = (("buyers", buys, 0.45), ("window", cust["window"], 0.3))
    for name, members, view_p in groups:
        share = BROWSE_SHARES[name] / sum(BROWSE_SHARES.values())
        pos = np.flatnonzero(members)
        if pos.size == 0:
            continue
        k = max(int(budget * share / 2.0), 0) + 1  # sessions have >= 2 events on average
        w = weight[pos]
        owners = pos[rng.choice(pos.size, k, p=w / w.sum())]
        s = _browse_only(rng, k, _session_category(rng, cust["main_cat"][owners]), view_p)
        s.cols.update(
            visitor=visitors.of(rng, owners), customer=cust["g"][owners],
            anchor=frm[owners] + (rng.random(k) * (to[owners] - frm[owners])).astype(np.int64),
        )
        _set_mode(rng, s)
        s = _take_within(s, budget * share)
        blocks.append(s)
    share = BROWSE_SHARES["anonymous"] / sum(BROWSE_SHARES.values())
    k = max(int(budget * share / 2.0), 0) + 1
    anon = _browse_only(rng, k, rng.integers(0, len(CATEGORIES), k), 0.4)
    anon.cols.update(visitor=visitors.anonymous(rng, k), anchor=_acquisition_times(rng, k, tl))
    blocks.append(_take_within(anon, budget * share))
    return _concat(blocks)


def _assign_utm(rng, s: _Table, camp: _Campaigns, tl: _Timeline) -> None:
    """Traffic source per session; email visits carry a campaign of their month."""
    w = np.array([ch[3] for ch in UTM_CHANNELS])
    channel = rng.choice(len(UTM_CHANNELS), s.n, p=w / w.sum())
    email = len(UTM_CHANNELS) - 1
    channel = np.where((channel == email) & (s["customer"] < 0), 0, channel)
    s.cols["utm"] = channel.astype(np.int8)
    campaign = np.full(s.n, -1, np.int64)
    if camp.send_ts.size:
        # The latest campaign sent before the visit.
        last = np.searchsorted(camp.send_ts, s["anchor"], side="right") - 1
        campaign = np.where((channel == email) & (last >= 0), last, -1)
        s.cols["utm"] = np.where((channel == email) & (last < 0), 0, channel).astype(np.int8)
    s.cols["campaign"] = campaign


def _expand_sessions(rng, s: _Table, orders: _Table, catalog: _Catalog, tl: _Timeline) -> _Table:
    """One row per event; session-level columns stay in the session table (index `sess`)."""
    counts = np.stack([s[slot] for slot in SLOTS], axis=1).astype(np.int64)
    totals = counts.sum(axis=1)
    sess = np.repeat(np.arange(s.n, dtype=np.int32), totals)
    slot = np.repeat(np.tile(np.arange(len(SLOTS), dtype=np.int8), s.n), counts.ravel())
    flat = counts.ravel()
    j = (np.arange(sess.size, dtype=np.int64) - np.repeat(np.cumsum(flat) - flat, flat)).astype(np.int32)
    del counts, flat
    event = np.array(SLOT_EVENT, np.int8)[slot]
    mode = s["mode"][sess]
    event[(slot == SLOT_AUTH_EARLY) & (mode == M_SIGNUP)] = EV_SIGNUP
    item = _event_items(rng, s, sess, slot, j, catalog)
    del j
    price = _event_prices(s, sess, slot, item, orders, catalog)
    auth_slot = np.where(s["auth_late"] > 0, SLOT_AUTH_LATE, SLOT_AUTH_EARLY).astype(np.int8)[sess]
    known = (mode == M_LOGGED) | (((mode == M_LOGIN) | (mode == M_SIGNUP)) & (slot >= auth_slot))
    del auth_slot, mode, slot
    return _Table({"ts": _event_times(rng, s, totals, sess, tl), "sess": sess, "event": event,
                   "item": item, "price": price, "known": known,
                   "bad": np.zeros(sess.size, np.int8)})


def _event_items(rng, s: _Table, sess, slot, j, catalog: _Catalog) -> np.ndarray:
    """Views show basket items first, then other products of the category; carts hold the basket."""
    item = np.full(sess.size, -1, np.int32)
    view = slot == SLOT_VIEWS
    vs, vj = sess[view], j[view]
    cat = s["cat"][vs]
    other = catalog.offset[cat] + rng.integers(0, 1 << 30, vs.size) % catalog.size[cat]
    item[view] = np.where(vj < s["n_basket"][vs], s["basket"][vs, np.minimum(vj, BASKET - 1)], other)
    atc = slot == SLOT_ATC
    item[atc] = s["basket"][sess[atc], j[atc]]
    remove = slot == SLOT_REMOVE
    rs = sess[remove]
    item[remove] = s["basket"][rs, np.clip(s["atc"][rs] - 1, 0, BASKET - 1)]
    return item


def _event_prices(s: _Table, sess, slot, item, orders: _Table, catalog: _Catalog) -> np.ndarray:
    price = np.full(sess.size, np.nan)
    has_item = item >= 0
    price[has_item] = catalog.price[item[has_item]]
    order = s["order"]
    cart_value = _basket_value(s, catalog)
    cart_value[order >= 0] = orders["items_total"][order[order >= 0]]
    checkout = slot == SLOT_CHECKOUT
    price[checkout] = cart_value[sess[checkout]]
    purchase = slot == SLOT_PURCHASE
    price[purchase] = orders["amount"][order[sess[purchase]]]
    return price


def _basket_value(s: _Table, catalog: _Catalog) -> np.ndarray:
    """Value of the items added to the cart (qty 1 each) for sessions without an order."""
    j = np.arange(BASKET)[None, :]
    added = (j < s["atc"][:, None]) & (s["basket"] >= 0)
    prices = catalog.price[np.maximum(s["basket"], 0)]
    return np.where(added, prices, 0.0).sum(axis=1)


def _event_times(rng, s: _Table, totals: np.ndarray, sess: np.ndarray, tl: _Timeline) -> np.ndarray:
    """Seconds between clicks; purchase sessions end exactly at the order's time."""
    gap = 2 + rng.exponential(EVENT_GAP_MEAN_S, sess.size).astype(np.int64)
    first = np.cumsum(totals) - totals  # every session has at least one event
    gap[first] = 0
    offset = np.cumsum(gap)
    del gap
    offset -= np.repeat(offset[first], totals)
    duration = offset[first + totals - 1]
    start = np.where(s["anchor_end"], s["anchor"] - duration,
                     np.minimum(s["anchor"], tl.end_ts - duration))
    # The analytics export is in UTC: keep visits inside the window in UTC as well.
    start = np.maximum(start, np.where(s["anchor_end"], start, tl.start_ts + MOSCOW_UTC_OFFSET))
    offset += np.repeat(start, totals)
    return offset
