"""SendPulse against its emulator: trimmed lower-case addresses added to a mailing list
with their variables (100 a call), removed from it 100 a call, over a client-credentials
token renewed before it expires (and once after a 401), within the account's request
limit."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
import requests
from sync_support import Clock, normalized_email, person
from winback.emulators.sendpulse import CLIENT_ID, CLIENT_SECRET, SendPulseEmulator
from winback.sync import transport
from winback.sync.destinations import oauth, sendpulse

from destinations.contract import (
    Platform,
    check_contract,
    sync_once,
    write_config,
)

LIST_ID = "88001"
SECRETS = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}

SENDPULSE = Platform(
    kind="sendpulse", emulator=SendPulseEmulator, channel="email", identifiers=["email", "phone"],
    held=lambda emu: emu.members(LIST_ID), expected=normalized_email,
    target={"list_id": int(LIST_ID)},  # as YAML reads an unquoted id
    secrets=SECRETS,
)


@pytest.fixture
def credentials(monkeypatch):
    for name, value in SECRETS.items():
        monkeypatch.setenv(f"WINBACK_TEST_DEST_{name.upper()}", value)


def run(tmp_path: Path, emu: SendPulseEmulator, rows: list[dict], platform: Platform = SENDPULSE, **sync_settings):
    return sync_once(tmp_path, platform, emu.base_url, rows, **sync_settings)


def calls(emu: SendPulseEmulator, method: str) -> list[list]:
    return [body["emails"] for m, path, body in emu.received if m == method and path == f"/addressbooks/{LIST_ID}/emails"]


class Ticking(Clock):
    """The emulator's clock moves on `step` seconds each time it reads it (one read per
    request it authorizes): an hour passes within one run."""

    def __init__(self, step: float):
        super().__init__()
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def test_contract(tmp_path, monkeypatch):
    check_contract(SENDPULSE, tmp_path, monkeypatch)


def test_wire_format_token_variables_and_batches(tmp_path, credentials):
    options = {"variables": {"first_name": "name", "offer": "Offer", "cart_value": "cart value"}}
    platform = Platform(**{**SENDPULSE.__dict__, "options": options})
    people = [person(i, offer="WB10" if i == 1 else None) for i in range(250)]
    with SendPulseEmulator() as emu:
        first, _ = run(tmp_path, emu, people, platform)
        second, _ = run(tmp_path, emu, people[150:], platform)
    assert first["status"] == second["status"] == "succeeded"
    assert [len(c) for c in calls(emu, "POST")] == [100, 100, 50]
    head = calls(emu, "POST")[0][:2]
    # A value that is gone (offer, cart_value) is left out, not sent empty.
    assert head == [{"email": "customer0@example.com", "variables": {"name": "Name0"}},
                    {"email": "customer1@example.com", "variables": {"name": "Name1", "Offer": "WB10"}}]
    assert [len(c) for c in calls(emu, "DELETE")] == [100, 50]
    assert emu.members(LIST_ID) == {normalized_email(i) for i in range(150, 250)}
    assert second["removed"] == 150 and first["figures"]["sendpulse_added"] == 250
    # One token a run, asked for with the client credentials in a JSON body.
    assert len(emu.requests_to(r"^/oauth/access_token$")) == 2


def test_the_playbook_attributes_go_as_variables(tmp_path, credentials):
    options = {"variables": {"main_category": "category", "days_since_last_order": "days", "trigger": "trigger",
                             "category": "replenish", "loyalty_tier": "tier", "next_loyalty_tier": "next_tier",
                             "amount_to_next_tier": "to_next_tier"}}
    platform = Platform(**{**SENDPULSE.__dict__, "options": options})
    people = [person(0, main_category="pet_food", days_since_last_order=25, trigger="replenishment",
                     category="pet_food", loyalty_tier="silver", next_loyalty_tier="gold",
                     amount_to_next_tier=Decimal("5000.00"))]
    with SendPulseEmulator() as emu:
        summary, _ = run(tmp_path, emu, people, platform)
    assert summary["status"] == "succeeded"
    [[sent]] = calls(emu, "POST")
    assert sent == {"email": "customer0@example.com",
                    "variables": {"category": "pet_food", "days": 25, "trigger": "replenishment",
                                  "replenish": "pet_food", "tier": "silver", "next_tier": "gold",
                                  "to_next_tier": 5000.0}}


def test_the_token_is_renewed_before_it_expires(tmp_path, credentials, monkeypatch):
    """Tokens last an hour; here an hour passes within the run (the emulator's clock moves
    10 minutes a request). The destination asks for a new token before SendPulse would
    refuse the old one: no request is answered 401."""
    clock = Ticking(step=600)
    monkeypatch.setattr(oauth, "time", clock)  # the token's clock
    with SendPulseEmulator(clock=clock) as emu:
        summary, _ = run(tmp_path, emu, [person(i) for i in range(1_200)])
    assert summary["status"] == "succeeded" and summary["accepted"] == 1_200
    assert len(calls(emu, "POST")) == 12
    assert len(emu.requests_to(r"^/oauth/access_token$")) >= 2
    assert not emu.requests_to(r".", status=401)
    assert emu.members(LIST_ID) == {normalized_email(i) for i in range(1_200)}


@pytest.mark.parametrize("paced", [True, False])
def test_requests_are_paced_under_the_account_limit(tmp_path, credentials, monkeypatch, paced):
    """SendPulse allows 10 requests a second. On a controlled clock (the transport's pacing
    sleeps on it, the emulator counts on it) the sync's 16 requests come 0.1 s apart and
    none is refused; without the pacing the 11th would be (the second case shows the
    emulator would have caught it)."""
    clock = Clock()
    monkeypatch.setattr(transport, "time", clock)
    if not paced:
        monkeypatch.setattr(sendpulse.SendPulse, "min_interval", 0.0)
    with SendPulseEmulator(clock=clock, requests_per_second=sendpulse.REQUESTS_PER_SECOND) as emu:
        summary, _ = run(tmp_path, emu, [person(i) for i in range(1_500)])
    throttled = emu.requests_to(r".", status=429)
    if paced:
        assert summary["status"] == "succeeded" and not throttled and len(emu.log) == 16
        assert emu.members(LIST_ID) == {normalized_email(i) for i in range(1_500)}
    else:
        assert throttled


def test_a_revoked_token_is_replaced_once(tmp_path, credentials):
    with SendPulseEmulator(revoke_after=1) as emu:
        summary, _ = run(tmp_path, emu, [person(i) for i in range(300)])
    assert summary["status"] == "succeeded" and summary["accepted"] == 300
    assert len(emu.requests_to(r"/emails$", status=401)) == 1
    assert len(emu.requests_to(r"^/oauth/access_token$")) == 2
    assert emu.members(LIST_ID) == {normalized_email(i) for i in range(300)}


def test_wrong_credentials_fail_the_run_and_never_show_the_secret(tmp_path, monkeypatch):
    monkeypatch.setenv("WINBACK_TEST_DEST_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("WINBACK_TEST_DEST_CLIENT_SECRET", "wrong-secret-value")
    with SendPulseEmulator() as emu:
        summary, tables = run(tmp_path, emu, [person(i) for i in range(3)])
    assert summary["status"] == "failed" and "HTTP 401" in summary["error"]
    assert "client_secret" in summary["error"] and "wrong-secret-value" not in summary["error"]
    assert emu.members(LIST_ID) == set() and tables["sync_state"] == []


def test_add_only_never_removes(tmp_path, credentials):
    platform = Platform(**{**SENDPULSE.__dict__, "mode": "add_only"})
    with SendPulseEmulator() as emu:
        run(tmp_path, emu, [person(i) for i in range(10)], platform)
        summary, _ = run(tmp_path, emu, [person(i) for i in range(5)], platform)
    assert summary["removed"] == 0 and not calls(emu, "DELETE")
    assert emu.members(LIST_ID) == {normalized_email(i) for i in range(10)}


def test_dry_run_writes_requests_without_credentials_and_sends_nothing(tmp_path, credentials):
    with SendPulseEmulator() as emu:
        summary, _ = run(tmp_path, emu, [person(i) for i in range(5)], dry_run=True)
    assert summary["status"] == "succeeded" and emu.log == []
    text = (Path(summary["requests_dir"]) / "requests.jsonl").read_text()
    assert CLIENT_SECRET not in text and CLIENT_ID not in text
    [add] = [json.loads(line) for line in text.splitlines()]
    assert add["method"] == "POST" and add["url"].endswith(f"/addressbooks/{LIST_ID}/emails")
    assert add["headers"]["Authorization"] == "***" and len(add["json"]["emails"]) == 5


def test_variable_names_are_checked_when_the_configuration_loads(tmp_path):
    bad = Platform(**{**SENDPULSE.__dict__, "options": {"variables": {"first_name": "na-me!"}}})
    with pytest.raises(ValueError, match=r"options: variables\.first_name: String should match pattern"):
        write_config(tmp_path, bad, "http://127.0.0.1:1", f"duckdb:///{tmp_path / 'w.duckdb'}")


def test_the_emulator_keeps_the_documented_limits():
    """Removal of 101 addresses, an address not normalized, an expired token and an 11th
    request within a second are refused."""
    clock = Clock()
    with SendPulseEmulator(clock=clock, token_lifetime=3600, requests_per_second=sendpulse.REQUESTS_PER_SECOND) as emu:
        token = requests.post(f"{emu.base_url}/oauth/access_token", json={
            "grant_type": "client_credentials", **SECRETS}).json()["access_token"]
        url, auth = f"{emu.base_url}/addressbooks/{LIST_ID}/emails", {"Authorization": f"Bearer {token}"}
        emails = [f"c{i}@example.com" for i in range(sendpulse.MAX_REMOVE_EMAILS + 1)]
        assert requests.delete(url, json={"emails": emails}, headers=auth).status_code == 400
        assert requests.delete(url, json={"emails": emails[:-1]}, headers=auth).json() == {"result": True}
        assert requests.post(url, json={"emails": [{"email": " A@Example.com", "variables": {}}]},
                             headers=auth).status_code == 400
        statuses = [requests.post(url, json={"emails": ["a@example.com"]}, headers=auth).status_code
                    for _ in range(sendpulse.REQUESTS_PER_SECOND)]
        assert statuses == [200] * 6 + [429] * 4  # 4 requests came before within the second
        clock.now += 1.0
        assert requests.post(url, json={"emails": ["a@example.com"]}, headers=auth).status_code == 200
        clock.now += 3600
        assert requests.post(url, json={"emails": ["a@example.com"]}, headers=auth).status_code == 401
