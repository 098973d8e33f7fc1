"""Measurement benchmark: a warehouse holding a year of campaign history for 1M
customers — 52 weekly live builds' worth of audience_history spells (written directly
in SQL with the churn of weekly builds, not by running 52 builds), a year of orders and
the weekly live sync runs — then, each in its own process as a build runs them, the
spell update of one more build and the campaign_outcomes + campaign_lift refresh, with
wall time and peak RSS. Then the report page (write_report) on the same warehouse with
a year of the history it reads (bench/report_history.py), timed the same way.

    python -m bench.measurement                          # DuckDB, 1M customers
    python -m bench.measurement --customers 100000 --postgres
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from datetime import datetime, timedelta

import yaml

from bench.__main__ import BENCH_END, OUT, REPO, postgres_schema
from bench.measure import run_measured
from bench.report_history import generate_report_history

# audience -> (channel, share of customers in each of its three yearly slots)
AUDIENCES = {"lapsed_winback": ("email", 60), "at_risk_reminder": ("email", 40),
             "lapsed_high_value_calls": ("call", 15)}
WEEKS = 52
FIRST_BUILD = BENCH_END - timedelta(days=7 * WEEKS)  # the 53rd build, timed, is on BENCH_END


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.measurement", description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL instead of DuckDB")
    parser.add_argument("--keep", action="store_true", help="keep the warehouse in bench/out afterwards")
    parser.add_argument("--steps", default="spells,outcomes,report", help="which steps to time, in this order")
    return parser.parse_args(argv)


def generate(url: str, customers: int) -> dict:
    """Spells, members of the timed build, orders and sync runs, in set-based SQL."""
    from winback.build.builder import _dialect_macros, run
    from winback.measure.spells import TABLES, ensure_indexes
    from winback.schema import ENTITIES
    from winback.sync.engine import SYNC_TABLES
    from winback.warehouse import Warehouse, sql_literal

    wh = Warehouse(url)
    hashed = _dialect_macros(wh.dialect)["hash_bucket"]
    wh.ensure_tables({**TABLES, **SYNC_TABLES})
    wh.ensure_entity_tables(ENTITIES["orders"])
    first = sql_literal(FIRST_BUILD)
    audiences = " UNION ALL ".join(f"SELECT {sql_literal(a)} AS audience, {share} AS share"
                                   for a, (_, share) in AUDIENCES.items())
    key = "'c' || CAST(i AS VARCHAR)"
    with wh.begin() as conn:
        # Three slots a year per customer and audience: a spell enters in week 17k + 0..11
        # and lasts 1..8 weeks (the last slot 1..30, so most of its spells are still open).
        run(conn, f"""
            INSERT INTO audience_history (audience, member_key, customer_id, in_holdout, entered_on, left_on, build_id)
            SELECT audience, member_key, member_key, holdout,
                   {first} + CAST(7 * entered_week AS INTEGER),
                   CASE WHEN entered_week + weeks < {WEEKS + 1}
                        THEN {first} + CAST(7 * (entered_week + weeks) AS INTEGER) END,
                   'bench'
            FROM (
                SELECT audience, {key} AS member_key,
                       {hashed(f"'h' || audience || {key}")} % 10 = 0 AS holdout,
                       17 * k + (h / 100) % 12 AS entered_week,
                       1 + (h / 1200) % (CASE WHEN k = 2 THEN 30 ELSE 8 END) AS weeks,
                       h % 100 < share AS present
                FROM (SELECT a.audience, a.share, c.i, s.k,
                             {hashed(f"a.audience || ':' || {key} || ':' || CAST(s.k AS VARCHAR)")} AS h
                      FROM ({audiences}) a
                      CROSS JOIN generate_series(0, {customers - 1}) AS c(i)
                      CROSS JOIN generate_series(0, 2) AS s(k)) slots
            ) spells
            WHERE present""")
        # The timed build's audience: open spells but one in ten (churned out), plus 5 %
        # of customers per audience entering (a few of whom are already in).
        run(conn, f"""
            CREATE TABLE audience_members AS
            SELECT audience, member_key, customer_id, in_holdout FROM audience_history
            WHERE left_on IS NULL AND {hashed("'x' || audience || member_key")} % 10 <> 0
            UNION
            SELECT a.audience, {key}, {key}, {hashed(f"'h' || a.audience || {key}")} % 10 = 0
            FROM ({audiences}) a CROSS JOIN generate_series(0, {customers - 1}) AS c(i)
            WHERE {hashed(f"'n' || a.audience || {key}")} % 100 < 5""")
        # Up to six orders a customer over the year (3.6 on average), one in ten cancelled.
        run(conn, f"""
            INSERT INTO orders (order_id, customer_id, created_at, status, total_amount)
            SELECT 'o' || CAST(i AS VARCHAR) || '-' || CAST(k AS VARCHAR), {key},
                   CAST({first} AS TIMESTAMP) + (h / 100 % 364) * INTERVAL '1 day' + (h % 24) * INTERVAL '1 hour',
                   CASE WHEN h / 36400 % 10 = 0 THEN 'cancelled' ELSE 'completed' END,
                   CAST(500 + h % 5000 AS NUMERIC(18, 2))
            FROM (SELECT i, k, {hashed(f"'o' || {key} || ':' || CAST(k AS VARCHAR)")} AS h
                  FROM generate_series(0, {customers - 1}) AS c(i) CROSS JOIN generate_series(0, 5) AS s(k)) o
            WHERE h % 100 < 60""")
        # Every weekly build synced every audience live, 3 hours after its as-of day began.
        run(conn, f"""
            INSERT INTO sync_runs (run_id, audience, destination, kind, mode, status, started_at)
            SELECT a.audience || '-' || CAST(w AS VARCHAR), a.audience, 'csv', 'csv', 'mirror', 'succeeded',
                   CAST({first} AS TIMESTAMP) + (7 * w) * INTERVAL '1 day' + INTERVAL '3 hours'
            FROM ({audiences}) a CROSS JOIN generate_series(0, {WEEKS - 1}) AS s(w)""")
        # What the build made just before the measurement (and reads it from), not timed here.
        run(conn, """
            CREATE TABLE customer_purchase_days AS
            SELECT customer_id, CAST(created_at AS DATE) AS day, SUM(total_amount) AS amount, COUNT(*) AS orders
            FROM orders WHERE status = 'completed' GROUP BY customer_id, CAST(created_at AS DATE)""")
        ensure_indexes(conn)  # a warehouse has them from its first live build on
        if wh.dialect == "postgresql":
            for table in ("audience_history", "audience_members", "orders", "sync_runs", "customer_purchase_days"):
                run(conn, f"ANALYZE {table}")
    counts = {t: wh.scalar(f"SELECT COUNT(*) FROM {t}")
              for t in ("audience_history", "audience_members", "orders", "sync_runs")}
    counts["open_spells"] = wh.scalar("SELECT COUNT(*) FROM audience_history WHERE left_on IS NULL")
    wh.dispose()
    return counts


def step(config_path: str, which: str) -> None:
    """In the child process: one timed step, its result printed as JSON."""
    from winback.build.builder import AsOf
    from winback.config import load_config
    from winback.measure.outcomes import refresh_outcomes
    from winback.measure.spells import record_spells
    from winback.report import write_report
    from winback.warehouse import Warehouse

    config = load_config(config_path)
    wh = Warehouse(config.warehouse_url)
    wh.table_exists("orders")  # connected and reflected once, as the build that runs these steps already is
    began, cpu = time.perf_counter(), time.process_time()
    if which == "spells":
        with wh.begin() as conn:
            result = record_spells(conn, "bench-timed", BENCH_END)
    elif which == "report":
        result = write_report(config, warehouse=wh)
        result["page_mb"] = round(os.path.getsize(result.pop("path")) / 2**20, 1)
    else:
        cutoff = datetime.combine(BENCH_END + timedelta(days=1), datetime.min.time())
        result = refresh_outcomes(wh, config, AsOf(BENCH_END, cutoff, cutoff), "customer_purchase_days")
    result["seconds"] = round(time.perf_counter() - began, 3)
    result["cpu_seconds"] = round(time.process_time() - cpu, 3)  # every thread: what the step costs on a busy machine
    wh.dispose()
    print(json.dumps(result, default=str))


def main(argv: list[str]) -> int:
    if argv[:1] == ["step"]:
        step(*argv[1:3])
        return 0
    args = parse_args(argv)
    kind = "postgres" if args.postgres else "duckdb"
    run_dir = OUT / f"measurement-{kind}-{args.customers}"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    drop = None
    if args.postgres:
        url, drop = postgres_schema()
    else:
        url = f"duckdb:///{run_dir / 'warehouse.duckdb'}"
    config = run_dir / "winback.yaml"
    config.write_text(yaml.safe_dump({
        "warehouse": url, "sources": {"orders": {"kind": "file", "path": "unused/*.csv"}},
        "audiences": {name: {"channel": channel, **({"identifiers": ["phone"]} if channel == "call" else {})}
                      for name, (channel, _) in AUDIENCES.items()}}, sort_keys=False))
    env = {**os.environ, "WINBACK_HOME": str(run_dir),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    env.pop("WINBACK_WAREHOUSE_URL", None)
    try:
        print(f"generating a year of history for {args.customers:,} customers in {kind} (not timed) ...", flush=True)
        began = time.perf_counter()
        counts = generate(url, args.customers)
        print(f"  {time.perf_counter() - began:.0f}s: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()),
              flush=True)
        results = {"warehouse": kind, "customers": args.customers, **counts}
        for which in args.steps.split(","):
            if which == "report":
                print("writing a year of the report's history (not timed) ...", flush=True)
                began = time.perf_counter()
                from winback.warehouse import Warehouse

                wh = Warehouse(url)
                written = generate_report_history(wh, args.customers, FIRST_BUILD, WEEKS)
                wh.dispose()
                results.update(written)
                print(f"  {time.perf_counter() - began:.0f}s: " + ", ".join(f"{k} {v:,}" for k, v in written.items()),
                      flush=True)
            measured = run_measured(["-m", "bench.measurement", "step", str(config), which], env)
            results[which] = {"seconds": measured.result["seconds"], "process_seconds": round(measured.seconds, 2),
                              "peak_rss_mb": round(measured.peak_rss_mb), "result": measured.result}
            print(f"{which:<9} {measured.result['seconds']:>6.2f}s ({measured.seconds:.1f}s with process start)  "
                  f"{measured.peak_rss_mb:>6,.0f}MB peak  {json.dumps(measured.result, default=str)}", flush=True)
        (OUT / f"measurement-{kind}-results.json").write_text(json.dumps(results, indent=2, default=str))
    finally:
        if not args.keep:
            if drop:
                drop()
            shutil.rmtree(run_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
