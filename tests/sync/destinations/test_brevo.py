"""Brevo against its emulator: plain trimmed lower-case addresses imported into a list as a
`;`-separated CSV (polled until the background import completes, invalid addresses read
from its report), removed from the list at most 150 a call."""

from __future__ import annotations

import csv
import io
import json
from decimal import Decimal
from pathlib import Path

import pytest
import requests
from sync_support import Clock, normalized_email, person
from winback import httpclient
from winback.emulators.base import Faults
from winback.emulators.brevo import BrevoEmulator
from winback.sync.destinations import brevo
from winback.sync.destinations.brevo import Brevo

from destinations.contract import (
    Platform,
    check_contract,
    sync_once,
    write_config,
)

LIST_ID = 7
FAST_POLLING = {"poll_initial_seconds": 0.01, "poll_max_seconds": 0.05}

BREVO = Platform(
    kind="brevo", emulator=BrevoEmulator, channel="email", identifiers=["email", "phone"],
    held=lambda emu: emu.members(LIST_ID), expected=normalized_email,
    target={"list_id": LIST_ID}, options=FAST_POLLING, members=3_000,
    reject=lambda emu, values: emu.rejected_emails.update(values),
)


def run(tmp_path: Path, emu: BrevoEmulator, rows: list[dict], platform: Platform = BREVO, **sync_settings):
    return sync_once(tmp_path, platform, emu.base_url, rows, **sync_settings)


@pytest.fixture
def token(monkeypatch):
    monkeypatch.setenv("WINBACK_TEST_DEST_TOKEN", "test-token")


def test_contract(tmp_path, monkeypatch):
    monkeypatch.setattr(Brevo, "batch_size", 1_000)  # several imports, each polled to completion
    check_contract(BREVO, tmp_path, monkeypatch)


def test_throttling_waits_until_brevos_rate_limit_resets(tmp_path, token, monkeypatch):
    """Brevo's 429 says when its limit resets (x-sib-ratelimit-reset: 30) and has no
    Retry-After: the sync waits those 30 s (on a controlled clock) and goes on; before,
    it retried after its own backoff of 0.01 s into the same exhausted limit."""
    clock = Clock()
    monkeypatch.setattr(httpclient, "time", clock)
    with BrevoEmulator(faults=Faults(throttle_every=2, retry_after="30")) as emu:
        summary, _ = run(tmp_path, emu, [person(i) for i in range(5)])
    assert summary["status"] == "succeeded" and summary["accepted"] == 5
    assert 429 in {r["status"] for r in emu.log} and clock.slept and set(clock.slept) == {30.0}
    assert emu.members(LIST_ID) == {normalized_email(i) for i in range(5)}


def test_wire_format_csv_attributes_and_flags(tmp_path, token):
    options = {**FAST_POLLING, "attribute_names": {"first_name": "PRENOM", "offer": None}}
    rows = [person(0, offer="SPRING10", cart_value=Decimal("12.50"), product_ids="p1;p2", winback_offer="discount"),
            person(1, first_name="Ann\nMarie")]
    with BrevoEmulator(keep_files=True) as emu:
        summary, _ = run(tmp_path, emu, rows, Platform(**{**BREVO.__dict__, "options": options}))
    assert summary["status"] == "succeeded" and summary["accepted"] == 2
    [body] = emu.files
    lines = list(csv.reader(io.StringIO(body), delimiter=";"))
    assert lines[0] == ["EMAIL", "PRENOM", "LIFECYCLE_STAGE", "VALUE_TIER", "CART_VALUE", "PRODUCT_IDS",
                        "WINBACK_OFFER"]
    assert lines[1] == ["customer0@example.com", "Name0", "lapsed", "high", "12.5", "p1;p2", "discount"]
    assert lines[2][:2] == ["customer1@example.com", "Ann Marie"]  # one physical line per contact
    assert emu.contacts["customer0@example.com"]["PRENOM"] == "Name0"
    assert "OFFER" not in emu.contacts["customer0@example.com"]
    assert emu.members(LIST_ID) == {normalized_email(0), normalized_email(1)}


def test_unknown_attribute_mapping_is_a_config_error(tmp_path):
    with pytest.raises(ValueError, match="no such attribute"):
        write_config(tmp_path, Platform(**{**BREVO.__dict__, "options": {"attribute_names": {"age": "AGE"}}}),
                     "http://127.0.0.1:1", f"duckdb:///{tmp_path / 'w.duckdb'}")


def test_emulator_refuses_oversized_calls():
    with BrevoEmulator() as emu:
        headers = {"api-key": "test-token"}
        big = "EMAIL\n" + "a" * (brevo.MAX_FILE_BODY_BYTES - 5)
        assert len(big.encode()) == brevo.MAX_FILE_BODY_BYTES + 1
        reply = requests.post(f"{emu.base_url}/v3/contacts/import", headers=headers,
                              json={"fileBody": big, "listIds": [LIST_ID]})
        assert reply.status_code == 400 and "larger than" in reply.json()["message"]
        emails = [f"x{i}@example.com" for i in range(brevo.MAX_REMOVE_EMAILS + 1)]
        reply = requests.post(f"{emu.base_url}/v3/contacts/lists/{LIST_ID}/contacts/remove", headers=headers,
                              json={"emails": emails})
        assert reply.status_code == 400 and "maximum of 150" in reply.json()["message"]
        reply = requests.post(f"{emu.base_url}/v3/contacts/lists/{LIST_ID}/contacts/remove", headers=headers,
                              json={"emails": emails[:-1]})
        assert reply.status_code == 200


def test_csv_bodies_are_split_under_the_size_cap(tmp_path, token, monkeypatch):
    monkeypatch.setattr(brevo, "FILE_BODY_BYTES", 4_000)
    with BrevoEmulator(keep_files=True) as emu:
        summary, _ = run(tmp_path, emu, [person(i) for i in range(300)])
    assert summary["status"] == "succeeded" and summary["accepted"] == 300
    assert len(emu.files) >= 4 and all(len(f.encode()) <= 4_000 for f in emu.files)
    assert summary["figures"]["brevo_imports"] == len(emu.files)
    assert emu.members(LIST_ID) == {normalized_email(i) for i in range(300)}


def test_members_count_only_once_the_import_completed(tmp_path, token):
    with BrevoEmulator(polls_until_done=3) as emu:
        summary, _ = run(tmp_path, emu, [person(i) for i in range(20)])
    assert summary["status"] == "succeeded" and summary["accepted"] == 20
    assert len(emu.requests_to(r"^/v3/processes/1$")) == 4  # three "in_process", then "completed"


def test_an_import_that_never_completes_fails_the_run_and_commits_nothing(tmp_path, token):
    slow = Platform(**{**BREVO.__dict__, "options": {**FAST_POLLING, "import_timeout_seconds": 0.3}})
    with BrevoEmulator(polls_until_done=10**6) as emu:
        summary, tables = run(tmp_path, emu, [person(i) for i in range(20)], slow)
    assert summary["status"] == "failed" and "not completed" in summary["error"]
    assert tables["sync_state"] == [] and tables["sync_runs"][0]["status"] == "failed"
    assert len(emu.requests_to(r"^/v3/processes/")) < 40  # bounded polling


def test_invalid_addresses_from_the_import_report_are_row_errors(tmp_path, token):
    with BrevoEmulator(rejected_emails={normalized_email(3)}) as emu:
        summary, tables = run(tmp_path, emu, [person(i) for i in range(10)])
    assert summary["accepted"] == 9 and summary["rejected"] == 1
    [error] = tables["sync_row_errors"]
    assert error["member_key"] == "c0000003" and error["reason"] == "Brevo: Invalid email address"
    assert emu.requests_to(r"^/reports/1/invalid_emails\.csv$")


def test_removal_takes_addresses_out_of_the_list_only(tmp_path, token):
    with BrevoEmulator() as emu:
        run(tmp_path, emu, [person(i) for i in range(400)])
        summary, _ = run(tmp_path, emu, [person(i) for i in range(100, 400)])
    assert summary["removed"] == 100
    assert len(emu.requests_to(r"/contacts/remove$")) == 1  # 100 fits one call of at most 150
    assert emu.members(LIST_ID) == {normalized_email(i) for i in range(100, 400)}
    assert normalized_email(0) in emu.contacts  # the contact stays in the account


def test_removals_brevo_refuses_are_recorded_and_kept(tmp_path, token):
    with BrevoEmulator(refused_removals={normalized_email(0)}) as emu:
        run(tmp_path, emu, [person(i) for i in range(200)])
        summary, tables = run(tmp_path, emu, [])
    assert summary["removed"] == 199 and summary["remove_failed"] == 1
    assert len(emu.requests_to(r"/contacts/remove$")) == 2  # 150 + 50
    [error] = [e for e in tables["sync_row_errors"] if e["operation"] == "remove"]
    assert error["member_key"] == "c0000000" and "could not remove" in error["reason"]
    assert [s["member_key"] for s in tables["sync_state"]] == ["c0000000"]  # tried again next run


def test_add_only_never_removes(tmp_path, token):
    with BrevoEmulator() as emu:
        platform = Platform(**{**BREVO.__dict__, "mode": "add_only"})
        run(tmp_path, emu, [person(i) for i in range(10)], platform)
        summary, _ = run(tmp_path, emu, [person(i) for i in range(5)], platform)
    assert summary["removed"] == 0 and not emu.requests_to(r"/contacts/remove$", status=None)
    assert emu.members(LIST_ID) == {normalized_email(i) for i in range(10)}


def test_dry_run_writes_requests_without_the_key_and_sends_nothing(tmp_path, token):
    with BrevoEmulator() as emu:
        summary, _ = run(tmp_path, emu, [person(i) for i in range(5)], dry_run=True)
    assert summary["status"] == "succeeded" and emu.log == []
    text = (Path(summary["requests_dir"]) / "requests.jsonl").read_text()
    assert "test-token" not in text
    first = json.loads(text.splitlines()[0])
    assert first["url"].endswith("/v3/contacts/import") and first["headers"]["api-key"] == "***"
    assert first["json"]["listIds"] == [LIST_ID] and "customer4@example.com" in first["json"]["fileBody"]


def test_wrong_key_fails_the_run(tmp_path, monkeypatch):
    monkeypatch.setenv("WINBACK_TEST_DEST_TOKEN", "wrong")
    with BrevoEmulator() as emu:
        summary, _ = run(tmp_path, emu, [person(i) for i in range(3)])
    assert summary["status"] == "failed" and "HTTP 401" in summary["error"] and "wrong" not in summary["error"]
