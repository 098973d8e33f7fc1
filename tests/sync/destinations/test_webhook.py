"""The generic webhook against its receiver emulator: signed JSON batches of members
(HMAC-SHA256 over timestamp + "." + body), re-signed for every attempt, each with a
delivery_id the receiver applies once; plain or SHA-256 identifiers, per-row errors,
batch size from the options, and a per-audience path under base_url."""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import uuid
from decimal import Decimal
from pathlib import Path

import pytest
import requests
import yaml
from sync_support import (
    Clock,
    normalized_email,
    normalized_phone,
    person,
    table,
    write_members,
)
from winback.config import ConfigError, load_config
from winback.emulators.base import Faults
from winback.emulators.webhook import WebhookEmulator
from winback.sync.destinations import webhook
from winback.sync.destinations.webhook import (
    MAX_BATCH_SIZE,
    SIGNATURE_TOLERANCE_SECONDS,
    signature,
)
from winback.sync.engine import sync
from winback.warehouse import Warehouse

from destinations.contract import AUDIENCE, Platform, check_contract, write_config

SECRET = "test-token"  # the emulator's token is its signing secret


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


WEBHOOK = Platform(
    kind="webhook", emulator=WebhookEmulator, channel="sms", identifiers=["email", "phone"],
    held=lambda emu: emu.values(AUDIENCE), expected=normalized_email,
    secrets={"signing_secret": SECRET}, options={"batch_size": 500}, members=3_000, api_prefix="/hooks/winback",
    reject=lambda emu, values: emu.rejected_values.update(values),
)
HASHED = Platform(**{**WEBHOOK.__dict__, "emulator": functools.partial(WebhookEmulator, hashed=True),
                     "options": {"batch_size": 500, "hash_identifiers": True},
                     "expected": lambda n: sha(normalized_email(n))})


def run(tmp_path: Path, emu: WebhookEmulator, rows: list[dict], platform: Platform = WEBHOOK,
        edit=None, **sync_settings):
    config = write_config(tmp_path, platform, emu.base_url, f"duckdb:///{tmp_path / 'w.duckdb'}", **sync_settings)
    if edit:
        path = tmp_path / "winback.yaml"
        document = yaml.safe_load(path.read_text())
        edit(document["destinations"]["dest"])
        path.write_text(yaml.safe_dump(document))
        config = load_config(path)
    warehouse = Warehouse(config.warehouse_url)
    try:
        write_members(warehouse, AUDIENCE, platform.channel, rows)
        [summary] = sync(config, warehouse=warehouse)
        return summary, {t: table(warehouse, t) for t in ("sync_state", "sync_row_errors")
                         if warehouse.table_exists(t)}
    finally:
        warehouse.dispose()


@pytest.fixture
def secret(monkeypatch):
    monkeypatch.setenv("WINBACK_TEST_DEST_SIGNING_SECRET", SECRET)


def test_contract(tmp_path, monkeypatch):
    check_contract(WEBHOOK, tmp_path, monkeypatch)


def test_contract_with_hashed_identifiers(tmp_path, monkeypatch):
    check_contract(HASHED, tmp_path, monkeypatch)


def test_wire_format_members_attributes_and_path(tmp_path, secret):
    platform = Platform(**{**WEBHOOK.__dict__, "identifiers": ["email", "phone", "customer_id"],
                           "target": {"path": "audiences/lapsed"}})
    rows = [person(0, offer="SPRING10", cart_value=Decimal("12.50"), step=2), person(1, email=None)]
    with WebhookEmulator() as emu:
        summary, _ = run(tmp_path, emu, rows, platform)
    assert summary["status"] == "succeeded" and summary["accepted"] == 2
    assert emu.paths == {"/hooks/winback/audiences/lapsed": 1}
    held = emu.audiences[AUDIENCE]
    assert held["c0000000"] == {
        "member_key": "c0000000", "email": normalized_email(0), "phone": normalized_phone(0),
        "customer_id": "c0000000",
        "attributes": {"first_name": "Name0", "lifecycle_stage": "lapsed", "value_tier": "high",
                       "offer": "SPRING10", "cart_value": 12.5, "product_ids": None, "winback_offer": None,
                       "amount_to_free_delivery": None, "main_category": None, "days_since_last_order": None,
                       "last_feedback_score": None, "last_order_status": None, "last_reason": None,
                       "predicted_clv_365d": None, "step": 2, "trigger": None, "occasion_on": None,
                       "milestone": None, "years": None, "category": None, "loyalty_tier": None,
                       "next_loyalty_tier": None, "amount_to_next_tier": None, "late_deliveries": None}}
    assert "email" not in held["c0000001"]  # an identifier a member lacks is left out, not null


def test_attributes_go_under_the_configured_keys(tmp_path, secret):
    options = {**WEBHOOK.options, "attributes": {"first_name": "name", "days_since_last_order": "days"}}
    platform = Platform(**{**WEBHOOK.__dict__, "options": options})
    with WebhookEmulator() as emu:
        run(tmp_path, emu, [person(0, days_since_last_order=45)], platform)
    assert emu.audiences[AUDIENCE]["c0000000"]["attributes"] == {"name": "Name0", "days": 45}


@pytest.mark.parametrize("hashed", [False, True])
def test_phones_in_e164_for_the_three_spellings(tmp_path, secret, hashed):
    platform = HASHED if hashed else WEBHOOK
    with WebhookEmulator(hashed=hashed) as emu:
        run(tmp_path, emu, [person(i) for i in range(3)], platform)
    plain = {normalized_phone(i) for i in range(3)}
    assert emu.values(AUDIENCE, "phone") == ({sha(p) for p in plain} if hashed else plain)


def test_signature_is_hmac_of_timestamp_dot_raw_body():
    body = b'{"members":[]}'
    expected = hmac.new(b"k", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert signature("k", "1700000000", body) == f"sha256={expected}"


def post(emu: WebhookEmulator, body: bytes, timestamp: str | None = None, sign_body: bytes | None = None):
    timestamp = timestamp or str(int(emu.clock()))
    return requests.post(f"{emu.base_url}/hook", data=body, headers={
        "Content-Type": "application/json", "X-Winback-Timestamp": timestamp,
        "X-Winback-Signature": signature(SECRET, timestamp, body if sign_body is None else sign_body)})


def batch(n: int, operation: str = "add", delivery: str | None = None) -> bytes:
    return json.dumps({"audience": "a", "destination": "d", "operation": operation,
                       "delivery_id": delivery or uuid.uuid4().hex, "sent_at": "2026-01-01T00:00:00Z",
                       "members": [{"member_key": f"k{i}", "customer_id": f"k{i}", "attributes": {}}
                                   for i in range(n)]}).encode()


def test_receiver_refuses_tampered_stale_and_oversized_requests():
    clock = Clock()
    with WebhookEmulator(clock=clock) as emu:
        assert post(emu, batch(2)).status_code == 200
        assert post(emu, batch(2), sign_body=batch(1)).status_code == 401  # body changed after signing
        signed_at = str(int(clock.now))
        clock.now += SIGNATURE_TOLERANCE_SECONDS + 1
        reply = post(emu, batch(2), timestamp=signed_at)  # signed, then held back too long
        assert reply.status_code == 401 and "stale" in reply.json()["error"]
        reply = post(emu, batch(MAX_BATCH_SIZE + 1))
        assert reply.status_code == 400 and "at most" in reply.json()["error"]
        assert post(emu, batch(MAX_BATCH_SIZE)).status_code == 200


def test_receiver_applies_a_delivery_once_and_a_replay_changes_nothing():
    """A captured request sent again within the freshness window (same body, timestamp
    and signature) gets the first answer and is not applied: here it would have brought
    back members removed since."""
    clock = Clock()
    with WebhookEmulator(clock=clock, rejected_values={"k1"}) as emu:
        added = batch(3, delivery="d-1")
        first = post(emu, added, timestamp=str(int(clock.now)))
        assert post(emu, batch(3, "remove")).status_code == 200
        clock.now += 60
        replayed = post(emu, added, timestamp=str(int(clock.now) - 60))
    assert first.status_code == replayed.status_code == 200 and replayed.json() == first.json()
    assert first.json()["errors"] == [{"member_key": "k1", "reason": "identifier on the blocklist"}]
    assert emu.audiences["a"] == {} and emu.replays == 1


def test_a_retry_after_long_throttling_is_signed_afresh_with_the_same_delivery_id(tmp_path, secret, monkeypatch):
    """The receiver throttles the first attempt and the wait outlasts its freshness
    window (the controlled clock moves on 400 s). Before the fix the retry carried the
    first attempt's timestamp and was refused as stale (HTTP 401), failing the run."""
    clock = Clock()
    monkeypatch.setattr(webhook, "time", clock)
    seen: list[tuple[str, str, bytes]] = []

    class SlowReceiver(WebhookEmulator):
        def handle(self, request):
            seen.append((request.headers["x-winback-timestamp"], request.headers["x-winback-signature"],
                         request.body))
            status, body, headers = super().handle(request)
            if status == 429:
                clock.now += 400  # the throttling lasted longer than the tolerance
            return status, body, headers

    with SlowReceiver(clock=clock, faults=Faults(throttle_every=2, retry_after="0")) as emu:
        emu.calls = 1  # the first request is the 2nd call: throttled
        summary, _ = run(tmp_path, emu, [person(i) for i in range(3)])
    assert summary["status"] == "succeeded" and summary["accepted"] == 3 and summary["retries"] == 1
    (first_at, first_signature, first_body), (retry_at, retry_signature, retry_body) = seen
    assert int(retry_at) - int(first_at) == 400 and retry_signature != first_signature
    assert retry_body == first_body  # the same delivery: delivery_id and all
    assert len(emu.answers) == 1 and set(emu.audiences[AUDIENCE]) == {f"c{i:07d}" for i in range(3)}


def test_batch_size_option_and_its_cap(tmp_path, secret):
    platform = Platform(**{**WEBHOOK.__dict__, "options": {"batch_size": 100}})
    with WebhookEmulator(max_members=100) as emu:
        summary, _ = run(tmp_path, emu, [person(i) for i in range(250)], platform)
    assert summary["accepted"] == 250 and emu.paths == {"/hooks/winback": 3}
    with pytest.raises(ValueError, match="batch_size"):
        write_config(tmp_path, Platform(**{**WEBHOOK.__dict__, "options": {"batch_size": MAX_BATCH_SIZE + 1}}),
                     "http://127.0.0.1:1", f"duckdb:///{tmp_path / 'w.duckdb'}")


def test_removals_send_identifiers_only_and_add_only_keeps_members(tmp_path, secret):
    with WebhookEmulator(hashed=True, keep_bodies=True) as emu:
        run(tmp_path, emu, [person(i) for i in range(10)], HASHED)
        summary, _ = run(tmp_path, emu, [person(i) for i in range(4, 10)], HASHED)
    assert summary["removed"] == 4 and set(emu.audiences[AUDIENCE]) == {f"c{i:07d}" for i in range(4, 10)}
    [removal] = [b for b in emu.bodies if b["operation"] == "remove"]
    assert removal["members"][0] == {"member_key": "c0000000", "email": sha(normalized_email(0)),
                                     "phone": sha(normalized_phone(0))}  # the same hashes as added
    add_only = Platform(**{**WEBHOOK.__dict__, "mode": "add_only"})
    (tmp_path / "b").mkdir()
    with WebhookEmulator() as emu:
        run(tmp_path / "b", emu, [person(i) for i in range(10)], add_only)
        summary, _ = run(tmp_path / "b", emu, [person(i) for i in range(4)], add_only)
    assert summary["removed"] == 0 and len(emu.audiences[AUDIENCE]) == 10


def test_missing_base_url_is_a_configuration_error(tmp_path, secret):
    with WebhookEmulator() as emu, pytest.raises(ConfigError, match=r"destinations\.dest\.base_url: required for webhook"):
        run(tmp_path, emu, [person(0)], edit=lambda dest: dest.pop("base_url"))
    assert emu.log == []


def test_wrong_secret_is_refused_and_fails_the_run(tmp_path, monkeypatch):
    monkeypatch.setenv("WINBACK_TEST_DEST_SIGNING_SECRET", "wrong")
    with WebhookEmulator() as emu:
        summary, _ = run(tmp_path, emu, [person(0)])
    assert summary["status"] == "failed" and "HTTP 401" in summary["error"]


def test_dry_run_writes_signed_requests_without_the_secret(tmp_path, secret):
    with WebhookEmulator() as emu:
        summary, _ = run(tmp_path, emu, [person(i) for i in range(3)], dry_run=True)
    assert summary["status"] == "succeeded" and emu.log == []
    text = (Path(summary["requests_dir"]) / "requests.jsonl").read_text()
    assert SECRET not in text
    [record] = [json.loads(line) for line in text.splitlines()]
    assert record["url"].endswith("/hooks/winback") and record["headers"]["X-Winback-Signature"].startswith("sha256=")
    assert record["data"]["operation"] == "add" and len(record["data"]["members"]) == 3
    assert len(record["data"]["delivery_id"]) == 32
