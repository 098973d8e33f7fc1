"""Google's requests checked against Google's official Python libraries (test-only pins):
google-ads-datamanager 0.9.4 (the Data Manager GAPIC client, REST transport) with
google-ads-datamanager-util 0.4.0 (Google's formatter and hasher for its identifiers),
and google-ads 34.0.0 (the Ads API v23-v26 protos; the library speaks gRPC only, so its
request messages are turned into their JSON form, the REST body, and compared).

Our side is the real sync engine with the destination at Google's address, answered
in-process by a recorder; the GAPIC client's requests are caught at the same requests
adapter. For the shared awkward members the comparison is field by field: URL and
version, method, credential, every body field (parsed into Google's own request
message, so an unknown or misspelt field fails), each SHA-256, the encoding.

Where Winback and the libraries differ, the test says which follows Google's documents:
- Phones: the formatter only strips non-digits and puts a "+" in front, so
  `8 (999) 123-45-67` becomes +89991234567, no country code; Google asks for E.164 "with
  the country code" (developers.google.com/data-manager/api/get-started/formatting).
  Winback reads the trunk 8 as +7; fed E.164, the formatter hashes exactly as Winback.
- Whitespace inside an address: the formatter refuses the address, the formatting page
  says to remove "intermediate whitespace"; Winback removes it (both Google destinations:
  Google's Customer Match example for the Ads API does the same).
- A domain ending in a dot: the formatter hashes `olga.sidorova@mail.ru.` as it is, an
  address no account has; Winback does not send it (the member goes with the phone), as
  for the other platforms that document no such repair.
- Enums: the GAPIC client sends them as numbers (`$alt=json;enum-encoding=int`), Winback
  by name, which the REST reference shows; both parse into the same message.
"""

from __future__ import annotations

import hashlib
import re
from datetime import date

import pytest
from google.ads import datamanager_v1 as dm
from google.ads.datamanager_util.format import Encoding, Formatter
from google.ads.googleads import client as ads_client
from google.ads.googleads.v26.common.types.consent import Consent
from google.ads.googleads.v26.common.types.offline_user_data import (
    CustomerMatchUserListMetadata,
    UserData,
    UserIdentifier,
)
from google.ads.googleads.v26.enums.types.consent_status import ConsentStatusEnum
from google.ads.googleads.v26.enums.types.offline_user_data_job_type import (
    OfflineUserDataJobTypeEnum,
)
from google.ads.googleads.v26.errors.types.offline_user_data_job_error import (
    OfflineUserDataJobErrorEnum,
)
from google.ads.googleads.v26.resources.types.offline_user_data_job import (
    OfflineUserDataJob,
)
from google.ads.googleads.v26.services.types import google_ads_service as ads_search
from google.ads.googleads.v26.services.types import (
    offline_user_data_job_service as ads_jobs,
)
from google.oauth2.credentials import Credentials
from google.protobuf import json_format
from winback.sync.destinations import google_ads, google_data_manager
from winback.sync.destinations.google_ads import GoogleAdsCustomerMatch
from winback.sync.destinations.google_data_manager import GoogleDataManager
from winback.sync.identifiers import normalize_email

from destinations.awkward_members import AWKWARD_MEMBERS, Awkward, awkward_rows
from destinations.contract import Platform, sync_once
from destinations.wire import Sent, record_requests

TOKEN, DEVELOPER_TOKEN = "test-token", "dev-token"
ACCOUNT, LIST, ADS_LIST = "1234567890", "4242", "777"
FORMATTER = Formatter()
# Addresses Winback sends: not those whose domain ends in a dot (see the docstring).
EMAILED = [m for m in AWKWARD_MEMBERS if m.email and not m.email.strip().endswith(".")]


def at_googles_address(kind: str, cls, **fields) -> Platform:
    """The destination at its real address (write_config joins base_url and api_prefix)."""
    return Platform(kind=kind, emulator=None, channel="ads", identifiers=["email", "phone"], held=None,
                    expected=None, api_prefix=cls.default_base_url, **fields)


def run_ours(tmp_path, monkeypatch, platform: Platform, rounds: list[list[dict]], answer) -> list[Sent]:
    """Sync each round's rows through the engine; the requests it sent."""
    for name, value in platform.secrets.items():
        monkeypatch.setenv(f"WINBACK_TEST_DEST_{name.upper()}", value)
    sent = record_requests(monkeypatch, answer)
    for rows in rounds:
        summary, _ = sync_once(tmp_path, platform, "", rows)
        assert summary["status"] == "succeeded", summary.get("error")
    return sent


# -- Data Manager -----------------------------------------------------------------------------
DATA_MANAGER = at_googles_address(
    "google_data_manager", GoogleDataManager, target={"user_list_id": LIST}, secrets={"token": TOKEN},
    options={"operating_account_id": ACCOUNT, "customer_match_terms_accepted": True})


def dm_answer(request: Sent) -> dict:
    return {"requestId": f"request-{request.path.rsplit(':', 1)[-1]}"}


def dm_destination() -> dm.Destination:
    return dm.Destination(operating_account=dm.ProductAccount(
        account_type=dm.ProductAccount.AccountType.GOOGLE_ADS, account_id=ACCOUNT), product_destination_id=LIST)


def dm_members() -> list[dm.AudienceMember]:
    """The awkward members as Google's formatter makes them (phones given in E.164)."""
    members = []
    for m in AWKWARD_MEMBERS:
        ids = [dm.UserIdentifier(email_address=FORMATTER.process_email_address(m.email, Encoding.HEX))
               ] if m in EMAILED else []
        if m.e164:
            ids.append(dm.UserIdentifier(phone_number=FORMATTER.process_phone_number(m.e164, Encoding.HEX)))
        members.append(dm.AudienceMember(user_data=dm.UserData(user_identifiers=ids)))
    return members


def sdk_requests(monkeypatch, calls) -> list[Sent]:
    """What the GAPIC client (REST transport) sends for each call(client)."""
    sent = record_requests(monkeypatch, dm_answer)
    sdk = dm.IngestionServiceClient(credentials=Credentials(token=TOKEN), transport="rest")
    for call in calls:
        call(sdk)
    return sent


def assert_same_request(ours: Sent, theirs: Sent, message) -> None:
    assert (ours.method, ours.url.split("?")[0]) == (theirs.method, theirs.url.split("?")[0])
    assert ours.query == {} and theirs.query == {"$alt": ["json;enum-encoding=int"]}
    assert ours.headers["authorization"] == theirs.headers["authorization"] == f"Bearer {TOKEN}"
    assert ours.headers["content-type"] == theirs.headers["content-type"] == "application/json"
    mine = json_format.Parse(ours.body, message.pb()())  # strict: an unknown field fails here
    sdks = json_format.Parse(theirs.body, message.pb()())
    assert json_format.MessageToDict(mine) == json_format.MessageToDict(sdks)
    assert mine == sdks


def test_data_manager_requests_match_the_official_client(tmp_path, monkeypatch):
    ours = run_ours(tmp_path, monkeypatch, DATA_MANAGER, [awkward_rows(), []], dm_answer)
    theirs = sdk_requests(monkeypatch, [
        lambda sdk: sdk.ingest_audience_members(request=dm.IngestAudienceMembersRequest(
            destinations=[dm_destination()], audience_members=dm_members(), encoding=dm.Encoding.HEX,
            consent=dm.Consent(ad_user_data=dm.ConsentStatus.CONSENT_GRANTED,
                               ad_personalization=dm.ConsentStatus.CONSENT_GRANTED),
            terms_of_service=dm.TermsOfService(customer_match_terms_of_service_status=dm.TermsOfServiceStatus.ACCEPTED))),
        lambda sdk: sdk.remove_audience_members(request=dm.RemoveAudienceMembersRequest(
            destinations=[dm_destination()], audience_members=dm_members(), encoding=dm.Encoding.HEX)),
    ])
    assert [r.url for r in ours] == ["https://datamanager.googleapis.com/v1/audienceMembers:ingest",
                                     "https://datamanager.googleapis.com/v1/audienceMembers:remove"]
    assert_same_request(ours[0], theirs[0], dm.IngestAudienceMembersRequest)
    assert_same_request(ours[1], theirs[1], dm.RemoveAudienceMembersRequest)
    # Field by field for each person: the hashes Google's formatter makes, hex-encoded.
    sent = {m.key: ids["userData"]["userIdentifiers"] for m, ids in zip(
        AWKWARD_MEMBERS, ours[0].json()["audienceMembers"], strict=True)}
    for m in AWKWARD_MEMBERS:
        expected = ([{"emailAddress": FORMATTER.process_email_address(m.email, Encoding.HEX)}] if m in EMAILED
                    else []) + ([{"phoneNumber": FORMATTER.process_phone_number(m.e164, Encoding.HEX)}]
                                if m.e164 else [])
        assert sent[m.key] == expected, m.why
    gmail = next(m for m in AWKWARD_MEMBERS if m.key == "aw02")
    assert sent["aw02"][0]["emailAddress"] == hashlib.sha256(b"johnsmith@gmail.com").hexdigest(), gmail.why


def test_data_manager_replace_empties_the_list_as_the_client_does(tmp_path, monkeypatch):
    replace = Platform(**{**DATA_MANAGER.__dict__, "mode": "replace"})
    ours = run_ours(tmp_path, monkeypatch, replace, [awkward_rows()], dm_answer)
    theirs = sdk_requests(monkeypatch, [lambda sdk: sdk.remove_all_audience_members(
        request=dm.RemoveAllAudienceMembersRequest(destinations=[dm_destination()]))])
    assert [r.path for r in ours] == ["/v1/audienceMembers:removeAll", "/v1/audienceMembers:ingest"]
    assert_same_request(ours[0], theirs[0], dm.RemoveAllAudienceMembersRequest)


def test_data_manager_limits_are_the_ones_the_client_documents():
    members = re.search(r"At most (\d+)", dm.IngestAudienceMembersRequest.__doc__)
    identifiers = re.search(r"At most (\d+) ``userIdentifiers``", dm.UserData.__doc__)
    assert google_data_manager.MAX_MEMBERS_PER_REQUEST == int(members[1]) == GoogleDataManager.batch_size
    assert google_data_manager.MAX_IDENTIFIERS_PER_MEMBER == int(identifiers[1])


@pytest.mark.parametrize("member", AWKWARD_MEMBERS, ids=lambda m: m.key)
def test_where_googles_formatter_and_winback_part_the_documented_form_is_winbacks(member: Awkward):
    if member.phone and member.phone.lstrip().startswith("8"):  # the trunk prefix: no country code left
        assert FORMATTER.format_phone_number(member.phone) == "+" + re.sub(r"\D", "", member.phone)
        assert FORMATTER.format_phone_number(member.phone) != member.e164
    if member.email and member not in EMAILED:  # a domain ending in a dot: hashed as it is
        assert FORMATTER.format_email_address(member.email).endswith(".")
    with pytest.raises(ValueError, match="intermediate whitespace"):
        FORMATTER.format_email_address("ivan petrov@mail.ru")
    assert normalize_email(" Ivan Petrov@Mail.RU", GoogleDataManager.email_rules) == "ivanpetrov@mail.ru"


# -- Google Ads API ---------------------------------------------------------------------------
ADS = at_googles_address(
    "google_ads_customer_match", GoogleAdsCustomerMatch, target={"user_list_id": ADS_LIST},
    secrets={"token": TOKEN, "developer_token": DEVELOPER_TOKEN}, options={"customer_id": ACCOUNT})
JOB = f"customers/{ACCOUNT}/offlineUserDataJobs/1"


def ads_answer(request: Sent) -> dict:
    return {"create": {"resourceName": JOB}, "addOperations": {}, "run": {"name": f"customers/{ACCOUNT}/operations/1"},
            "search": {"results": [{"offlineUserDataJob": {"resourceName": JOB, "status": "SUCCESS"}}]},
            }[request.path.rsplit(":", 1)[-1]]


def customer_match_hash(value: str) -> str:
    """The Customer Match guide's email form (trimmed, lower-case) with Google's example's
    removal of inner whitespace; phones come in E.164. SHA-256, hex."""
    return hashlib.sha256("".join(value.split()).lower().encode()).hexdigest()


def ads_user(m: Awkward) -> UserData:
    ids = [UserIdentifier(hashed_email=customer_match_hash(m.email))] if m in EMAILED else []
    if m.e164:
        ids.append(UserIdentifier(hashed_phone_number=customer_match_hash(m.e164)))
    return UserData(user_identifiers=ids)


def rest_body(message, path_fields: tuple[str, ...]) -> dict:
    """The REST body of a request message: its JSON form without the fields the URL
    carries (the reference's `body: "*"` transcoding)."""
    body = json_format.MessageToDict(type(message).pb(message))
    return {k: v for k, v in body.items() if k not in path_fields}


def test_ads_api_requests_match_the_official_library_messages(tmp_path, monkeypatch):
    ours = run_ours(tmp_path, monkeypatch, ADS, [awkward_rows(), []], ads_answer)
    base = f"https://googleads.googleapis.com/v26/customers/{ACCOUNT}"
    # developers.google.com/google-ads/api/rest/reference/rest/v26/customers.offlineUserDataJobs
    assert [(r.method, r.url) for r in ours] == 2 * [
        ("POST", f"{base}/offlineUserDataJobs:create"), ("POST", f"https://googleads.googleapis.com/v26/{JOB}:addOperations"),
        ("POST", f"https://googleads.googleapis.com/v26/{JOB}:run"), ("POST", f"{base}/googleAds:search")]
    assert all(r.headers["authorization"] == f"Bearer {TOKEN}" and r.headers["developer-token"] == DEVELOPER_TOKEN
               for r in ours)

    consent = Consent(ad_user_data=ConsentStatusEnum.ConsentStatus.GRANTED,
                      ad_personalization=ConsentStatusEnum.ConsentStatus.GRANTED)
    create = ads_jobs.CreateOfflineUserDataJobRequest(customer_id=ACCOUNT, job=OfflineUserDataJob(
        type_=OfflineUserDataJobTypeEnum.OfflineUserDataJobType.CUSTOMER_MATCH_USER_LIST,
        customer_match_user_list_metadata=CustomerMatchUserListMetadata(
            user_list=f"customers/{ACCOUNT}/userLists/{ADS_LIST}", consent=consent)))
    users = [ads_user(m) for m in AWKWARD_MEMBERS]
    add = ads_jobs.AddOfflineUserDataJobOperationsRequest(resource_name=JOB, enable_partial_failure=True, operations=[
        ads_jobs.OfflineUserDataJobOperation(create=u) for u in users])
    remove = ads_jobs.AddOfflineUserDataJobOperationsRequest(resource_name=JOB, enable_partial_failure=True, operations=[
        ads_jobs.OfflineUserDataJobOperation(remove=u) for u in users])
    run = ads_jobs.RunOfflineUserDataJobRequest(resource_name=JOB)
    for mine, message, path in zip(ours, [create, add, run, None, create, remove, run, None], 2 * [
            ("customerId",), ("resourceName",), ("resourceName",), ()], strict=True):
        if message is None:  # the status read: a search request, checked for its fields only
            json_format.ParseDict(mine.json(), ads_search.SearchGoogleAdsRequest.pb()())
            continue
        assert mine.json() == rest_body(message, path)
        json_format.ParseDict(mine.json(), type(message).pb()())  # strict: an unknown field fails here


def test_ads_api_versions_and_limits_are_the_ones_the_library_ships():
    served = {v.version for v in GoogleAdsCustomerMatch.api_versions if v.sunset > date(2026, 11, 30)}
    assert served == set(ads_client._VALID_API_VERSIONS)
    assert GoogleAdsCustomerMatch.api_versions[0].version == ads_client._DEFAULT_VERSION
    limits = re.search(r"per request is ([\d,]+) and per operation is (\d+)",
                       OfflineUserDataJobErrorEnum.OfflineUserDataJobError.__doc__)
    assert google_ads.MAX_IDENTIFIERS_PER_REQUEST == int(limits[1].replace(",", ""))
    assert google_ads.MAX_IDENTIFIERS_PER_USER == int(limits[2])
