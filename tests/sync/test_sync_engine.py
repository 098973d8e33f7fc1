"""The sync engine's guarantees, on DuckDB and on PostgreSQL, against the Meta emulator
(a local server keeping its own membership): a killed sync resumes with nothing lost
and at most one unit sent twice; the warehouse is free while a platform keeps a
destination waiting; a 1 % change sends only that change; a dry run sends and changes
nothing; rejected rows are retried up to the configured attempts; consent, suppression
and holdout decide who leaves (ads and mailing platforms); no personal data reaches the
logs."""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys

import duckdb
from destinations.contract import AUDIENCE, write_config
from destinations.test_meta import META, sha
from shop_builder import Shop, days_before
from sync_support import (
    normalized_email,
    normalized_phone,
    person,
    table,
    write_members,
)
from winback.build.builder import build
from winback.config import load_config
from winback.emulators.mailchimp import DEFAULT_LIST, DEFAULT_SEGMENT, MailchimpEmulator
from winback.emulators.meta import MetaEmulator
from winback.sync.engine import sync
from winback.warehouse import Warehouse

UNIT = 10_000  # Meta's rows per call: the engine's confirmed unit for it


def expected(people) -> set[str]:
    return {sha(normalized_email(i)) for i in people}


def test_a_killed_sync_resumes_with_nothing_lost(tmp_path, warehouse_url, monkeypatch):
    monkeypatch.setenv("WINBACK_TEST_DEST_TOKEN", "test-token")
    monkeypatch.setenv("WINBACK_HOME", str(tmp_path))
    n = 5 * UNIT
    with MetaEmulator(hold_after=2) as emu:
        config = write_config(tmp_path, META, emu.base_url, warehouse_url)
        warehouse = Warehouse(config.warehouse_url)
        write_members(warehouse, AUDIENCE, "ads", [person(i) for i in range(n)])
        warehouse.dispose()  # DuckDB: one process at a time
        worker = subprocess.Popen([sys.executable, "-m", "winback", "--config", str(config.path), "sync"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            assert emu.holding.wait(120), "the third unit never arrived"
        finally:
            worker.kill()
            worker.wait()
        emu.hold_after = 0
        emu.release.set()

        warehouse = Warehouse(config.warehouse_url)
        confirmed = warehouse.scalar("SELECT COUNT(*) FROM sync_state")
        [killed] = table(warehouse, "sync_runs")
        [resumed] = sync(config, warehouse=warehouse)
        state = warehouse.scalar("SELECT COUNT(*) FROM sync_state")
        warehouse.dispose()

    assert confirmed == 2 * UNIT  # the third unit reached the platform, unconfirmed
    assert killed["status"] == "running" and killed["finished_at"] is None  # visibly never finished
    assert resumed["status"] == "succeeded" and resumed["sent"] == n - 2 * UNIT
    assert emu.hashes("555") == expected(range(n)) and state == n
    twice = [h for h, times in emu.received.items() if times > 1]
    assert len(twice) == UNIT and max(emu.received.values()) == 2  # exactly the unconfirmed unit


def test_the_warehouse_is_free_while_a_destination_waits_on_its_platform(tmp_path, monkeypatch):
    """DuckDB admits one writing process per file. While the sync's second unit waits for
    the platform's answer (the emulator holds it until the test sets its Event), this
    process opens the warehouse for writing, as an ingest would, and finds the first unit
    committed. A sync that kept its connection across the wait made DuckDB refuse it
    ("Could not set lock on file"), and an ingest or build failed after 120 s."""
    monkeypatch.setenv("WINBACK_TEST_DEST_TOKEN", "test-token")
    monkeypatch.setenv("WINBACK_HOME", str(tmp_path))
    path = tmp_path / "w.duckdb"
    with MetaEmulator(hold_after=1) as emu:
        config = write_config(tmp_path, META, emu.base_url, f"duckdb:///{path}")
        warehouse = Warehouse(config.warehouse_url)
        write_members(warehouse, AUDIENCE, "ads", [person(i) for i in range(UNIT + 10)])
        warehouse.dispose()
        worker = subprocess.Popen([sys.executable, "-m", "winback", "--config", str(config.path), "sync"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            assert emu.holding.wait(120), "the second unit never arrived"
            other = duckdb.connect(str(path))  # raises at once if the sync held the file
            other.execute("CREATE TABLE written_meanwhile AS SELECT 1 AS x")
            committed = other.execute("SELECT COUNT(*) FROM sync_state").fetchone()[0]
            other.close()
            plan = tmp_path / "sync" / "plans" / f"{AUDIENCE}__dest"  # spilled while the sync runs
            plan_modes = {stat.S_IMODE(p.stat().st_mode) for p in [plan, *plan.iterdir()]}
        finally:
            emu.release.set()
            _, errors = worker.communicate(timeout=300)
        warehouse = Warehouse(config.warehouse_url)
        [run] = table(warehouse, "sync_runs")
        synced = warehouse.scalar("SELECT COUNT(*) FROM sync_state")
        written = warehouse.scalar("SELECT COUNT(*) FROM written_meanwhile")
        warehouse.dispose()

    assert worker.returncode == 0, errors
    assert committed == UNIT  # the first unit was confirmed before the second went out
    assert plan_modes == {0o700, 0o600} and not plan.exists()  # owner-only, gone once done
    assert run["status"] == "succeeded" and synced == UNIT + 10 and written == 1
    assert emu.hashes("555") == expected(range(UNIT + 10))


def test_a_one_percent_change_sends_only_the_change(tmp_path, warehouse_url, monkeypatch):
    monkeypatch.setenv("WINBACK_TEST_DEST_TOKEN", "test-token")
    n = 20_000
    with MetaEmulator() as emu:
        config = write_config(tmp_path, META, emu.base_url, warehouse_url)
        warehouse = Warehouse(config.warehouse_url)
        write_members(warehouse, AUDIENCE, "ads", [person(i) for i in range(n)])
        sync(config, warehouse=warehouse)
        before = dict(emu.rows_by_method)
        # 1 %: 100 leave, 100 join, 100 change their address; attributes Meta does not keep change too.
        changed = [person(i, email=f"new{i}@example.org") for i in range(100, 200)]
        same_ids = [person(i, first_name="Renamed", value_tier="low") for i in range(200, 300)]
        rest = [person(i) for i in range(300, n)] + [person(i) for i in range(n, n + 100)]
        write_members(warehouse, AUDIENCE, "ads", changed + same_ids + rest)
        [second] = sync(config, warehouse=warehouse)
        [third] = sync(config, warehouse=warehouse)
        warehouse.dispose()

    assert (second["planned_adds"], second["planned_updates"], second["planned_removes"]) == (100, 100, 100)
    assert emu.rows_by_method["POST"] - before["POST"] == 200  # the joiners and the new addresses
    assert emu.rows_by_method["DELETE"] - before.get("DELETE", 0) == 200  # the leavers and the old addresses
    assert second["sent"] == 200 and second["removed"] == 200  # 100 members, 100 old addresses
    assert emu.hashes("555") == expected(range(200, n + 100)) | {sha(f"new{i}@example.org") for i in range(100, 200)}
    assert (third["planned_adds"], third["planned_updates"], third["planned_removes"], third["requests"]) == (0, 0, 0, 0)


def test_a_dry_run_sends_nothing_and_changes_nothing(tmp_path, warehouse_url, monkeypatch):
    monkeypatch.setenv("WINBACK_TEST_DEST_TOKEN", "secret-token-123")
    with MetaEmulator(token="secret-token-123") as emu:
        config = write_config(tmp_path, META, emu.base_url, warehouse_url)
        warehouse = Warehouse(config.warehouse_url)
        write_members(warehouse, AUDIENCE, "ads", [person(i) for i in range(50)])
        sync(config, warehouse=warehouse)
        write_members(warehouse, AUDIENCE, "ads", [person(i) for i in range(10, 70)])
        tables = {t: table(warehouse, t) for t in ("sync_state", "sync_row_errors", "sync_runs")}
        calls = len(emu.log)
        [dry] = sync(config, warehouse=warehouse, dry_run=True)
        after = {t: table(warehouse, t) for t in tables}
        warehouse.dispose()

    assert len(emu.log) == calls and after == tables
    assert dry["dry_run"] and (dry["planned_adds"], dry["planned_removes"]) == (20, 10)
    written = (tmp_path / "sync/dry-run" / f"{AUDIENCE}__dest" / "requests.jsonl").read_text()
    assert "secret-token-123" not in written
    requests = [json.loads(line) for line in written.splitlines()]
    payloads = [json.loads((r.get("data") or r["params"])["payload"]) for r in requests]  # form field / query
    assert [(r["method"], len(p["data"])) for r, p in zip(requests, payloads)] == [("POST", 20), ("DELETE", 10)]
    sent = {row[0] for row in payloads[0]["data"]}
    assert sent == expected(range(50, 70))  # hashed exactly as a real run would send them


def test_rejected_rows_are_retried_up_to_the_configured_attempts(tmp_path, warehouse_url, monkeypatch):
    monkeypatch.setenv("WINBACK_TEST_DEST_TOKEN", "test-token")
    with MetaEmulator(rejected_hashes=expected(range(3))) as emu:
        config = write_config(tmp_path, META, emu.base_url, warehouse_url, max_row_attempts=2)
        warehouse = Warehouse(config.warehouse_url)
        write_members(warehouse, AUDIENCE, "ads", [person(i) for i in range(10)])
        runs = [sync(config, warehouse=warehouse)[0] for _ in range(3)]
        errors = table(warehouse, "sync_row_errors")
        emu.rejected_hashes.clear()
        write_members(warehouse, AUDIENCE, "ads", [person(i, first_name="Changed") if i == 0 else person(i)
                                                   for i in range(10)])
        write_members(warehouse, AUDIENCE, "ads", [person(i, email=f"fixed{i}@example.org") if i == 0 else person(i)
                                                   for i in range(10)])
        [fixed] = sync(config, warehouse=warehouse)
        left = table(warehouse, "sync_row_errors")
        warehouse.dispose()

    assert [r["rejected"] for r in runs] == [3, 3, 0]  # two attempts, then given up
    assert {(e["member_key"], e["attempts"]) for e in errors} == {(f"c{i:07d}", 2) for i in range(3)}
    assert all("Meta: invalid entry" in e["reason"] for e in errors)
    assert fixed["sent"] == 1 and fixed["accepted"] == 1  # changed data is tried again
    assert {e["member_key"] for e in left} == {"c0000001", "c0000002"}
    assert sha("fixed0@example.org") in emu.hashes("555")


AUDIENCES = {"lapsed_ads": {"where": {"lifecycle_stage": ["lapsed"]}, "channel": "ads",
                            "identifiers": ["email"], "holdout": 0.3}}
FIXED_CYCLE = {"churn": {"categories": {"general": {"at_risk_days": 60, "churn_days": 120}}},
               "models": {"enabled": False}}


def test_only_consenting_non_holdout_members_reach_the_platform(tmp_path, warehouse_url, monkeypatch, today_is):
    today_is(days_before(0).date())  # builds as of that day are live ones
    monkeypatch.setenv("WINBACK_HOME", str(tmp_path))
    monkeypatch.setenv("WINBACK_TEST_DEST_TOKEN", "test-token")
    with MetaEmulator() as emu:
        document = {"warehouse": warehouse_url, "timezone": "UTC", "segments": FIXED_CYCLE, "audiences": AUDIENCES,
                    "sources": {"orders": {"kind": "file", "path": "orders/*.csv"}},
                    "destinations": {"meta": {"kind": "meta_custom_audiences", "env_prefix": "WINBACK_TEST_DEST",
                                              "base_url": emu.base_url,
                                              "audiences": {"lapsed_ads": {"audience_id": "555"}}}}}
        (tmp_path / "w.yaml").write_text(json.dumps(document))
        config = load_config(tmp_path / "w.yaml")
        warehouse = Warehouse(config.warehouse_url)
        shop = Shop()
        for i in range(200):
            shop.customer(f"k{i:03d}", email=f"K{i}@Example.com", ads_consent=i % 4 != 0)
            shop.purchases(f"k{i:03d}", map(days_before, (300, 150)))
        shop.write(warehouse)
        build(config, days_before(0).date(), warehouse=warehouse)
        sync(config, warehouse=warehouse)
        members = table(warehouse, "audience_members")
        held_first = emu.hashes("555")

        # Ten consenting customers withdraw their ads consent: gone after the next build and sync.
        warehouse.execute("UPDATE customers SET ads_consent = FALSE WHERE customer_id IN "
                          f"({', '.join(repr(f'k{i:03d}') for i in range(1, 11))})")
        build(config, days_before(0).date(), warehouse=warehouse)
        sync(config, warehouse=warehouse)
        held_after = emu.hashes("555")
        warehouse.dispose()

    consenting = {f"k{i:03d}" for i in range(200) if i % 4 != 0}
    holdout = {m["customer_id"] for m in members if m["in_holdout"]}
    assert {m["customer_id"] for m in members} == consenting and 0.2 < len(holdout) / len(consenting) < 0.4
    sent = consenting - holdout
    assert held_first == {sha(f"k{int(c[1:])}@example.com") for c in sent}
    withdrawn = {f"k{i:03d}" for i in range(1, 11)}
    assert held_after == {sha(f"k{int(c[1:])}@example.com") for c in sent - withdrawn}


def test_no_unsubscribed_or_unconsenting_address_reaches_a_mailing_platform(tmp_path, warehouse_url, monkeypatch, today_is):
    today_is(days_before(0).date())
    monkeypatch.setenv("WINBACK_HOME", str(tmp_path))
    monkeypatch.setenv("WINBACK_TEST_DEST_TOKEN", "key-us21")
    people = {
        "m1": {"email_consent": True},
        "m2": {"email_consent": False},  # never agreed
        "m3": {"email_consent": True, "unsubscribed_at": days_before(20)},  # unsubscribed in the shop
        "m4": {"email_consent": True},  # unsubscribed through the mailing platform (below)
        "m5": {"email_consent": True},  # ignored five campaigns in a row: archived, out of mailings
        "m6": {"email_consent": True},  # unsubscribes between two syncs
    }
    shop = Shop()
    for customer, columns in people.items():
        shop.customer(customer, email=f" {customer.upper()}@Shop.ru", **columns)
        shop.purchases(customer, map(days_before, (300, 150)))
    shop.mailing("m4", "c0", "unsubscribe", days_before(100))
    for n in range(5):
        shop.mailing("m5", f"c{n + 1}", "sent", days_before(100 - 10 * n))
    audiences = {"lapsed_mail": {"where": {"lifecycle_stage": ["lapsed"]}, "channel": "email", "holdout": 0}}
    with MailchimpEmulator(token="key-us21") as emu:
        document = {"warehouse": warehouse_url, "timezone": "UTC", "segments": FIXED_CYCLE, "audiences": audiences,
                    "sources": {"orders": {"kind": "file", "path": "orders/*.csv"}},
                    "destinations": {"mailchimp": {
                        "kind": "mailchimp", "env_prefix": "WINBACK_TEST_DEST", "base_url": emu.base_url,
                        "audiences": {"lapsed_mail": {"list_id": DEFAULT_LIST, "segment_id": DEFAULT_SEGMENT}}}}}
        (tmp_path / "w.yaml").write_text(json.dumps(document))
        config = load_config(tmp_path / "w.yaml")
        warehouse = Warehouse(config.warehouse_url)
        shop.write(warehouse)
        build(config, days_before(0).date(), warehouse=warehouse)
        sync(config, warehouse=warehouse)
        first = emu.segment()
        Shop().mailing("m6", "c9", "unsubscribe", days_before(0)).write(warehouse)
        build(config, days_before(0).date(), warehouse=warehouse)
        sync(config, warehouse=warehouse)
        second = emu.segment()
        warehouse.dispose()

    assert first == {"m1@shop.ru", "m6@shop.ru"}
    assert second == {"m1@shop.ru"}  # the unsubscribe reached the platform at the next sync


def test_logs_carry_no_personal_data(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("WINBACK_TEST_DEST_TOKEN", "test-token")
    from winback.emulators.base import Faults

    people = [person(i) for i in range(30)] + [person(99, member_key="bad", email="broken@", phone="12-34")]
    with MetaEmulator(faults=Faults(throttle_every=2), rejected_hashes=expected(range(2)),
                      refuse_removals_below=100) as emu:
        config = write_config(tmp_path, META, emu.base_url, f"duckdb:///{tmp_path / 'w.duckdb'}")
        warehouse = Warehouse(config.warehouse_url)
        write_members(warehouse, AUDIENCE, "ads", people)
        with caplog.at_level(logging.DEBUG):
            sync(config, warehouse=warehouse)
            write_members(warehouse, AUDIENCE, "ads", people[10:])
            sync(config, warehouse=warehouse)
            sync(config, warehouse=warehouse, dry_run=True)
        warehouse.dispose()

    assert caplog.records and any("rejected" in r.getMessage() for r in caplog.records)
    text = "\n".join(r.getMessage() for r in caplog.records).lower()
    for i in list(range(30)) + [99]:
        digits = normalized_phone(i).lstrip("+")
        for value in (normalized_email(i), digits, digits[1:], sha(normalized_email(i))):
            assert value not in text
    assert "broken@" not in text and "12-34" not in text and "test-token" not in text
    assert os.environ["WINBACK_TEST_DEST_TOKEN"] not in text
