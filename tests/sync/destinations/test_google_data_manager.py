"""Google Data Manager against its emulator: SHA-256 (hex) of addresses in Google's form
(trimmed, lower-case, no inner whitespace; Gmail without dots and +tag) and of E.164
phones with the "+", at most 10,000 members a request, the destination's account, list,
consent and terms in each request; OAuth with the datamanager scope and no developer
token; a request refused for malformed members is sent again without them."""

from __future__ import annotations

import hashlib
import json
from datetime import date

import pytest
import requests
from sync_support import (
    normalized_email,
    normalized_phone,
    person,
    table,
    write_members,
)
from winback.config import ConfigError
from winback.emulators.base import Faults
from winback.emulators.google_ads import ADWORDS_SCOPE
from winback.emulators.google_data_manager import GoogleDataManagerEmulator
from winback.sync.destinations.google_data_manager import (
    GoogleDataManager,
    GoogleDataManagerOptions,
    GoogleDataManagerTarget,
)
from winback.sync.engine import sync
from winback.warehouse import Warehouse

from destinations.contract import (
    AUDIENCE,
    Platform,
    check_contract,
    sync_once,
    sync_rounds,
    write_config,
)

ACCOUNT = "1234567890"
LIST = "4242"
OPTIONS = {"operating_account_id": ACCOUNT, "customer_match_terms_accepted": True}
OAUTH = {"client_id": "test-client-id", "client_secret": "test-client-secret", "refresh_token": "test-refresh-token"}


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


DATA_MANAGER = Platform(
    kind="google_data_manager", emulator=GoogleDataManagerEmulator, channel="ads", identifiers=["email", "phone"],
    held=lambda emu: emu.hashes(LIST), expected=lambda n: sha(normalized_email(n)),
    target={"user_list_id": LIST}, options=OPTIONS, members=25_000,  # three requests: the faults are met
    reject=lambda emu, values: emu.rejected_hashes.update(values),
)


def with_options(**options) -> Platform:
    return Platform(**{**DATA_MANAGER.__dict__, "options": {**OPTIONS, **options}})


@pytest.fixture
def token(monkeypatch):
    for name in ("TOKEN", "CLIENT_ID", "CLIENT_SECRET", "REFRESH_TOKEN"):
        monkeypatch.delenv(f"WINBACK_TEST_DEST_{name}", raising=False)
    monkeypatch.setenv("WINBACK_TEST_DEST_TOKEN", "test-token")


def ingests(emu) -> list[int]:
    return [r["members"] for r in emu.requests if r["method"] == "ingest"]


def test_contract(tmp_path, monkeypatch):
    check_contract(DATA_MANAGER, tmp_path, monkeypatch)


def test_contract_in_replace_mode(tmp_path, monkeypatch):
    check_contract(Platform(**{**DATA_MANAGER.__dict__, "mode": "replace", "reject": None}), tmp_path, monkeypatch)


def test_ten_thousand_members_a_request_with_emails_and_e164_phones_hashed(tmp_path, token):
    with GoogleDataManagerEmulator() as emu:
        summary, tables = sync_once(tmp_path, DATA_MANAGER, emu.base_url, [person(i) for i in range(25_000)])
    assert summary["status"] == "succeeded" and summary["accepted"] == 25_000 and len(tables["sync_state"]) == 25_000
    assert ingests(emu) == [10_000, 10_000, 5_000]
    assert emu.hashes(LIST) == {sha(normalized_email(i)) for i in range(25_000)}
    assert emu.hashes(LIST, "PHONE") == {sha(normalized_phone(i)) for i in range(25_000)}  # "+7912...", 3 spellings
    assert summary["figures"]["data_manager_requests"] == 3 and summary["figures"]["api_version"] == "v1"
    assert summary["figures"]["data_manager_request_ids"] == ["emulated-000001", "emulated-000002", "emulated-000003"]


def test_the_request_names_account_list_consent_terms_and_encoding(tmp_path, token):
    platform = with_options(operating_account_id="123-456-7890", login_account_id="111-222-3333",
                            ad_personalization_consent="DENIED")
    with GoogleDataManagerEmulator() as emu:
        summary, _ = sync_once(tmp_path, platform, emu.base_url, [person(0)], dry_run=True)
    assert summary["status"] == "succeeded" and emu.log == []
    [record] = [json.loads(line) for line in
                (tmp_path / "sync" / "dry-run" / f"{AUDIENCE}__dest" / "requests.jsonl").read_text().splitlines()]
    assert record["method"] == "POST" and record["url"] == f"{emu.base_url}/v1/audienceMembers:ingest"
    assert record["json"] == {
        "destinations": [{"operatingAccount": {"accountType": "GOOGLE_ADS", "accountId": ACCOUNT},
                          "productDestinationId": LIST,
                          "loginAccount": {"accountType": "GOOGLE_ADS", "accountId": "1112223333"}}],
        "audienceMembers": [{"userData": {"userIdentifiers": [{"emailAddress": sha(normalized_email(0))},
                                                              {"phoneNumber": sha(normalized_phone(0))}]}}],
        "encoding": "HEX",
        "consent": {"adUserData": "CONSENT_GRANTED", "adPersonalization": "CONSENT_DENIED"},
        "termsOfService": {"customerMatchTermsOfServiceStatus": "ACCEPTED"},
    }
    assert record["headers"] == {"Authorization": "***"}  # no developer token: Data Manager takes none


def test_the_default_address_is_googles_v1_endpoint():
    destination = GoogleDataManager(
        name="d", audience=AUDIENCE, options=GoogleDataManagerOptions(**OPTIONS),
        target=GoogleDataManagerTarget(user_list_id=LIST), transport=None, secret=lambda name: "",
        base_url=GoogleDataManager.default_base_url)
    assert destination.url("audienceMembers:remove") == "https://datamanager.googleapis.com/v1/audienceMembers:remove"
    assert destination.api_version == "v1" and destination.api_version_warning(date(2030, 1, 1)) is None


def test_gmail_loses_dots_and_tags_and_every_address_its_inner_whitespace(tmp_path, token):
    """Data Manager's formatting rules (before there was no such destination; the plain
    rules would hash j.doe+promo@gmail.com as it is and refuse the spaced address)."""
    people = [person(0, email="J.Doe+Promo@GMail.com"), person(1, email=" Ivan Petrov@Example.COM"),
              person(2, email="j.o.h.n@googlemail.com"), person(3, email="J.Doe+Promo@yandex.ru")]
    with GoogleDataManagerEmulator() as emu:
        summary, tables = sync_once(tmp_path, DATA_MANAGER, emu.base_url, people)
    assert summary["status"] == "succeeded" and summary["invalid"] == 0 and tables["sync_row_errors"] == []
    assert emu.hashes(LIST) == {sha("jdoe@gmail.com"), sha("ivanpetrov@example.com"), sha("john@googlemail.com"),
                                sha("j.doe+promo@yandex.ru")}


def test_mirror_removes_members_who_left_and_add_only_keeps_them(tmp_path, monkeypatch):
    for folder in ("mirror", "add_only"):
        (tmp_path / folder).mkdir()
    rounds = [[person(i) for i in range(100)], [person(i) for i in range(50, 150)]]
    with GoogleDataManagerEmulator() as emu:
        runs, _ = sync_rounds(tmp_path / "mirror", monkeypatch, DATA_MANAGER, emu.base_url, rounds, "test-token",
                              OPTIONS)
    assert runs[1]["removed"] == 50 and emu.hashes(LIST) == {sha(normalized_email(i)) for i in range(50, 150)}
    assert [r["method"] for r in emu.requests] == ["ingest", "ingest", "remove"]

    add_only = Platform(**{**DATA_MANAGER.__dict__, "mode": "add_only"})
    with GoogleDataManagerEmulator() as emu:
        runs, _ = sync_rounds(tmp_path / "add_only", monkeypatch, add_only, emu.base_url, rounds, "test-token",
                              OPTIONS)
    assert runs[1]["removed"] == 0 and len(emu.hashes(LIST)) == 150


def test_replace_empties_the_list_first_then_ingests(tmp_path, monkeypatch):
    replace = Platform(**{**DATA_MANAGER.__dict__, "mode": "replace"})
    rounds = [[person(i) for i in range(20)], [person(i) for i in range(10, 30)]]
    with GoogleDataManagerEmulator() as emu:
        runs, _ = sync_rounds(tmp_path, monkeypatch, replace, emu.base_url, rounds, "test-token", OPTIONS)
    assert [r["status"] for r in runs] == ["succeeded", "succeeded"]
    assert [r["method"] for r in emu.requests] == ["removeAll", "ingest", "removeAll", "ingest"]
    assert emu.hashes(LIST) == {sha(normalized_email(i)) for i in range(10, 30)}


def test_malformed_members_are_rejected_and_the_request_sent_again_without_them(tmp_path, token):
    with GoogleDataManagerEmulator(rejected_hashes={sha(normalized_email(3)), sha(normalized_email(7))}) as emu:
        summary, tables = sync_once(tmp_path, DATA_MANAGER, emu.base_url, [person(i) for i in range(10)])
    assert summary["status"] == "succeeded" and summary["accepted"] == 8 and summary["rejected"] == 2
    assert {e["member_key"] for e in tables["sync_row_errors"]} == {"c0000003", "c0000007"}
    assert all("INVALID_SHA256_FORMAT" in e["reason"] for e in tables["sync_row_errors"])
    # The client keeps the start of an error answer: what is cut off is named by the next 400.
    assert [r["status"] for r in emu.log] == [400, 400, 200] and ingests(emu) == [8]
    assert emu.hashes(LIST) == {sha(normalized_email(i)) for i in range(10) if i not in (3, 7)}


def test_validate_only_asks_google_to_check_and_confirms_nobody(tmp_path, token):
    with GoogleDataManagerEmulator() as emu:
        summary, tables = sync_once(tmp_path, with_options(validate_only=True), emu.base_url,
                                    [person(i) for i in range(5)])
    assert summary["status"] == "succeeded" and summary["sent"] == 5 and summary["accepted"] == 0
    assert summary["figures"]["validate_only"] is True and tables["sync_state"] == []
    assert emu.requests == [{"method": "ingest", "members": 5, "validate_only": True}] and emu.hashes(LIST) == set()


def test_the_refresh_flow_obtains_one_token_through_faults(tmp_path, monkeypatch):
    for name in ("TOKEN", "DEVELOPER_TOKEN"):
        monkeypatch.delenv(f"WINBACK_TEST_DEST_{name}", raising=False)
    for name, value in OAUTH.items():
        monkeypatch.setenv(f"WINBACK_TEST_DEST_{name.upper()}", value)
    with GoogleDataManagerEmulator(faults=Faults(throttle_every=2)) as emu:
        platform = with_options(token_url=f"{emu.base_url}/token")
        summary, _ = sync_once(tmp_path, platform, emu.base_url, [person(i) for i in range(5)])
    assert summary["status"] == "succeeded" and len(emu.issued) == 1
    assert [r["status"] for r in emu.log] == [200, 429, 200]  # token, then the ingest throttled once


def test_credentials_for_google_ads_only_are_told_to_get_the_datamanager_scope(tmp_path, monkeypatch):
    for name, value in OAUTH.items():
        monkeypatch.setenv(f"WINBACK_TEST_DEST_{name.upper()}", value)
    with GoogleDataManagerEmulator(scope=ADWORDS_SCOPE) as emu:  # the refresh token was granted for Google Ads
        summary, tables = sync_once(tmp_path, with_options(token_url=f"{emu.base_url}/token"), emu.base_url,
                                    [person(i) for i in range(5)])
    assert summary["status"] == "failed" and summary["error"].startswith("SyncError: dest: the OAuth credentials")
    assert "https://www.googleapis.com/auth/datamanager" in summary["error"]
    assert "test-refresh-token" not in summary["error"] and tables["sync_state"] == []
    assert len(emu.requests_to(r":ingest$", status=403)) == 1  # not retried


def test_an_account_reached_through_a_manager_needs_login_account_id(tmp_path, token):
    for folder in ("without", "with"):
        (tmp_path / folder).mkdir()
    with GoogleDataManagerEmulator(login_account_id="1112223333") as emu:
        refused, _ = sync_once(tmp_path / "without", DATA_MANAGER, emu.base_url, [person(0)])
        summary, _ = sync_once(tmp_path / "with", with_options(login_account_id="1112223333"), emu.base_url,
                               [person(0)])
    assert refused["status"] == "failed" and "set login_account_id" in refused["error"]
    assert summary["status"] == "succeeded" and emu.hashes(LIST) == {sha(normalized_email(0))}


def test_the_terms_of_service_must_be_stated_in_the_configuration(tmp_path):
    with pytest.raises(ConfigError) as refused:
        write_config(tmp_path, Platform(**{**DATA_MANAGER.__dict__, "options": {"operating_account_id": ACCOUNT}}),
                     "http://127.0.0.1:9", f"duckdb:///{tmp_path / 'w.duckdb'}")
    assert "customer_match_terms_accepted" in str(refused.value)


def test_a_dry_run_needs_no_credential(tmp_path, monkeypatch):
    for name in ("TOKEN", "CLIENT_ID", "CLIENT_SECRET", "REFRESH_TOKEN"):
        monkeypatch.delenv(f"WINBACK_TEST_DEST_{name}", raising=False)
    with GoogleDataManagerEmulator() as emu:
        summary, _ = sync_once(tmp_path, DATA_MANAGER, emu.base_url, [person(i) for i in range(3)], dry_run=True)
    assert summary["status"] == "succeeded" and summary["dry_run"] and emu.log == []


def test_the_emulator_enforces_the_documented_limits_and_auth():
    def member(*values: str) -> dict:
        return {"userData": {"userIdentifiers": [{"emailAddress": v} for v in values]}}

    def body(members: list, **extra) -> dict:
        return {"destinations": [{"operatingAccount": {"accountType": "GOOGLE_ADS", "accountId": ACCOUNT},
                                  "productDestinationId": LIST}],
                "audienceMembers": members, "encoding": "HEX",
                "termsOfService": {"customerMatchTermsOfServiceStatus": "ACCEPTED"}, **extra}

    auth = {"Authorization": "Bearer test-token"}
    with GoogleDataManagerEmulator() as emu:
        url = f"{emu.base_url}/v1/audienceMembers:ingest"

        def reasons(payload: dict, headers=auth) -> tuple[int, list[str]]:
            answer = requests.post(url, json=payload, headers=headers)
            details = answer.json().get("error", {}).get("details", [])
            return answer.status_code, [v["reason"] for d in details for v in d.get("fieldViolations", [])] or \
                [d["reason"] for d in details]

        assert reasons(body([member(sha("a@b.co"))]), headers={}) == (401, [])
        assert reasons(body([member(sha(f"{i}@b.co")) for i in range(10_001)])) == (400, ["TOO_MANY_AUDIENCE_MEMBERS"])
        assert reasons(body([member(*(sha(f"{i}@b.co") for i in range(11)))])) == (400, ["TOO_MANY_USER_IDENTIFIERS"])
        assert reasons(body([member("a@b.co")])) == (400, ["INVALID_HEX_ENCODING"])
        assert reasons(body([member("abcd")])) == (400, ["INVALID_SHA256_FORMAT"])
        no_terms = body([member(sha("a@b.co"))])
        del no_terms["termsOfService"]
        assert reasons(no_terms) == (400, ["TERMS_AND_CONDITIONS_NOT_SIGNED"])
        assert emu.hashes(LIST) == set()
        assert reasons(body([member(sha(f"{i}@b.co")) for i in range(10_000)])) == (200, [])
        assert reasons(body([member(sha("a@b.co"))], validateOnly=True)) == (200, [])
        assert len(emu.hashes(LIST)) == 10_000


def test_a_failed_ingest_leaves_state_alone_and_is_sent_again(tmp_path, token, warehouse_url):
    """A request that does not come back accepted confirms nobody, on either warehouse."""
    with GoogleDataManagerEmulator(faults=Faults(fail_every=1)) as emu:
        config = write_config(tmp_path, DATA_MANAGER, emu.base_url, warehouse_url)
        warehouse = Warehouse(config.warehouse_url)
        write_members(warehouse, AUDIENCE, "ads", [person(i) for i in range(10)])
        [failed] = sync(config, warehouse=warehouse)
        after_failure = table(warehouse, "sync_state")
        emu.faults = Faults()
        [retried] = sync(config, warehouse=warehouse)
        state = table(warehouse, "sync_state")
        warehouse.dispose()
    assert failed["status"] == "failed" and "HTTP 500" in failed["error"] and after_failure == []
    assert retried["status"] == "succeeded" and len(state) == 10 and len(emu.hashes(LIST)) == 10
