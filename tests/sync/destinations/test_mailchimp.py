"""Mailchimp against its emulator: plain trimmed lower-case addresses subscribed in
batches of at most 500, membership kept as a static segment, removal only takes members
out of the segment, 403 is throttling, the host comes from the API key's data centre."""

from __future__ import annotations

import base64
import json
from decimal import Decimal

import pytest
import requests
import yaml
from sync_support import normalized_email, person, write_members
from winback.config import load_config
from winback.emulators.base import Faults
from winback.emulators.mailchimp import DEFAULT_LIST, DEFAULT_SEGMENT, MailchimpEmulator
from winback.sync.engine import sync
from winback.warehouse import Warehouse

from destinations.contract import (
    AUDIENCE,
    Platform,
    check_contract,
    sync_rounds,
    write_config,
)

KEY = "0123456789abcdef0123456789abcdef-us21"

MAILCHIMP = Platform(
    kind="mailchimp", emulator=MailchimpEmulator, channel="email", identifiers=["email"],
    held=lambda emu: emu.segment(), expected=normalized_email,
    # segment_id as YAML reads an unquoted number: an int
    target={"list_id": DEFAULT_LIST, "segment_id": int(DEFAULT_SEGMENT)}, secrets={"token": KEY},
    reject=lambda emu, values: emu.rejected_emails.update(values),
)


def run(tmp_path, monkeypatch, emu, rounds, options=None, key=KEY, **sync_args):
    return sync_rounds(tmp_path, monkeypatch, MAILCHIMP, emu.base_url, rounds, key, options, **sync_args)


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"any:{key}".encode()).decode()}


def test_contract(tmp_path, monkeypatch):
    check_contract(MAILCHIMP, tmp_path, monkeypatch)


def test_403_is_throttling_and_is_waited_out(tmp_path, monkeypatch):
    with MailchimpEmulator(token=KEY, faults=Faults(throttle_every=2, throttle_status=403)) as emu:
        [summary], _ = run(tmp_path, monkeypatch, emu, [[person(i) for i in range(1_200)]])
    assert summary["status"] == "succeeded" and summary["accepted"] == 1_200
    assert 403 in {r["status"] for r in emu.log} and summary["retries"] >= 3
    assert emu.segment() == {normalized_email(i) for i in range(1_200)}


def test_wire_format_basic_auth_batches_and_merge_fields(tmp_path, monkeypatch):
    options = {"merge_fields": {"first_name": "FNAME", "offer": "OFFER", "cart_value": "CARTVALUE"}}
    people = [person(i, offer="WB10" if i % 2 else None, cart_value=Decimal("12.50")) for i in range(501)]
    with MailchimpEmulator(token=KEY) as emu:
        [summary], _ = run(tmp_path, monkeypatch, emu, [people], options=options)
    batches = [body for path, body in emu.received if path == f"/3.0/lists/{DEFAULT_LIST}"]
    assert [len(b["members"]) for b in batches] == [500, 1]
    first = batches[0]["members"][0]
    assert batches[0]["update_existing"] is True
    assert first == {"email_address": "customer0@example.com", "status": "subscribed",
                     "merge_fields": {"FNAME": "Name0", "OFFER": "", "CARTVALUE": 12.5}}
    assert emu.lists[DEFAULT_LIST]["customer1@example.com"]["merge_fields"]["OFFER"] == "WB10"
    segment_calls = [body for path, body in emu.received if "/segments/" in path]
    assert [len(b["members_to_add"]) for b in segment_calls] == [500, 1]
    assert summary["accepted"] == 501 and summary["figures"]["total_created"] == 501


def test_the_playbook_attributes_go_as_merge_fields_with_their_types(tmp_path, monkeypatch):
    # what a win-back, a trigger and a loyalty mail need, under the account's own tags
    options = {"merge_fields": {"main_category": "CATEGORY", "days_since_last_order": "DAYS",
                                "winback_offer": "WBOFFER", "trigger": "TRIGGER", "occasion_on": "OCCASION",
                                "milestone": "NTH", "amount_to_next_tier": "TOTIER", "late_deliveries": "LATE"}}
    people = [person(0, main_category="pet_food", days_since_last_order=95, winback_offer="free_delivery",
                     trigger="milestone", occasion_on="2026-06-29", milestone=5,
                     amount_to_next_tier=Decimal("2000.50"), late_deliveries=1),
              person(1)]
    with MailchimpEmulator(token=KEY) as emu:
        [first], _ = run(tmp_path, monkeypatch, emu, [people], options=options)
        # days since the last order moves on: mapped, so the member is updated
        people[0]["days_since_last_order"] = 96
        [second], _ = run(tmp_path, monkeypatch, emu, [people], options=options)
    [batch] = [body for path, body in emu.received if path == f"/3.0/lists/{DEFAULT_LIST}"][:1]
    assert batch["members"][0]["merge_fields"] == {
        "CATEGORY": "pet_food", "DAYS": 95, "WBOFFER": "free_delivery", "TRIGGER": "milestone",
        "OCCASION": "2026-06-29", "NTH": 5, "TOTIER": 2000.5, "LATE": 1}
    assert batch["members"][1]["merge_fields"] == {tag: "" for tag in options["merge_fields"].values()}
    assert first["accepted"] == 2 and second["accepted"] == 1
    assert emu.lists[DEFAULT_LIST]["customer0@example.com"]["merge_fields"]["DAYS"] == 96


def test_the_emulator_refuses_oversized_calls_and_a_wrong_key():
    with MailchimpEmulator(token=KEY) as emu:
        url = f"{emu.base_url}/3.0/lists/{DEFAULT_LIST}"
        members = [{"email_address": f"c{i}@example.com", "status": "subscribed"} for i in range(501)]
        too_many = requests.post(url, json={"members": members}, headers=basic(KEY), timeout=10)
        segment = requests.post(f"{url}/segments/{DEFAULT_SEGMENT}", headers=basic(KEY), timeout=10,
                                json={"members_to_remove": [m["email_address"] for m in members]})
        wrong_key = requests.post(url, json={"members": members[:500]}, headers=basic("nope-us21"), timeout=10)
        fits = requests.post(url, json={"members": members[:500]}, headers=basic(KEY), timeout=10)
    assert too_many.status_code == 400 and "at most 500" in too_many.json()["detail"]
    assert segment.status_code == 400 and "at most 500" in segment.json()["detail"]
    assert wrong_key.status_code == 401 and wrong_key.json()["title"] == "API Key Invalid"
    assert fits.status_code == 200 and fits.json()["total_created"] == 500


def test_removal_takes_members_out_of_the_segment_and_leaves_them_subscribed(tmp_path, monkeypatch):
    with MailchimpEmulator(token=KEY) as emu:
        summaries, _ = run(tmp_path, monkeypatch, emu, [[person(i) for i in range(600)],
                                                         [person(i) for i in range(100, 600)]])
    assert summaries[1]["removed"] == 100 and summaries[1]["sent"] == 0
    assert emu.segment() == {normalized_email(i) for i in range(100, 600)}
    contacts = emu.lists[DEFAULT_LIST]
    assert len(contacts) == 600 and {c["status"] for c in contacts.values()} == {"subscribed"}
    removals = [body for path, body in emu.received if "/segments/" in path and body.get("members_to_remove")]
    assert [len(b["members_to_remove"]) for b in removals] == [100]
    assert {r["method"] for r in emu.log} == {"POST"}  # nothing deleted, nobody unsubscribed


def test_unsubscribed_contacts_are_not_resubscribed_and_the_reason_is_recorded(tmp_path, monkeypatch):
    held = {normalized_email(1): {"status": "unsubscribed", "merge_fields": {}}}
    with MailchimpEmulator(token=KEY, lists={DEFAULT_LIST: held}) as emu:
        [summary], errors = run(tmp_path, monkeypatch, emu, [[person(i) for i in range(3)]])
    assert summary["accepted"] == 2 and summary["rejected"] == 1
    assert emu.lists[DEFAULT_LIST][normalized_email(1)]["status"] == "unsubscribed"
    assert emu.segment() == {normalized_email(0), normalized_email(2)}
    [error] = errors
    assert error["member_key"] == "c0000001" and "compliance state" in error["reason"]
    assert normalized_email(1) not in error["reason"] and "<address>" in error["reason"]


def test_without_update_existing_known_contacts_are_left_alone_but_join_the_segment(tmp_path, monkeypatch):
    held = {normalized_email(0): {"status": "subscribed", "merge_fields": {"FNAME": "Kept"}}}
    with MailchimpEmulator(token=KEY, lists={DEFAULT_LIST: held}) as emu:
        [summary], errors = run(tmp_path, monkeypatch, emu, [[person(i) for i in range(3)]],
                                options={"update_existing": False})
    assert summary["accepted"] == 3 and not errors
    assert emu.lists[DEFAULT_LIST][normalized_email(0)]["merge_fields"] == {"FNAME": "Kept"}
    assert emu.segment() == {normalized_email(i) for i in range(3)}


def test_two_customers_sharing_an_address_are_sent_once(tmp_path, monkeypatch):
    people = [person(0), person(1, email=" CUSTOMER0@example.com")]
    with MailchimpEmulator(token=KEY) as emu:
        [summary], errors = run(tmp_path, monkeypatch, emu, [people])
    [(_, batch)] = [(p, b) for p, b in emu.received if p == f"/3.0/lists/{DEFAULT_LIST}"]
    assert [m["email_address"] for m in batch["members"]] == [normalized_email(0)]
    assert summary["accepted"] == 2 and not errors


def test_an_unknown_segment_fails_the_run(tmp_path, monkeypatch):
    with MailchimpEmulator(token=KEY, segments={DEFAULT_LIST: {"1": set()}}) as emu:
        [summary], _ = run(tmp_path, monkeypatch, emu, [[person(0)]])
    assert summary["status"] == "failed" and "HTTP 404" in summary["error"]


def dry_run_config(tmp_path, base_url):
    """A config whose base_url is unset, so the host must come from the key."""
    config = write_config(tmp_path, MAILCHIMP, base_url, f"duckdb:///{tmp_path / 'w.duckdb'}")
    document = yaml.safe_load(config.path.read_text())
    document["destinations"]["dest"]["base_url"] = None
    config.path.write_text(yaml.safe_dump(document, sort_keys=False))
    return load_config(config.path)


def test_a_dry_run_writes_requests_to_the_key_s_data_centre_without_the_key(tmp_path, monkeypatch):
    monkeypatch.setenv("WINBACK_TEST_DEST_TOKEN", KEY)
    with MailchimpEmulator(token=KEY) as emu:
        config = dry_run_config(tmp_path, emu.base_url)
        warehouse = Warehouse(config.warehouse_url)
        write_members(warehouse, AUDIENCE, "email", [person(i) for i in range(10)])
        [dry] = sync(config, warehouse=warehouse, dry_run=True)
        warehouse.dispose()
    assert emu.log == [] and dry["status"] == "succeeded" and dry["planned_adds"] == 10
    written = (tmp_path / "sync/dry-run" / f"{AUDIENCE}__dest" / "requests.jsonl").read_text()
    assert KEY not in written and KEY.split("-")[0] not in written
    calls = [json.loads(line) for line in written.splitlines()]
    assert [c["url"] for c in calls] == [
        f"https://us21.api.mailchimp.com/3.0/lists/{DEFAULT_LIST}",
        f"https://us21.api.mailchimp.com/3.0/lists/{DEFAULT_LIST}/segments/{DEFAULT_SEGMENT}"]
    assert {m["email_address"] for m in calls[0]["json"]["members"]} == {normalized_email(i) for i in range(10)}


@pytest.mark.parametrize("key", ["no-data-centre-suffix-", "nodash"])
def test_a_key_without_data_centre_fails_the_run_clearly(tmp_path, monkeypatch, key):
    monkeypatch.setenv("WINBACK_TEST_DEST_TOKEN", key)
    config = dry_run_config(tmp_path, "http://127.0.0.1:9")
    warehouse = Warehouse(config.warehouse_url)
    write_members(warehouse, AUDIENCE, "email", [person(0)])
    [summary] = sync(config, warehouse=warehouse)
    warehouse.dispose()
    assert summary["status"] == "failed" and "data-centre suffix" in summary["error"] and key not in summary["error"]
