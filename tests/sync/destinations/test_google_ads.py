"""Google Ads Customer Match against its emulator: SHA-256 of trimmed lower-case emails and
of E.164 phones with the "+", sent through OfflineUserDataJobs (create, addOperations of at
most 10,000 operations, run) whose partial failures map back to members, authorized with
an access token or one obtained (and renewed) with an OAuth refresh token."""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import datetime

import pytest
import requests
from sync_support import (
    Clock,
    normalized_email,
    normalized_phone,
    person,
    table,
    write_members,
)
from winback.credentials import SecretError
from winback.emulators.base import Faults
from winback.emulators.google_ads import GoogleAdsEmulator
from winback.httpclient import HttpClient
from winback.httperror import HttpError
from winback.sync import engine as sync_module
from winback.sync.destinations import google_ads, oauth
from winback.sync.destinations.base import Member
from winback.sync.destinations.google_ads import (
    GoogleAdsCustomerMatch,
    GoogleAdsOptions,
    GoogleAdsTarget,
)
from winback.sync.engine import sync
from winback.sync.transport import LiveTransport
from winback.warehouse import Warehouse

from destinations.contract import (
    AUDIENCE,
    Platform,
    check_contract,
    sync_once,
    write_config,
)

CUSTOMER = "1234567890"
LIST = "777"
SECRETS = {"token": "test-token", "developer_token": "dev-token"}
# What the emulator's OAuth client and refresh token are (its defaults).
OAUTH = {"developer_token": "dev-token", "client_id": "test-client-id", "client_secret": "test-client-secret",
         "refresh_token": "test-refresh-token"}


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


GOOGLE = Platform(
    kind="google_ads_customer_match", emulator=GoogleAdsEmulator, channel="ads", identifiers=["email", "phone"],
    held=lambda emu: emu.hashes(LIST), expected=lambda n: sha(normalized_email(n)),
    target={"user_list_id": LIST}, options={"customer_id": CUSTOMER}, secrets=SECRETS,     reject=lambda emu, values: emu.rejected_hashes.update(values),
)


@pytest.fixture
def secrets(monkeypatch):
    for name, value in SECRETS.items():
        monkeypatch.setenv(f"WINBACK_TEST_DEST_{name.upper()}", value)


def refreshing(emu, **changes) -> Platform:
    """GOOGLE authorized through the emulator's token endpoint."""
    return Platform(**{**GOOGLE.__dict__, "options": {"customer_id": CUSTOMER, "token_url": f"{emu.base_url}/token"},
                       **changes})


def set_secrets(monkeypatch, values: dict[str, str]) -> None:
    for name in ("token", "developer_token", "client_id", "client_secret", "refresh_token"):
        monkeypatch.delenv(f"WINBACK_TEST_DEST_{name.upper()}", raising=False)
    for name, value in values.items():
        monkeypatch.setenv(f"WINBACK_TEST_DEST_{name.upper()}", value)


def secret_source(values: dict[str, str]):
    """The engine's secret callable for a destination built by hand."""
    def secret(name: str) -> str:
        if name not in values:
            raise SecretError(f"{name} is not set")
        return values[name]
    return secret


def run_sync(tmp_path, emu, people, platform=GOOGLE, rows=(), **settings):
    tmp_path.mkdir(parents=True, exist_ok=True)
    config = write_config(tmp_path, platform, emu.base_url, f"duckdb:///{tmp_path / 'w.duckdb'}", **settings)
    warehouse = Warehouse(config.warehouse_url)
    try:
        write_members(warehouse, AUDIENCE, "ads", [person(i) for i in people] + list(rows))
        [run] = sync(config, warehouse=warehouse)
        return run, table(warehouse, "sync_row_errors") if warehouse.table_exists("sync_row_errors") else []
    finally:
        warehouse.dispose()


def test_contract(tmp_path, monkeypatch):
    check_contract(GOOGLE, tmp_path, monkeypatch)


def test_contract_in_replace_mode(tmp_path, monkeypatch):
    check_contract(Platform(**{**GOOGLE.__dict__, "mode": "replace", "reject": None}), tmp_path, monkeypatch)


def test_phones_are_e164_with_plus_hashed_and_the_job_carries_list_and_consent(tmp_path, secrets):
    platform = Platform(**{**GOOGLE.__dict__, "options": {"customer_id": "123-456-7890",
                                                          "login_customer_id": "111-222-3333"}})
    with GoogleAdsEmulator(login_customer_id="1112223333") as emu:
        run, _ = run_sync(tmp_path, emu, range(3), platform)  # the three Russian spellings
    assert run["status"] == "succeeded"
    assert emu.hashes(LIST, "PHONE") == {sha(normalized_phone(i)) for i in range(3)}
    assert all(normalized_phone(i).startswith("+") for i in range(3))
    assert emu.hashes(LIST, "EMAIL") == {sha(normalized_email(i)) for i in range(3)}
    [job] = emu.jobs.values()
    assert (job.customer_id, job.user_list_id, job.consent_granted, job.status) == (CUSTOMER, LIST, True, "SUCCESS")
    assert run["figures"]["match_rate_range"] == "MATCH_RANGE_51_TO_60"


def test_one_job_per_unit_with_ten_thousand_operations_per_request(tmp_path, secrets):
    with GoogleAdsEmulator() as emu:
        run, _ = run_sync(tmp_path, emu, range(25_000))
    assert run["status"] == "succeeded" and run["accepted"] == 25_000
    assert len(emu.jobs) == 1 and emu.operations_per_request == [10_000, 10_000, 5_000]
    assert len(emu.hashes(LIST)) == 25_000


def test_mirror_removes_through_a_remove_job_and_add_only_keeps(tmp_path, secrets):
    with GoogleAdsEmulator() as emu:
        run_sync(tmp_path / "mirror", emu, range(100))
        run, _ = run_sync(tmp_path / "mirror", emu, range(50, 150))
    assert run["removed"] == 50 and run["accepted"] == 50
    assert emu.hashes(LIST) == {sha(normalized_email(i)) for i in range(50, 150)}
    assert emu.hashes(LIST, "PHONE") == {sha(normalized_phone(i)) for i in range(50, 150)}
    assert sorted(job.operation for job in emu.jobs.values()) == ["create", "create", "remove"]

    add_only = Platform(**{**GOOGLE.__dict__, "mode": "add_only"})
    with GoogleAdsEmulator() as emu:
        run_sync(tmp_path / "add_only", emu, range(100), add_only)
        run, _ = run_sync(tmp_path / "add_only", emu, range(50, 150), add_only)
    assert run["removed"] == 0 and emu.hashes(LIST) == {sha(normalized_email(i)) for i in range(150)}


def test_replace_empties_the_list_first_and_maps_failures_past_remove_all(tmp_path, secrets):
    replace = Platform(**{**GOOGLE.__dict__, "mode": "replace"})
    with GoogleAdsEmulator() as emu:
        run_sync(tmp_path, emu, range(20), replace)
        emu.rejected_hashes.add(sha(normalized_email(27)))
        run, errors = run_sync(tmp_path, emu, range(10, 30), replace)
    assert emu.hashes(LIST) == {sha(normalized_email(i)) for i in range(10, 30) if i != 27}
    assert run["rejected"] == 1 and [e["member_key"] for e in errors] == ["c0000027"]
    assert "INVALID_VALUE" in errors[0]["reason"]
    assert all(job.remove_all for job in emu.jobs.values())


def test_operations_apply_only_when_the_job_runs_once(tmp_path):
    headers = {"Authorization": "Bearer test-token", "developer-token": "dev-token"}
    create = {"job": {"type": "CUSTOMER_MATCH_USER_LIST",
                      "customerMatchUserListMetadata": {
                          "userList": f"customers/{CUSTOMER}/userLists/{LIST}",
                          "consent": {"adUserData": "GRANTED", "adPersonalization": "GRANTED"}}}}
    one = {"operations": [{"create": {"userIdentifiers": [{"hashedEmail": sha("a@b.co")}]}}]}
    with GoogleAdsEmulator() as emu:
        base = f"{emu.base_url}/v26/customers/{CUSTOMER}"
        no_consent = json.loads(json.dumps(create))
        del no_consent["job"]["customerMatchUserListMetadata"]["consent"]
        assert requests.post(f"{base}/offlineUserDataJobs:create", json=no_consent, headers=headers).status_code == 400
        job = requests.post(f"{base}/offlineUserDataJobs:create", json=create, headers=headers).json()["resourceName"]
        url = f"{emu.base_url}/v26/{job}"
        assert requests.post(f"{url}:addOperations", json=one, headers=headers).status_code == 200
        assert emu.hashes(LIST) == set()  # nothing before run
        mixed = {"operations": [{"remove": {"userIdentifiers": [{"hashedEmail": sha("c@d.co")}]}}]}
        answer = requests.post(f"{url}:addOperations", json=mixed, headers=headers)
        assert answer.status_code == 400 and "CONFLICTING_OPERATION" in answer.text
        late = requests.post(f"{url}:addOperations", json={"operations": [{"removeAll": True}]}, headers=headers)
        assert late.status_code == 400 and "remove_all must be the first" in late.text
        assert requests.post(f"{url}:run", json={}, headers=headers).status_code == 200
        assert emu.hashes(LIST) == {sha("a@b.co")}
        assert requests.post(f"{url}:run", json={}, headers=headers).status_code == 400
        assert requests.post(f"{url}:addOperations", json=one, headers=headers).status_code == 400
        unhashed = {"operations": [{"create": {"userIdentifiers": [{"hashedEmail": "a@b.co"}]}}],
                    "enablePartialFailure": True}
        job2 = requests.post(f"{base}/offlineUserDataJobs:create", json=create, headers=headers).json()["resourceName"]
        answer = requests.post(f"{emu.base_url}/v26/{job2}:addOperations", json=unhashed, headers=headers).json()
        [error] = answer["partialFailureError"]["details"][0]["errors"]
        assert error["errorCode"] == {"offlineUserDataJobError": "INVALID_SHA256_FORMAT"}
        assert error["location"]["fieldPathElements"][0] == {"fieldName": "operations", "index": 0}


def test_emulator_refuses_more_than_100000_identifiers_or_20_per_user():
    headers = {"Authorization": "Bearer test-token", "developer-token": "dev-token"}
    create = {"job": {"type": "CUSTOMER_MATCH_USER_LIST",
                      "customerMatchUserListMetadata": {
                          "userList": f"customers/{CUSTOMER}/userLists/{LIST}",
                          "consent": {"adUserData": "GRANTED", "adPersonalization": "GRANTED"}}}}

    def operations(users: int, per_user: int) -> dict:
        return {"enablePartialFailure": True, "operations": [
            {"create": {"userIdentifiers": [{"hashedEmail": sha(f"{u}.{k}@x.co")} for k in range(per_user)]}}
            for u in range(users)]}

    with GoogleAdsEmulator() as emu:
        base = f"{emu.base_url}/v26/customers/{CUSTOMER}"
        job = requests.post(f"{base}/offlineUserDataJobs:create", json=create, headers=headers).json()["resourceName"]
        url = f"{emu.base_url}/v26/{job}:addOperations"
        too_many = requests.post(url, json=operations(50_001, 2), headers=headers)  # 100,002 identifiers
        assert too_many.status_code == 400 and "TOO_MANY_USER_IDENTIFIERS" in too_many.text
        assert "100,000" in too_many.text
        crowded = requests.post(url, json=operations(1, 21), headers=headers)
        assert crowded.status_code == 400 and "per operation is 20" in crowded.text
        assert requests.post(url, json=operations(1, 20), headers=headers).status_code == 200
        assert requests.post(url, json=operations(50_000, 2), headers=headers).status_code == 200


def test_concurrent_modification_is_waited_out(tmp_path, secrets, monkeypatch):
    monkeypatch.setattr(google_ads, "CONCURRENT_MODIFICATION_BACKOFF", 0.0)
    with GoogleAdsEmulator(concurrent_modifications=2) as emu:
        run, _ = run_sync(tmp_path, emu, range(10))
    assert run["status"] == "succeeded" and len(emu.hashes(LIST)) == 10
    assert len(emu.requests_to(r":run$", status=409)) == 2


def test_a_run_answered_twice_counts_as_started_but_other_refusals_raise():
    with GoogleAdsEmulator() as emu:
        destination = GoogleAdsCustomerMatch(
            name="g", audience=AUDIENCE, options=GoogleAdsOptions(customer_id=CUSTOMER),
            target=GoogleAdsTarget(user_list_id=LIST), transport=LiveTransport(HttpClient(max_retries=0)),
            secret=secret_source(SECRETS), base_url=emu.base_url)
        outcome = destination.add([Member("c1", {"email": sha("a@b.co")})])
        [job] = destination.jobs
        destination._run(job)  # as if the first answer had been lost: refused, but the job runs
        assert outcome.accepted == ["c1"] and destination.jobs == [job, job]
        with pytest.raises(HttpError) as refused:
            destination._run(job.rsplit("/", 1)[0] + "/999")
        assert refused.value.status == 404


def test_dry_run_writes_the_job_requests_without_secrets_and_sends_nothing(tmp_path, secrets):
    with GoogleAdsEmulator() as emu:
        run, _ = run_sync(tmp_path, emu, range(5), dry_run=True)
    assert emu.log == []
    folder = tmp_path / "sync" / "dry-run" / f"{AUDIENCE}__dest"
    records = [json.loads(line) for line in (folder / "requests.jsonl").read_text().splitlines()]
    assert [r["url"].rsplit(":", 1)[-1] for r in records[:3]] == ["create", "addOperations", "run"]
    ops = records[1]["json"]["operations"]
    assert ops[0] == {"create": {"userIdentifiers": [{"hashedEmail": sha(normalized_email(0))},
                                                     {"hashedPhoneNumber": sha(normalized_phone(0))}]}}
    assert records[1]["json"]["enablePartialFailure"] is True
    assert records[0]["headers"]["developer-token"] == "***"
    text = "".join(p.read_text() for p in folder.iterdir())
    assert "test-token" not in text and "dev-token" not in text
    assert run["status"] == "succeeded" and run["dry_run"]


def test_wrong_developer_token_fails_the_run_without_leaking_it(tmp_path, secrets, monkeypatch):
    monkeypatch.setenv("WINBACK_TEST_DEST_DEVELOPER_TOKEN", "wrong-dev-token")
    with GoogleAdsEmulator() as emu:
        run, _ = run_sync(tmp_path, emu, range(3))
    assert run["status"] == "failed" and "HTTP 401" in run["error"] and "wrong-dev-token" not in run["error"]
    assert emu.hashes(LIST) == set()


# -- OAuth: the refresh-token flow -------------------------------------------------------------
def test_the_refresh_flow_obtains_a_token_through_faults_and_uses_it_for_the_whole_run(tmp_path, monkeypatch):
    set_secrets(monkeypatch, OAUTH)
    with GoogleAdsEmulator(faults=Faults(throttle_every=3, fail_every=4)) as emu:
        emu.calls = 2  # the token request is the 3rd call (429), its retry the 4th (500)
        run, _ = run_sync(tmp_path, emu, range(25_000), refreshing(emu))
    assert run["status"] == "succeeded" and len(emu.hashes(LIST)) == 25_000
    assert [r["status"] for r in emu.requests_to(r"^/token$", status=None)] == [429, 500, 200]
    assert len(emu.issued) == 1 and emu.requests_to(r"^/v26/", status=429)  # one token for the whole run
    assert emu.requests_to(r"^/v26/", status=401) == []


def test_a_token_refused_mid_run_is_renewed_once_and_the_run_carries_on(tmp_path, monkeypatch):
    set_secrets(monkeypatch, OAUTH)
    with GoogleAdsEmulator(token_uses=2) as emu:  # a token lapses after two calls, long before its hour
        run, _ = run_sync(tmp_path, emu, range(25_000), refreshing(emu))
    assert run["status"] == "succeeded" and len(emu.hashes(LIST)) == 25_000
    # create, addOperations x3, run, search: refused at the 3rd and 5th call, renewed each time.
    calls = [r["path"].rsplit(":", 1)[-1] for r in emu.log if r["path"].startswith("/v26/")]
    assert calls == ["create", "addOperations", "addOperations", "addOperations", "addOperations",
                     "run", "run", "search"]
    assert len(emu.requests_to(r"^/v26/", status=401)) == 2 and len(emu.requests_to(r"^/token$")) == 3


def test_a_token_about_to_expire_is_renewed_before_it_is_refused(tmp_path, monkeypatch):
    set_secrets(monkeypatch, OAUTH)
    assert oauth.TOKEN_REFRESH_MARGIN > 30
    with GoogleAdsEmulator(token_lifetime=30) as emu:  # expires_in 30: within the margin at once
        run, _ = run_sync(tmp_path, emu, range(15_000), refreshing(emu))
    assert run["status"] == "succeeded" and emu.requests_to(r"^/v26/", status=401) == []
    assert len(emu.requests_to(r"^/token$")) == len(emu.requests_to(r"^/v26/")) == 5


def test_a_401_after_a_new_token_fails_the_run_without_refreshing_again(tmp_path, monkeypatch):
    set_secrets(monkeypatch, OAUTH)
    with GoogleAdsEmulator(token_lifetime=0) as emu:  # every token it issues is expired
        run, _ = run_sync(tmp_path, emu, range(3), refreshing(emu))
    assert run["status"] == "failed" and "HTTP 401" in run["error"]
    assert len(emu.requests_to(r"^/token$")) == 2 and len(emu.requests_to(r"^/v26/", status=401)) == 2
    assert emu.hashes(LIST) == set()


def test_missing_or_partial_oauth_credentials_name_what_to_set(tmp_path, monkeypatch):
    set_secrets(monkeypatch, {"developer_token": "dev-token"})
    with GoogleAdsEmulator() as emu:
        run, _ = run_sync(tmp_path / "none", emu, range(3), refreshing(emu))
        assert run["status"] == "failed" and run["error"].startswith("SecretError: dest: Google Ads needs OAuth")
        assert "WINBACK_TEST_DEST_REFRESH_TOKEN" in run["error"] and "WINBACK_TEST_DEST_TOKEN" in run["error"]
        assert "client_id and client_secret" in run["error"]

        set_secrets(monkeypatch, {**OAUTH, "client_secret": ""})
        run, _ = run_sync(tmp_path / "partial", emu, range(3), refreshing(emu))
        assert run["status"] == "failed" and "refresh_token is set" in run["error"]
        assert "WINBACK_TEST_DEST_CLIENT_SECRET" in run["error"] and "test-refresh-token" not in run["error"]
        assert emu.log == []  # nothing was asked of Google

        set_secrets(monkeypatch, {**OAUTH, "client_secret": "wrong-secret"})
        run, _ = run_sync(tmp_path / "wrong", emu, range(3), refreshing(emu))
    assert run["status"] == "failed" and "invalid_client: Unauthorized" in run["error"]
    assert "wrong-secret" not in run["error"] and "test-refresh-token" not in run["error"]
    assert [r["path"] for r in emu.log] == ["/token"] and emu.hashes(LIST) == set()


def test_a_refused_access_token_explains_the_refresh_flow(tmp_path, monkeypatch):
    set_secrets(monkeypatch, {**SECRETS, "token": "stale-token"})
    with GoogleAdsEmulator() as emu:
        run, _ = run_sync(tmp_path, emu, range(3))
    assert run["status"] == "failed" and "HTTP 401" in run["error"] and "stale-token" not in run["error"]
    assert "set refresh_token, client_id and client_secret" in run["error"]
    assert emu.requests_to(r"^/token$", status=None) == [] and len(emu.log) == 1


def test_the_refresh_token_wins_over_a_token_and_a_hand_built_destination_refreshes(monkeypatch):
    with GoogleAdsEmulator(token_uses=1) as emu:
        destination = GoogleAdsCustomerMatch(
            name="g", audience=AUDIENCE,
            options=GoogleAdsOptions(customer_id=CUSTOMER, token_url=f"{emu.base_url}/token"),
            target=GoogleAdsTarget(user_list_id=LIST), transport=LiveTransport(HttpClient(max_retries=0)),
            secret=secret_source({**OAUTH, "token": "test-token"}), base_url=emu.base_url)
        outcome = destination.add([Member("c1", {"email": sha("a@b.co")})])
    assert outcome.accepted == ["c1"] and emu.hashes(LIST) == {sha("a@b.co")}
    assert len(emu.requests_to(r"^/token$")) == 4  # one token per call: create, addOperations, run, status


def test_dry_run_with_the_refresh_flow_exchanges_nothing_and_writes_no_credential(tmp_path, monkeypatch):
    set_secrets(monkeypatch, {**OAUTH, "token": "test-token"})
    with GoogleAdsEmulator() as emu:
        run, _ = run_sync(tmp_path, emu, range(5), refreshing(emu), dry_run=True)
    assert run["status"] == "succeeded" and run["dry_run"] and emu.log == [] and emu.issued == {}
    folder = tmp_path / "sync" / "dry-run" / f"{AUDIENCE}__dest"
    records = [json.loads(line) for line in (folder / "requests.jsonl").read_text().splitlines()]
    assert [r["url"].rsplit(":", 1)[-1] for r in records] == ["create", "addOperations", "run", "search"]
    assert all(r["headers"]["Authorization"] == "***" for r in records)
    text = "".join(p.read_text() for p in folder.iterdir())
    for value in (*OAUTH.values(), "test-token", "ya29.", "/token"):
        assert value not in text


# -- a job's members count once Google says it succeeded -------------------------------------
def test_a_failed_job_confirms_nobody_and_its_members_are_sent_again(tmp_path, secrets, warehouse_url):
    """Before the fix a job's members were committed to sync_state once the job started:
    a job that then ended FAILED left them marked synced, the run succeeded, and no later
    run sent them again."""
    with GoogleAdsEmulator(fail_jobs=1) as emu:
        config = write_config(tmp_path, GOOGLE, emu.base_url, warehouse_url)
        warehouse = Warehouse(config.warehouse_url)
        write_members(warehouse, AUDIENCE, "ads", [person(i) for i in range(10)])
        [failed] = sync(config, warehouse=warehouse)
        after_failure = table(warehouse, "sync_state")
        [retried] = sync(config, warehouse=warehouse)
        state = table(warehouse, "sync_state")
        warehouse.dispose()
    assert failed["status"] == "failed" and "ended FAILED (UNKNOWN)" in failed["error"]
    assert "10 members are not confirmed" in failed["error"] and after_failure == []
    assert retried["status"] == "succeeded" and retried["sent"] == 10 and len(state) == 10
    assert [job.status for job in emu.jobs.values()] == ["FAILED", "SUCCESS"]
    assert emu.hashes(LIST) == {sha(normalized_email(i)) for i in range(10)}


def test_members_wait_for_their_running_job_and_a_job_too_slow_confirms_nobody(tmp_path, secrets, monkeypatch):
    clock = Clock()
    monkeypatch.setattr(google_ads, "time", clock)
    for folder in ("slow", "stuck"):
        (tmp_path / folder).mkdir()
    with GoogleAdsEmulator(job_polls=4) as emu:  # RUNNING at the first three reads
        summary, tables = sync_once(tmp_path / "slow", GOOGLE, emu.base_url, [person(i) for i in range(10)])
    assert summary["status"] == "succeeded" and len(tables["sync_state"]) == 10
    assert len(emu.requests_to(r":search$")) == 4 and clock.slept == [5.0, 10.0, 20.0]
    assert summary["figures"]["google_ads_job_status"] == {"1001": "SUCCESS"}

    stuck = Platform(**{**GOOGLE.__dict__, "options": {"customer_id": CUSTOMER, "job_timeout_seconds": 60}})
    with GoogleAdsEmulator(job_polls=1_000) as emu:
        summary, tables = sync_once(tmp_path / "stuck", stuck, emu.base_url, [person(i) for i in range(10)])
    assert summary["status"] == "failed" and "job 1001 is still RUNNING after 60s" in summary["error"]
    assert tables["sync_state"] == []


def synced_then_left(tmp_path, emu, staying: range) -> tuple:
    """People 0-9 synced, then only `staying` left in the audience: the config and the
    warehouse (open) for the next sync."""
    config = write_config(tmp_path, GOOGLE, emu.base_url, f"duckdb:///{tmp_path / 'w.duckdb'}")
    warehouse = Warehouse(config.warehouse_url)
    write_members(warehouse, AUDIENCE, "ads", [person(i) for i in range(10)])
    sync(config, warehouse=warehouse)
    write_members(warehouse, AUDIENCE, "ads", [person(i) for i in staying])
    return config, warehouse


def test_a_failed_removal_job_keeps_its_members_to_remove_them_next_run(tmp_path, secrets):
    with GoogleAdsEmulator() as emu:
        config, warehouse = synced_then_left(tmp_path, emu, range(5, 10))
        emu.fail_jobs = 1
        [refused] = sync(config, warehouse=warehouse)
        kept, errors = len(table(warehouse, "sync_state")), table(warehouse, "sync_row_errors")
        [again] = sync(config, warehouse=warehouse)
        left = len(table(warehouse, "sync_state"))
        warehouse.dispose()
    assert refused["status"] == "succeeded" and refused["remove_failed"] == 5 and refused["removed"] == 0
    assert kept == 10 and {e["operation"] for e in errors} == {"remove"} and len(errors) == 5
    assert all("ended FAILED" in e["reason"] for e in errors)
    assert again["removed"] == 5 and left == 5
    assert emu.hashes(LIST) == {sha(normalized_email(i)) for i in range(5, 10)}


# -- API versions, allow-listing, email form (issue 10) ------------------------------------------
def test_requests_go_to_the_newest_version_and_a_configured_sunset_one_warns(tmp_path, secrets, monkeypatch, caplog):
    """Before: the default base_url carried /v21, sunset on 2026-08-05, so every request
    failed and nothing said why; now URLs are built from the version table (newest
    first) and a configured version past its sunset is named in a warning."""
    monkeypatch.setattr(sync_module, "_now", lambda: datetime(2026, 11, 30, 5, 0))
    with GoogleAdsEmulator() as emu:
        run, _ = run_sync(tmp_path / "default", emu, range(3))
    assert run["status"] == "succeeded" and emu.versions == {"v26"}
    assert run["figures"]["api_version"] == "v26" and "sunset" not in caplog.text

    old = Platform(**{**GOOGLE.__dict__, "options": {"customer_id": CUSTOMER, "api_version": "v21"}})
    with GoogleAdsEmulator() as emu, caplog.at_level(logging.WARNING, logger="winback.sync.engine"):
        run, _ = run_sync(tmp_path / "old", emu, range(3), old)
    assert emu.versions == {"v21"} and run["figures"]["api_version"] == "v21"
    assert ("google_ads_customer_match: API version v21 was sunset on 2026-08-05 "
            "(https://developers.google.com/ads/blog/posts/2026/06/google-ads-api-v21-sunset-reminder)") in caplog.text
    assert "set options.api_version to v26" in caplog.text


def test_the_version_table_is_newest_first_and_each_entry_cites_its_source():
    versions = GoogleAdsCustomerMatch.api_versions
    numbers = [int(v.version[1:]) for v in versions]
    assert numbers == sorted(numbers, reverse=True) and versions[0].version == "v26"
    assert [v.sunset for v in versions] == sorted((v.sunset for v in versions), reverse=True)
    assert all(v.source.startswith("https://developers.google.com/ads/blog/posts/") for v in versions)
    assert GoogleAdsCustomerMatch.default_base_url == "https://googleads.googleapis.com"


@pytest.mark.parametrize("refused_at", ["create", "addOperations"])
def test_a_token_not_allowlisted_fails_the_pair_for_good_naming_the_data_manager_destination(
        tmp_path, secrets, monkeypatch, refused_at):
    """Before: Google's CUSTOMER_NOT_ALLOWLISTED_FOR_THIS_FEATURE came out as a bare HTTP
    403 (an HttpError, which the Airflow task retries) that did not say what to do."""
    with GoogleAdsEmulator(refuse_upload_at=refused_at) as emu:
        config = write_config(tmp_path, GOOGLE, emu.base_url, f"duckdb:///{tmp_path / 'w.duckdb'}")
        warehouse = Warehouse(config.warehouse_url)
        write_members(warehouse, AUDIENCE, "ads", [person(i) for i in range(10)])
        [run] = sync(config, warehouse=warehouse)
        state = table(warehouse, "sync_state")
        warehouse.dispose()
        assert run["status"] == "failed" and run["error"].startswith("SyncError: dest: Google refuses Customer Match")
        assert "CUSTOMER_NOT_ALLOWLISTED_FOR_THIS_FEATURE" in run["error"]
        assert "destination kind google_data_manager" in run["error"] and "dev-token" not in run["error"]
        assert len(emu.requests_to(rf":{refused_at}$", status=403)) == 1  # refused once, never resent
        assert state == [] and emu.hashes(LIST) == set()

        # In Airflow the task fails for good (AirflowFailException: no retry).
        from airflow.sdk.exceptions import AirflowFailException
        from winback import tasks

        monkeypatch.setenv("WINBACK_CONFIG", str(tmp_path / "winback.yaml"))
        with pytest.raises(AirflowFailException, match="google_data_manager"):
            tasks.sync({"audience": AUDIENCE, "destination": "dest"})
    assert len(emu.requests_to(rf":{refused_at}$", status=403)) == 2


def test_a_removal_refused_as_not_allowlisted_fails_the_run_instead_of_waiting_for_next_time(tmp_path, secrets):
    with GoogleAdsEmulator() as emu:
        config, warehouse = synced_then_left(tmp_path, emu, range(5))
        emu.refuse_upload_at = "addOperations"
        [run] = sync(config, warehouse=warehouse)
        state, errors = table(warehouse, "sync_state"), table(warehouse, "sync_row_errors")
        warehouse.dispose()
    assert run["status"] == "failed" and "google_data_manager" in run["error"]
    assert len(state) == 10 and errors == []  # nothing recorded as a removal to retry
    assert len(emu.hashes(LIST)) == 10


def test_addresses_lose_inner_whitespace_but_keep_gmail_dots_and_tags(tmp_path, secrets):
    """Google's Customer Match example takes whitespace out of the address before hashing
    (before: an address with a space in it was refused as not an address and never sent);
    the Ads API does not ask for Gmail's dots and tags to go, so they stay."""
    people = [person(0, email=" Ivan Petrov@Example.COM"), person(1, email="J.Doe+Promo@GMail.com")]
    with GoogleAdsEmulator() as emu:
        run, errors = run_sync(tmp_path, emu, [], rows=people)
    assert run["status"] == "succeeded" and run["invalid"] == 0 and errors == []
    assert emu.hashes(LIST) == {sha("ivanpetrov@example.com"), sha("j.doe+promo@gmail.com")}
