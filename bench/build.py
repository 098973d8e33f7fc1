"""Build benchmark: ingest the large sample shop, then time a full rebuild of every mart
and model fit (`winback.build.builder.build`) in its own process, with its peak RSS.

    python -m bench.build                                   # duckdb:100000, duckdb:1000000, postgres:100000
    python -m bench.build --runs duckdb:100000 --reuse      # keep the ingested warehouse between runs
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import sqlalchemy as sa
import yaml
from winback.schema import ENTITY_ORDER

from bench.__main__ import BENCH_END, OUT, bench_env, bench_warehouse, shop_for
from bench.measure import run_measured

DEFAULT_RUNS = "duckdb:100000,duckdb:1000000,postgres:100000"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.build", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default=DEFAULT_RUNS, help="comma-separated warehouse:customers")
    parser.add_argument("--reuse", action="store_true", help="reuse an ingested warehouse from an earlier run")
    parser.add_argument("--keep", action="store_true", help="keep the ingested warehouses afterwards")
    return parser.parse_args(argv)


def ingested(kind: str, customers: int, reuse: bool) -> Path:
    """The run folder holding an ingested warehouse (and its winback.yaml)."""
    run_dir = OUT / f"build-{kind}-{customers}"
    if reuse and (run_dir / "ingested.json").exists():
        return run_dir
    shop, manifest = shop_for(customers)
    print(f"ingesting {customers:,} customers into {kind} (not timed here; see `python -m bench`) ...", flush=True)
    rows = bench_warehouse(kind, shop, manifest, list(ENTITY_ORDER), keep=True, run_dir=run_dir)
    (run_dir / "ingested.json").write_text(json.dumps(rows, indent=2))
    return run_dir


def drop(run_dir: Path) -> None:
    url = yaml.safe_load((run_dir / "winback.yaml").read_text())["warehouse"]
    if url.startswith("postgresql"):
        schema = sa.engine.make_url(url).query["options"].removeprefix("-csearch_path=")
        engine = sa.create_engine(url)
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        engine.dispose()
    shutil.rmtree(run_dir, ignore_errors=True)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    OUT.mkdir(exist_ok=True)
    results = []
    for run in args.runs.split(","):
        kind, customers = run.split(":")
        run_dir = ingested(kind, int(customers), args.reuse)
        measured = run_measured(["-m", "bench.step", str(run_dir / "winback.yaml"), "build", str(BENCH_END)],
                                bench_env(run_dir))
        summary = measured.result
        # The floor in the same run, on the same warehouse: one aggregate pass per large input.
        floor = run_measured(["-m", "bench.floor", str(run_dir / "winback.yaml")], bench_env(run_dir)).result
        slowest = sorted(summary["marts"].items(), key=lambda kv: -kv[1])[:3]
        results.append({"warehouse": kind, "customers": int(customers), "segmented": summary["customers"],
                        "seconds": measured.seconds, "build_seconds": summary["seconds"],
                        "snapshot_seconds": summary.get("snapshot_seconds"),
                        "peak_rss_mb": measured.peak_rss_mb, "marts": summary["marts"],
                        "floor_seconds": floor["seconds"], "floor_passes": floor["passes"],
                        "build_over_floor": round(summary["seconds"] / floor["seconds"], 2)})
        snapshot = f", {summary['snapshot_seconds']:.1f}s snapshot" if "snapshot_seconds" in summary else ""
        print(f"{kind:<10}{int(customers):>10,} customers  {summary['customers']:>10,} segmented  "
              f"{measured.seconds:>7.1f}s wall ({summary['seconds']:.1f}s build{snapshot})  "
              f"{measured.peak_rss_mb:>7,.0f}MB peak  floor {floor['seconds']:.1f}s "
              f"(build / floor {summary['seconds'] / floor['seconds']:.1f})"
              f"  slowest: " + ", ".join(f"{m} {s:.1f}s" for m, s in slowest), flush=True)
        if not args.keep and not args.reuse:
            drop(run_dir)
    (OUT / "build-results.json").write_text(json.dumps(results, indent=2))
    print(f"\nresults: {OUT / 'build-results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
