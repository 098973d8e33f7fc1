"""UniSender against its emulator: plain trimmed lower-case addresses and E.164 phones
imported 500 a call with the key in the form body, per-row problems (role addresses,
spam traps) recorded with UniSender's reason, removal taking contacts out of the list
only, and a dry run that writes the form without the key."""

from __future__ import annotations

import json

import pytest
import requests
from sync_support import (
    normalized_email,
    normalized_phone,
    person,
    write_members,
)
from winback.emulators.unisender import DEFAULT_LIST, UniSenderEmulator
from winback.sync.engine import sync
from winback.warehouse import Warehouse

from destinations.contract import (
    AUDIENCE,
    Platform,
    check_contract,
    sync_rounds,
    write_config,
)

KEY = "6k4x-unisender-secret-key"
OTHER_LIST = "7002"

UNISENDER = Platform(
    kind="unisender", emulator=UniSenderEmulator, channel="email", identifiers=["email", "phone"],
    # list_id as YAML reads an unquoted number: an int
    held=lambda emu: emu.members(), expected=normalized_email, target={"list_id": int(DEFAULT_LIST)},
    secrets={"token": KEY}, api_prefix="/ru/api",
    reject=lambda emu, values: emu.spam_traps.update(values),
)


def run(tmp_path, monkeypatch, emu, rounds, options=None, key=KEY, **sync_args):
    return sync_rounds(tmp_path, monkeypatch, UNISENDER, emu.base_url, rounds, key, options, **sync_args)


def imports(emu: UniSenderEmulator) -> list[dict]:
    return [f for f in emu.received if any(k.startswith("data[") for k in f)]


def rows(form: dict) -> list[list[str]]:
    names = sorted((int(k[12:-1]), v[-1]) for k, v in form.items() if k.startswith("field_names["))
    out: dict[int, dict[int, str]] = {}
    for key, value in form.items():
        if key.startswith("data["):
            i, j = (int(x) for x in key[5:-1].split("]["))
            out.setdefault(i, {})[j] = value[-1]
    return [[name for _, name in names]] + [[r[j] for j in sorted(r)] for _, r in sorted(out.items())]


def test_contract(tmp_path, monkeypatch):
    check_contract(UNISENDER, tmp_path, monkeypatch)


def test_contract_removing_with_exclude(tmp_path, monkeypatch):
    check_contract(Platform(**{**UNISENDER.__dict__, "options": {"removal": "exclude"}}), tmp_path, monkeypatch)


def test_wire_format_form_body_fields_and_phones_in_e164(tmp_path, monkeypatch):
    people = [person(i) for i in range(3)]  # the three Russian spellings of a mobile
    with UniSenderEmulator(token=KEY) as emu:
        [summary], _ = run(tmp_path, monkeypatch, emu, [people])
    [form] = imports(emu)
    assert form["format"] == "json" and form["api_key"] == KEY  # in the body ...
    assert all(r["path"] == "/ru/api/importContacts" for r in emu.log)  # ... never in the URL
    assert (form["overwrite_lists"], form["overwrite_tags"]) == ("0", "0")
    assert rows(form) == [["email", "email_list_ids", "phone", "Name"]] + [
        [normalized_email(i), DEFAULT_LIST, normalized_phone(i), f"Name{i}"] for i in range(3)]
    assert {emu.contacts[normalized_email(i)]["phone"] for i in range(3)} == {normalized_phone(i) for i in range(3)}
    assert summary["accepted"] == 3 and summary["figures"]["inserted"] == 3


def test_attributes_go_to_the_mapped_user_fields(tmp_path, monkeypatch):
    options = {"fields": {"first_name": "Name", "offer": "winback_offer"}}
    with UniSenderEmulator(token=KEY, user_fields={"Name", "winback_offer"}) as emu:
        run(tmp_path, monkeypatch, emu, [[person(0, offer="WB10"), person(1)]], options=options)
    assert emu.contacts[normalized_email(0)]["fields"] == {"Name": "Name0", "winback_offer": "WB10"}
    assert emu.contacts[normalized_email(1)]["fields"] == {"Name": "Name1", "winback_offer": ""}


def test_the_emulator_refuses_oversized_imports_and_a_wrong_key():
    def form(n: int, key: str = KEY) -> dict:
        fields = {"format": "json", "api_key": key, "field_names[0]": "email", "field_names[1]": "email_list_ids"}
        for i in range(n):
            fields |= {f"data[{i}][0]": f"c{i}@example.com", f"data[{i}][1]": DEFAULT_LIST}
        return fields

    with UniSenderEmulator(token=KEY) as emu:
        url = f"{emu.base_url}/ru/api/importContacts"
        too_many = requests.post(url, data=form(501), timeout=10)
        wrong_key = requests.post(url, data=form(1, key="nope"), timeout=10)
        fits = requests.post(url, data=form(500), timeout=10)
    assert too_many.status_code == 400 and "at most 500" in too_many.json()["error"]
    assert wrong_key.status_code == 200 and wrong_key.json()["code"] == "invalid_api_key"
    assert fits.status_code == 200 and fits.json()["result"]["inserted"] == 500
    assert len(emu.members()) == 500


def test_role_addresses_are_refused_per_row_with_unisender_s_reason(tmp_path, monkeypatch):
    people = [person(0), person(1, email="Info@Shop.example"), person(2, email=" sales@shop.example"), person(3)]
    with UniSenderEmulator(token=KEY) as emu:
        [summary], errors = run(tmp_path, monkeypatch, emu, [people])
    assert summary["accepted"] == 2 and summary["rejected"] == 2
    assert emu.members() == {normalized_email(0), normalized_email(3)}
    reasons = {e["member_key"]: e["reason"] for e in errors}
    assert set(reasons) == {"c0000001", "c0000002"}
    assert all(r.startswith("UniSender role_address:") and "shop.example" not in r for r in reasons.values())


def test_a_member_without_an_email_is_rejected_not_sent(tmp_path, monkeypatch):
    with UniSenderEmulator(token=KEY) as emu:
        [summary], errors = run(tmp_path, monkeypatch, emu, [[person(0), person(1, email=None)]])
    assert summary["accepted"] == 1 and summary["rejected"] == 1 and summary["invalid"] == 0
    assert [e["member_key"] for e in errors] == ["c0000001"] and "no valid email" in errors[0]["reason"]
    assert normalized_phone(1) not in {c["phone"] for c in emu.contacts.values()}


def test_removal_excludes_from_the_list_only_in_bulk(tmp_path, monkeypatch):
    with UniSenderEmulator(token=KEY, lists={DEFAULT_LIST: set(), OTHER_LIST: {normalized_email(0)}}) as emu:
        summaries, _ = run(tmp_path, monkeypatch, emu, [[person(i) for i in range(600)],
                                                         [person(i) for i in range(100, 600)]])
    assert summaries[1]["removed"] == 100
    assert emu.members() == {normalized_email(i) for i in range(100, 600)}
    assert emu.members(OTHER_LIST) == {normalized_email(0)}  # overwrite_lists=0: other lists untouched
    assert len(emu.contacts) == 600  # still contacts of the account, not deleted
    removal = imports(emu)[-1]
    assert rows(removal)[0] == ["email", "email_excluded_list_ids"] and len(rows(removal)) == 101
    assert removal["overwrite_lists"] == "0"
    assert [r["path"] for r in emu.log].count("/ru/api/importContacts") == 2 + 1  # 600 in two, 100 out in one


def test_removal_with_exclude_sends_one_contact_per_call(tmp_path, monkeypatch):
    with UniSenderEmulator(token=KEY) as emu:
        summaries, _ = run(tmp_path, monkeypatch, emu, [[person(i) for i in range(10)],
                                                         [person(i) for i in range(3, 10)]],
                           options={"removal": "exclude"})
    excludes = [f for f in emu.received if "contact" in f]
    assert [(f["contact_type"], f["contact"], f["list_ids"]) for f in excludes] == [
        ("email", normalized_email(i), DEFAULT_LIST) for i in range(3)]
    assert summaries[1]["removed"] == 3 and emu.members() == {normalized_email(i) for i in range(3, 10)}


def test_retry_later_answers_are_waited_out(tmp_path, monkeypatch):
    with UniSenderEmulator(token=KEY, busy=1) as emu:
        [summary], _ = run(tmp_path, monkeypatch, emu, [[person(i) for i in range(5)]])
    assert summary["status"] == "succeeded" and summary["accepted"] == 5 and summary["requests"] == 2


def test_a_wrong_key_fails_the_run_without_showing_it(tmp_path, monkeypatch):
    with UniSenderEmulator(token=KEY) as emu:
        [summary], _ = run(tmp_path, monkeypatch, emu, [[person(0)]], key="wrong-key-123")
    assert summary["status"] == "failed" and "invalid_api_key" in summary["error"]
    assert "wrong-key-123" not in summary["error"]


@pytest.mark.parametrize("removal", ["import", "exclude"])
def test_a_dry_run_writes_the_form_without_the_key_and_sends_nothing(tmp_path, monkeypatch, removal):
    monkeypatch.setenv("WINBACK_TEST_DEST_TOKEN", KEY)
    with UniSenderEmulator(token=KEY) as emu:
        platform = Platform(**{**UNISENDER.__dict__, "options": {"removal": removal}})
        config = write_config(tmp_path, platform, emu.base_url, f"duckdb:///{tmp_path / 'w.duckdb'}")
        warehouse = Warehouse(config.warehouse_url)
        write_members(warehouse, AUDIENCE, "email", [person(i) for i in range(5)])
        sync(config, warehouse=warehouse)
        write_members(warehouse, AUDIENCE, "email", [person(i) for i in range(1, 7)])
        calls = len(emu.log)
        [dry] = sync(config, warehouse=warehouse, dry_run=True)
        warehouse.dispose()
    assert len(emu.log) == calls and dry["planned_adds"] == 2 and dry["planned_removes"] == 1
    written = (tmp_path / "sync/dry-run" / f"{AUDIENCE}__dest" / "requests.jsonl").read_text()
    assert KEY not in written
    calls = [json.loads(line) for line in written.splitlines()]
    forms = [{k: [v] for k, v in c["data"]} for c in calls]
    assert all(f["api_key"] == ["***"] for f in forms)
    assert rows(forms[0])[1:] == [[normalized_email(i), DEFAULT_LIST, normalized_phone(i), f"Name{i}"]
                                  for i in (5, 6)]
    if removal == "import":
        assert rows(forms[1])[1:] == [[normalized_email(0), DEFAULT_LIST]]
    else:
        assert forms[1]["contact"] == [normalized_email(0)] and calls[1]["url"].endswith("/exclude")


def test_http_defaults_follow_unisender_unless_configured(tmp_path, monkeypatch):
    from destinations.contract import write_config

    config = write_config(tmp_path, UNISENDER, "http://127.0.0.1:9", f"duckdb:///{tmp_path / 'w.duckdb'}")
    assert (config.destinations["dest"].http.timeout, config.destinations["dest"].http.max_retries) == (35, 2)
