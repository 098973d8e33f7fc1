"""Helpers for the sync tests: audiences written straight into `audience_members` (the
sync engine's input), configs with destinations pointing at local emulators, reading
what the warehouse recorded, and a clock the tests control."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
from winback.sync.engine import MEMBER_COLUMNS, PLAN_SCHEMA
from winback.warehouse import Warehouse

# audience_members as the build writes it: the columns the sync engine reads, with its types.
MEMBER_SCHEMA = pa.schema([("audience", pa.string()), ("channel", pa.string())]
                          + [PLAN_SCHEMA.field(c) for c in MEMBER_COLUMNS] + [("in_holdout", pa.bool_())])


def person(n: int, **overrides: Any) -> dict[str, Any]:
    """Customer n of a synthetic audience: an address written the way shops write them
    (mixed case, padding), a Russian mobile in one of its usual spellings."""
    spellings = ("8 (912) {a}-{b}-{c}", "+7 912 {a}{b}{c}", "7912{a}{b}{c}")
    digits = f"{n:07d}"
    phone = spellings[n % 3].format(a=digits[:3], b=digits[3:5], c=digits[5:])
    row = {"member_key": f"c{n:07d}", "customer_id": f"c{n:07d}", "visitor_id": None,
           "email": f"  Customer{n}@Example.COM ", "phone": phone, "first_name": f"Name{n}",
           "lifecycle_stage": "lapsed", "value_tier": "high", "offer": None, "cart_value": None,
           "product_ids": None, "winback_offer": None, "in_holdout": False}
    row.update(overrides)
    return row


def normalized_email(n: int) -> str:
    return f"customer{n}@example.com"


def normalized_phone(n: int) -> str:
    return f"+7912{n:07d}"


def write_members(warehouse: Warehouse, audience: str, channel: str, rows: list[dict[str, Any]]) -> None:
    """Replace one audience's rows in audience_members (creating the table if needed)."""
    columns = ", ".join(f"{f.name} {_sql_type(warehouse, f.type)}" for f in MEMBER_SCHEMA)
    warehouse.execute(f"CREATE TABLE IF NOT EXISTS audience_members ({columns})")
    table = pa.Table.from_pylist([{"audience": audience, "channel": channel, **r} for r in rows], schema=MEMBER_SCHEMA)
    with warehouse.begin() as conn:
        warehouse.execute("DELETE FROM audience_members WHERE audience = :a", {"a": audience}, conn=conn)
        warehouse.write_arrow(conn, "audience_members", table)


def _sql_type(warehouse: Warehouse, kind: pa.DataType) -> str:
    if pa.types.is_boolean(kind):
        return warehouse.column_type("boolean")
    if pa.types.is_decimal(kind):
        return warehouse.column_type("money")
    if pa.types.is_integer(kind):
        return warehouse.column_type("integer")
    return warehouse.column_type("text")


def table(warehouse: Warehouse, name: str, where: str = "") -> list[dict[str, Any]]:
    return [dict(r._mapping) for r in warehouse.rows(f"SELECT * FROM {name} {where}")]


class Clock:
    """A controlled clock: stands in for the `time` module of the code under test
    (monkeypatched), or is called as a clock by an emulator. Sleeping moves it on at once."""

    def __init__(self, now: float = 1_790_000_000.0):
        self.now, self.slept = now, []

    def __call__(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
