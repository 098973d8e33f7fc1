"""Meta Custom Audiences against its emulator: SHA-256 of trimmed lower-case emails and
of phones as digits with the country code and no "+", at most 10,000 rows per call."""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import datetime

import pytest
import requests
import winback.sync.engine
from sync_support import (
    normalized_email,
    normalized_phone,
    person,
    table,
    write_members,
)
from winback.config import ConfigError
from winback.emulators.meta import MetaEmulator
from winback.sync.destinations.meta import (
    REMOVE_ROWS_PER_CALL,
    VERSIONS,
    MetaCustomAudiences,
)
from winback.sync.engine import sync
from winback.warehouse import Warehouse

from destinations.contract import AUDIENCE, Platform, check_contract, write_config


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


META = Platform(
    kind="meta_custom_audiences", emulator=MetaEmulator, channel="ads", identifiers=["email", "phone"],
    held=lambda emu: emu.hashes("555"), expected=lambda n: sha(normalized_email(n)),
    target={"audience_id": "555"}, members=25_000,
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


def _sync_at(tmp_path, monkeypatch, emu, day: datetime, options: dict | None = None) -> dict:
    """One sync of ten people on `day` (the engine's clock), with these options."""
    monkeypatch.setattr(winback.sync.engine, "_now", lambda: day)
    tmp_path.mkdir(exist_ok=True)
    config = write_config(tmp_path, Platform(**{**META.__dict__, "options": options or {}}), emu.base_url,
                          f"duckdb:///{tmp_path / 'w.duckdb'}")
    warehouse = Warehouse(config.warehouse_url)
    try:
        write_members(warehouse, AUDIENCE, "ads", [person(i) for i in range(10)])
        [summary] = sync(config, warehouse=warehouse)
        return summary
    finally:
        warehouse.dispose()


def test_the_default_is_the_newest_marketing_api_version(tmp_path, monkeypatch, caplog):
    """Before: base_url carried v21.0, which the Marketing API stopped serving on 2025-09-09."""
    monkeypatch.setenv("WINBACK_TEST_DEST_TOKEN", "test-token")
    newest = MetaCustomAudiences.api_versions[0]
    with MetaEmulator() as emu, caplog.at_level(logging.WARNING, logger="winback.sync.engine"):
        summary = _sync_at(tmp_path, monkeypatch, emu, datetime(2026, 11, 30, 12))
    assert (newest.version, newest.sunset) == ("v27.0", None)
    assert summary["status"] == "succeeded" and summary["figures"]["api_version"] == "v27.0"
    assert emu.calls_by_version == {"v27.0": 1} and emu.hashes("555") == {sha(normalized_email(i)) for i in range(10)}
    assert not [r for r in caplog.records if "API version" in r.getMessage()]


def test_a_version_past_its_sunset_is_named_with_the_newest(tmp_path, monkeypatch, caplog):
    """v24.0 is served until 2026-11-10 (Marketing API versions page): the day before, the
    run is quiet; from that day on it warns, naming the version, the date and v27.0."""
    monkeypatch.setenv("WINBACK_TEST_DEST_TOKEN", "test-token")
    with MetaEmulator() as emu:
        with caplog.at_level(logging.WARNING, logger="winback.sync.engine"):
            before = _sync_at(tmp_path, monkeypatch, emu, datetime(2026, 11, 9, 23, 59), {"api_version": "v24.0"})
        quiet, _ = [r.getMessage() for r in caplog.records if "API version" in r.getMessage()], caplog.clear()
        with caplog.at_level(logging.WARNING, logger="winback.sync.engine"):
            after = _sync_at(tmp_path, monkeypatch, emu, datetime(2026, 11, 10, 0, 1), {"api_version": "v24.0"})
        warned = [r.getMessage() for r in caplog.records if "API version" in r.getMessage()]
    assert before["status"] == after["status"] == "succeeded" and quiet == []
    assert before["figures"]["api_version"] == after["figures"]["api_version"] == "v24.0"
    assert warned == [("meta_custom_audiences: API version v24.0 was sunset on 2026-11-10 "
                      f"({VERSIONS}); requests will fail: set options.api_version to v27.0 or newer")]
    assert set(emu.calls_by_version) == {"v24.0"}  # the configured version is the one called


def test_an_api_version_must_look_like_one(tmp_path):
    platform = Platform(**{**META.__dict__, "options": {"api_version": "21"}})
    with pytest.raises(ConfigError, match="api_version"):
        write_config(tmp_path, platform, "http://127.0.0.1:9", f"duckdb:///{tmp_path / 'w.duckdb'}")


def test_a_blocked_audience_fails_the_pair_for_good_with_the_reason(tmp_path, warehouse_url, monkeypatch):
    """An audience flagged under Meta's 2025 restrictions (operation_status 471) answers
    every change with subcode 1713230. Before: a generic HTTP 400 (a removal's recorded
    per member and retried every run; an addition's retried by Airflow's task retries)."""
    monkeypatch.setenv("WINBACK_TEST_DEST_TOKEN", "test-token")
    with MetaEmulator() as emu:
        config = write_config(tmp_path, META, emu.base_url, warehouse_url)
        warehouse = Warehouse(config.warehouse_url)
        write_members(warehouse, AUDIENCE, "ads", [person(i) for i in range(20)])
        [first] = sync(config, warehouse=warehouse)
        emu.blocked.add("555")
        write_members(warehouse, AUDIENCE, "ads", [person(i) for i in range(10)])  # ten leave: removals only
        [removing] = sync(config, warehouse=warehouse)
        write_members(warehouse, AUDIENCE, "ads", [person(i) for i in range(30)])  # twenty join: additions
        [adding] = sync(config, warehouse=warehouse)
        runs = table(warehouse, "sync_runs", "ORDER BY started_at")
        errors = table(warehouse, "sync_row_errors")
        warehouse.dispose()
    assert first["status"] == "succeeded"
    for summary, run in zip((removing, adding), runs[1:]):
        assert summary["status"] == run["status"] == "failed"
        assert run["error"].startswith("SyncError: Meta blocks changes to audience 555 (operation_status 471, "
                                       "\"Audience Upload Blocked\")")
        assert "appeal in Audience Manager" in run["error"]
    assert errors == []  # nothing recorded against members: the audience is at fault, not them
    assert [r["status"] for r in emu.log[-2:]] == [400, 400]  # one call each: not retried
    assert emu.hashes("555") == {sha(normalized_email(i)) for i in range(20)}


def test_a_blocked_audience_is_not_retried_by_airflow(tmp_path, monkeypatch):
    from airflow.sdk.exceptions import AirflowFailException
    from winback import tasks

    monkeypatch.setenv("WINBACK_TEST_DEST_TOKEN", "test-token")
    with MetaEmulator(blocked={"555"}) as emu:
        config = write_config(tmp_path, META, emu.base_url, f"duckdb:///{tmp_path / 'w.duckdb'}")
        warehouse = Warehouse(config.warehouse_url)
        write_members(warehouse, AUDIENCE, "ads", [person(i) for i in range(5)])
        warehouse.dispose()
        monkeypatch.setenv("WINBACK_CONFIG", str(tmp_path / "winback.yaml"))
        with pytest.raises(AirflowFailException, match="Audience Upload Blocked"):
            tasks.sync({"audience": AUDIENCE, "destination": "dest"})


def _send(emu: MetaEmulator, method: str, **kwargs) -> requests.Response:
    return requests.request(method, f"{emu.base_url}/v27.0/555/users", timeout=10,
                            headers={"Authorization": "Bearer test-token"}, **kwargs)


def test_the_emulator_takes_the_sdk_envelope_and_nothing_else():
    """payload and session as JSON-encoded form fields (a DELETE's in its query string),
    is_raw with a multi-key schema, a session on every call; the old JSON body is refused."""
    row = [sha("a@example.com"), sha("79991234567")]
    payload = {"schema": ["EMAIL", "PHONE"], "is_raw": True, "data": [row]}
    session = {"session_id": 7, "batch_seq": 1, "last_batch_flag": True, "estimated_num_total": 1}
    form = {"payload": json.dumps(payload), "session": json.dumps(session)}
    with MetaEmulator() as emu:
        refused = {
            "json body": _send(emu, "POST", json={"payload": payload, "session": session}),
            "no session": _send(emu, "POST", data={"payload": json.dumps(payload)}),
            "no is_raw": _send(emu, "POST", data={**form, "payload": json.dumps({**payload, "is_raw": False})}),
            "delete body": _send(emu, "DELETE", data=form),
        }
        assert {name: r.status_code for name, r in refused.items()} == dict.fromkeys(refused, 400)
        assert "payload is required" in refused["json body"].text and emu.members("555") == set()
        assert _send(emu, "POST", data=form).status_code == 200
        assert emu.hashes("555", "PHONE") == {row[1]}
        assert _send(emu, "DELETE", params={**form, "session": json.dumps({**session, "session_id": 8})}).ok
        assert emu.members("555") == set()


def test_removals_keep_their_url_short(tmp_path, monkeypatch):
    """The SDK's envelope puts a removal's rows in the URL: 1,000 leavers go in DELETE
    calls of at most REMOVE_ROWS_PER_CALL rows (URL under 32 KiB; the emulator's server,
    like many, refuses a request line over 64 KiB), not in one."""
    monkeypatch.setenv("WINBACK_TEST_DEST_TOKEN", "test-token")
    with MetaEmulator() as emu:
        config = write_config(tmp_path, META, emu.base_url, f"duckdb:///{tmp_path / 'w.duckdb'}")
        warehouse = Warehouse(config.warehouse_url)
        write_members(warehouse, AUDIENCE, "ads", [person(i) for i in range(1_100)])
        sync(config, warehouse=warehouse)
        write_members(warehouse, AUDIENCE, "ads", [person(i) for i in range(100)])
        [run] = sync(config, warehouse=warehouse)
        warehouse.dispose()
    deletes = [r for r in emu.log if r["method"] == "DELETE"]
    assert run["status"] == "succeeded" and run["removed"] == 1_000 and run["remove_failed"] == 0
    assert len(deletes) == -(-1_000 // REMOVE_ROWS_PER_CALL) and {r["status"] for r in deletes} == {200}
    assert emu.hashes("555") == {sha(normalized_email(i)) for i in range(100)}


def test_an_app_secret_adds_its_proof(tmp_path, monkeypatch):
    """Apps set to "Require App Secret" refuse calls without appsecret_proof."""
    monkeypatch.setenv("WINBACK_TEST_DEST_TOKEN", "test-token")
    with MetaEmulator(app_secret="app-secret-1") as emu:
        without = _sync_at(tmp_path / "a", monkeypatch, emu, datetime(2026, 11, 30))
        monkeypatch.setenv("WINBACK_TEST_DEST_APP_SECRET", "app-secret-1")
        with_proof = _sync_at(tmp_path / "b", monkeypatch, emu, datetime(2026, 11, 30))
    assert without["status"] == "failed" and "HTTP 400" in without["error"]
    assert with_proof["status"] == "succeeded" and len(emu.hashes("555")) == 10


def test_a_domain_ending_in_a_dot_is_the_same_address(tmp_path, monkeypatch):
    """Meta's SDK strips the dot ending "ivan@mail.ru." before hashing (the DNS root: the
    same mailbox). Before: Winback refused it as not an address and sent nothing."""
    monkeypatch.setenv("WINBACK_TEST_DEST_TOKEN", "test-token")
    with MetaEmulator() as emu:
        config = write_config(tmp_path, META, emu.base_url, f"duckdb:///{tmp_path / 'w.duckdb'}")
        warehouse = Warehouse(config.warehouse_url)
        write_members(warehouse, AUDIENCE, "ads", [person(0, email=" Ivan.Petrov@Mail.RU. ")])
        [run] = sync(config, warehouse=warehouse)
        warehouse.dispose()
    assert run["accepted"] == 1 and run["invalid"] == 0
    assert emu.hashes("555") == {sha("ivan.petrov@mail.ru")}
