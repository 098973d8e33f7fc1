"""The whole path on both warehouses: a live build, a live sync of a call list to CSV
files (the real sync engine) and a dry run of a mailing, purchases in the following
weeks, and a build 40 days later whose campaign_lift measures the call list and calls
the dry-run-only mailing `not_synced`."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import winback.sync.engine
from shop_builder import Shop
from winback import cli
from winback.build.builder import build
from winback.sync.engine import sync

START = date(2026, 5, 4)
LATER = START + timedelta(days=40)


def at(day: date, hours: int = 12) -> datetime:
    return datetime.combine(day, datetime.min.time()) + timedelta(hours=hours)


def test_build_sync_buy_build_measures_the_live_audience_only(write_config, open_warehouse, warehouse_url,
                                                              today_is, tmp_path, monkeypatch, capsys):
    audiences = {"calls": {"channel": "call", "identifiers": ["phone"], "holdout": 0.5},
                 "mails": {"channel": "email", "holdout": 0.5}}
    destinations = {"call_list": {"kind": "csv", "audiences": {"calls": {}}},
                    "mail_list": {"kind": "csv", "audiences": {"mails": {}}}}
    config = write_config({"orders": {"kind": "file", "path": "o/*.csv"}}, warehouse=warehouse_url,
                          segments={"models": {"enabled": False}}, audiences=audiences,
                          destinations=destinations, sync={"out_dir": str(tmp_path / "sync")})
    wh = open_warehouse(config)
    shop = Shop()
    customers = [f"c{i:02d}" for i in range(20)]
    for i, customer in enumerate(customers):
        shop.customer(customer, email=f"{customer}@example.com", email_consent=True,
                      phone=f"+7912000{i:04d}", registered_at=at(START - timedelta(days=200)))
        shop.purchases(customer, [at(START - timedelta(days=150))])
    shop.write(wh, ["customers", "orders", "order_items"])

    today_is(START)
    build(config, START, warehouse=wh)
    monkeypatch.setattr(winback.sync.engine, "_now", lambda: at(START, 14))
    [run] = sync(config, audience="calls", warehouse=wh)
    assert run["status"] == "succeeded"
    sync(config, audience="mails", dry_run=True, warehouse=wh)
    holdout = {r.member_key: r.in_holdout for r in wh.rows(
        "SELECT member_key, in_holdout FROM audience_members WHERE audience = 'calls'")}
    assert set(holdout) == set(customers)

    # The first ten come back on day 10 (inside the window); the others on day 31 (outside).
    late = Shop()
    for i, customer in enumerate(customers):
        late.order(f"back-{customer}", customer, at(START + timedelta(days=10 if i < 10 else 31)), total=250)
    late.write(wh, ["orders"])
    today_is(LATER)
    summary = build(config, LATER, warehouse=wh)

    lift = {r.audience: dict(r._mapping) for r in wh.rows("SELECT * FROM campaign_lift")}
    treated = [c for c in customers if not holdout[c]]
    control = [c for c in customers if holdout[c]]
    calls = lift["calls"]
    assert (calls["treatment_members"], calls["control_members"]) == (len(treated), len(control))
    assert calls["treatment_rate"] == sum(c < "c10" for c in treated) / len(treated)
    assert calls["control_rate"] == sum(c < "c10" for c in control) / len(control)
    assert calls["contact_cost"] == len(treated) * 60.0
    assert calls["verdict"] in ("inconclusive", "does_not_pay", "pays")
    assert lift["mails"]["verdict"] == "not_synced"
    assert summary["measurement"]["verdicts"] == {calls["verdict"]: 1, "not_synced": 1}
    cohorts = {(r.cohort_date, r.complete) for r in wh.rows(
        "SELECT DISTINCT cohort_date, complete FROM campaign_outcomes WHERE audience = 'calls'")}
    assert (START, True) in cohorts and all(day == START for day, _ in cohorts)

    # The command line says it too (a rerun of the day: the same figures).
    wh.dispose()  # DuckDB: the command opens the file itself
    capsys.readouterr()
    assert cli.main(["--config", str(config.path), "build"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("campaign_lift: "))
    assert sorted(line.removeprefix("campaign_lift: ").split(", ")) == sorted([f"1 {calls['verdict']}", "1 not_synced"])
