"""audience_history: spells open when a member appears, close when it is gone, re-open
as new spells, follow the last build of a day, and only live builds write them. Every
expected spell is written out by hand; every test runs on DuckDB and PostgreSQL."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pyarrow as pa
from shop_builder import AS_OF, Shop
from winback.build.builder import build
from winback.measure.spells import TABLES, record_spells

MEMBERS = pa.schema([("audience", pa.string()), ("member_key", pa.string()), ("customer_id", pa.string()),
                     ("in_holdout", pa.bool_())])
D1, D8, D15, D22 = (date(2026, 6, day) for day in (1, 8, 15, 22))


def spells(wh, audience: str | None = None) -> list[tuple]:
    where = f"WHERE audience = '{audience}'" if audience else ""
    rows = wh.rows(f"SELECT audience, member_key, in_holdout, entered_on, left_on FROM audience_history {where}")
    return sorted((tuple(r) for r in rows), key=lambda r: tuple(str(v) for v in r))


def members_are(wh, day: date, *members: tuple[str, bool], audience: str = "a") -> dict:
    """Stand-in for a live build's swap: audience_members (here `members_now`) holds
    `members` (member, in_holdout), then record_spells runs as of `day`."""
    wh.execute("DROP TABLE IF EXISTS members_now")
    wh.execute(f"CREATE TABLE members_now (audience {wh.column_type('text')}, member_key {wh.column_type('text')}, "
               f"customer_id {wh.column_type('text')}, in_holdout {wh.column_type('boolean')})")
    rows = [{"audience": audience, "member_key": key, "customer_id": key, "in_holdout": holdout}
            for key, holdout in members]
    with wh.begin() as conn:
        wh.write_arrow(conn, "members_now", pa.Table.from_pylist(rows, schema=MEMBERS))
        return record_spells(conn, f"build-{day}", day, "members_now")


def test_enter_leave_reenter_and_a_holdout_change(write_config, open_warehouse, warehouse_url):
    wh = open_warehouse(write_config({"orders": {"kind": "file", "path": "o/*.csv"}}, warehouse=warehouse_url))
    wh.ensure_tables(TABLES)
    assert members_are(wh, D1, ("m1", False), ("m2", True)) == {"opened": 2, "closed": 0, "open": 2}
    # m1 gone, m3 new
    assert members_are(wh, D8, ("m2", True), ("m3", False)) == {"opened": 1, "closed": 1, "open": 2}
    # m1 back: a new spell; the old one stays closed
    assert members_are(wh, D15, ("m1", False), ("m2", True), ("m3", False)) == {"opened": 1, "closed": 0, "open": 3}
    # m3 moved into the holdout (the share was raised): its spell ends, a control spell starts
    assert members_are(wh, D22, ("m1", False), ("m2", True), ("m3", True)) == {"opened": 1, "closed": 1, "open": 3}
    assert spells(wh) == [
        ("a", "m1", False, D1, D8),
        ("a", "m1", False, D15, None),
        ("a", "m2", True, D1, None),
        ("a", "m3", False, D8, D22),
        ("a", "m3", True, D22, None),
    ]


def test_a_rerun_of_the_same_day_follows_the_last_build_of_that_day(write_config, open_warehouse, warehouse_url):
    wh = open_warehouse(write_config({"orders": {"kind": "file", "path": "o/*.csv"}}, warehouse=warehouse_url))
    wh.ensure_tables(TABLES)
    members_are(wh, D1, ("m1", False), ("m2", False))
    members_are(wh, D8, ("m1", False), ("m3", False))  # m2 left on D8, m3 entered on D8
    after_d8 = spells(wh)
    # A second build on D8 sees m2 back and m3 gone: m2's spell reopens, m3's never was.
    members_are(wh, D8, ("m1", False), ("m2", False))
    assert spells(wh) == [("a", "m1", False, D1, None), ("a", "m2", False, D1, None)]
    # A third, with the first build's members again: exactly the first build's result.
    members_are(wh, D8, ("m1", False), ("m3", False))
    assert spells(wh) == after_d8 == [
        ("a", "m1", False, D1, None), ("a", "m2", False, D1, D8), ("a", "m3", False, D8, None)]
    members_are(wh, D8, ("m1", False), ("m3", False))  # the same again: nothing changes
    assert spells(wh) == after_d8


def test_audiences_keep_their_own_spells(write_config, open_warehouse, warehouse_url):
    wh = open_warehouse(write_config({"orders": {"kind": "file", "path": "o/*.csv"}}, warehouse=warehouse_url))
    wh.ensure_tables(TABLES)
    members_are(wh, D1, ("m1", False), audience="a")
    # Written for audience b only: a's member m1 is gone from the table, so its spell closes
    # (audience_members always holds every audience; this checks the key has the audience).
    members_are(wh, D8, ("m1", False), audience="b")
    assert spells(wh) == [("a", "m1", False, D1, D8), ("b", "m1", False, D8, None)]


# -- through real builds ----------------------------------------------------------------------------
EVERYONE = {"everyone": {"channel": "email", "holdout": 0.5, "description": "every customer who may be mailed"}}
B1, B2 = AS_OF - timedelta(days=10), AS_OF - timedelta(days=5)


def noon(day: date) -> datetime:
    return datetime.combine(day, datetime.min.time()) + timedelta(hours=12)


def consenting(shop: Shop, customer_id: str, registered: date, **columns) -> Shop:
    shop.customer(customer_id, email=f"{customer_id}@example.com", email_consent=True,
                  registered_at=noon(registered), **columns)
    return shop.purchases(customer_id, [noon(registered)])


def test_live_builds_write_spells_and_a_backfill_writes_none(write_config, open_warehouse, warehouse_url, today_is):
    config = write_config({"orders": {"kind": "file", "path": "o/*.csv"}}, warehouse=warehouse_url,
                          segments={"models": {"enabled": False}}, audiences=EVERYONE)
    wh = open_warehouse(config)
    shop = Shop()
    consenting(shop, "c1", AS_OF - timedelta(days=100))
    consenting(shop, "c2", AS_OF - timedelta(days=100), unsubscribed_at=noon(B2))  # gone from B2 on
    consenting(shop, "c3", B2)  # registers and buys on B2
    shop.write(wh, ["customers", "orders", "order_items"])

    today_is(B1)
    first = build(config, B1, warehouse=wh)
    assert first["measurement"]["opened"] == 2
    today_is(B2)
    second = build(config, B2, warehouse=wh)
    assert (second["measurement"]["opened"], second["measurement"]["closed"]) == (1, 1)
    expected = [("c1", B1, None), ("c2", B1, B2), ("c3", B2, None)]
    assert [(r[1], r[3], r[4]) for r in spells(wh)] == expected
    holdout = {r.member_key: r.in_holdout for r in wh.rows("SELECT member_key, in_holdout FROM audience_members")}
    assert {r[1]: r[2] for r in spells(wh) if r[1] != "c2"} == holdout  # the spell keeps the assignment

    backfill = build(config, B1 - timedelta(days=3), warehouse=wh)  # today is B2: a past day
    assert backfill["backfill"] and "measurement" not in backfill
    assert [(r[1], r[3], r[4]) for r in spells(wh)] == expected
    build(config, B2, warehouse=wh)  # the same day again
    assert [(r[1], r[3], r[4]) for r in spells(wh)] == expected
