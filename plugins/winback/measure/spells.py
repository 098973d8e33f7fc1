"""Membership spells: who was in which audience from which day to which day
(`audience_history`), kept by every live build inside its swap transaction.

A spell opens on the as-of day of the first build a member appears in (after an
absence) and closes on the first build it is gone. A member whose holdout assignment
changed (the audience's `holdout` share was edited) closes its spell and opens one in
the other group, so a spell never mixes treatment and control days. Every step is one
set-based statement: a million members are a few hashed joins, never a loop.
"""

from __future__ import annotations

from datetime import date

from winback.warehouse import sql_literal

TABLES = {
    "audience_history": (
        (("audience", "text"), ("member_key", "text"), ("customer_id", "text"), ("in_holdout", "boolean"),
         ("entered_on", "date"), ("left_on", "date"), ("build_id", "text")),
        (),
    ),
}

# PostgreSQL: the days spells open and close on, indexed, so that undoing an earlier build
# of the same day (usually nothing to undo) reads a few index pages, not a year of spells.
# Dates only: an index on the member keys cost more to keep up than it saved. DuckDB: none
# (its zone maps skip row groups by day, and an index slows its bulk writes).
INDEXES = {"audience_history_entered_on": "entered_on", "audience_history_left_on": "left_on"}

# A spell is of one member of one audience in one group; it continues while the
# build's audience_members holds that triple.
_KEY = "audience, member_key, in_holdout"


def _same(a: str, b: str) -> str:
    return " AND ".join(f"{a}.{column} = {b}.{column}" for column in _KEY.split(", "))


def record_spells(conn, build_id: str, day: date, members: str = "audience_members") -> dict[str, int]:
    """Bring audience_history up to the members of `members` as of `day` (a live build's
    as-of day), inside the caller's transaction; returns the spells opened and closed.

    A second build of the same day first undoes what the earlier one did that day
    (its opened spells deleted, its closed ones reopened), so the day's spells follow
    the last build of the day and a rerun changes nothing."""
    today = sql_literal(day)
    ensure_indexes(conn)
    _run(conn, f"DELETE FROM audience_history WHERE entered_on = {today}")
    _run(conn, f"UPDATE audience_history SET left_on = NULL WHERE left_on = {today}")
    counted = conn.dialect.name == "postgresql"  # its driver says how many rows a statement changed
    open_before = None if counted else _count(conn, "SELECT COUNT(*) FROM audience_history WHERE left_on IS NULL")
    closing, arrived = _changes(conn.dialect.name, members)
    closed = _run(conn, f"UPDATE audience_history SET left_on = {today} {closing}").rowcount
    still_open = None if counted else _count(conn, "SELECT COUNT(*) FROM audience_history WHERE left_on IS NULL")
    opened = _run(conn, f"""
        INSERT INTO audience_history (audience, member_key, customer_id, in_holdout, entered_on, left_on, build_id)
        SELECT audience, member_key, customer_id, in_holdout, {today}, CAST(NULL AS DATE), {sql_literal(build_id)}
        FROM ({arrived}) arrived""").rowcount
    now_open = _count(conn, "SELECT COUNT(*) FROM audience_history WHERE left_on IS NULL")
    if not counted:
        opened, closed = now_open - still_open, open_before - still_open
    return {"opened": opened, "closed": closed, "open": now_open}


def ensure_indexes(conn) -> None:
    """audience_history's INDEXES on PostgreSQL (a catalog look-up once they exist)."""
    if conn.dialect.name == "postgresql":
        for name, column in INDEXES.items():
            _run(conn, f"CREATE INDEX IF NOT EXISTS {name} ON audience_history ({column})")


def _changes(dialect: str, members: str) -> tuple[str, str]:
    """The open spells whose member is gone (the rest of an UPDATE) and the members
    without an open spell (a SELECT). The same sets, spelled per engine: at a year of
    spells DuckDB ran EXCEPT twice as fast as NOT EXISTS, PostgreSQL (a hash anti-join
    against EXCEPT's sort) NOT EXISTS 2.5 times as fast (docs/benchmarks.md)."""
    if dialect == "duckdb":
        return (f"""FROM (SELECT {_KEY} FROM audience_history WHERE left_on IS NULL
                          EXCEPT SELECT {_KEY} FROM {members}) gone
                    WHERE audience_history.left_on IS NULL AND {_same("gone", "audience_history")}""",
                f"""SELECT {_KEY}, customer_id FROM {members}
                    EXCEPT SELECT {_KEY}, customer_id FROM audience_history WHERE left_on IS NULL""")
    return (f"""WHERE left_on IS NULL
                  AND NOT EXISTS (SELECT 1 FROM {members} m WHERE {_same("m", "audience_history")})""",
            f"""SELECT DISTINCT {_KEY}, customer_id FROM {members} m
                WHERE NOT EXISTS (SELECT 1 FROM audience_history h WHERE h.left_on IS NULL AND {_same("m", "h")})""")


def _run(conn, sql: str):
    # No placeholders here: exec_driver_sql keeps the SQL as written on both drivers.
    return conn.exec_driver_sql(sql)


def _count(conn, sql: str) -> int:
    return int(_run(conn, sql).scalar())
