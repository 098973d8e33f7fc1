"""identifier_cache: a phone is parsed once per warehouse, whatever audience, destination
or run needs it next, on DuckDB and PostgreSQL. Parsing is counted by wrapping
phonenumbers.parse; each sync starts with the in-process lru_cache cleared, as each
Airflow sync task is a process of its own."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import phonenumbers
import pytest
import yaml
from destinations.test_meta import sha
from sync_support import person, table, write_members
from winback.config import Config, load_config
from winback.emulators.meta import MetaEmulator
from winback.sync import identifiers
from winback.sync.engine import sync
from winback.sync.identifier_cache import CACHE_TABLE, CACHE_TABLES, KEY, PhoneCache
from winback.sync.identifiers import InvalidIdentifier, normalize_phone
from winback.warehouse import Warehouse

AUDIENCE = "lapsed_ads"
DESTINATIONS = {"meta_a": "555", "meta_b": "777"}
FOREIGN = "+44 7400 123456"  # a UK mobile
NOT_A_PHONE, TOO_SHORT = "call me", "12345"


def members() -> list[dict]:
    """Phones only (an ads audience matched by phone): the three Russian spellings, a
    foreign number, two invalid ones, a phone two customers share, one padded."""
    rows = [person(n, email=None) for n in range(12)]
    rows += [person(20, email=None, phone=FOREIGN), person(21, email=None, phone=NOT_A_PHONE),
             person(22, email=None, phone=TOO_SHORT), person(23, email=None, phone=rows[4]["phone"]),
             person(24, email=None, phone=f"  {rows[5]['phone']} "), person(25, email=None, phone=None)]
    return rows


def fresh(raw: str, region: str = "RU", style: str = "e164") -> str | None:
    """What normalizing `raw` gives without any cache (None: invalid)."""
    identifiers._e164.cache_clear()
    try:
        return normalize_phone(raw, region, style)
    except InvalidIdentifier:
        return None


def reason(raw: str, region: str = "RU") -> str | None:
    identifiers._e164.cache_clear()
    try:
        normalize_phone(raw, region)
    except InvalidIdentifier as exc:
        return str(exc)
    return None


@pytest.fixture
def parses(monkeypatch) -> Counter:
    """Every phonenumbers.parse call, by the value parsed."""
    counted: Counter = Counter()
    real = phonenumbers.parse

    def parse(number, region=None, *args, **kwargs):
        counted[number] += 1
        return real(number, region, *args, **kwargs)

    monkeypatch.setattr(phonenumbers, "parse", parse)
    return counted


def write_config(tmp_path: Path, base_url: str, warehouse: str, region: str = "RU") -> Config:
    document = {
        "warehouse": warehouse,
        "sources": {"orders": {"kind": "file", "path": "orders/*.csv"}},
        "audiences": {AUDIENCE: {"where": {"lifecycle_stage": ["lapsed"]}, "channel": "ads",
                                 "identifiers": ["phone"]}},
        "sync": {"out_dir": str(tmp_path / "sync"), "phone_region": region},
        "destinations": {name: {"kind": "meta_custom_audiences", "base_url": base_url,
                                "env_prefix": "WINBACK_TEST_DEST", "audiences": {AUDIENCE: {"audience_id": ident}}}
                         for name, ident in DESTINATIONS.items()},
    }
    path = tmp_path / f"winback-{region}.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return load_config(path)


def sync_as_new_process(config: Config, warehouse: Warehouse, destination: str) -> dict:
    identifiers._e164.cache_clear()
    [run] = sync(config, destination=destination, warehouse=warehouse)
    assert run["status"] == "succeeded", run
    return run


def forget_sync(warehouse: Warehouse, destination: str) -> None:
    """As if the pair had never been synced (its cache entries stay)."""
    for name in ("sync_state", "sync_row_errors"):
        warehouse.execute(f"DELETE FROM {name} WHERE destination = :d", {"d": destination})


def test_a_phone_audience_synced_again_and_elsewhere_parses_each_phone_once(tmp_path, warehouse_url, monkeypatch,
                                                                           parses):
    monkeypatch.setenv("WINBACK_TEST_DEST_TOKEN", "test-token")
    rows = members()
    raws = {r["phone"] for r in rows if r["phone"]}
    with MetaEmulator() as emu:
        config = write_config(tmp_path, emu.base_url, warehouse_url)
        warehouse = Warehouse(config.warehouse_url)
        write_members(warehouse, AUDIENCE, "ads", rows)
        first = sync_as_new_process(config, warehouse, "meta_a")
        after_first = Counter(parses)
        other = sync_as_new_process(config, warehouse, "meta_b")
        forget_sync(warehouse, "meta_a")
        again = sync_as_new_process(config, warehouse, "meta_a")
        cached = {r["raw"]: r for r in table(warehouse, CACHE_TABLE)}
        errors = table(warehouse, "sync_row_errors")
        warehouse.dispose()

    # Each distinct raw phone was parsed once, by the first sync; the others parsed nothing.
    assert parses == after_first and set(parses) == {raw.strip() for raw in raws}
    assert sum(parses.values()) <= len(raws)  # the padded spelling's value is parsed once, if at all
    assert first["figures"]["phones_parsed"] == len(raws) and first["figures"]["phones_from_cache"] == 0
    for run in (other, again):
        assert run["figures"]["phones_parsed"] == 0 and run["figures"]["phones_from_cache"] == len(rows) - 1
    # What the platform got from the cache is what a fresh normalization gives (digits for Meta).
    expected = {sha(fresh(raw, style="digits")) for raw in raws if fresh(raw)}
    assert emu.hashes("555", "PHONE") == emu.hashes("777", "PHONE") == expected
    assert len(expected) == 13  # 12 Russian numbers (one shared, one padded) and the foreign one
    # The cache holds the raw value with its E.164 form or the reason it is not a phone.
    assert set(cached) == raws
    for raw, entry in cached.items():
        assert (entry["kind"], entry["region"]) == ("phone", "RU")
        assert (entry["normal"], entry["reason"]) == (fresh(raw), reason(raw))
    assert cached[FOREIGN]["normal"] == "+447400123456"
    assert {cached[r["phone"]]["normal"] for r in rows[:3]} == {"+79120000000", "+79120000001", "+79120000002"}
    # Invalid phones are still invalid members of every run, with the reason, never sent.
    assert first["invalid"] == other["invalid"] == again["invalid"] == 3  # two bad phones, one member without
    by_pair = {(e["destination"], e["member_key"]): e["reason"] for e in errors}
    for destination in DESTINATIONS:
        assert by_pair[(destination, "c0000021")] == "phone: not a phone number (default region RU)"
        assert by_pair[(destination, "c0000022")] == "phone: not a valid number (default region RU)"


def test_another_phone_region_reuses_nothing(tmp_path, warehouse_url, monkeypatch, parses):
    monkeypatch.setenv("WINBACK_TEST_DEST_TOKEN", "test-token")
    rows = members()
    raws = {r["phone"] for r in rows if r["phone"]}
    with MetaEmulator() as emu:
        russian = write_config(tmp_path, emu.base_url, warehouse_url)
        warehouse = Warehouse(russian.warehouse_url)
        write_members(warehouse, AUDIENCE, "ads", rows)
        sync_as_new_process(russian, warehouse, "meta_a")
        parses.clear()
        forget_sync(warehouse, "meta_a")
        emu.audiences.clear()
        american = sync_as_new_process(write_config(tmp_path, emu.base_url, warehouse_url, "US"), warehouse, "meta_a")
        cached = table(warehouse, CACHE_TABLE)
        warehouse.dispose()

    # All parsed again, each raw phone once (the padded one's value is its own raw phone).
    assert set(parses) == {raw.strip() for raw in raws} and sum(parses.values()) == len(raws)
    assert american["figures"]["phones_parsed"] == len(raws)
    assert american["figures"]["phones_from_cache"] == 0
    # "8 (912) ..." and "7912..." are not American numbers; "+7 912 ..." and the UK one are.
    assert emu.hashes("555", "PHONE") == {sha(fresh(raw, "US", "digits")) for raw in raws if fresh(raw, "US")}
    assert american["invalid"] == sum(1 for r in rows if not r["phone"] or not fresh(r["phone"], "US"))
    # The Russian entries are gone: the cache keeps the region in use only.
    assert {r["region"] for r in cached} == {"US"} and {r["raw"] for r in cached} == raws
    assert all((r["normal"], r["reason"]) == (fresh(r["raw"], "US"), reason(r["raw"], "US")) for r in cached)


def test_the_cache_keeps_only_the_phones_of_current_audiences(tmp_path, warehouse_url, monkeypatch):
    monkeypatch.setenv("WINBACK_TEST_DEST_TOKEN", "test-token")
    with MetaEmulator() as emu:
        config = write_config(tmp_path, emu.base_url, warehouse_url)
        warehouse = Warehouse(config.warehouse_url)
        write_members(warehouse, AUDIENCE, "ads", [person(n, email=None) for n in range(10)])
        sync_as_new_process(config, warehouse, "meta_a")
        now = [person(n, email=None) for n in range(5, 15)]
        write_members(warehouse, AUDIENCE, "ads", now)
        second = sync_as_new_process(config, warehouse, "meta_a")
        cached = {r["raw"] for r in table(warehouse, CACHE_TABLE)}
        warehouse.dispose()
    assert second["figures"]["phones_parsed"] == 5  # the newcomers; members 5-9 are unchanged, not planned
    assert cached == {r["phone"] for r in now}  # 0-4 left every audience: their phones went


def test_two_writers_of_the_same_new_phones_do_not_fail(warehouse_url):
    """Two sync tasks that both found the same phones missing (each planned before the
    other wrote) write them: the second keeps the first's rows, no duplicate key error.
    On PostgreSQL the two transactions overlap (the second waits on the first's keys);
    a DuckDB file has one writing process at a time, so there they follow each other."""
    raws = [person(n)["phone"] for n in range(50)] + [NOT_A_PHONE]
    first, second = Warehouse(warehouse_url), Warehouse(warehouse_url)
    try:
        first.ensure_tables(CACHE_TABLES, duckdb_keys=False)
        writers = [PhoneCache("RU"), PhoneCache("RU")]
        for cache in writers:
            for raw in raws:
                try:
                    cache.e164(raw, None, None)
                except InvalidIdentifier:
                    pass
        errors: list[BaseException] = []

        def write_second() -> None:
            try:
                with second.begin() as conn:
                    writers[1].flush(second, conn)
            except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
                errors.append(exc)

        with first.begin() as conn:
            writers[0].flush(first, conn)
            if first.dialect == "postgresql":
                other = threading.Thread(target=write_second)
                other.start()
                _wait_for_a_lock_wait(first)
        if first.dialect == "postgresql":
            other.join(timeout=30)
        else:
            write_second()
        rows = first.rows(f"SELECT {', '.join(KEY)}, normal, reason FROM {CACHE_TABLE}")
    finally:
        first.dispose()
        second.dispose()
    assert errors == []
    assert writers[1].written == len(raws) and not writers[1].pending
    assert len(rows) == len(raws) and {r.raw for r in rows} == set(raws)
    assert {r.raw: r.normal for r in rows}[raws[0]] == "+79120000000"


def _wait_for_a_lock_wait(warehouse: Warehouse, deadline_seconds: float = 20) -> None:
    """Until another session of this database waits on a lock (the second writer blocked
    on the first one's uncommitted keys)."""
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        if warehouse.scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                            "AND wait_event_type = 'Lock'"):
            return
        time.sleep(0.05)
    raise AssertionError("the second writer never waited on the first one's keys")


def test_a_dry_run_reads_the_cache_and_writes_nothing(tmp_path, warehouse_url, monkeypatch, parses):
    monkeypatch.setenv("WINBACK_TEST_DEST_TOKEN", "test-token")
    with MetaEmulator() as emu:
        config = write_config(tmp_path, emu.base_url, warehouse_url)
        warehouse = Warehouse(config.warehouse_url)
        write_members(warehouse, AUDIENCE, "ads", [person(n, email=None) for n in range(10)])
        identifiers._e164.cache_clear()
        [before] = sync(config, destination="meta_a", dry_run=True, warehouse=warehouse)
        created = warehouse.table_exists(CACHE_TABLE)
        sync_as_new_process(config, warehouse, "meta_a")
        write_members(warehouse, AUDIENCE, "ads", [person(n, email=None) for n in range(15)])
        parses.clear()
        identifiers._e164.cache_clear()
        [after] = sync(config, destination="meta_b", dry_run=True, warehouse=warehouse)
        cached = {r["raw"] for r in table(warehouse, CACHE_TABLE)}
        warehouse.dispose()
    assert not created and before["figures"]["phones_parsed"] == 10  # a dry run on a new warehouse creates nothing
    assert after["figures"]["phones_from_cache"] == 10 and after["figures"]["phones_parsed"] == 5
    assert set(parses) == {person(n)["phone"] for n in range(10, 15)}
    assert cached == {person(n)["phone"] for n in range(10)}  # the newcomers' phones were not written
