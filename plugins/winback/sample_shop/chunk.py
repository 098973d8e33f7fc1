"""One chunk: its customers and everything they draw, in one fixed order from the chunk's
own random stream (the order is the output: moving a draw changes every later one); ids
run on across chunks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from winback.sample_shop.bad_rows import _inject_bad_rows
from winback.sample_shop.contacts import _draw_contacts
from winback.sample_shop.customers import _draw_customers
from winback.sample_shop.feedback import _draw_feedback
from winback.sample_shop.mail import _draw_mailing
from winback.sample_shop.orders import (
    _draw_order_lines,
    _order_rows,
    _order_transitions,
    _price_orders,
    _simulate_orders,
)
from winback.sample_shop.profiles import _draw_profiles
from winback.sample_shop.table import _Table
from winback.sample_shop.visits import _draw_events


class _IdCounters:
    """Running ids across chunks (chunks are generated in order, so this is deterministic)."""

    def __init__(self) -> None:
        self.order = 0
        self.session = 0
        self.anonymous_visitor = 0


@dataclass
class _Chunk:
    customers: _Table
    orders: _Table
    order_rows: _Table
    lines: _Table
    feedback: _Table
    mailing: _Table
    sessions: _Table
    events: _Table
    contacts: _Table


def _generate_chunk(rng, part, first, n, spec, tl, catalog, campaigns, ids) -> _Chunk:
    cust = _draw_customers(rng, first, n, tl)
    orders = _simulate_orders(rng, cust, tl, round(spec.orders_per_customer * n))
    orders.cols["id"] = ids.order + 1 + np.arange(orders.n, dtype=np.int64)
    ids.order += orders.n
    lines = _draw_order_lines(rng, orders, cust, catalog)
    _price_orders(rng, orders, lines, cust, tl)
    transitions = _order_transitions(rng, orders, cust)
    order_rows = _order_rows(orders, transitions, tl)
    feedback = _draw_feedback(rng, orders, transitions, cust, tl)
    mailing = _draw_mailing(rng, cust, orders, campaigns, tl)
    _draw_profiles(rng, cust, tl, spec.customers)
    sessions, events = _draw_events(rng, cust, orders, lines, catalog, campaigns, tl, spec, ids)
    _inject_bad_rows(rng, part, spec.bad_share, cust, order_rows, sessions, events, feedback, mailing)
    # Drawn last, so adding them left every other file byte for byte as it was.
    contacts = _draw_contacts(rng, part, spec.bad_share, cust, orders, tl)
    return _Chunk(cust, orders, order_rows, lines, feedback, mailing, sessions, events, contacts)
