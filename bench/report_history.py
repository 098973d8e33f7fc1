"""What the report page reads, at a year of weekly builds for N customers, written in
set-based SQL (not by running 52 builds): segment_history (52 builds of ~N rows, the
shop growing from 90 % to all N customers), segment_transitions and build_runs made
from the same stage rule, alerts, model_fits and model_checks per build, a year of
load_runs and ~N quarantined rows, category_cycles, churn_reasons and call_funnel.
campaign_outcomes and campaign_lift come from the measurement step, orders from
bench.measurement's history.

A customer's stage at build w is a bucket of (h % 100 + w * drift) % 100, h the hash of
its id and drift 0, 1 or 2: a third never move, the rest cross a bucket boundary now and
then, so every build has flows between stages and new customers arrive every week.
"""

from __future__ import annotations

import json
from datetime import date, timedelta

# (stage, upper bound of its bucket of 100)
STAGE_BUCKETS = (("newcomer", 10), ("regular", 30), ("loyal", 40), ("at_risk", 52), ("lapsed", 75),
                 ("archived", 85), ("negative", 88), ("one_off", 100))
ENTITIES = ("customers", "orders", "order_items", "events", "feedback", "mailing_events")
RULES = ("total_amount_non_negative", "status_allowed", "email_format", "created_at_not_future",
         "customer_id_present", "quantity_positive", "occurred_at_parseable", "score_in_range")
CATEGORIES = 20
REASONS = ("price", "delivery", "quality", "found_elsewhere", "no_need", "service")


def _stage(bucket: str) -> str:
    cases = " ".join(f"WHEN {bucket} < {upper} THEN '{stage}'" for stage, upper in STAGE_BUCKETS[:-1])
    return f"CASE {cases} ELSE '{STAGE_BUCKETS[-1][0]}' END"


def generate_report_history(wh, customers: int, first: date, weeks: int) -> dict[str, int]:
    """Write the report's tables into `wh` for builds on first + 7w, w = 1..weeks."""
    from winback.build.builder import HISTORY_TABLES, _dialect_macros, run
    from winback.warehouse import sql_literal

    hashed = _dialect_macros(wh.dialect)["hash_bucket"]
    wh.ensure_tables(HISTORY_TABLES)
    wh.ensure_meta_tables()
    t = {kind: wh.column_type(kind) for kind in ("text", "number", "integer", "date", "boolean")}
    start = sql_literal(first)
    last = first + timedelta(days=7 * weeks)

    def present(week: str) -> str:  # the shop grows from 90 % to 100 % of the customers
        return f"CAST(i AS BIGINT) * {100 * weeks} < CAST({customers} AS BIGINT) * ({90 * weeks} + 10 * ({week}))"

    def div(a: str, b: int) -> str:  # integer division: DuckDB's `/` gives a fraction
        return f"({a} {'//' if wh.dialect == 'duckdb' else '/'} {b})"

    def stage(week: str) -> str:
        return _stage(f"((h % 100) + ({week}) * ({div('h', 100)} % 3)) % 100")

    with wh.begin() as conn:
        run(conn, "DROP TABLE IF EXISTS bench_customers")
        run(conn, f"""CREATE TABLE bench_customers AS
            SELECT i, 'c' || CAST(i AS VARCHAR) AS customer_id,
                   {hashed("'s' || CAST(i AS VARCHAR)")} AS h
            FROM generate_series(0, {customers - 1}) AS c(i)""")
        run(conn, f"""
            INSERT INTO segment_history (as_of, customer_id, lifecycle_stage, build_id)
            SELECT {start} + CAST(7 * w AS INTEGER), customer_id, {stage("w")}, 'build-' || CAST(w AS VARCHAR)
            FROM bench_customers CROSS JOIN generate_series(1, {weeks}) AS b(w)
            WHERE {present("w")}""")
        run(conn, f"""
            INSERT INTO segment_transitions (as_of, previous_as_of, from_stage, to_stage, customers)
            SELECT {start} + CAST(7 * w AS INTEGER), {start} + CAST(7 * (w - 1) AS INTEGER), from_stage, to_stage, COUNT(*)
            FROM (SELECT w, CASE WHEN {present("w - 1")} THEN {stage("w - 1")} ELSE 'new_customer' END AS from_stage,
                         {stage("w")} AS to_stage
                  FROM bench_customers CROSS JOIN generate_series(2, {weeks}) AS b(w)
                  WHERE {present("w")}) moves
            GROUP BY w, from_stage, to_stage""")
        counts = run(conn, f"""
            SELECT w, {stage("w")} AS stage, COUNT(*)
            FROM bench_customers CROSS JOIN generate_series(1, {weeks}) AS b(w)
            WHERE {present("w")} GROUP BY 1, 2""").fetchall()
        run(conn, "DROP TABLE bench_customers")
        per_build: dict[int, dict[str, int]] = {}
        for week, name, n in counts:
            per_build.setdefault(int(week), {})[name] = int(n)
        shares = {}
        for week, stages in sorted(per_build.items()):
            day = first + timedelta(days=7 * week)
            total = sum(stages.values())
            shares[week] = stages.get("lapsed", 0) / total
            finished = f"CAST({sql_literal(day + timedelta(days=1))} AS TIMESTAMP) + INTERVAL '3 hours'"
            run(conn, f"""
                INSERT INTO build_runs (build_id, as_of, started_at, finished_at, customers, lapsed_share,
                                        stage_counts, seconds, backfill)
                VALUES ('build-{week}', {sql_literal(day)}, {finished} - INTERVAL '1 minute', {finished}, {total},
                        {shares[week]!r}, {sql_literal(json.dumps(stages, sort_keys=True))}, 60.0, FALSE)""")
        for week in range(10, weeks + 1, 10):  # an alert every ten weeks, as a swing would write
            run(conn, f"""
                INSERT INTO alerts (build_id, as_of, kind, message, value, previous_value, created_at)
                VALUES ('build-{week}', {sql_literal(first + timedelta(days=7 * week))}, 'lapsed_share_swing',
                        'lapsed share moved (benchmark)', {shares[week]!r}, {shares[week - 1]!r},
                        CAST({sql_literal(first + timedelta(days=7 * week + 1))} AS TIMESTAMP))""")
        run(conn, f"""
            INSERT INTO model_fits (build_id, as_of, model, params, log_likelihood, customers, converged,
                                    time_unit, message, fitted_at)
            SELECT 'build-' || CAST(w AS VARCHAR), {start} + CAST(7 * w AS INTEGER), m.model, m.params, -1234567.0 - w,
                   {customers}, TRUE, 'day', CAST(NULL AS {t['text']}), CAST({start} + CAST(7 * w AS INTEGER) AS TIMESTAMP)
            FROM generate_series(1, {weeks}) AS b(w)
            CROSS JOIN (SELECT 'bgnbd' AS model, '{{"r": 0.24, "alpha": 4.41, "a": 0.79, "b": 2.43}}' AS params
                        UNION ALL SELECT 'gamma_gamma', '{{"p": 6.25, "q": 3.74, "v": 15.45}}') m""")
        run(conn, f"""
            INSERT INTO model_checks (build_id, as_of, calibration_end, check_days, repeat_purchases, customers,
                                      predicted, actual, mean_absolute_error, params, message)
            SELECT 'build-' || CAST(w AS VARCHAR), {start} + CAST(7 * w AS INTEGER), {start} + CAST(7 * w - 90 AS INTEGER), 90, g.name,
                   g.customers, g.customers * g.rate * 1.02, g.customers * g.rate, 0.4, '{{}}',
                   CAST(NULL AS {t['text']})
            FROM generate_series(1, {weeks}) AS b(w)
            CROSS JOIN (SELECT '0' AS name, {customers // 2} AS customers, 0.1 AS rate
                        UNION ALL SELECT '1', {customers // 5}, 0.4 UNION ALL SELECT '2', {customers // 10}, 0.7
                        UNION ALL SELECT '3', {customers // 20}, 1.0 UNION ALL SELECT '4', {customers // 40}, 1.3
                        UNION ALL SELECT '5', {customers // 50}, 1.6 UNION ALL SELECT '6', {customers // 80}, 1.9
                        UNION ALL SELECT '7+', {customers // 40}, 2.8
                        UNION ALL SELECT 'all', {customers}, 0.35) g""")
        # Four loads a day per entity over the year (one in fifty failed or rejected).
        run(conn, f"""
            INSERT INTO load_runs (load_id, entity, source_kind, status, rows_extracted, rows_valid,
                                   rows_quarantined, rows_inserted, rows_updated, origins, started_at, finished_at)
            SELECT e.entity || '-' || CAST(n AS VARCHAR), e.entity, 'file',
                   CASE WHEN n % 50 = 0 THEN 'failed' WHEN n % 50 = 1 THEN 'rejected' ELSE 'loaded' END,
                   1000 * e.size, 990 * e.size, 10 * e.size, 980 * e.size, 10 * e.size, '[]',
                   CAST({start} AS TIMESTAMP) + {div('n', 4)} * INTERVAL '1 day' + (n % 4 * 6) * INTERVAL '1 hour',
                   CAST({start} AS TIMESTAMP) + {div('n', 4)} * INTERVAL '1 day' + (n % 4 * 6 + 1) * INTERVAL '1 hour'
            FROM generate_series(0, {4 * 7 * weeks - 1}) AS l(n)
            CROSS JOIN ({" UNION ALL ".join(f"SELECT '{e}' AS entity, {k + 1} AS size"
                                          for k, e in enumerate(ENTITIES))}) e""")
        # About one quarantined row (or nulled value) per customer over the year, with its raw record.
        rules = " ".join(f"WHEN {k} THEN '{rule}'" for k, rule in enumerate(RULES))
        run(conn, f"""
            INSERT INTO quarantine (entity, record_hash, source_kind, origin, row_number, load_id, record_key,
                                    rules, details, raw_record, quarantined_at, level, field)
            SELECT CASE n % 6 {" ".join(f"WHEN {k} THEN '{e}'" for k, e in enumerate(ENTITIES))} END,
                   'h' || CAST(n AS VARCHAR), 'file', 'export.csv', n, 'orders-' || CAST(n % {4 * 7 * weeks} AS VARCHAR),
                   'k' || CAST(n AS VARCHAR),
                   CASE WHEN n % 13 = 0 THEN 'total_amount_non_negative, status_allowed'
                        ELSE CASE n % {len(RULES)} {rules} END END,
                   'the value broke the rule',
                   '{{"id": "' || CAST(n AS VARCHAR) || '", "email": "someone@example.com", "total": "-1"}}',
                   CAST({start} AS TIMESTAMP) + (n % {7 * weeks}) * INTERVAL '1 day',
                   CASE WHEN n % 4 = 0 THEN 'field' ELSE 'row' END,
                   CASE WHEN n % 4 = 0 THEN 'email' END
            FROM generate_series(0, {customers - 1}) AS q(n)""")
        category = "'category_' || CAST(k AS VARCHAR)"
        run(conn, f"""
            CREATE TABLE category_cycles AS
            SELECT CASE WHEN k = 0 THEN '*' ELSE {category} END AS category,
                   CAST({customers} / (k + 1) AS BIGINT) AS support,
                   CAST({customers} / (k + 2) AS BIGINT) AS repeat_customers,
                   CAST({customers} / (k + 1) AS BIGINT) AS customers,
                   CAST(20 + 3 * k AS {t['number']}) AS median_gap_days,
                   CAST(40 + 5 * k AS {t['number']}) AS p80_gap_days,
                   CAST(60 + 7 * k AS {t['number']}) AS p90_gap_days,
                   CASE WHEN k = 0 THEN 'shop' ELSE 'data' END AS basis,
                   CAST(20 + 3 * k AS {t['number']}) AS typical_gap_days,
                   CAST(60 + 7 * k AS {t['number']}) AS at_risk_days,
                   CAST(90 + 10 * k AS {t['number']}) AS churn_days
            FROM generate_series(0, {CATEGORIES}) AS c(k)""")
        reasons = " UNION ALL ".join(f"SELECT '{r}' AS reason, {j + 1} AS weight" for j, r in enumerate(REASONS))
        stages = " UNION ALL ".join(f"SELECT '{s}' AS lifecycle_stage" for s, _ in STAGE_BUCKETS)
        run(conn, f"""
            CREATE TABLE churn_reasons AS
            SELECT {category} AS main_category, s.lifecycle_stage, r.reason,
                   CAST(r.weight * (k + 1) AS BIGINT) AS customers,
                   CAST(r.weight AS {t['number']}) / 21 AS share
            FROM generate_series(1, {CATEGORIES}) AS c(k) CROSS JOIN ({stages}) s CROSS JOIN ({reasons}) r""")
        month = f"CAST(date_trunc('month', CAST({sql_literal(last)} AS TIMESTAMP)) AS DATE)"
        run(conn, f"""
            CREATE TABLE call_funnel AS
            SELECT 'lapsed_high_value_calls' AS audience, CAST({month} - m * INTERVAL '1 month' AS DATE) AS month,
                   CAST(20000 AS BIGINT) AS listed, CAST(18000 AS BIGINT) AS called,
                   CAST(12000 AS BIGINT) AS reached, CAST(7000 AS BIGINT) AS agreed_to_return,
                   CAST(2500 AS BIGINT) AS bought, CAST(12000.0 / 18000 AS {t['number']}) AS reach_rate,
                   CAST(7000.0 / 18000 AS {t['number']}) AS agree_rate,
                   CAST(2500.0 / 18000 AS {t['number']}) AS conversion_rate,
                   CAST(0.6 AS {t['number']}) AS reference_agree_rate,
                   CAST(0.15 AS {t['number']}) AS reference_conversion_rate
            FROM generate_series(0, 11) AS c(m)""")
        if wh.dialect == "postgresql":
            for table in ("segment_history", "segment_transitions", "build_runs", "quarantine", "load_runs"):
                run(conn, f"ANALYZE {table}")
    return {t: wh.scalar(f"SELECT COUNT(*) FROM {t}")
            for t in ("segment_history", "segment_transitions", "build_runs", "load_runs", "quarantine")}
