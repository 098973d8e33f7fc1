"""Ingest benchmark: generate a large sample shop, ingest it into DuckDB and PostgreSQL
entity by entity, each step (extract, validate, load) in its own process as Airflow
runs it, and print wall time, rows per second and peak RSS.

    python -m bench                       # 1M customers (~10M orders, ~54M events), DuckDB
    python -m bench --warehouse duckdb,postgres --customers 100000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import uuid
from datetime import date
from pathlib import Path

import sqlalchemy as sa
import yaml
from winback.sample_shop import SCALES, generate_shop, spec_for
from winback.schema import ENTITY_ORDER

from bench.measure import run_measured

OUT = Path(__file__).resolve().parent / "out"
REPO = OUT.parents[1]
PG_URL = os.environ.get("WINBACK_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
STEPS = ("extract", "validate", "load")
BENCH_END = date(2026, 10, 31)  # fixed: the same shop (and numbers) on every run


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=SCALES["large"].customers)
    parser.add_argument("--warehouse", default="duckdb", help="duckdb, postgres or both (comma-separated)")
    parser.add_argument("--entities", default=",".join(ENTITY_ORDER), help="comma-separated, default all")
    parser.add_argument("--keep", action="store_true", help="keep the warehouses in bench/out afterwards")
    return parser.parse_args(argv)


def shop_for(customers: int) -> tuple[Path, dict]:
    """The large sample shop, generated once per size and reused."""
    spec = spec_for("large", customers=customers, end=BENCH_END)
    folder = OUT / f"shop-{customers}"
    manifest_path = folder / "manifest.json"
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        if manifest["spec"]["customers"] == customers:
            return folder, manifest
    print(f"generating {customers:,} customers into {folder} (once) ...", flush=True)
    began = time.perf_counter()
    manifest = generate_shop(folder, spec)
    print(f"  generated in {time.perf_counter() - began:.0f}s", flush=True)
    return folder, manifest


def write_config(shop: Path, run_dir: Path, warehouse_url: str) -> Path:
    """The example configuration pointed at the benchmark shop and warehouse."""
    document = yaml.safe_load((REPO / "include/config/winback.yaml").read_text(encoding="utf-8"))
    document["warehouse"] = warehouse_url
    document.setdefault("ingest", {})["landing_dir"] = str(run_dir / "landing")
    for source in document["sources"].values():
        source["path"] = str(shop / Path(source["path"]).relative_to("data/shop"))
    path = run_dir / "winback.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def postgres_schema() -> tuple[str, callable]:
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(PG_URL)
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    url = sa.engine.make_url(PG_URL).update_query_dict({"options": f"-csearch_path={schema}"})

    def drop() -> None:
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        engine.dispose()

    return url.render_as_string(hide_password=False), drop


def bench_env(run_dir: Path) -> dict[str, str]:
    # This checkout's plugins, not the editable install's (which may be another worktree).
    env = {**os.environ, "WINBACK_HOME": str(run_dir), "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "plugins")])}
    env.pop("WINBACK_WAREHOUSE_URL", None)
    return env


def bench_warehouse(kind: str, shop: Path, manifest: dict, entities: list[str], keep: bool,
                    run_dir: Path | None = None) -> list[dict]:
    run_dir = run_dir or OUT / f"run-{kind}"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    drop = None
    if kind == "duckdb":
        url = f"duckdb:///{run_dir / 'warehouse.duckdb'}"
    else:
        url, drop = postgres_schema()
    config = write_config(shop, run_dir, url)
    env = bench_env(run_dir)
    rows = []
    try:
        for entity in entities:
            timings, load_id, peaks = {}, None, {}
            for step in STEPS:
                args = ["-m", "bench.step", str(config), entity, step] + ([load_id] if load_id else [])
                measured = run_measured(args, env)
                load_id = measured.result["load_id"]
                timings[step] = measured.seconds
                peaks[step] = measured.peak_rss_mb
                if step == "extract":
                    extracted = measured.result["rows"]
            total = sum(timings.values())
            rows.append({"warehouse": kind, "entity": entity, "rows": extracted, **timings, "total": total,
                         "rows_per_s": extracted / total if total else 0.0, "peak_rss_mb": max(peaks.values()),
                         "peak_step": max(peaks, key=peaks.get)})
            print(format_row(rows[-1]), flush=True)
    finally:
        if drop is not None and not keep:
            drop()
        if not keep:
            shutil.rmtree(run_dir, ignore_errors=True)
    return rows


HEADER = f"{'warehouse':<10}{'entity':<16}{'rows':>12}{'extract s':>11}{'validate s':>11}{'load s':>9}{'total s':>9}{'rows/s':>10}{'peak RSS':>10}  in"


def format_row(r: dict) -> str:
    return (f"{r['warehouse']:<10}{r['entity']:<16}{r['rows']:>12,}{r['extract']:>11.1f}{r['validate']:>11.1f}"
            f"{r['load']:>9.1f}{r['total']:>9.1f}{r['rows_per_s']:>10,.0f}{r['peak_rss_mb']:>8,.0f}MB  {r['peak_step']}")


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    OUT.mkdir(exist_ok=True)
    shop, manifest = shop_for(args.customers)
    entities = [e for e in args.entities.split(",") if e]
    print(f"\nshop: {args.customers:,} customers; rows: "
          + ", ".join(f"{e} {manifest['entities'][e]['rows']:,}" for e in entities))
    print("each step runs in its own process (as an Airflow task); times include process start\n")
    print(HEADER, flush=True)
    results = []
    for kind in args.warehouse.split(","):
        results += bench_warehouse(kind.strip(), shop, manifest, entities, args.keep)
    (OUT / "results.json").write_text(json.dumps(results, indent=2))
    print(f"\nresults: {OUT / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
