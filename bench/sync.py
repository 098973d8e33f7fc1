"""Sync benchmark: a 1M-member audience pushed to a local emulator with Meta's limits
(10,000 rows per call, SHA-256 checked, no throttling), then a sync with nothing
changed (the diff alone) and one after a 1 % change; then a 1M-member PHONE audience
synced to Meta with an empty identifier_cache (every phone parsed) and to a second Meta
destination (every phone from the cache). Each sync in its own process with its wall
time, requests, rows/s and peak RSS; plus the normalize-and-hash rates.

    python -m bench.sync [--members 1000000] [--change 0.01]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import yaml

from bench.__main__ import OUT, bench_env
from bench.measure import run_measured

AUDIENCE, DESTINATION, AUDIENCE_ID = "bench_ads", "meta", "100"
PHONES, SECOND_DESTINATION = "bench_phones", "meta_b"  # the phone audience goes to both destinations
TOKEN = "bench-token"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.sync", description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--change", type=float, default=0.01, help="share of members replaced before the 2nd sync")
    return parser.parse_args(argv)


def audience_columns() -> str:
    """audience_members as the build writes it (the attributes the bench leaves out are null)."""
    from winback.sync.engine import MEMBER_COLUMNS, _sql_type

    return ", ".join(["audience VARCHAR", "channel VARCHAR", *(f"{c} {_sql_type(c)}" for c in MEMBER_COLUMNS),
                      "in_holdout BOOLEAN"])


def members_sql(first: int, last: int) -> str:
    """Audience rows as a shop writes addresses (mixed case, padded), ids c0000001..."""
    return f"""
        SELECT '{AUDIENCE}' AS audience, 'ads' AS channel, 'c' || lpad(CAST(i AS VARCHAR), 8, '0') AS member_key,
               'c' || lpad(CAST(i AS VARCHAR), 8, '0') AS customer_id, CAST(NULL AS VARCHAR) AS visitor_id,
               '  Customer' || i || '@Example.COM ' AS email, CAST(NULL AS VARCHAR) AS phone,
               'Name' || i AS first_name, 'lapsed' AS lifecycle_stage, 'high' AS value_tier,
               CAST(NULL AS VARCHAR) AS offer, CAST(NULL AS DECIMAL(18, 2)) AS cart_value,
               CAST(NULL AS VARCHAR) AS product_ids, FALSE AS in_holdout
        FROM range({first}, {last}) t(i)"""


def phone_members_sql(members: int) -> str:
    """A phone-only audience: distinct Russian mobiles in the three usual spellings."""
    digits = "lpad(CAST(i AS VARCHAR), 7, '0')"
    return f"""
        SELECT '{PHONES}' AS audience, 'ads' AS channel, 'p' || {digits} AS member_key,
               'p' || {digits} AS customer_id, CAST(NULL AS VARCHAR) AS visitor_id,
               CAST(NULL AS VARCHAR) AS email,
               CASE i % 3 WHEN 0 THEN '8 (912) ' || substr({digits}, 1, 3) || '-' || substr({digits}, 4, 2)
                                      || '-' || substr({digits}, 6, 2)
                          WHEN 1 THEN '+7 912 ' || {digits} ELSE '7912' || {digits} END AS phone,
               'Name' || i AS first_name, 'lapsed' AS lifecycle_stage, 'high' AS value_tier,
               CAST(NULL AS VARCHAR) AS offer, CAST(NULL AS DECIMAL(18, 2)) AS cart_value,
               CAST(NULL AS VARCHAR) AS product_ids, FALSE AS in_holdout
        FROM range(0, {members}) t(i)"""


def start_emulator() -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen([sys.executable, "-m", "winback.emulators", "meta_custom_audiences",
                                "--token", TOKEN], stdout=subprocess.PIPE, text=True)
    return process, process.stdout.readline().strip()


def write_config(run_dir: Path, base_url: str) -> Path:
    document = {
        "warehouse": f"duckdb:///{run_dir / 'warehouse.duckdb'}",
        "sources": {"orders": {"kind": "file", "path": "orders/*.csv"}},
        "audiences": {AUDIENCE: {"where": {"lifecycle_stage": ["lapsed"]}, "channel": "ads",
                                 "identifiers": ["email"], "holdout": 0},
                      PHONES: {"where": {"lifecycle_stage": ["lapsed"]}, "channel": "ads",
                               "identifiers": ["phone"], "holdout": 0}},
        "sync": {"out_dir": str(run_dir / "sync")},
        "destinations": {DESTINATION: {"kind": "meta_custom_audiences", "base_url": base_url,
                                       "env_prefix": "BENCH_META",
                                       "audiences": {AUDIENCE: {"audience_id": AUDIENCE_ID},
                                                     PHONES: {"audience_id": "200"}}},
                         SECOND_DESTINATION: {"kind": "meta_custom_audiences", "base_url": base_url,
                                              "env_prefix": "BENCH_META",
                                              "audiences": {PHONES: {"audience_id": "300"}}}},
    }
    path = run_dir / "winback.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def hashing_rates(n: int = 200_000) -> dict[str, float]:
    from winback.sync.engine import _normalize

    emails = [f"  Customer{i}@Example.COM " for i in range(n)]
    phones = [("8 (912) {}-{}-{}", "+7 912 {}{}{}", "7912{}{}{}")[i % 3].format(
        f"{i:07d}"[:3], f"{i:07d}"[3:5], f"{i:07d}"[5:]) for i in range(n // 10)]
    began = time.perf_counter()
    _normalize(emails, "email", "RU", "digits", True)
    email_rate = n / (time.perf_counter() - began)
    began = time.perf_counter()
    _normalize(phones, "phone", "RU", "digits", True)
    return {"emails_per_s": email_rate, "phones_per_s": len(phones) / (time.perf_counter() - began)}


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    run_dir = OUT / "sync"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    con = duckdb.connect(str(run_dir / "warehouse.duckdb"))
    con.execute(f"CREATE TABLE audience_members ({audience_columns()})")
    con.execute(f"INSERT INTO audience_members BY NAME {members_sql(0, args.members)}")
    con.execute(f"INSERT INTO audience_members BY NAME {phone_members_sql(args.members)}")
    con.close()
    emulator, base_url = start_emulator()
    env = {**bench_env(run_dir), "BENCH_META_TOKEN": TOKEN}
    config = write_config(run_dir, base_url)
    rows = []
    steps = [(label, AUDIENCE, DESTINATION) for label in
             ("first sync", "nothing changed (diff only)", f"after a {args.change:.0%} change")]
    steps += [("phones, cold cache", PHONES, DESTINATION), ("phones, warm cache (2nd dest.)", PHONES,
                                                             SECOND_DESTINATION)]
    try:
        for label, audience, destination in steps:
            if label.startswith("after"):
                changed = int(args.members * args.change / 2)
                con = duckdb.connect(str(run_dir / "warehouse.duckdb"))
                con.execute(f"DELETE FROM audience_members WHERE member_key < 'c{changed:08d}'")
                con.execute(f"INSERT INTO audience_members BY NAME {members_sql(args.members, args.members + changed)}")
                con.close()
            measured = run_measured(["-m", "bench.step", str(config), "sync", audience, destination], env)
            [run] = measured.result
            assert run["status"] == "succeeded", run
            moved = run["sent"] + run["removed"]
            rows.append({"step": label, "seconds": measured.seconds, "engine_seconds": run["seconds"],
                         "requests": run["requests"], "sent": run["sent"], "removed": run["removed"],
                         "rows_per_s": moved / run["seconds"] if moved else 0.0,
                         "peak_rss_mb": measured.peak_rss_mb,
                         **{k: run["figures"][k] for k in ("phones_parsed", "phones_from_cache") if k in run["figures"]}})
            phones = (f"  {run['figures']['phones_parsed']:>9,} phones parsed, "
                      f"{run['figures']['phones_from_cache']:>9,} from the cache" if audience == PHONES else "")
            print(f"{label:<32}{measured.seconds:>7.1f}s wall {run['seconds']:>7.1f}s sync  "
                  f"{run['requests']:>5} requests  {run['sent']:>9,} sent  {run['removed']:>7,} removed  "
                  f"{rows[-1]['rows_per_s']:>9,.0f} rows/s  {measured.peak_rss_mb:>6,.0f}MB peak{phones}", flush=True)
    finally:
        emulator.terminate()
        emulator.wait()
    rates = hashing_rates()
    print(f"normalize + SHA-256: {rates['emails_per_s']:,.0f} emails/s, {rates['phones_per_s']:,.0f} phones/s "
          "(phonenumbers)")
    (OUT / "sync-results.json").write_text(json.dumps({"runs": rows, "hashing": rates}, indent=2))
    print(f"\nresults: {OUT / 'sync-results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
