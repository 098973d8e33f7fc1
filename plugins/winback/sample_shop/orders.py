"""Orders: when each buyer orders (renewal processes per purchase rhythm, scaled to the
target count), their lines, prices, currency and promo, and their status history as
rows of the monthly drops."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from winback.sample_shop.catalog import _Catalog
from winback.sample_shop.spec import (
    _INT_NA,
    CATEGORIES,
    CURRENCIES,
    DAY,
    HOUR,
    LOYAL,
    MINUTE,
    NON_BUYER,
    ONE_OFF,
    PRIMARY_DEVICE_SHARE,
    PROMO_CODES,
    ST_CANCELED,
    ST_COMPLETED,
    ST_DELIVERED,
    ST_NEW,
    ST_PAID,
    ST_REFUNDED,
    ST_SHIPPED,
)
from winback.sample_shop.table import _Table
from winback.sample_shop.timeline import _time_of_day, _Timeline

CONSUMABLES = (0, 1, 2)  # categories a second purchase rhythm can come from

# Gap multiplier against the category cycle and mean active lifetime (days) per kind.
KIND_GAP_FACTOR = (1.0, 1.0, 1.8, 1.0, 0.85)
KIND_LIFETIME_DAYS = (0.0, 0.0, 250.0, 420.0, 700.0)
# Probability of a second (and, for loyal, third) category rhythm per kind; durable-main
# repeaters usually also buy consumables, otherwise they could never repeat.
KIND_EXTRA_STREAM = (0.0, 0.0, 0.10, 0.20, 1.0)
LOYAL_THIRD_STREAM = 0.3
DURABLE_MAIN_EXTRA_STREAM = 0.6
UNHAPPY_LIFETIME_FACTOR = 0.35
MIN_GAP_DAYS = 1.0

# First order: many buy in the registration session, the rest days or weeks later.
FIRST_ORDER_IMMEDIATE_SHARE = 0.55
FIRST_ORDER_DELAY_DAYS = 12.0

# Orders.
LINE_COUNT_P = {"default": (0.6, 0.25, 0.1, 0.05), "loyal": (0.4, 0.3, 0.2, 0.1)}
SAME_CATEGORY_LINE_SHARE = 0.5
FREE_DELIVERY_FROM = 4_000.0
DELIVERY_FEE = 299.0
DELIVERY_FEE_SHARE = 0.7  # the rest pick up from a point for free
CURRENCY_P = (0.985, 0.01, 0.005)
RUB_PER = (1.0, 90.0, 98.0)
ONLINE_PAYMENT_SHARE = 0.85  # cash-on-delivery orders stay "new" until shipped
CANCEL_P = {"happy": 0.033, "unhappy": 0.15}
REFUND_P = {"happy": 0.027, "unhappy": 0.12}
RETURN_WINDOW_DAYS = 14  # delivered orders become completed when it closes
PROMISED_DAYS = 3  # segments.delivery.promised_days's default
LATE_TRANSIT = {"unhappy": 5.4 * DAY, "happy": 5.95 * DAY}  # transit draws (1-6 days) that arrive late
WELCOME_PROMO_SHARE = 0.12
BLACK_FRIDAY_PROMO_SHARE = 0.25
OTHER_PROMO_SHARE = 0.04


def _streams(rng, cust: _Table, buys: np.ndarray) -> _Table:
    """Purchase rhythms: every buyer has one in the main category; some add consumables."""
    n = cust.n
    kind = cust["kind"]
    durable_main = cust["main_cat"] >= len(CONSUMABLES)
    p_extra = np.array(KIND_EXTRA_STREAM)[kind]
    p_extra = np.where(durable_main & (kind != ONE_OFF) & (kind != NON_BUYER),
                       np.maximum(p_extra, DURABLE_MAIN_EXTRA_STREAM), p_extra)
    n_extra = (rng.random(n) < p_extra).astype(np.int64)
    n_extra += (kind == LOYAL) & (rng.random(n) < LOYAL_THIRD_STREAM)
    n_extra = np.where(buys, n_extra, 0)
    main_pos = np.flatnonzero(buys)
    extra_pos = np.repeat(np.arange(n), n_extra)
    _, nth = _expand(n_extra)
    # Extra rhythms come from consumables other than the main category.
    extra_cat = (cust["main_cat"][extra_pos] + 1 + nth + rng.integers(0, 2, extra_pos.size)) % len(CONSUMABLES)
    extra_cat = np.where(extra_cat == cust["main_cat"][extra_pos], (extra_cat + 1) % len(CONSUMABLES), extra_cat)
    return _Table({
        "cust": np.concatenate([main_pos, extra_pos]),
        "cat": np.concatenate([cust["main_cat"][main_pos], extra_cat]).astype(np.int8),
        "main": np.concatenate([np.ones(main_pos.size, bool), np.zeros(extra_pos.size, bool)]),
    })


def _simulate_orders(rng, cust: _Table, tl: _Timeline, target: int) -> _Table:
    """Renewal processes per rhythm in season-warped time, cut by a personal lifetime.

    One intensity factor k (gaps / k, lifetimes * k) is solved per chunk on the same
    random draws so that the chunk hits the target number of orders.
    """
    n = cust.n
    kind = cust["kind"]
    immediate = rng.random(n) < FIRST_ORDER_IMMEDIATE_SHARE
    delay = np.where(immediate, rng.uniform(10 * MINUTE, 40 * MINUTE, n),
                     rng.exponential(FIRST_ORDER_DELAY_DAYS * DAY, n) + HOUR)
    first = cust["reg"] + delay.astype(np.int64)
    buys = (kind != NON_BUYER) & (first <= tl.end_ts)
    lifetime = rng.exponential(1.0, n) * np.array(KIND_LIFETIME_DAYS)[kind]
    lifetime = np.where(cust["unhappy"], lifetime * UNHAPPY_LIFETIME_FACTOR, lifetime)

    st = _streams(rng, cust, buys)
    s_cust, s_cat = st["cust"], st["cat"]
    cycle = np.array([c.cycle_days for c in CATEGORIES])[s_cat]
    shape = np.array([c.gap_shape for c in CATEGORIES])[s_cat]
    mean_gap = cycle * np.array(KIND_GAP_FACTOR)[kind[s_cust]] * cust["personal"][s_cust]
    width = int(np.clip(8 * target / max(n, 1) + 16, 24, 160))
    # float32 is plenty for day offsets and halves the largest arrays of the chunk.
    offsets = rng.standard_gamma(np.broadcast_to(shape[:, None], (st.n, width)).astype(np.float32),
                                 dtype=np.float32)
    offsets *= (mean_gap / shape).astype(np.float32)[:, None]
    np.maximum(offsets, MIN_GAP_DAYS, out=offsets)
    offsets[:, 0] = np.where(st["main"], 0.0, rng.uniform(0.2, 1.0, st.n) * mean_gap)
    np.cumsum(offsets, axis=1, out=offsets)
    offsets[(kind[s_cust] == ONE_OFF), 1:] = np.inf
    first_op = tl.to_op(first[s_cust].astype(np.float64))
    first_day = (first[s_cust] - tl.start_ts) / DAY
    life = lifetime[s_cust]

    def valid_at(k: float) -> np.ndarray:
        stop_day = np.minimum(tl.days, first_day + life * k)
        horizon = np.interp(stop_day, np.arange(tl.days + 1), tl.op_grid) - first_op
        return offsets <= np.maximum(horizon, 0.0)[:, None] * k

    k = _solve_intensity(lambda k: int(valid_at(k).sum()), target)
    s_idx, col = np.nonzero(valid_at(k))  # row-major: per rhythm, in time order
    t = tl.from_op(first_op[s_idx] + offsets[s_idx, col].astype(np.float64) / k)

    t = tl.start_ts + np.floor((t - tl.start_ts) / DAY).astype(np.int64) * DAY + _time_of_day(rng, s_idx.size)
    opener = first[s_cust[s_idx]]
    t = np.where(st["main"][s_idx] & (col == 0), opener, np.maximum(t, opener + HOUR))
    o_ts = _keep_apart(t, s_idx, col.astype(np.int64), tl)
    keep = o_ts <= tl.end_ts
    s_idx, col, o_ts = s_idx[keep], col[keep], o_ts[keep]
    order = np.lexsort((s_idx, o_ts))  # by time; ties by rhythm keep it deterministic
    s_idx, col, o_ts = s_idx[order], col[order], o_ts[order]
    return _Table({
        "cust": s_cust[s_idx],
        "ts": o_ts,
        "cat": s_cat[s_idx],
        "stream": s_idx,
        "first": st["main"][s_idx] & (col == 0),
        "fav": rng.integers(0, 1 << 30, st.n)[s_idx],
    })


def _keep_apart(t: np.ndarray, rhythm: np.ndarray, nth: np.ndarray, tl: _Timeline) -> np.ndarray:
    """Orders of one rhythm stay in sequence and at least an hour apart.

    A running maximum per rhythm: rows are grouped by rhythm, and shifting each group
    by rhythm * SEGMENT keeps the maximum from leaking between groups.
    """
    segment = np.int64(1) << 36
    rel = t - nth * HOUR - tl.start_ts + DAY  # non-negative and far below `segment`
    base = rhythm.astype(np.int64) * segment
    return np.maximum.accumulate(rel + base) - base + nth * HOUR + tl.start_ts - DAY


def _solve_intensity(count: Callable[[float], int], target: int) -> float:
    lo, hi = math.log(0.02), math.log(200.0)
    best_k, best_err = 1.0, None
    for _ in range(60):
        mid = (lo + hi) / 2
        got = count(math.exp(mid))
        err = abs(got - target)
        if best_err is None or err < best_err:
            best_k, best_err = math.exp(mid), err
        if err <= max(1, target // 2000):
            break
        lo, hi = (mid, hi) if got < target else (lo, mid)
    return best_k


def _expand(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For per-owner counts: each element's owner and its position within the owner."""
    counts = np.asarray(counts, dtype=np.int64)
    owner = np.repeat(np.arange(counts.size), counts)
    starts = np.cumsum(counts) - counts
    return owner, np.arange(owner.size, dtype=np.int64) - starts[owner]


def _draw_order_lines(rng, orders: _Table, cust: _Table, catalog: _Catalog) -> _Table:
    loyal = cust["kind"][orders["cust"]] == LOYAL
    n_lines = 1 + np.where(loyal, rng.choice(4, orders.n, p=LINE_COUNT_P["loyal"]),
                           rng.choice(4, orders.n, p=LINE_COUNT_P["default"]))
    owner, pos = _expand(n_lines)
    addon_w = np.array([c.addon_weight for c in CATEGORIES])
    addon_cat = rng.choice(len(CATEGORIES), owner.size, p=addon_w / addon_w.sum())
    same = (pos == 0) | (rng.random(owner.size) < SAME_CATEGORY_LINE_SHARE)
    cat = np.where(same, orders["cat"][owner], addon_cat).astype(np.int64)
    size = catalog.size[cat]
    repeat_p = np.array([c.repeat_sku_share for c in CATEGORIES])[cat]
    fav = (pos == 0) & (rng.random(owner.size) < repeat_p)
    local = np.where(fav, orders["fav"][owner] % size, rng.integers(0, 1 << 30, owner.size) % size)
    local = _distinct_per_owner(owner, cat, local, size)
    sku = catalog.offset[cat] + local
    max_qty = np.array([c.max_qty for c in CATEGORIES])[cat]
    qty = 1 + rng.binomial(max_qty - 1, 0.3)
    return _Table({"order": owner, "pos": pos, "sku": sku, "cat": cat.astype(np.int8),
                   "qty": qty.astype(np.int64), "price": catalog.price[sku]})


def _distinct_per_owner(owner, cat, local, size) -> np.ndarray:
    """Shift repeated skus inside one order to the next sku until all lines differ."""
    local = local.copy()
    group = (owner.astype(np.int64) * len(CATEGORIES) + cat) << 16  # catalogues are < 65536
    while True:
        key = group + local
        order = np.argsort(key, kind="stable")
        sorted_key = key[order]
        hit = order[1:][sorted_key[1:] == sorted_key[:-1]]
        if hit.size == 0:
            return local
        local[hit] = (local[hit] + 1) % size[hit]


def _price_orders(rng, orders: _Table, lines: _Table, cust: _Table, tl: _Timeline) -> None:
    n = orders.n
    items = np.bincount(lines["order"], weights=lines["qty"] * lines["price"], minlength=n)
    fee = np.where((items < FREE_DELIVERY_FROM) & (rng.random(n) < DELIVERY_FEE_SHARE), DELIVERY_FEE, 0.0)
    currency = rng.choice(len(CURRENCIES), n, p=CURRENCY_P)
    orders.cols["items_total"] = items
    orders.cols["amount"] = np.round((items + fee) / np.array(RUB_PER)[currency], 2)
    orders.cols["currency"] = currency.astype(np.int8)
    orders.cols["n_lines"] = np.bincount(lines["order"], minlength=n)
    month_num = (tl.month_of(orders["ts"]) + int(tl.months[0][5:]) - 1) % 12 + 1
    day_in_month = (orders["ts"] - tl.month_starts[tl.month_of(orders["ts"])]) // DAY + 1
    black_friday = (month_num == 11) & (day_in_month >= 20)
    u = rng.random(n)
    promo = np.full(n, -1, np.int64)
    other = ~black_friday & (u < OTHER_PROMO_SHARE)
    promo[other] = 2 + rng.integers(0, len(PROMO_CODES) - 2, int(other.sum()))
    promo[black_friday & (u < BLACK_FRIDAY_PROMO_SHARE)] = 1
    promo[orders["first"] & (rng.random(n) < WELCOME_PROMO_SHARE)] = 0
    orders.cols["promo"] = promo
    second = (cust["devices"][orders["cust"]] == 2) & (rng.random(n) > PRIMARY_DEVICE_SHARE)
    orders.cols["device"] = second.astype(np.int64)


def _order_transitions(rng, orders: _Table, cust: _Table) -> _Table:
    """Status history per order: five slots of (time, status), _INT_NA when skipped."""
    n = orders.n
    t0 = orders["ts"]
    unhappy = cust["unhappy"][orders["cust"]]
    canceled = rng.random(n) < np.where(unhappy, CANCEL_P["unhappy"], CANCEL_P["happy"])
    refunded = ~canceled & (rng.random(n) < np.where(unhappy, REFUND_P["unhappy"], REFUND_P["happy"]))
    online = rng.random(n) < ONLINE_PAYMENT_SHARE
    paid = np.where(online, t0 + rng.integers(MINUTE, 20 * MINUTE, n), _INT_NA)
    cancel_at = np.where(online, paid, t0) + rng.integers(30 * MINUTE, 48 * HOUR, n)
    shipped = t0 + rng.integers(12 * HOUR, 72 * HOUR, n)
    # Most parcels arrive within the 3 promised days; the slowest draws of unhappy
    # customers (and a few of everyone) arrive days late. The same draw as ever, so
    # every other column of the shop stays as it was.
    transit = rng.integers(DAY, 6 * DAY, n)
    late = (unhappy & (transit >= LATE_TRANSIT["unhappy"])) | (transit >= LATE_TRANSIT["happy"])
    delivered = np.where(late, shipped + transit, np.minimum(shipped + transit // 4, t0 + PROMISED_DAYS * DAY))
    final = np.where(refunded, delivered + rng.integers(DAY, (RETURN_WINDOW_DAYS - 1) * DAY, n),
                     delivered + RETURN_WINDOW_DAYS * DAY)
    times = np.stack([
        t0, paid,
        np.where(canceled, cancel_at, shipped),
        np.where(canceled, _INT_NA, delivered),
        np.where(canceled, _INT_NA, final),
    ], axis=1)
    codes = np.stack([
        np.full(n, ST_NEW), np.full(n, ST_PAID),
        np.where(canceled, ST_CANCELED, ST_SHIPPED),
        np.full(n, ST_DELIVERED),
        np.where(refunded, ST_REFUNDED, ST_COMPLETED),
    ], axis=1)
    return _Table({"times": times, "codes": codes,
                   "delivered": np.where(canceled, _INT_NA, delivered)})


def _order_rows(orders: _Table, tr: _Table, tl: _Timeline) -> _Table:
    """One row per order per monthly drop in which its status changed.

    The drop of a month shows the status at its end; an order reappears in a later
    month's drop whenever its status moved on in that month.
    """
    times, codes = tr["times"], tr["codes"]
    happened = times <= tl.end_ts
    o_idx, slot = np.nonzero(happened)  # row-major: per order, slots in time order
    t = times[o_idx, slot]
    month = tl.month_of(t)
    last = np.ones(o_idx.size, bool)
    last[:-1] = (o_idx[1:] != o_idx[:-1]) | (month[1:] != month[:-1])
    o_idx, slot, t, month = o_idx[last], slot[last], t[last], month[last]
    status = codes[o_idx, slot]
    shown_delivered = np.isin(status, (ST_DELIVERED, ST_COMPLETED, ST_REFUNDED))
    return _Table({
        "order": o_idx,
        "status": status.astype(np.int8),
        "updated": t,
        "delivered": np.where(shown_delivered, tr["delivered"][o_idx], _INT_NA),
        "month": month,
        "bad": np.zeros(o_idx.size, np.int8),
    })
