"""A tiny fluent builder of staging rows for the mart tests.

    shop = Shop().customer("c1", email="a@x.ru").order("o1", "c1", days_before(10), items=[("p1", "pet_food", 500)])
    shop.write(warehouse)

Rows are collected per entity and written to the staging tables (created as the ingest
would create them) with the canonical column types; bookkeeping columns stay NULL.
Times are naive UTC datetimes, as in staging.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterable
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pyarrow as pa
from winback.schema import ENTITIES
from winback.warehouse import Warehouse

AS_OF = date(2026, 6, 30)
# The as-of moment: the end of the as-of day (the day is in the past).
NOW = datetime(2026, 7, 1)

_ids = itertools.count(1)  # event ids, unique across shops (a key in PostgreSQL staging)

_ARROW = {
    "text": pa.string(),
    "timestamp": pa.timestamp("us"),
    "date": pa.date32(),
    "money": pa.decimal128(18, 2),
    "number": pa.float64(),
    "integer": pa.int64(),
    "boolean": pa.bool_(),
}


def days_before(days: float, hour: int = 12, *, now: datetime = NOW) -> datetime:
    """`days` days before the as-of moment, at `hour` o'clock of that day.

    days_before(0) is noon of the as-of day; days_before(90) is noon 90 days before it,
    whose calendar date is AS_OF - 90 days.
    """
    day = (now - timedelta(days=1)).date() - timedelta(days=days)
    return datetime.combine(day, datetime.min.time()) + timedelta(hours=hour)


def hours_before(hours: float, *, now: datetime = NOW) -> datetime:
    return now - timedelta(hours=hours)


def _money(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value)).quantize(Decimal("0.01"))


class Shop:
    """Staging rows per entity; every method returns the shop so calls chain."""

    def __init__(self) -> None:
        self.rows: dict[str, list[dict]] = defaultdict(list)

    # -- entities ------------------------------------------------------------------
    def customer(self, customer_id: str, **columns: Any) -> Shop:
        self.rows["customers"].append({"customer_id": customer_id, **columns})
        return self

    def order(self, order_id: str, customer_id: str, created_at: datetime, *,
              items: Iterable[tuple] = (), total: float | None = None, status: str = "completed",
              **columns: Any) -> Shop:
        """An order; items are (product_id, category[, price[, quantity]]); the total
        defaults to the sum of the items (or 100 without items)."""
        lines = []
        for item in items:
            product_id, category, price, quantity = (*item, None, None)[:4]
            price = 100 if price is None else price
            quantity = 1 if quantity is None else quantity
            lines.append({"order_id": order_id, "product_id": product_id, "category": category,
                          "price": _money(price), "quantity": float(quantity)})
        if total is None:
            total = sum(float(line["price"]) * line["quantity"] for line in lines) if lines else 100
        self.rows["orders"].append({"order_id": order_id, "customer_id": customer_id, "created_at": created_at,
                                    "total_amount": _money(total), "status": status, **columns})
        self.rows["order_items"].extend(lines)
        return self

    def purchases(self, customer_id: str, dates: Iterable[datetime], category: str = "general", *,
                  price: float = 100, product_id: str | None = None) -> Shop:
        """One completed single-item order per date (order ids <customer>-<n>)."""
        start = sum(1 for o in self.rows["orders"] if o["customer_id"] == customer_id)
        for n, moment in enumerate(dates, start=start + 1):
            self.order(f"{customer_id}-{n}", customer_id, moment,
                       items=[(product_id or f"{category}-item", category, price)])
        return self

    def event(self, event_type: str, occurred_at: datetime, *, customer_id: str | None = None,
              visitor_id: str | None = None, session_id: str | None = None, product_id: str | None = None,
              category: str | None = None, value: float | None = None, **columns: Any) -> Shop:
        """A site event; `columns` sets the others (utm_source, utm_campaign, ...)."""
        number = next(_ids)
        self.rows["events"].append({
            "event_id": f"e{number}", "event_type": event_type, "occurred_at": occurred_at,
            "customer_id": customer_id, "visitor_id": visitor_id,
            "session_id": session_id or f"s{number}", "product_id": product_id, "category": category,
            "value": _money(value), **columns})
        return self

    def feedback(self, order_id: str, score: int, created_at: datetime, customer_id: str | None = None,
                 **scores: int) -> Shop:
        """Feedback on an order; `scores` are the separate ones (service_score=4, ...)."""
        self.rows["feedback"].append({"order_id": order_id, "customer_id": customer_id, "score": score,
                                      "created_at": created_at, **scores})
        return self

    def mailing(self, customer_id: str, campaign_id: str, event_type: str, occurred_at: datetime) -> Shop:
        self.rows["mailing_events"].append({"event_id": f"m{next(_ids)}", "customer_id": customer_id,
                                            "campaign_id": campaign_id,
                                            "event_type": event_type, "occurred_at": occurred_at})
        return self

    def contact(self, customer_id: str, outcome: str, contacted_at: datetime, reason: str | None = None,
                channel: str = "call", comment: str | None = None) -> Shop:
        self.rows["contact_outcomes"].append({"contact_id": f"k{next(_ids)}", "customer_id": customer_id,
                                              "channel": channel, "contacted_at": contacted_at,
                                              "outcome": outcome, "reason": reason, "comment": comment})
        return self

    # -- writing -------------------------------------------------------------------
    def write(self, warehouse: Warehouse, entities: Iterable[str] | None = None) -> Shop:
        """Create the staging tables of `entities` (default: orders plus every entity with
        rows) and append the collected rows; the rows are then forgotten, so a shop can
        be written again with later additions only."""
        names = list(entities) if entities is not None else \
            ["orders", *(n for n, rows in self.rows.items() if rows and n != "orders")]
        for name in names:
            entity = ENTITIES[name]
            warehouse.ensure_entity_tables(entity)
            rows = self.rows.pop(name, [])
            if not rows:
                continue
            schema = pa.schema([(c.name, _ARROW[c.type]) for c in entity.columns])
            table = pa.table({c.name: [row.get(c.name) for row in rows] for c in entity.columns}, schema=schema)
            with warehouse.begin() as conn:
                warehouse.write_arrow(conn, name, table)
        return self
