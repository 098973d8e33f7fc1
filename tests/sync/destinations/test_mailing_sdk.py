"""Brevo and Mailchimp requests checked against the platforms' official SDKs (brevo-python
5.1.0, mailchimp-marketing 3.0.80; test-only dependencies). For the shared awkward members
each SDK builds the calls our destination makes; both are caught just before they leave
the process (requests' adapter for ours and Mailchimp's SDK, an httpx mock transport for
Brevo's) and compared field by field: URL, method, query, credential header, body fields.

Our side is the real sync engine with the destination at its default address, answered
in-process by a recorder. What the SDKs do not know (how an address is normalized) is
what each platform documents: Mailchimp's subscriber hash is "the MD5 hash of the
lowercase version of the list member's email address" and the ESPs send to the address
itself, so Winback trims and lower-cases and applies no further email rule (no Gmail dot
or tag removal, no trailing-dot repair) for Brevo, Mailchimp, UniSender and SendPulse.
"""

from __future__ import annotations

import base64
import hashlib
import inspect
import re
from typing import Any

import httpx
import pytest
from brevo import Brevo as BrevoSdk
from brevo.contacts.raw_client import RawContactsClient
from brevo.contacts.types import RemoveContactFromListRequestBodyEmails
from mailchimp_marketing import Client as MailchimpSdk
from winback.sync.destinations import brevo as brevo_module
from winback.sync.destinations import destination_class
from winback.sync.identifiers import md5_hex

from destinations.awkward_members import AWKWARD_MEMBERS, awkward_rows
from destinations.contract import Platform, sync_once
from destinations.wire import Answer, Sent, record_requests

BREVO_KEY = "xkeysib-0123456789abcdef-TESTKEY"
MAILCHIMP_KEY = "0123456789abcdef0123456789abcdef-us21"
BREVO_LIST = 7
MAILCHIMP_LIST, MAILCHIMP_SEGMENT = "a1b2c3d4e5", "4242"
FAST_POLLING = {"poll_initial_seconds": 0.01, "poll_max_seconds": 0.05}


def platform_address(raw: str | None) -> str | None:
    """The address as the ESPs take it (see the module docstring): trimmed, lower-cased;
    None where no platform would take it (none given, or a domain ending in a dot)."""
    if raw is None or raw.strip().endswith("."):
        return None
    return raw.strip().lower()


SENDABLE = [(m, platform_address(m.email)) for m in AWKWARD_MEMBERS if platform_address(m.email)]


def run_ours(tmp_path, monkeypatch, platform: Platform, rounds: list[list[dict]], answer: Answer) -> list[Sent]:
    """Sync each round's rows through the engine; the requests it sent."""
    monkeypatch.setenv("WINBACK_TEST_DEST_TOKEN", platform.secrets["token"])
    sent = record_requests(monkeypatch, answer)
    for n, rows in enumerate(rounds):
        summary, _ = sync_once(tmp_path, platform, "", rows)
        assert summary["status"] == "succeeded", summary.get("error")
        assert n > 0 or summary["invalid"] == len(AWKWARD_MEMBERS) - len(SENDABLE)
    return sent


def default_address(platform: Platform) -> Platform:
    """The platform at its real address: write_config joins base_url and api_prefix."""
    return Platform(**{**platform.__dict__, "api_prefix": destination_class(platform.kind).default_base_url})


def basic_password(headers: dict[str, str]) -> str:
    scheme, _, encoded = headers["authorization"].partition(" ")
    assert scheme == "Basic"
    return base64.b64decode(encoded).decode().partition(":")[2]


# -- Brevo --------------------------------------------------------------------------------
BREVO = default_address(Platform(
    kind="brevo", emulator=None, channel="email", identifiers=["email"], held=None, expected=None,
    target={"list_id": BREVO_LIST}, options=FAST_POLLING, secrets={"token": BREVO_KEY}))


def brevo_answer(request: Sent) -> Any:
    if request.path.endswith("/contacts/import"):
        return {"processId": 1}
    if "/processes/" in request.path:
        return {"id": 1, "name": "IMPORTUSER", "status": "completed"}
    return {"contacts": {"success": request.json()["emails"], "failure": []}}


def brevo_sdk() -> tuple[BrevoSdk, list[Sent]]:
    sent: list[Sent] = []

    def handler(request: httpx.Request) -> httpx.Response:
        caught = Sent(request.method, str(request.url), {k.lower(): v for k, v in request.headers.items()},
                      request.content)
        sent.append(caught)
        return httpx.Response(200, json=brevo_answer(caught))

    return BrevoSdk(api_key=BREVO_KEY, httpx_client=httpx.Client(transport=httpx.MockTransport(handler))), sent


def test_brevo_requests_match_the_official_sdk(tmp_path, monkeypatch):
    ours = run_ours(tmp_path, monkeypatch, BREVO, [awkward_rows(), []], brevo_answer)
    [ours_import, ours_poll, ours_remove] = ours

    # The CSV Brevo documents for fileBody: `;`-separated, a header of attribute names.
    header = "EMAIL;FIRSTNAME;LIFECYCLE_STAGE;VALUE_TIER;OFFER;CART_VALUE;PRODUCT_IDS;WINBACK_OFFER\n"
    names = {m.key: f"Name{n}" for n, m in enumerate(AWKWARD_MEMBERS)}
    file_body = header + "".join(f"{address};{names[m.key]};lapsed;high;;;;\n" for m, address in SENDABLE)
    sdk, theirs = brevo_sdk()
    sdk.contacts.import_contacts(file_body=file_body, list_ids=[BREVO_LIST], update_existing_contacts=True,
                                 empty_contacts_attributes=False, disable_notification=True)
    sdk.process.get_process(1)
    sdk.contacts.remove_contact_from_list(BREVO_LIST, request=RemoveContactFromListRequestBodyEmails(
        emails=[address for _, address in SENDABLE]))

    for mine, sdks in zip([ours_import, ours_poll, ours_remove], theirs, strict=True):
        assert (mine.method, mine.url) == (sdks.method, sdks.url)
        assert mine.query == sdks.query == {}
        assert mine.headers["api-key"] == sdks.headers["api-key"] == BREVO_KEY
        assert "authorization" not in mine.headers
        if sdks.body:
            assert mine.headers["content-type"] == sdks.headers["content-type"] == "application/json"
            assert mine.json() == sdks.json()  # every field, name and value (unicode included)
    assert ours_import.url == "https://api.brevo.com/v3/contacts/import"
    assert ours_remove.url == f"https://api.brevo.com/v3/contacts/lists/{BREVO_LIST}/contacts/remove"


def test_brevo_limits_are_those_the_sdk_documents():
    """brevo-python carries Brevo's reference text: 150 addresses a removal, a fileBody of
    at most 10 MB (about 8 MB advised)."""
    removal = inspect.getsource(RemoveContactFromListRequestBodyEmails)  # the field's docstring
    assert re.search(r"maximum of (\d+) emails", removal)[1] == str(brevo_module.MAX_REMOVE_EMAILS)
    import_doc = inspect.getdoc(RawContactsClient.import_contacts)
    assert re.search(r"Maximum allowed file body size is (\d+)MB", import_doc)[1] == \
        str(brevo_module.MAX_FILE_BODY_BYTES // 2**20)
    assert re.search(r"safe limit of around (\d+) MB", import_doc)[1] == str(brevo_module.FILE_BODY_BYTES // 2**20)
    assert destination_class("brevo").remove_batch_size == brevo_module.MAX_REMOVE_EMAILS


# -- Mailchimp ----------------------------------------------------------------------------
MAILCHIMP = default_address(Platform(
    kind="mailchimp", emulator=None, channel="email", identifiers=["email"], held=None, expected=None,
    target={"list_id": MAILCHIMP_LIST, "segment_id": MAILCHIMP_SEGMENT}, secrets={"token": MAILCHIMP_KEY}))


def mailchimp_answer(request: Sent) -> Any:
    body = request.json() or {}
    if "members" in body:
        return {"errors": [], "total_created": len(body["members"]), "total_updated": 0}
    return {"errors": [], "total_added": len(body.get("members_to_add") or []),
            "total_removed": len(body.get("members_to_remove") or [])}


def test_mailchimp_requests_match_the_official_sdk(tmp_path, monkeypatch):
    ours = run_ours(tmp_path, monkeypatch, MAILCHIMP, [awkward_rows(), []], mailchimp_answer)
    [ours_batch, ours_add, ours_remove] = ours

    sdk = MailchimpSdk()
    sdk.set_config({"api_key": MAILCHIMP_KEY})
    theirs = record_requests(monkeypatch, mailchimp_answer)
    addresses = [address for _, address in SENDABLE]
    names = {m.key: f"Name{n}" for n, m in enumerate(AWKWARD_MEMBERS)}
    sdk.lists.batch_list_members(MAILCHIMP_LIST, {
        "members": [{"email_address": address, "status": "subscribed", "merge_fields": {"FNAME": names[m.key]}}
                    for m, address in SENDABLE],
        "update_existing": True})
    sdk.lists.batch_segment_members({"members_to_add": addresses}, MAILCHIMP_LIST, MAILCHIMP_SEGMENT)
    sdk.lists.batch_segment_members({"members_to_remove": addresses}, MAILCHIMP_LIST, MAILCHIMP_SEGMENT)

    for mine, sdks in zip(ours, theirs, strict=True):
        # The host from the key's data centre, the path, no query string.
        assert (mine.method, mine.url, mine.query) == (sdks.method, sdks.url, sdks.query)
        assert mine.headers["content-type"] == sdks.headers["content-type"] == "application/json"
        # Basic auth: Mailchimp reads the key from the password (the user name is free).
        assert basic_password(mine.headers) == basic_password(sdks.headers) == MAILCHIMP_KEY
        assert mine.json() == sdks.json()
    assert ours_batch.url == f"https://us21.api.mailchimp.com/3.0/lists/{MAILCHIMP_LIST}"
    assert ours_add.url == ours_remove.url == \
        f"https://us21.api.mailchimp.com/3.0/lists/{MAILCHIMP_LIST}/segments/{MAILCHIMP_SEGMENT}"


def test_mailchimp_subscriber_hash_is_md5_of_the_lower_cased_address_we_send(tmp_path, monkeypatch):
    """Mailchimp's member id (the SDK's subscriber_hash) is "the MD5 hash of the lowercase
    version of the list member's email address": lower-casing is its only normalization,
    so the address we send hashes to the id of the shop's own contact, Gmail dots and
    plus-tags included (a Gmail rule would make another contact)."""
    doc = inspect.getdoc(MailchimpSdk().lists.get_list_member)
    assert "The MD5 hash of the lowercase version of the list member's email address" in doc
    ours = run_ours(tmp_path, monkeypatch, MAILCHIMP, [awkward_rows()], mailchimp_answer)
    sent = [member["email_address"] for member in ours[0].json()["members"]]
    assert sent == [address for _, address in SENDABLE]
    for (m, _), address in zip(SENDABLE, sent, strict=True):
        assert md5_hex(address) == hashlib.md5(m.email.strip().lower().encode()).hexdigest()
    assert "john.smith+winback@gmail.com" in sent and "j.o.h.n.doe@googlemail.com" in sent


@pytest.mark.parametrize("kind", ["brevo", "mailchimp", "unisender", "sendpulse"])
def test_mailing_platforms_get_the_address_trimmed_and_lower_cased_only(kind):
    """An ESP sends to the address itself and keys its contact by it: no Gmail, inner-space
    or trailing-dot rule. A trailing-dot domain is a row error here, not a guess."""
    assert destination_class(kind).email_rules == frozenset()
