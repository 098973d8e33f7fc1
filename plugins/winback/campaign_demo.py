"""`python -m winback demo --campaign`: live through one call campaign, on a simulated clock,
and measure it against its holdout.

A lift needs a campaign that really happened, so this demo makes one happen in the past:
  1. it writes the sample shop with its history ending `CAMPAIGN_DAYS_AGO` days ago (day P);
  2. with the clock of this process set to day P (time-machine; nothing else on the machine
     sees it), it ingests the shop, builds the marts and syncs the call lists live to local
     CSV files (the only destination: nothing leaves the machine);
  3. it writes the following weeks of the shop for the members of the call lists, with a
     KNOWN effect: a called member comes back within the window with probability
     TRUE_RATES["treatment"], a held-out one with TRUE_RATES["control"];
  4. with the clock at P + `FOLLOW_UP_DAYS` it ingests those weeks and builds again, so
     the cohort of day P is complete;
  5. it prints the lift table with the true effect beside it, and writes the report page.

The product never does this: it takes today from the system clock or an explicit as-of.
The simulation lives in this module only (docs/measurement.md, "The campaign demo").
"""

from __future__ import annotations

import csv
import os
import shutil
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from winback.config import Config, load_config
from winback.demo import format_lift, lift_rows
from winback.warehouse import Warehouse

CAMPAIGN_DAYS_AGO = 45
FOLLOW_UP_DAYS = 40  # longer than measurement.window_days (30): the cohort completes
# The campaign: every lapsed customer with a phone is called (the default call list,
# lapsed_high_value_calls, has a few dozen members in a 20k shop: too few to measure).
CAMPAIGN_AUDIENCES = ("lapsed_calls",)
CAMPAIGN_AUDIENCE = {"where": {"lifecycle_stage": ["lapsed"]}, "channel": "call", "identifiers": ["phone"],
                     "description": "the campaign demo's call list: every lapsed customer with a phone"}
# The simulated truth: the share of members who buy again within 30 days of entering the
# call list. The articles report ~15 % call-to-sale conversion; lapsed customers left
# alone rarely come back on their own.
TRUE_RATES = {"control": 0.05, "treatment": 0.20}
# Half the call list is held out, so a 20k-customer shop has a control group large
# enough for an interval of a few points (a real shop keeps 10 % and waits longer).
DEMO_HOLDOUT = 0.5
# What the phone team hears: most who come back agreed on the call (the articles: ~60 %
# of called lapsed customers agree to return).
CALL_OUTCOMES = ("agreed_to_return", "reached", "refused", "no_answer", "wrong_number")
CALL_OUTCOME_P = {"bought": (0.8, 0.1, 0.0, 0.1, 0.0), "not_bought": (0.55, 0.1, 0.15, 0.15, 0.05)}
CALL_REASONS = ("price", "delivery", "quality", "service", "assortment", "forgot", "moved", "other")
CAMPAIGN_DIR = Path("data/campaign")
SEED = 2026


def run_campaign_demo(base: Config, customers: int | None = None, today: date | None = None) -> dict[str, Any]:
    """Run the simulation under `base`'s home (data/campaign/, replaced); returns what it
    printed: the lift rows, the truth and the report page's path."""
    import time_machine

    from winback.build import build
    from winback.ingest import ingest
    from winback.report import write_report
    from winback.sample_shop import generate_shop, spec_for
    from winback.sync import sync

    today = today or datetime.now(UTC).date()
    day_p = today - timedelta(days=CAMPAIGN_DAYS_AGO)
    follow_up = day_p + timedelta(days=FOLLOW_UP_DAYS)
    home = base.resolve(CAMPAIGN_DIR)
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    print(f"generating a shop whose history ends on {day_p} (the campaign day) in {home / 'shop'} ...", flush=True)
    generate_shop(home / "shop", spec_for("demo", end=day_p, customers=customers))
    _arrived(home / "shop", _moment(day_p, hours=2))
    config = _campaign_config(base, home)

    with time_machine.travel(_moment(day_p, hours=18), tick=True):
        print(f"[clock: {day_p}] ingest, build, live sync of the call lists to CSV files ...", flush=True)
        ingest(config)
        build(config)
        runs = sync(config)
        failed = [r for r in runs if r["status"] != "succeeded"]
        if failed:
            raise RuntimeError(f"the campaign sync failed: {failed[0]['error']}")
        members = _campaign_members(config)

    written, drawn = _write_following_weeks(home / "shop", members, day_p, config.measurement.window_days)
    _arrived(home / "shop", _moment(follow_up, hours=2), only_newer_than=_moment(day_p, hours=3))

    with time_machine.travel(_moment(follow_up, hours=18), tick=True):
        print(f"[clock: {follow_up}] ingest the following weeks ({written} orders), build again ...", flush=True)
        ingest(config)
        build(config)
        page = write_report(config)["path"]

    wh = Warehouse(config.warehouse_url)
    try:
        lift = lift_rows(wh)
    finally:
        wh.dispose()
    print(format_lift(lift, TRUE_RATES, CAMPAIGN_AUDIENCES))
    print(f"Simulated truth: treated members came back at {TRUE_RATES['treatment']:.0%}, held-out ones at "
          f"{TRUE_RATES['control']:.0%} (this draw: {drawn['treatment']:.1%} and {drawn['control']:.1%}).")
    print(f"Report page: {page}")
    return {"lift": lift, "truth": TRUE_RATES, "drawn": drawn, "report": page, "config": config,
            "campaign_day": day_p}


def _moment(day: date, hours: int) -> datetime:
    return datetime.combine(day, time(hours), tzinfo=UTC)


def _arrived(folder: Path, moment: datetime, only_newer_than: datetime | None = None) -> None:
    """Date the shop's files as if they had arrived at `moment` (the file source leaves
    files modified after its window end for a later run)."""
    stamp = moment.timestamp()
    for path in folder.rglob("*"):
        if path.is_file() and (only_newer_than is None or path.stat().st_mtime > only_newer_than.timestamp()):
            os.utime(path, (stamp, stamp))


def _campaign_config(base: Config, home: Path) -> Config:
    """The demo configuration with its paths under data/campaign/, the campaign's call
    list (half of it held out) as the only audience synced, live, to local CSV files."""
    document = yaml.safe_load(Path(base.path).read_text(encoding="utf-8")) if base.path else {}
    # Absolute paths: the demo's files stay under data/campaign/ whatever `home` or
    # WINBACK_HOME say.
    document["warehouse"] = f"duckdb:///{home / 'warehouse.duckdb'}"
    for source in document.get("sources", {}).values():
        if "path" in source:
            source["path"] = str(home / str(source["path"]).replace("data/shop/", "shop/"))
    document["build"] = {**document.get("build", {}), "snapshot": None, "report_dir": str(home / "report")}
    document["sync"] = {**document.get("sync", {}), "dry_run": False, "out_dir": str(home / "sync")}
    document["destinations"] = {"call_center": {"kind": "csv", "audiences": {a: {} for a in CAMPAIGN_AUDIENCES}}}
    audiences = {name: spec.model_dump(by_alias=True, exclude_none=True) for name, spec in base.audiences.items()}
    for name in CAMPAIGN_AUDIENCES:
        audiences[name] = {**CAMPAIGN_AUDIENCE, "holdout": DEMO_HOLDOUT}
    document["audiences"] = audiences
    path = home / "winback.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return load_config(path)


def _campaign_members(config: Config) -> list[tuple[str, bool]]:
    wh = Warehouse(config.warehouse_url)
    try:
        names = ", ".join(f"'{a}'" for a in CAMPAIGN_AUDIENCES)
        return [(r.customer_id, bool(r.in_holdout)) for r in wh.rows(
            f"SELECT DISTINCT customer_id, in_holdout FROM audience_members "
            f"WHERE audience IN ({names}) AND customer_id IS NOT NULL ORDER BY customer_id")]
    finally:
        wh.dispose()


def _write_following_weeks(shop: Path, members: list[tuple[str, bool]], day_p: date, window_days: int
                           ) -> tuple[int, dict[str, float]]:
    """The weeks after day P for the campaign's members, in the shop's own export
    formats: the phone team's calls to the treated members (contacts/), and the orders
    drawn with the true rates (orders/, order_items/). Returns the orders written and
    the share of each group that this draw made buy."""
    rng = np.random.default_rng(SEED)
    holdout = np.array([h for _, h in members], dtype=bool)
    buys = rng.random(len(members)) < np.where(holdout, TRUE_RATES["control"], TRUE_RATES["treatment"])
    calls = []
    for (customer, held_out), bought in zip(members, buys, strict=True):
        if held_out:
            continue  # the holdout is never called: that is what makes it a control group
        # Those who come back mostly said so on the phone; the rest mostly did not.
        outcome = rng.choice(CALL_OUTCOMES, p=CALL_OUTCOME_P["bought" if bought else "not_bought"])
        reason = rng.choice(CALL_REASONS) if outcome in ("reached", "refused", "agreed_to_return") else ""
        called = _moment(day_p + timedelta(days=int(rng.integers(1, 4))), hours=int(rng.integers(10, 19)))
        calls.append([customer, "call", f"{called:%Y-%m-%d %H:%M:%S}", outcome, reason, ""])
    _write_csv(shop / "contacts" / "calls_campaign_000.csv", calls)

    buyers = [customer for (customer, _), bought in zip(members, buys, strict=True) if bought]
    # After the calls (day 4 on), at most window_days after day P: inside every window.
    days = rng.integers(4, window_days + 1, size=len(buyers))
    seconds = rng.integers(9 * 3600, 21 * 3600, size=len(buyers))
    amounts = np.round(rng.lognormal(np.log(3000), 0.5, size=len(buyers)), 2)
    orders, items = [], []
    for n, (customer, day, second, amount) in enumerate(zip(buyers, days, seconds, amounts, strict=True)):
        created = datetime.combine(day_p + timedelta(days=int(day)), time()) + timedelta(seconds=int(second))
        order_id = f"OCAMPAIGN{n:06d}"
        stamp = f"{created:%Y-%m-%d %H:%M:%S}"
        orders.append({"id": order_id, "client_id": customer, "date": stamp, "sum": f"{amount:.2f}",
                       "status": "paid", "currency": "RUB", "updated": stamp})
        items.append({"order_id": order_id, "sku": "COF-0001", "category": "coffee", "qty": 1, "price": float(amount)})
    _write_csv(shop / "orders" / "orders_campaign_000.csv", orders)
    schema = pq.read_schema(next((shop / "order_items").glob("*.parquet")))
    pq.write_table(pa.Table.from_pylist(items, schema=schema.remove_metadata()),
                   shop / "order_items" / "order_items_campaign_000.parquet")
    drawn = {"treatment": float(buys[~holdout].mean()) if (~holdout).any() else 0.0,
             "control": float(buys[holdout].mean()) if holdout.any() else 0.0}
    return len(orders), drawn


def _write_csv(path: Path, rows: list) -> None:
    """Rows (lists in header order, or dicts by column) under the header of the folder's
    existing files, so the configured source reads them like the rest."""
    header = next(csv.reader(next(path.parent.glob("*.csv")).open(encoding="utf-8")))
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows([row.get(column, "") for column in header] if isinstance(row, dict) else row
                         for row in rows)
