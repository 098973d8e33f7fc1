"""VK Ads remarketing user lists against their emulator: the whole audience uploaded as a
file of SHA-256 hex lines (emails trimmed lower-case, phones as digits with the country
code), 2,000 - 5,000,000 unique entries; the new list replaces the previous one (and
takes its place in the segment) once VK reports it ready."""

from __future__ import annotations

import hashlib
import json
import stat
from pathlib import Path

import pytest
import requests
from sync_support import (
    Clock,
    normalized_email,
    normalized_phone,
    person,
)
from winback.emulators.vk_ads import VkAdsEmulator
from winback.sync.destinations import vk_ads

from destinations.contract import (
    AUDIENCE,
    Platform,
    check_contract,
    sync_once,
)

FAST = {"poll_interval": 0.01, "ready_timeout": 5}
LIST_NAME = f"winback dest {AUDIENCE}"  # the default: winback <destination> <audience>
UPLOAD = "/api/v3/remarketing/users_lists.json"


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


VK = Platform(
    kind="vk_ads", emulator=VkAdsEmulator, channel="ads", identifiers=["email", "phone"],
    held=lambda emu: emu.held(LIST_NAME), expected=lambda n: sha(normalized_email(n)),
    options=FAST, members=2_500, mode="replace",
)


def run(tmp_path: Path, emu: VkAdsEmulator, rows: list[dict], platform: Platform = VK, **sync_settings):
    return sync_once(tmp_path, platform, emu.base_url, rows, **sync_settings)


def people(start: int, stop: int, **overrides) -> list[dict]:
    return [person(i, **overrides) for i in range(start, stop)]


def upload(emu: VkAdsEmulator, lines: list[str], kind: str = "emails", token: str = "test-token",
           name: str = "manual") -> requests.Response:
    content = "".join(f"{line}\n" for line in lines).encode()
    return requests.post(emu.base_url + UPLOAD, headers={"Authorization": f"Bearer {token}"},
                         data={"name": name, "type": kind}, files={"file": ("list.txt", content)}, timeout=30)


@pytest.fixture
def token(monkeypatch):
    monkeypatch.setenv("WINBACK_TEST_DEST_TOKEN", "test-token")


def test_contract(tmp_path, monkeypatch):
    check_contract(VK, tmp_path, monkeypatch)


def test_wire_format_one_hashed_email_per_line(tmp_path, token):
    with VkAdsEmulator() as emu:
        summary, _ = run(tmp_path, emu, people(0, 2_000))
    [sent] = emu.uploads
    assert (sent["name"], sent["type"]) == (LIST_NAME, "emails")
    assert sent["content"] == "".join(f"{sha(normalized_email(i))}\n" for i in range(2_000)).encode()
    assert summary["status"] == "succeeded" and summary["accepted"] == 2_000
    assert summary["figures"] == {"list_id": sent["id"], "list_status": "ready", "entries": 2_000,
                                  "duplicate_entries": 0, "matched_ids_count": 1_600, "previous_lists_deleted": 0,
                                  "phones_parsed": 2_000, "phones_from_cache": 0}  # the audience's phones: cached


def test_phones_three_russian_spellings_hashed_as_digits(tmp_path, token):
    platform = Platform(**{**VK.__dict__, "target": {"identifier": "phone"}})
    with VkAdsEmulator() as emu:
        summary, _ = run(tmp_path, emu, people(0, 2_001), platform)  # 8 (912) ..., +7 912 ..., 7912...
    [sent] = emu.uploads
    assert sent["type"] == "phones" and summary["status"] == "succeeded"
    assert emu.held(LIST_NAME) == {sha(normalized_phone(i).lstrip("+")) for i in range(2_001)}
    assert sha("79120000000") in emu.held() and sha("+79120000000") not in emu.held()


def test_emulator_refuses_what_vk_refuses():
    hashes = [sha(f"customer{i}@example.com") for i in range(2_600)]
    with VkAdsEmulator(max_entries=2_500, max_bytes=2_550 * 65) as emu:
        assert upload(emu, hashes[:2_000], token="wrong").status_code == 401
        too_few = upload(emu, hashes[:1_999] + hashes[:10])  # duplicates do not count
        assert too_few.status_code == 400 and too_few.json()["error"]["fields"]["file"][0]["code"] == "not_enough_ids"
        assert upload(emu, hashes[:2_500]).status_code == 200
        too_many = upload(emu, hashes[:2_501])
        assert too_many.status_code == 400 and too_many.json()["error"]["fields"]["file"][0]["code"] == "too_many_ids"
        emu.max_entries = 5_000
        assert upload(emu, hashes[:2_551]).json()["error"]["fields"]["file"][0]["code"] == "too_large"
        assert upload(emu, [h.upper() for h in hashes[:2_000]]).status_code == 400  # hex must be lower-case
        assert upload(emu, [f"+7912{i:07d}" for i in range(2_000)], kind="phones").status_code == 400
        assert upload(emu, [f"Customer{i}@Example.com" for i in range(2_000)]).status_code == 400
        assert upload(emu, hashes[:2_000], kind="emails_sha256").status_code == 400
        assert len(emu.live()) == 1


def test_audience_below_the_minimum_fails_and_keeps_the_previous_list(tmp_path, token):
    with VkAdsEmulator() as emu:
        first, _ = run(tmp_path, emu, people(0, 2_100))
        small, tables = run(tmp_path, emu, people(0, 1_500))
    assert first["status"] == "succeeded"
    assert small["status"] == "failed"
    assert f"audience '{AUDIENCE}' has 1,500 unique emails" in small["error"]
    assert "at least 2,000" in small["error"]
    assert len(emu.uploads) == 1 and len(emu.live(LIST_NAME)) == 1  # nothing uploaded, nothing deleted
    assert len(tables["sync_state"]) == 2_100  # the platform still holds the old list
    assert tables["sync_runs"][-1]["status"] == "failed"


def test_a_target_identifier_the_audience_lacks_is_named_in_the_failure(tmp_path, token):
    with VkAdsEmulator() as emu:
        summary, _ = run(tmp_path, emu, people(0, 2_000, email=None))  # phones only; the list takes emails
    assert summary["status"] == "failed" and emu.uploads == []
    assert "has 0 unique emails" in summary["error"] and "2,000 members have no email" in summary["error"]


@pytest.mark.parametrize("limit, value, message", [
    ("MAX_ENTRIES", 2_050, "VK Ads takes at most 2,050"),
    ("MAX_FILE_BYTES", 2_050 * 65, "VK Ads takes at most 133,250 bytes"),
])
def test_audience_above_the_maximum_fails(tmp_path, token, monkeypatch, limit, value, message):
    monkeypatch.setattr(vk_ads, limit, value)
    with VkAdsEmulator() as emu:
        summary, _ = run(tmp_path, emu, people(0, 2_100))
    assert summary["status"] == "failed" and message in summary["error"] and emu.uploads == []


def test_new_list_replaces_the_previous_one_in_the_segment(tmp_path, token):
    platform = Platform(**{**VK.__dict__, "target": {"segment_id": 77}})
    with VkAdsEmulator(segments={77: {}}, ready_after=3) as emu:
        other = upload(emu, [sha(f"other{i}@example.com") for i in range(2_000)], name="someone else's").json()
        run(tmp_path, emu, people(0, 2_000), platform)
        [first] = emu.live(LIST_NAME)
        emu.segments[77][1] = {"id": 1, "object_type": "remarketing_users_list",
                               "params": {"source_id": other["id"], "type": "negative"}}
        summary, _ = run(tmp_path, emu, people(100, 2_200), platform)
        [second] = emu.live(LIST_NAME)
    assert summary["status"] == "succeeded" and summary["figures"]["previous_lists_deleted"] == 1
    assert second["id"] != first["id"] and emu.lists[first["id"]]["status"] == "deleted"
    assert emu.held(LIST_NAME) == {sha(normalized_email(i)) for i in range(100, 2_200)}
    assert emu.lists[other["id"]]["status"] == "receiving"  # another list of the account: untouched
    assert sorted((r["params"]["source_id"], r["params"]["type"]) for r in emu.segments[77].values()) == sorted(
        [(second["id"], "positive"), (other["id"], "negative")])
    assert len(emu.requests_to(rf"/users_lists/{second['id']}\.json$")) >= 3  # polled until ready


def keys(tables: dict) -> set[str]:
    return {r["member_key"] for r in tables["sync_state"]}


def segment_lists(emu: VkAdsEmulator) -> set[int]:
    return {r["params"]["source_id"] for r in emu.segments[77].values()}


def test_a_list_not_ready_in_time_is_not_confirmed_and_the_next_run_swaps_it_in(tmp_path, token, monkeypatch):
    """Before the fix a list still processing at ready_timeout was counted as synced: the
    next run, seeing no change, sent nothing and the segment kept the old list for good."""
    monkeypatch.setattr(vk_ads, "time", Clock())
    platform = Platform(**{**VK.__dict__, "target": {"segment_id": 77}, "options": {}})  # default timeout: 600 s
    with VkAdsEmulator(segments={77: {}}) as emu:
        run(tmp_path, emu, people(0, 2_000), platform)
        [first] = emu.live(LIST_NAME)
        emu.stall_uploads = True
        slow, slow_tables = run(tmp_path, emu, people(1, 2_001), platform)
        pending = emu.uploads[-1]["id"]
        in_use_meanwhile = segment_lists(emu)
        remembered = tmp_path / "sync" / "files" / f"{AUDIENCE}__dest" / vk_ads.PENDING_FILE
        modes = (stat.S_IMODE(remembered.stat().st_mode), stat.S_IMODE(remembered.parent.stat().st_mode))
        emu.finish_processing()
        resumed, tables = run(tmp_path, emu, people(1, 2_001), platform)
    assert slow["status"] == "failed" and f"VK Ads list {pending}" in slow["error"] and "'mapping'" in slow["error"]
    assert keys(slow_tables) == {f"c{i:07d}" for i in range(2_000)}  # still what the old list holds
    assert in_use_meanwhile == {first["id"]} and modes == (0o600, 0o700)
    assert resumed["status"] == "succeeded" and resumed["figures"]["resumed_upload"] is True
    assert len(emu.uploads) == 2  # the pending list was swapped in, not uploaded again
    assert segment_lists(emu) == {pending} and [item["id"] for item in emu.live(LIST_NAME)] == [pending]
    assert keys(tables) == {f"c{i:07d}" for i in range(1, 2_001)}
    assert not remembered.exists()


def test_a_pending_list_ready_by_the_next_run_goes_in_even_if_the_audience_changed(tmp_path, token, monkeypatch):
    monkeypatch.setattr(vk_ads, "time", Clock())
    platform = Platform(**{**VK.__dict__, "target": {"segment_id": 77}, "options": {}})
    with VkAdsEmulator(segments={77: {}}) as emu:
        run(tmp_path, emu, people(0, 2_000), platform)
        [first] = emu.live(LIST_NAME)
        emu.stall_uploads = True
        run(tmp_path, emu, people(1, 2_001), platform)
        older = emu.uploads[-1]["id"]
        emu.finish_processing()  # ready now; the audience changes again before the next run
        changed, tables = run(tmp_path, emu, people(2, 2_002), platform)
        newer = emu.uploads[-1]["id"]
        in_use = segment_lists(emu)
        emu.stall_uploads = False
        emu.finish_processing()
        last, last_tables = run(tmp_path, emu, people(2, 2_002), platform)
    assert changed["status"] == "failed" and newer != older
    assert in_use == {older} and emu.lists[first["id"]]["status"] == "deleted"  # a day late beats a week late
    assert keys(tables) == {f"c{i:07d}" for i in range(2_000)}  # nothing confirmed: older is not this audience
    assert last["status"] == "succeeded" and len(emu.uploads) == 3
    assert segment_lists(emu) == {newer} and emu.lists[older]["status"] == "deleted"
    assert emu.held(LIST_NAME) == {sha(normalized_email(i)) for i in range(2, 2_002)}
    assert keys(last_tables) == {f"c{i:07d}" for i in range(2, 2_002)}


def test_a_list_vk_drops_fails_the_run(tmp_path, token):
    with VkAdsEmulator(drop_new_lists=True) as emu:
        summary, _ = run(tmp_path, emu, people(0, 2_000))
    assert summary["status"] == "failed" and "deleted_to_notify" in summary["error"]


def test_members_without_the_list_identifier_are_rejected_with_the_reason(tmp_path, token):
    platform = Platform(**{**VK.__dict__, "target": {"identifier": "phone"}})
    rows = people(0, 2_000) + [person(i, phone=None) for i in range(2_000, 2_004)]
    with VkAdsEmulator() as emu:
        summary, tables = run(tmp_path, emu, rows, platform)
    assert summary["accepted"] == 2_000 and summary["rejected"] == 4
    assert {e["member_key"] for e in tables["sync_row_errors"]} == {f"c{i:07d}" for i in range(2_000, 2_004)}
    assert all("no phone" in e["reason"] for e in tables["sync_row_errors"])


def test_a_shared_address_is_written_once(tmp_path, token):
    rows = people(0, 2_000) + [person(2_000, email=" customer7@example.com")]
    with VkAdsEmulator() as emu:
        summary, tables = run(tmp_path, emu, rows)
    assert summary["accepted"] == 2_001 and len(tables["sync_state"]) == 2_001
    assert summary["figures"]["entries"] == 2_000 and summary["figures"]["duplicate_entries"] == 1
    assert emu.uploads[0]["content"].count(sha("customer7@example.com").encode()) == 1


def test_dry_run_writes_the_upload_and_sends_nothing(tmp_path, token):
    with VkAdsEmulator() as emu:
        summary, tables = run(tmp_path, emu, people(0, 2_000), dry_run=True)
    assert emu.log == [] and summary["status"] == "succeeded"
    assert not tables.get("sync_runs") and not tables.get("sync_state")  # a dry run changes nothing
    folder = Path(summary["requests_dir"])
    records = [json.loads(line) for line in (folder / "requests.jsonl").read_text().splitlines()]
    assert [(r["method"], r["url"].split("/api/")[1]) for r in records[:3]] == [
        ("POST", "v3/remarketing/users_lists.json"), ("GET", "v3/remarketing/users_lists/0.json"),
        ("GET", "v3/remarketing/users_lists.json")]
    assert records[0]["data"] == {"name": LIST_NAME, "type": "emails"}
    assert records[0]["headers"]["Authorization"] == "***"
    saved = folder / records[0]["files"]["file"]
    assert saved.read_bytes() == "".join(f"{sha(normalized_email(i))}\n" for i in range(2_000)).encode()
    assert not any("test-token" in p.read_text(errors="replace") for p in folder.iterdir() if p.is_file())


def test_wrong_token_fails_the_run_and_is_recorded(tmp_path, monkeypatch):
    monkeypatch.setenv("WINBACK_TEST_DEST_TOKEN", "wrong")
    with VkAdsEmulator() as emu:
        summary, tables = run(tmp_path, emu, people(0, 2_000))
    assert summary["status"] == tables["sync_runs"][0]["status"] == "failed"
    assert "HTTP 401" in tables["sync_runs"][0]["error"] and "wrong" not in tables["sync_runs"][0]["error"]
