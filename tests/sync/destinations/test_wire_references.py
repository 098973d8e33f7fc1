"""The wire format of the platforms without an official Python SDK (Yandex Audience, VK
Ads, UniSender, SendPulse), pinned against each platform's published reference: endpoint,
method, field names, encoding, batch limit. Each test drives the destination through the
real sync engine with the shared awkward members and reads the requests as they were
about to leave the process (answered in-process, or passed on to the VK emulator, whose
list flow has several steps)."""

from __future__ import annotations

import hashlib

import pytest
from sync_support import person
from winback.emulators.sendpulse import CLIENT_ID, CLIENT_SECRET
from winback.emulators.vk_ads import VkAdsEmulator
from winback.sync.destinations import destination_class
from winback.sync.destinations.sendpulse import ADD_BATCH, MAX_REMOVE_EMAILS
from winback.sync.destinations.unisender import MAX_CONTACTS_PER_IMPORT
from winback.sync.destinations.yandex_audience import YandexAudience
from winback.sync.identifiers import InvalidIdentifier, normalize_email

from destinations.awkward_members import AWKWARD_MEMBERS, Awkward, awkward_rows
from destinations.contract import Platform, sync_once
from destinations.wire import Sent, record_requests

TOKEN = "wire-test-token"


def sha(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def address(kind: str, m: Awkward) -> str | None:
    """The member's address in the form `kind` sends it (its declared email rules), or
    None when it has none the platform can take."""
    try:
        return normalize_email(m.email, destination_class(kind).email_rules) if m.email else None
    except InvalidIdentifier:
        return None


def padding(count: int) -> list[dict]:
    """Plain members after the awkward ones (their keys sort after `aw..`), for batch limits."""
    return [person(1_000 + i) for i in range(count)]


def at_default_address(kind: str, **fields) -> Platform:
    return Platform(kind=kind, emulator=None, channel=fields.pop("channel", "email"), held=None, expected=None,
                    identifiers=["email", "phone"], api_prefix=destination_class(kind).default_base_url, **fields)


def sync_rounds(tmp_path, monkeypatch, platform: Platform, rounds: list[list[dict]], answer, base_url: str = ""
                ) -> list[Sent]:
    sent = record_requests(monkeypatch, answer)
    for rows in rounds:
        summary, _ = sync_once(tmp_path, platform, base_url, rows)
        assert summary["status"] == "succeeded", summary.get("error")
    return sent


def test_yandex_audience_modify_data(tmp_path, monkeypatch):
    """yandex.com/dev/audience/en/ref/openapi/segments/modifyUploadingData: "POST
    https://api-audience.yandex.ru/v1/management/segment/{segmentId}/modify_data",
    `modification_type` addition | subtraction | replace, `check_size` for fewer than 100
    records, the file as the multipart field `file`. yandex.com/support/audience/en/file
    (CRM data): CSV, UTF-8, "The first data string should list the field names, separated
    by commas"; phone "79995551111" (digits with the country code, no symbols), email
    without upper-case letters; hashed values SHA-256 (MD5 uploads end January 2025)."""
    monkeypatch.setenv("WINBACK_TEST_DEST_TOKEN", TOKEN)
    monkeypatch.setattr(YandexAudience, "min_interval", 0.0)  # its real pacing: a change every 6 s
    platform = at_default_address("yandex_audience", channel="ads", target={"segment_id": "4242"})
    [upload] = sync_rounds(tmp_path, monkeypatch, platform, [awkward_rows()],
                           lambda _: {"segment": {"id": 4242, "status": "is_processed"}})
    assert (upload.method, upload.path) == ("POST", "/v1/management/segment/4242/modify_data")
    assert upload.url.startswith("https://api-audience.yandex.ru/")
    assert upload.query == {"modification_type": ["addition"], "check_size": ["false"]}
    assert upload.headers["authorization"] == f"OAuth {TOKEN}"
    assert upload.headers["content-type"].startswith("multipart/form-data")
    content = upload.form()["file"].decode("utf-8")
    expected = ["email,phone"] + [
        f"{sha(a) if (a := address('yandex_audience', m)) else ''},{sha(m.e164[1:]) if m.e164 else ''}"
        for m in AWKWARD_MEMBERS]
    assert content == "\n".join(expected) + "\n"
    assert sha("79991234567") in content and sha("442079460958") in content  # trunk 8 read as +7; foreign kept


@pytest.mark.parametrize("identifier", ["email", "phone"])
def test_vk_ads_users_list_upload(tmp_path, monkeypatch, identifier):
    """target.my.com/help/advertisers/sourceuserlists/en (VK Ads, formerly myTarget, user
    lists): "List size: from 2 000 to 5 000 000 unique items. One item per line. ...
    Encoding: UTF-8. File size: up to 128 MB"; phones "79011234567" without spaces or
    symbols; values may be uploaded hashed. The list is created by a multipart `POST
    /api/v3/remarketing/users_lists.json` with `name`, `type` (emails | phones) and `file`
    (ads.vk.com/doc/api/object/RemarketingUsersList)."""
    monkeypatch.setenv("WINBACK_TEST_DEST_TOKEN", "test-token")
    platform = Platform(kind="vk_ads", emulator=None, channel="ads", identifiers=["email", "phone"], held=None,
                        expected=None, mode="replace", target={"identifier": identifier},
                        options={"poll_interval": 0.01, "ready_timeout": 5})
    with VkAdsEmulator() as emu:
        sent = sync_rounds(tmp_path, monkeypatch, platform, [awkward_rows() + padding(2_000)], None, emu.base_url)
    [upload] = [s for s in sent if s.method == "POST" and s.path == "/api/v3/remarketing/users_lists.json"]
    assert upload.headers["authorization"] == "Bearer test-token" and upload.query == {}
    form = upload.form()
    assert form["type"] == f"{identifier}s" and form["name"] == "winback dest lapsed_winback"
    lines = form["file"].decode("utf-8").split("\n")
    assert lines[-1] == "" and all(len(line) == 64 for line in lines[:-1])  # one SHA-256 hex a line, no header
    ours = [address("vk_ads", m) if identifier == "email" else (m.e164[1:] if m.e164 else None)
            for m in AWKWARD_MEMBERS]
    awkward = [sha(v) for v in ours if v]
    assert lines[:len(awkward)] == awkward and len(lines) - 1 == len(awkward) + 2_000


def test_unisender_import_contacts(tmp_path, monkeypatch):
    """unisender.com/en/support/api/partners/importcontacts: "You can import data of no more
    than 500 contacts per call"; arguments api_key, field_names[N] ("at least the «email»
    or «phone» field"), data[N][M], overwrite_tags, overwrite_lists; system fields email,
    phone, email_list_ids. Sent as a POST form (the key in the body, never in the URL)."""
    monkeypatch.setenv("WINBACK_TEST_DEST_TOKEN", TOKEN)
    platform = at_default_address("unisender", target={"list_id": "7001"})
    calls = sync_rounds(tmp_path, monkeypatch, platform, [awkward_rows() + padding(495)],
                        lambda _: {"result": {"log": []}})
    assert [(c.method, c.url, c.query) for c in calls] == [
        ("POST", "https://api.unisender.com/ru/api/importContacts", {})] * 2
    assert all(c.headers["content-type"] == "application/x-www-form-urlencoded" for c in calls)
    first = calls[0].form()  # an indexed field ("data[0][1]") comes as the list of its values
    assert first["format"] == "json" and first["api_key"] == TOKEN
    assert [first[f"field_names[{j}]"] for j in range(4)] == [["email"], ["email_list_ids"], ["phone"], ["Name"]]
    assert (first["overwrite_tags"], first["overwrite_lists"]) == ("0", "0")
    with_address = [(n, m) for n, m in enumerate(AWKWARD_MEMBERS) if address("unisender", m)]
    for i, (n, m) in enumerate(with_address):
        row = [first[f"data[{i}][{j}]"] for j in range(4)]
        assert row == [[address("unisender", m)], ["7001"], [m.e164 or ""], [f"Name{n}"]]  # phones in E.164, with +
    # Units of 500 members from the engine, those without an address held back: <= 500 a call.
    rows = [len({k.split("]")[0] for k in c.form() if k.startswith("data[")}) for c in calls]
    assert max(rows) <= MAX_CONTACTS_PER_IMPORT and sum(rows) == len(with_address) + 495


def sendpulse_answer(request: Sent) -> dict:
    if request.path == "/oauth/access_token":
        return {"access_token": "sp-access-token", "token_type": "Bearer", "expires_in": 3600}
    return {"result": True}


def test_sendpulse_mailing_list_calls(tmp_path, monkeypatch):
    """sendpulse.com/integrations/api: "POST https://api.sendpulse.com/oauth/access_token"
    with grant_type client_credentials, client_id, client_secret; the token as "Authorization:
    Bearer"; "The request limit is 10 requests per second". sendpulse.com/integrations/api/
    bulk-email: add `POST /addressbooks/{id}/emails` with `emails` as objects of `email` and
    `variables`; remove `DELETE /addressbooks/{id}/emails` with `emails`, at most 100 a call
    (SendPulse's own reference notes, github.com/sendpulse/sendpulse-skills, address-books.md).
    JSON bodies; SendPulse documents no cap on an add, ours is 100."""
    monkeypatch.setenv("WINBACK_TEST_DEST_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("WINBACK_TEST_DEST_CLIENT_SECRET", CLIENT_SECRET)
    platform = at_default_address("sendpulse", target={"list_id": "88001"},
                                  secrets={"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET})
    sent = sync_rounds(tmp_path, monkeypatch, platform, [awkward_rows() + padding(100), []], sendpulse_answer)
    tokens = [s for s in sent if s.path == "/oauth/access_token"]
    assert [(t.method, t.url) for t in tokens] == [("POST", "https://api.sendpulse.com/oauth/access_token")] * 2
    assert tokens[0].json() == {"grant_type": "client_credentials", "client_id": CLIENT_ID,
                                "client_secret": CLIENT_SECRET}
    calls = [s for s in sent if s.path != "/oauth/access_token"]
    assert {(c.url, c.headers["authorization"], c.headers["content-type"]) for c in calls} == {
        ("https://api.sendpulse.com/addressbooks/88001/emails", "Bearer sp-access-token", "application/json")}
    adds = [c.json()["emails"] for c in calls if c.method == "POST"]
    removals = [c.json()["emails"] for c in calls if c.method == "DELETE"]
    with_address = [(n, m) for n, m in enumerate(AWKWARD_MEMBERS) if address("sendpulse", m)]
    assert adds[0][:len(with_address)] == [{"email": address("sendpulse", m), "variables": {"name": f"Name{n}"}}
                                           for n, m in with_address]
    total = len(with_address) + 100
    # The engine hands over 100 members a unit, the awkward ones without a usable address
    # among them: no call carries more than 100.
    assert max(len(a) for a in adds) <= ADD_BATCH and sum(len(a) for a in adds) == total
    assert [len(r) for r in removals] == [MAX_REMOVE_EMAILS, total - MAX_REMOVE_EMAILS]
    assert removals[0][:len(with_address)] == [address("sendpulse", m) for _, m in with_address]
