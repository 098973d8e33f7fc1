"""Meta Custom Audiences against its emulator: SHA-256 of trimmed lower-case emails and
of phones as digits with the country code and no "+", at most 10,000 rows per call."""

from __future__ import annotations

import hashlib

from sync_support import (
    normalized_email,
    normalized_phone,
    person,
    table,
    write_members,
)
from winback.emulators.meta import MetaEmulator
from winback.sync import sync
from winback.warehouse import Warehouse

from destinations.contract import AUDIENCE, Platform, check_contract, write_config


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


META = Platform(
    kind="meta_custom_audiences", emulator=MetaEmulator, channel="ads", identifiers=["email", "phone"],
    held=lambda emu: emu.hashes("555"), expected=lambda n: sha(normalized_email(n)),
    target={"audience_id": "555"}, members=25_000, api_prefix="/v21.0",
    reject=lambda emu, values: emu.rejected_hashes.update(values),
)


def test_contract(tmp_path, monkeypatch):
    check_contract(META, tmp_path, monkeypatch)


def test_contract_in_replace_mode(tmp_path, monkeypatch):
    check_contract(Platform(**{**META.__dict__, "mode": "replace", "reject": None}), tmp_path, monkeypatch)


def test_phones_are_digits_with_country_code_hashed(tmp_path, monkeypatch):
    monkeypatch.setenv("WINBACK_TEST_DEST_TOKEN", "test-token")
    with MetaEmulator() as emu:
        config = write_config(tmp_path, META, emu.base_url, f"duckdb:///{tmp_path / 'w.duckdb'}")
        warehouse = Warehouse(config.warehouse_url)
        write_members(warehouse, AUDIENCE, "ads", [person(i) for i in range(3)])  # the three spellings
        sync(config, warehouse=warehouse)
        warehouse.dispose()
    assert emu.hashes("555", "PHONE") == {sha(normalized_phone(i).lstrip("+")) for i in range(3)}


def test_refused_removals_do_not_block_additions(tmp_path, monkeypatch):
    monkeypatch.setenv("WINBACK_TEST_DEST_TOKEN", "test-token")
    with MetaEmulator(refuse_removals_below=1_000) as emu:
        config = write_config(tmp_path, META, emu.base_url, f"duckdb:///{tmp_path / 'w.duckdb'}")
        warehouse = Warehouse(config.warehouse_url)
        write_members(warehouse, AUDIENCE, "ads", [person(i) for i in range(100)])
        sync(config, warehouse=warehouse)
        write_members(warehouse, AUDIENCE, "ads", [person(i) for i in range(50, 150)])
        [run] = sync(config, warehouse=warehouse)
        errors = table(warehouse, "sync_row_errors", "WHERE operation = 'remove'")
        state = {r["member_key"] for r in table(warehouse, "sync_state")}
        warehouse.dispose()
    assert run["status"] == "succeeded" and run["accepted"] == 50 and run["remove_failed"] == 50
    assert emu.hashes("555") == {sha(normalized_email(i)) for i in range(150)}  # removals refused, adds made
    assert len(errors) == 50 and all("audience too small" in e["reason"] for e in errors)
    assert state == {f"c{i:07d}" for i in range(150)}  # still held: retried next run


def test_wrong_token_fails_the_run_and_is_recorded(tmp_path, monkeypatch):
    monkeypatch.setenv("WINBACK_TEST_DEST_TOKEN", "wrong")
    with MetaEmulator() as emu:
        config = write_config(tmp_path, META, emu.base_url, f"duckdb:///{tmp_path / 'w.duckdb'}")
        warehouse = Warehouse(config.warehouse_url)
        write_members(warehouse, AUDIENCE, "ads", [person(i) for i in range(10)])
        [summary] = sync(config, warehouse=warehouse)
        [run] = table(warehouse, "sync_runs")
        warehouse.dispose()
    assert summary["status"] == run["status"] == "failed"
    assert "HTTP 401" in run["error"] and "wrong" not in run["error"]


def test_an_unquoted_audience_id_is_read_as_text(tmp_path):
    platform = Platform(**{**META.__dict__, "target": {"audience_id": 23851234567890123}})
    config = write_config(tmp_path, platform, "http://127.0.0.1:9", f"duckdb:///{tmp_path / 'w.duckdb'}")
    assert config.destinations["dest"].target(AUDIENCE).audience_id == "23851234567890123"
