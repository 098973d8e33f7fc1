"""`winback check` benchmark: the whole check of a sample shop, sampled and in full, each
run in its own process as a user runs it (Great Expectations' import included), with
wall time, peak RSS and the rows read.

    python -m bench.check                                  # 20k customers; --sample 1000, 20000, all
    python -m bench.check --customers 100000 --samples 5000,all
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from bench.__main__ import bench_env, shop_for, write_config
from bench.measure import run_measured


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.check", description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--samples", default="1000,20000,all", help="comma-separated row limits; all = no --sample")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    shop, manifest = shop_for(args.customers)
    rows = sum(e["rows"] for e in manifest["entities"].values())
    print(f"check of {args.customers:,} customers' shop ({rows:,} rows in {len(manifest['entities'])} entities)")
    print(f"{'--sample':>10} {'seconds':>8} {'peak RSS':>9} {'rows read':>11}  would load")
    with tempfile.TemporaryDirectory(prefix="bench-check-") as folder:
        run_dir = Path(folder)
        config = write_config(shop, run_dir, f"duckdb:///{run_dir / 'unused.duckdb'}")
        for sample in args.samples.split(","):
            extra = [] if sample == "all" else ["--sample", sample]
            measured = run_measured(["-m", "winback", "--config", str(config), "check", "--json", *extra],
                                    env=bench_env(run_dir), last_json=False)
            found = measured.result
            read = sum(e["rows"] for e in found["entities"])
            print(f"{sample:>10} {measured.seconds:>8.1f} {measured.peak_rss_mb:>6.0f} MB {read:>11,}  {found['ok']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
