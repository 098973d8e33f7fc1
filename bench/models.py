"""Customer-base models benchmark: per-customer BTYD summary + BG/NBD fit, ours (DuckDB SQL
+ winback.build.models on grouped rows) against lifetimes (pandas summary + BetaGeoFitter), on
the same synthetic orders, each side in its own process; prints times, peak RSS, the
fitted parameters of both and the speed ratio.

    python -m bench.models --orders 10000000 --customers 300000

The orders are drawn from a BG/NBD process (plus extra same-day orders) and written once
to bench/out/model-orders-<N>.parquet. lifetimes runs in bench/out/venv-lifetimes, made
on first use (delete it to rebuild): lifetimes 0.11.3 imports pkg_resources, hence
setuptools<82, and predates pandas 3, hence pandas 2.2 (the two calls timed here also
ran on pandas 3.1 when checked).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bench.measure import run_measured

OUT = Path(__file__).resolve().parent / "out"
AS_OF = "2026-10-31"  # orders stop the day before; T = AS_OF - first purchase day
WINDOW_DAYS = 3 * 365
SEED = 20261031
LIFETIMES_VENV = OUT / "venv-lifetimes"
LIFETIMES_PACKAGES = ["lifetimes==0.11.3", "setuptools<82", "pandas==2.2.3", "numpy==2.1.3", "scipy==1.17.1",
                      "pyarrow==26.0.1"]
# The generating process, in days: about 4/5 of the orders come from it, the rest are
# second orders on a day that already has one (they change spend, not the BTYD summary).
TRUE_BGNBD = {"r": 1.0, "alpha": 9.0, "a": 0.6, "b": 12.0}
SPEND = {"p": 3.0, "q": 4.0, "v": 100.0}  # Gamma-Gamma, per order


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.models", description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=10_000_000)
    parser.add_argument("--customers", type=int, default=300_000)
    return parser.parse_args(argv)


def generate_orders(orders: int, customers: int) -> Path:
    """Exactly `orders` orders of `customers` customers, the same for the same sizes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = OUT / f"model-orders-{orders}.parquet"
    if path.exists() and (pq.read_schema(path).metadata or {}).get(b"customers") == str(customers).encode():
        return path
    if orders < customers:
        raise SystemExit("--orders must be at least --customers (everyone has a first order)")

    print(f"generating {orders:,} orders of {customers:,} customers into {path} (once) ...", flush=True)
    began = time.perf_counter()
    rng = np.random.default_rng(SEED)
    c = customers
    as_of = np.datetime64(AS_OF, "us")
    window_start = as_of - np.timedelta64(WINDOW_DAYS, "D")
    first = rng.uniform(0, WINDOW_DAYS - 1, c)  # days after window_start
    T = WINDOW_DAYS - first
    lam = rng.gamma(TRUE_BGNBD["r"], 1 / TRUE_BGNBD["alpha"], c)
    p = np.maximum(rng.beta(TRUE_BGNBD["a"], TRUE_BGNBD["b"], c), 1e-12)
    m = rng.poisson(lam * T)
    x = np.minimum(rng.geometric(p), m)
    # The first x of the m uniform arrival times in (0, T], per customer.
    owner = np.repeat(np.arange(c), m)
    arrival = rng.uniform(0, 1, owner.size) * T[owner]
    order = np.lexsort((arrival, owner))
    owner, arrival = owner[order], arrival[order]
    rank = np.arange(owner.size) - np.repeat(np.cumsum(m) - m, m)
    keep = rank < x[owner]
    owner, offset = owner[keep], first[owner[keep]] + arrival[keep]
    repeats = owner.size
    if c + repeats > orders:  # too many: drop repeat orders at random
        chosen = np.sort(rng.choice(repeats, orders - c, replace=False))
        owner, offset = owner[chosen], offset[chosen]
    owner = np.concatenate([np.arange(c), owner])
    offset = np.concatenate([first, offset])
    extra = orders - owner.size
    if extra > 0:  # second orders on a day that already has one
        again = rng.integers(0, owner.size, extra)
        owner = np.concatenate([owner, owner[again]])
        offset = np.concatenate([offset, np.floor(offset[again]) + rng.uniform(0, 1, extra)])
    offset = np.minimum(offset, WINDOW_DAYS - 1e-6)
    nu = rng.gamma(SPEND["q"], 1 / SPEND["v"], c)
    amount = np.maximum(np.round(rng.gamma(SPEND["p"], 1 / nu[owner]), 2), 0.01)
    when = window_start + (offset * 86_400e6).astype("timedelta64[us]")
    by_time = np.argsort(when, kind="stable")
    table = pa.table({"customer_id": owner[by_time].astype(np.int64), "date": when[by_time],
                      "amount": amount[by_time]}, metadata={"customers": str(customers)})
    OUT.mkdir(exist_ok=True)
    partial = path.with_suffix(".partial")
    pq.write_table(table, partial)
    partial.rename(path)
    print(f"  {max(0, extra):,} extra same-day orders; generated in {time.perf_counter() - began:.0f}s",
          flush=True)
    return path


SUMMARY_SQL = """
CREATE TEMP TABLE per_customer AS
WITH days AS (
    SELECT customer_id, CAST(date AS DATE) AS day, SUM(amount) AS total
    FROM read_parquet($path) WHERE date < CAST($as_of AS TIMESTAMP)
    GROUP BY ALL
)
SELECT customer_id,
       COUNT(*) - 1 AS x,
       date_diff('day', MIN(day), MAX(day)) AS t_x,
       date_diff('day', MIN(day), CAST($as_of AS DATE)) AS T,
       -- mean daily total of the repeat purchase days (the first day left out, as lifetimes does)
       COALESCE((SUM(total) - arg_min(total, day)) / NULLIF(COUNT(*) - 1, 0), 0) AS monetary
FROM days GROUP BY customer_id
"""


def run_ours(path: str, as_of: str) -> dict:
    """Our side, in its own process: summary in DuckDB, then the grouped fits."""
    import duckdb
    from winback.build.models import fit_bgnbd, fit_gamma_gamma

    began = time.perf_counter()
    con = duckdb.connect()
    con.execute(SUMMARY_SQL, {"path": path, "as_of": as_of})
    groups = con.execute("SELECT x, t_x, T, COUNT(*) AS n FROM per_customer GROUP BY ALL").fetchnumpy()
    spend = con.execute("SELECT x, ROUND(monetary, 2) AS m, COUNT(*) AS n FROM per_customer WHERE x > 0 "
                        "GROUP BY ALL").fetchnumpy()
    summary = time.perf_counter() - began
    began = time.perf_counter()
    bgnbd = fit_bgnbd(groups["x"], groups["t_x"], groups["T"], groups["n"])
    fit = time.perf_counter() - began
    began = time.perf_counter()
    gg = fit_gamma_gamma(spend["x"], spend["m"], spend["n"])
    gg_fit = time.perf_counter() - began
    return {"summary_s": summary, "fit_s": fit, "gg_fit_s": gg_fit, "groups": len(groups["x"]),
            "gg_groups": len(spend["x"]), "params": bgnbd.as_dict(), "gg_params": gg.as_dict()}


def lifetimes_python() -> Path:
    python = LIFETIMES_VENV / "bin" / "python"
    if not python.exists():
        print(f"installing lifetimes into {LIFETIMES_VENV} (once) ...", flush=True)
        subprocess.run(["python3.11", "-m", "venv", str(LIFETIMES_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *LIFETIMES_PACKAGES], check=True)
    return python


def main(argv: list[str]) -> int:
    if argv[:1] == ["ours"]:
        print(json.dumps(run_ours(*argv[1:3])))
        return 0
    args = parse_args(argv)
    path = generate_orders(args.orders, args.customers)
    lifetimes_python()
    print(f"\n{args.orders:,} orders of {args.customers:,} customers; each side in its own process "
          "(wall and peak RSS include interpreter start and imports)\n", flush=True)
    ours = run_measured(["-m", "bench.models", "ours", str(path), AS_OF])
    # lifetimes_run.py re-executes itself (same process) in the lifetimes venv.
    theirs = run_measured([str(Path(__file__).with_name("lifetimes_run.py")), str(path), AS_OF])
    print(report(ours, theirs))
    (OUT / f"models-{args.orders}.json").write_text(json.dumps(
        {"ours": {**ours.result, "wall_s": ours.seconds, "peak_rss_mb": ours.peak_rss_mb},
         "lifetimes": {**theirs.result, "wall_s": theirs.seconds, "peak_rss_mb": theirs.peak_rss_mb}}, indent=2))
    return 0


def report(ours, theirs) -> str:
    o, t = ours.result, theirs.result
    o_total, t_total = o["summary_s"] + o["fit_s"], t["summary_s"] + t["fit_s"]
    lines = [f"{'':<22}{'ours':>12}{'lifetimes':>12}{'rel diff':>10}",
             f"{'read parquet s':<22}{'(in SQL)':>12}{t['read_s']:>12.2f}",
             f"{'summary s':<22}{o['summary_s']:>12.2f}{t['summary_s']:>12.2f}",
             f"{'BG/NBD fit s':<22}{o['fit_s']:>12.2f}{t['fit_s']:>12.2f}",
             f"{'summary + fit s':<22}{o_total:>12.2f}{t_total:>12.2f}",
             f"{'process wall s':<22}{ours.seconds:>12.2f}{theirs.seconds:>12.2f}",
             f"{'peak RSS MB':<22}{ours.peak_rss_mb:>12,.0f}{theirs.peak_rss_mb:>12,.0f}",
             f"{'rows fitted':<22}{o['groups']:>12,}{t['customers']:>12,}"]
    for name in ("r", "alpha", "a", "b"):
        mine, other = o["params"][name], t["params"][name]
        lines.append(f"{name:<22}{mine:>12.5f}{other:>12.5f}{abs(mine - other) / abs(other):>10.1e}")
    lines.append(f"{'log-likelihood':<22}{o['params']['log_likelihood']:>12.1f}")
    lines.append(f"{'Gamma-Gamma fit s':<22}{o['gg_fit_s']:>12.2f}{t.get('gg_fit_s', float('nan')):>12.2f}")
    for name in ("p", "q", "v"):
        mine, other = o["gg_params"][name], t["gg_params"][name]
        lines.append(f"{name:<22}{mine:>12.4f}{other:>12.4f}{abs(mine - other) / abs(other):>10.1e}")
    lines.append(f"\nspeed ratio lifetimes / ours (summary + BG/NBD fit): {t_total / o_total:.1f}x; "
                 f"process wall: {theirs.seconds / ours.seconds:.1f}x")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
