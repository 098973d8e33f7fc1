"""Yandex Audience against its emulator: CSV files with the segment's original header of
SHA-256 hashed trimmed lower-case emails and of phones as digits with the country code,
sent to `modify_data` (addition, subtraction, replace), check_size=false on small files."""

from __future__ import annotations

import hashlib
import json

import pytest
import requests
from sync_support import (
    normalized_email,
    normalized_phone,
    person,
    table,
    write_members,
)
from winback.emulators.yandex_audience import YandexAudienceEmulator
from winback.sync.destinations import yandex_audience
from winback.sync.destinations.yandex_audience import YandexAudience
from winback.sync.engine import sync
from winback.warehouse import Warehouse

from destinations.contract import AUDIENCE, Platform, check_contract, write_config

SEGMENT = "4242"


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def emulator(columns=("email", "phone"), **kwargs) -> YandexAudienceEmulator:
    emu = YandexAudienceEmulator(**kwargs)
    emu.create_segment(SEGMENT, columns)
    return emu


YANDEX = Platform(
    kind="yandex_audience", emulator=emulator, channel="ads", identifiers=["email", "phone"],
    held=lambda emu: emu.hashes(SEGMENT), expected=lambda n: sha(normalized_email(n)),
    target={"segment_id": SEGMENT}, options={"rows_per_file": 500}, api_prefix="/v1/management",
)


@pytest.fixture(autouse=True)
def no_pacing(monkeypatch):
    """The real pacing (a change every 6 s) would only make these tests slow."""
    assert YandexAudience.min_interval >= 6.0
    monkeypatch.setattr(YandexAudience, "min_interval", 0.0)


@pytest.fixture
def token(monkeypatch):
    monkeypatch.setenv("WINBACK_TEST_DEST_TOKEN", "test-token")


def run_sync(tmp_path, emu, people, platform=YANDEX, rows=None, **settings):
    tmp_path.mkdir(parents=True, exist_ok=True)
    config = write_config(tmp_path, platform, emu.base_url, f"duckdb:///{tmp_path / 'w.duckdb'}", **settings)
    warehouse = Warehouse(config.warehouse_url)
    try:
        write_members(warehouse, AUDIENCE, "ads", rows if rows is not None else [person(i) for i in people])
        [run] = sync(config, warehouse=warehouse)
        return run, table(warehouse, "sync_row_errors") if warehouse.table_exists("sync_row_errors") else []
    finally:
        warehouse.dispose()


def upload(emu, rows: list[str], header="email,phone", check_size=None, modification="addition", token="test-token"):
    params = {"modification_type": modification}
    if check_size is not None:
        params["check_size"] = check_size
    content = "\n".join([header, *rows]).encode() + b"\n"
    return requests.post(f"{emu.base_url}/v1/management/segment/{SEGMENT}/modify_data", params=params,
                         files={"file": ("data.csv", content, "text/csv")},
                         headers={"Authorization": f"OAuth {token}"})


def test_contract(tmp_path, monkeypatch):
    check_contract(YANDEX, tmp_path, monkeypatch)


def test_contract_in_replace_mode(tmp_path, monkeypatch):
    check_contract(Platform(**{**YANDEX.__dict__, "mode": "replace"}), tmp_path, monkeypatch)


def test_phones_are_digits_with_country_code_hashed(tmp_path, token):
    with emulator() as emu:
        run, _ = run_sync(tmp_path, emu, range(3))  # the three Russian spellings
    assert run["status"] == "succeeded"
    assert emu.hashes(SEGMENT, "phone") == {sha(normalized_phone(i).lstrip("+")) for i in range(3)}
    assert emu.hashes(SEGMENT, "email") == {sha(normalized_email(i)) for i in range(3)}


def test_phone_format_e164_hashes_the_plus_form_and_digits_stays_the_default(tmp_path, token):
    assert yandex_audience.YandexAudienceOptions().phone_format == "digits"
    people = [person(i) for i in range(3)]
    assert [p["phone"] for p in people] == ["8 (912) 000-00-00", "+7 912 0000001", "79120000002"]
    for phone_format, expected in (("e164", ["+79120000000", "+79120000001", "+79120000002"]),
                                   ("digits", ["79120000000", "79120000001", "79120000002"])):
        platform = Platform(**{**YANDEX.__dict__, "options": {"phone_format": phone_format}})
        with emulator() as emu:
            run, _ = run_sync(tmp_path / phone_format, emu, None, platform, rows=people)
        assert run["status"] == "succeeded"
        assert emu.hashes(SEGMENT, "phone") == {sha(v) for v in expected}
        assert emu.hashes(SEGMENT, "email") == {sha(normalized_email(i)) for i in range(3)}


def test_small_changes_pass_check_size_false_and_big_files_keep_the_check(tmp_path, token):
    with emulator() as emu:
        run_sync(tmp_path, emu, range(300))
        run, _ = run_sync(tmp_path, emu, range(5, 310))
    assert [(u["modification"], u["rows"], u["check_size"]) for u in emu.uploads] == [
        ("addition", 300, True), ("addition", 10, False), ("subtraction", 5, False)]
    assert run["removed"] == 5 and emu.hashes(SEGMENT) == {sha(normalized_email(i)) for i in range(5, 310)}


def test_add_only_keeps_and_replace_rewrites_the_segment(tmp_path, token):
    add_only = Platform(**{**YANDEX.__dict__, "mode": "add_only"})
    with emulator() as emu:
        run_sync(tmp_path / "add", emu, range(100), add_only)
        run, _ = run_sync(tmp_path / "add", emu, range(50, 150), add_only)
    assert run["removed"] == 0 and emu.hashes(SEGMENT) == {sha(normalized_email(i)) for i in range(150)}

    replace = Platform(**{**YANDEX.__dict__, "mode": "replace", "options": {"rows_per_file": 60}})
    with emulator() as emu:
        run_sync(tmp_path / "replace", emu, range(100), replace)
        run, _ = run_sync(tmp_path / "replace", emu, range(50, 150), replace)
        assert emu.hashes(SEGMENT) == {sha(normalized_email(i)) for i in range(50, 150)}
        assert [u["modification"] for u in emu.uploads[-2:]] == ["replace", "addition"]
        run, _ = run_sync(tmp_path / "replace", emu, [], replace, rows=[])
        assert run["status"] == "succeeded" and emu.hashes(SEGMENT) == set()
        assert emu.uploads[-1] == {"modification": "replace", "rows": 0, "check_size": False}


def test_the_segment_header_is_kept_and_members_outside_it_are_rejected(tmp_path, token):
    only_email = Platform(**{**YANDEX.__dict__, "options": {"columns": ["email"]}})
    people = [person(i) for i in range(120)] + [person(500, email=None)]
    with emulator(columns=("email",)) as emu:
        run, errors = run_sync(tmp_path, emu, None, only_email, rows=people)
    assert run["accepted"] == 120 and run["rejected"] == 1
    assert [(e["member_key"], e["reason"]) for e in errors] == [
        ("c0000500", "no identifier among the segment's columns (email)")]
    assert emu.hashes(SEGMENT) == {sha(normalized_email(i)) for i in range(120)}


def test_files_are_split_below_the_size_limit(tmp_path, token, monkeypatch):
    row = 64 + 1 + 64 + 1
    monkeypatch.setattr(yandex_audience, "MAX_FILE_BYTES", len("email,phone\n") + 100 * row)
    with emulator(max_file_bytes=len("email,phone\n") + 100 * row) as emu:
        run, _ = run_sync(tmp_path, emu, range(250))
    assert run["status"] == "succeeded" and [u["rows"] for u in emu.uploads] == [100, 100, 50]
    assert len(emu.hashes(SEGMENT)) == 250


def test_emulator_refuses_oversized_small_unhashed_or_misshapen_files():
    good = [f"{sha(f'{i}@x.co')},{sha(f'7912{i:07d}')}" for i in range(100)]
    with emulator(max_file_bytes=len("email,phone\n") + 100 * 130) as emu:
        too_big = upload(emu, good + [good[0]])  # one row over the size limit
        assert too_big.status_code == 400 and "at most" in too_big.json()["message"]
        assert upload(emu, good).status_code == 200
        small = upload(emu, good[:99], modification="subtraction")
        assert small.status_code == 400 and "at least 100" in small.json()["message"]
        assert upload(emu, good[:99], check_size="false", modification="subtraction").status_code == 200
        assert len(emu.hashes(SEGMENT)) == 1
        unhashed = upload(emu, ["customer1@example.com,79120000001"], check_size="false")
        assert unhashed.status_code == 400 and "line 2" in unhashed.json()["message"]
        header = upload(emu, good, header="phone,email")
        assert header.status_code == 400 and "original one" in header.json()["message"]
        wrong = upload(emu, good, token="nope")
        assert wrong.status_code == 403 and wrong.json()["errors"][0]["error_type"] == "invalid_token"
        assert len(emu.hashes(SEGMENT)) == 1  # refused files changed nothing


def test_dry_run_writes_the_files_without_the_token_and_sends_nothing(tmp_path, token):
    with emulator() as emu:
        run, _ = run_sync(tmp_path, emu, range(3), dry_run=True)
    assert emu.log == [] and run["status"] == "succeeded"
    folder = tmp_path / "sync" / "dry-run" / f"{AUDIENCE}__dest"
    [record] = [json.loads(line) for line in (folder / "requests.jsonl").read_text().splitlines()]
    assert record["url"].endswith(f"/segment/{SEGMENT}/modify_data")
    assert record["params"] == {"modification_type": "addition", "check_size": "false"}
    assert record["headers"]["Authorization"] == "***"
    lines = (folder / record["files"]["file"]).read_text().splitlines()
    assert lines[0] == "email,phone"
    assert set(lines[1:]) == {f"{sha(normalized_email(i))},{sha(normalized_phone(i)[1:])}" for i in range(3)}
    assert "test-token" not in "".join(p.read_text() for p in folder.iterdir())


def test_wrong_token_fails_the_run_and_is_recorded(tmp_path, monkeypatch):
    monkeypatch.setenv("WINBACK_TEST_DEST_TOKEN", "wrong")
    with emulator() as emu:
        run, _ = run_sync(tmp_path, emu, range(3))
    assert run["status"] == "failed" and "HTTP 403" in run["error"] and "wrong" not in run["error"]
    assert emu.hashes(SEGMENT) == set()


def test_an_unknown_segment_is_not_found_unless_the_emulator_creates_it():
    row = [f"{sha('a@b.co')},"]
    with YandexAudienceEmulator(auto_create=False) as emu:
        assert upload(emu, row, check_size="false").status_code == 404
    with YandexAudienceEmulator() as emu:  # as `python -m winback.emulators yandex_audience` runs it
        assert upload(emu, row, check_size="false").status_code == 200
        assert emu.hashes(SEGMENT) == {sha("a@b.co")}
