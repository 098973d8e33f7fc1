"""`call_funnel`: per call audience and month, how many listed members the phone team
called, reached, talked into coming back, and how many then bought, beside the
articles' reference rates. Rebuilt in SQL after every live build's swap.

Members come from `audience_history` spells (listed = not held out), calls from
`contact_outcomes` (channel 'call') inside the spell, purchases from `orders`; with no
`audience_history` yet the table is empty, with no `contact_outcomes` nobody is called.
"""

from __future__ import annotations

import logging
from datetime import date, datetime

from winback.config import Config
from winback.measure import spells
from winback.schema import ENTITIES, REACHED_RESULTS
from winback.warehouse import Warehouse, sql_literal

log = logging.getLogger(__name__)

TABLE = "call_funnel"
HISTORY = "audience_history"
# The articles' figures (docs/domain.md, "Is it worth it?"): of called lapsed customers
# ~60 % agree to return and ~15 % buy.
REFERENCE_AGREE_RATE = 0.6
REFERENCE_CONVERSION_RATE = 0.15


def window_days(config: Config) -> int:
    """A purchase this many days after a call counts as bought: the measurement's window."""
    return config.measurement.window_days


def refresh_call_funnel(wh: Warehouse, config: Config, as_of: date, cutoff: datetime) -> int:
    """Rebuild `call_funnel` as of a day (data before `cutoff`, the end of that day) and
    swap it in; returns its row count."""
    sql = funnel_sql(wh, config, as_of, cutoff)  # looks for its tables outside the transaction (DuckDB)
    with wh.begin() as conn:
        wh.execute(f"DROP TABLE IF EXISTS {TABLE}__new", conn=conn)
        wh.execute(f"CREATE TABLE {TABLE}__new AS\n{sql}", conn=conn)
    with wh.begin() as conn:
        wh.execute(f"DROP TABLE IF EXISTS {TABLE}", conn=conn)
        wh.execute(f"ALTER TABLE {TABLE}__new RENAME TO {TABLE}", conn=conn)
    rows = wh.scalar(f"SELECT COUNT(*) FROM {TABLE}")
    log.info("call_funnel as of %s: %d audience-months", as_of, rows)
    return rows


def funnel_sql(wh: Warehouse, config: Config, as_of: date, cutoff: datetime) -> str:
    calls = [name for name, audience in config.audiences.items() if audience.channel == "call"]
    history = HISTORY if wh.table_exists(HISTORY) else wh.empty_relation(spells.TABLES[HISTORY][0])
    contacts = "contact_outcomes" if wh.table_exists("contact_outcomes") else wh.empty_relation(
        (c.name, c.type) for c in ENTITIES["contact_outcomes"].columns)
    day, end = sql_literal(as_of), sql_literal(cutoff)
    in_calls = f"audience IN ({', '.join(sql_literal(a) for a in calls)})" if calls else "FALSE"
    reached = ", ".join(sql_literal(r) for r in sorted(REACHED_RESULTS))
    statuses = ", ".join(sql_literal(s) for s in config.segments.purchase_statuses)
    number = wh.column_type("number")
    return f"""
WITH spells AS (
    SELECT audience, member_key, customer_id, entered_on, COALESCE(left_on, {day}) AS until
    FROM {history} h
    WHERE NOT in_holdout AND {in_calls} AND entered_on <= {day}
), calls AS (
    -- every call made while the member was listed: from the day it entered to the day
    -- it left (or the as-of day), both included
    SELECT s.audience, s.member_key, s.entered_on, c.outcome,
           EXISTS (SELECT 1 FROM orders o
                   WHERE o.customer_id = c.customer_id AND o.status IN ({statuses})
                     AND o.created_at > c.contacted_at
                     AND o.created_at <= c.contacted_at + {window_days(config)} * INTERVAL '1 day'
                     AND o.created_at < {end}) AS bought
    FROM spells s
    JOIN {contacts} c ON c.customer_id = s.customer_id
    WHERE c.channel = 'call'
      AND c.contacted_at >= CAST(s.entered_on AS TIMESTAMP)
      AND c.contacted_at < CAST(s.until + 1 AS TIMESTAMP)
      AND c.contacted_at < {end}
), per_spell AS (
    SELECT audience, member_key, entered_on,
           MAX(CASE WHEN outcome IN ({reached}) THEN 1 ELSE 0 END) AS reached,
           MAX(CASE WHEN outcome = 'agreed_to_return' THEN 1 ELSE 0 END) AS agreed,
           MAX(CASE WHEN bought THEN 1 ELSE 0 END) AS bought
    FROM calls
    GROUP BY audience, member_key, entered_on
), months AS (
    SELECT s.audience, CAST(date_trunc('month', s.entered_on) AS DATE) AS month,
           CAST(COUNT(*) AS BIGINT) AS listed,
           CAST(COUNT(p.member_key) AS BIGINT) AS called,
           CAST(COALESCE(SUM(p.reached), 0) AS BIGINT) AS reached,
           CAST(COALESCE(SUM(p.agreed), 0) AS BIGINT) AS agreed_to_return,
           CAST(COALESCE(SUM(p.bought), 0) AS BIGINT) AS bought
    FROM spells s
    LEFT JOIN per_spell p
      ON p.audience = s.audience AND p.member_key = s.member_key AND p.entered_on = s.entered_on
    GROUP BY s.audience, CAST(date_trunc('month', s.entered_on) AS DATE)
)
SELECT audience, month, listed, called, reached, agreed_to_return, bought,
       CASE WHEN called > 0 THEN CAST(reached AS {number}) / called END AS reach_rate,
       CASE WHEN called > 0 THEN CAST(agreed_to_return AS {number}) / called END AS agree_rate,
       CASE WHEN called > 0 THEN CAST(bought AS {number}) / called END AS conversion_rate,
       CAST({REFERENCE_AGREE_RATE!r} AS {number}) AS reference_agree_rate,
       CAST({REFERENCE_CONVERSION_RATE!r} AS {number}) AS reference_conversion_rate
FROM months"""
