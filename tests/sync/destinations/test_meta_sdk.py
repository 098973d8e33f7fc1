"""Meta's official Business SDK (facebook-business, a test-only pin) as the oracle for
what Winback sends to Custom Audiences: the shared awkward members go through the real
sync engine to the emulator (audience 555) and through the SDK's
`CustomAudience.add_users` / `remove_users` with its own normalization and hashing to the
same emulator (audiences 556, 557); every request leaving the process is recorded at the
requests transport adapter (destinations/wire.py) and compared field by field.

Where the two differ, the test says which is right and why:
- Phones: the SDK only strips non-digits, so `8 (999) 123-45-67` becomes 89991234567, a
  number without its country code; Meta requires the country code ("Phone numbers must
  include a country code to be used for matching ... even if all of your data is from
  the same country", https://www.facebook.com/business/help/2082575038703844). Winback
  reads the trunk 8 as +7 (79991234567). Fed the E.164 form, the SDK hashes exactly as
  Winback does.
- A missing value: the SDK hashes the empty string (e3b0c442...), a hash that identifies
  nobody; Winback leaves the cell empty (""), as docs/destinations.md documents.
- The token: the SDK puts access_token in the query string; Winback sends it as
  `Authorization: Bearer` (Graph takes both), so no URL carries it.
"""

from __future__ import annotations

import hashlib
import json

import pytest
from facebook_business.adobjects.customaudience import CustomAudience
from facebook_business.api import FacebookAdsApi
from facebook_business.session import FacebookSession
from sync_support import person
from winback.emulators.meta import MetaEmulator
from winback.sync.destinations.meta import (
    MAX_REMOVE_URL_CHARS,
    MAX_ROWS_PER_CALL,
    REMOVE_ROWS_PER_CALL,
    MetaCustomAudiences,
    appsecret_proof,
)

from destinations.awkward_members import AWKWARD_MEMBERS, Awkward, awkward_rows
from destinations.contract import sync_rounds
from destinations.test_meta import META
from destinations.wire import Sent, record_requests

TOKEN, APP_SECRET = "test-token", "app-secret-1"
OURS, SDK_RAW, SDK_E164 = "555", "556", "557"
SCHEMA = ["EMAIL", "PHONE"]
EMPTY = hashlib.sha256(b"").hexdigest()  # what the SDK sends for a missing value
VERSION = MetaCustomAudiences.api_versions[0].version
KEEPER = person(500)  # stays in the audience, so the second round only removes
TRUNK_8 = {"aw01", "aw03", "aw07"}  # phones written with the Russian trunk prefix 8, no country code


@pytest.fixture
def sent(monkeypatch) -> list[Sent]:
    """Every request leaving the process (ours and the SDK's), passed on to the emulator."""
    return record_requests(monkeypatch)


def sdk_audience(emu: MetaEmulator, audience_id: str) -> CustomAudience:
    session = FacebookSession(access_token=TOKEN, app_secret=APP_SECRET)
    session.GRAPH = emu.base_url  # the emulator instead of graph.facebook.com
    return CustomAudience(audience_id, api=FacebookAdsApi(session, api_version=VERSION))


def sdk_users(members: list[Awkward | dict], e164: bool) -> list[list[str]]:
    """Rows in schema order as a caller hands them to the SDK (raw: as the shop wrote them)."""
    rows = []
    for m in members:
        email, phone = (m.email, m.e164 if e164 else m.phone) if isinstance(m, Awkward) else (m["email"], m["phone"])
        rows.append([email or "", phone or ""])
    return rows


def session(session_id: int, total: int) -> dict:
    """A one-batch upload session, as Meta's guide requires on /users."""
    return {"session_id": session_id, "batch_seq": 1, "last_batch_flag": True, "estimated_num_total": total}


def to(audience_id: str, requests: list[Sent]) -> list[Sent]:
    return [r for r in requests if f"/{audience_id}/" in r.path]


def fields(request: Sent) -> tuple[dict[str, str], dict[str, str]]:
    """(query parameters, form fields) of a request."""
    return {k: v[-1] for k, v in request.query.items()}, request.form() if request.body else {}


def payload_and_session(request: Sent) -> tuple[str, str]:
    query, form = fields(request)
    where = form if request.method == "POST" else query
    return where["payload"], where["session"]


def canonical(text: str) -> str:
    """The SDK's encoding of an object parameter: compact JSON, keys sorted."""
    return json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))


@pytest.fixture
def exchanged(tmp_path, monkeypatch, sent):
    """The awkward members (and one who stays) added, then the awkward ones removed: by
    Winback through the engine, and by the SDK fed raw values and fed E.164 phones."""
    monkeypatch.setenv("WINBACK_TEST_DEST_APP_SECRET", APP_SECRET)
    members = list(AWKWARD_MEMBERS)
    with MetaEmulator(token=TOKEN, app_secret=APP_SECRET) as emu:
        summaries, errors = sync_rounds(tmp_path, monkeypatch, META, emu.base_url,
                                        [awkward_rows() + [KEEPER], [KEEPER]], TOKEN)
        held_after_add = {}
        for audience_id, e164 in ((SDK_RAW, False), (SDK_E164, True)):
            audience = sdk_audience(emu, audience_id)
            users = sdk_users([*members, KEEPER], e164)
            audience.add_users(SCHEMA, users, is_raw=True, session=session(1, len(users)))
            held_after_add[audience_id] = emu.hashes(audience_id, "EMAIL"), emu.hashes(audience_id, "PHONE")
            audience.remove_users(SCHEMA, users[:-1], is_raw=True, session=session(2, len(users) - 1))
        yield {"emu": emu, "summaries": summaries, "errors": errors, "sent": list(sent),
               "held_after_add": held_after_add}


def test_the_envelope_is_the_sdks(exchanged):
    """Same method, path and version, payload and session as JSON form fields (a
    DELETE's in the query string, no body), is_raw with the schema, the same
    appsecret_proof; only the token travels differently."""
    adds, removes = exchanged["summaries"]
    assert (adds["status"], adds["accepted"], adds["invalid"]) == ("succeeded", len(AWKWARD_MEMBERS) + 1, 0)
    assert (removes["status"], removes["removed"]) == ("succeeded", len(AWKWARD_MEMBERS))
    assert exchanged["errors"] == []
    ours, sdk = to(OURS, exchanged["sent"]), to(SDK_E164, exchanged["sent"])
    assert [r.method for r in ours] == [r.method for r in sdk] == ["POST", "DELETE"]
    proof = appsecret_proof(APP_SECRET, TOKEN)
    for mine, theirs in zip(ours, sdk):
        assert mine.path == theirs.path.replace(SDK_E164, OURS) == f"/{VERSION}/{OURS}/users"
        (my_query, my_form), (their_query, their_form) = fields(mine), fields(theirs)
        if mine.method == "POST":
            assert mine.headers["content-type"] == theirs.headers["content-type"] == "application/x-www-form-urlencoded"
            assert set(my_form) == set(their_form) == {"payload", "session"}
            assert my_query == {"appsecret_proof": proof}
        else:
            assert mine.body == theirs.body == b""
            assert set(my_query) == {"payload", "session", "appsecret_proof"} and my_query["appsecret_proof"] == proof
        assert their_query["access_token"] == TOKEN and their_query["appsecret_proof"] == proof
        assert mine.headers["authorization"] == f"Bearer {TOKEN}" and TOKEN not in mine.url
        for my_text, their_text in zip(payload_and_session(mine), payload_and_session(theirs)):
            assert my_text == canonical(my_text) and their_text == canonical(their_text)  # the same encoding
        (my_payload, my_session), (their_payload, their_session) = (
            [json.loads(t) for t in payload_and_session(r)] for r in (mine, theirs))
        assert my_payload["schema"] == their_payload["schema"] == SCHEMA
        assert my_payload["is_raw"] is their_payload["is_raw"] is True
        assert set(my_session) == set(their_session) == {"session_id", "batch_seq", "last_batch_flag",
                                                         "estimated_num_total"}
        assert (my_session["batch_seq"], my_session["last_batch_flag"]) == (1, True)
        assert my_session["estimated_num_total"] == len(my_payload["data"]) == len(their_payload["data"])
        assert isinstance(my_session["session_id"], int) and my_session["session_id"] > 0


def rows(request: Sent) -> list[list[str]]:
    return json.loads(payload_and_session(request)[0])["data"]


def test_every_identifier_hashes_as_the_sdk_hashes_it(exchanged):
    """Fed E.164 phones, the SDK's rows are Winback's, cell for cell, but for a missing
    value (the SDK's hash of nothing, Winback's empty cell). Emails need no help: the
    SDK's trim, lower-case and strip of a trailing dot are Winback's rules for Meta
    (Gmail dots and tags stay, unicode is hashed as UTF-8)."""
    [our_add, our_remove] = to(OURS, exchanged["sent"])
    [their_add, their_remove] = to(SDK_E164, exchanged["sent"])
    for mine, theirs in ((our_add, their_add), (our_remove, their_remove)):
        assert sum(cell == EMPTY for row in rows(theirs) for cell in row) == 2  # aw07's email, aw08's phone
        assert sorted(rows(mine)) == sorted([["" if c == EMPTY else c for c in row] for row in rows(theirs)])
    assert MetaCustomAudiences.email_rules == frozenset({"no_trailing_dot"})
    emu = exchanged["emu"]
    held = {key: exchanged["held_after_add"][SDK_E164][i] - {EMPTY} for i, key in enumerate(SCHEMA)}
    assert held == {"EMAIL": {r[0] for r in rows(our_add) if r[0]}, "PHONE": {r[1] for r in rows(our_add) if r[1]}}
    assert len(emu.members(OURS)) == 1 and emu.members(OURS) == emu.members(SDK_RAW) == emu.members(SDK_E164)


def test_phones_without_their_country_code_are_where_the_sdk_goes_wrong(exchanged):
    """Fed phones as the shop wrote them, the SDK agrees on every address and on phones
    written with +country code; a trunk 8 (`8 (999) ...`, `89991234569`) it sends as a
    number with no country code, which Meta cannot match. Winback's is the right one."""
    raw, e164 = (rows(to(audience_id, exchanged["sent"])[0]) for audience_id in (SDK_RAW, SDK_E164))
    members = [*AWKWARD_MEMBERS]
    differing = {m.key for m, r, e in zip(members, raw, e164) if r[1] != e[1]}
    assert [r[0] for r in raw] == [e[0] for e in e164]  # every address alike
    assert differing == TRUNK_8
    for m, r in zip(members, raw):
        if m.key in TRUNK_8:
            assert r[1] == hashlib.sha256(m.phone.translate({ord(c): None for c in " ()-"}).encode()).hexdigest()
            assert r[1] != hashlib.sha256(m.e164.lstrip("+").encode()).hexdigest()


def test_batches_stay_within_meta_limits(tmp_path, monkeypatch, sent):
    """Additions: up to Meta's documented 10,000 rows a call. Removals: the SDK puts 500
    rows in one URL of about 76 KB, which the emulator's server (like many) refuses with
    414 for a request line over 64 KiB; SDK 26.0.3 does not even raise on that answer (its
    HTML body counts as a success) and nobody is removed. Removals that size failed for
    SDK users against Meta too. Winback splits them so each URL stays under 32 KiB."""
    monkeypatch.setenv("WINBACK_TEST_DEST_APP_SECRET", APP_SECRET)
    leavers = [person(i) for i in range(500)]
    with MetaEmulator(token=TOKEN, app_secret=APP_SECRET) as emu:
        [added, removed], _ = sync_rounds(tmp_path, monkeypatch, META, emu.base_url, [leavers + [KEEPER], [KEEPER]],
                                          TOKEN)
        users = sdk_users(leavers, e164=False)
        audience = sdk_audience(emu, SDK_RAW)
        audience.add_users(SCHEMA, users, is_raw=True, session=session(3, len(users)))
        answer = audience.remove_users(SCHEMA, users, is_raw=True, session=session(4, len(users)))
        assert (answer.status(), len(emu.members(SDK_RAW))) == (414, 500)  # "done", and nobody removed
        assert len(emu.members(OURS)) == 1
    ours = to(OURS, sent)
    [_, sdk_delete] = to(SDK_RAW, sent)
    assert added["status"] == removed["status"] == "succeeded" and removed["removed"] == 500
    assert [len(rows(r)) for r in ours if r.method == "POST"] == [501] and 501 <= MAX_ROWS_PER_CALL
    deletes = [r for r in ours if r.method == "DELETE"]
    assert [len(rows(r)) for r in deletes] == [REMOVE_ROWS_PER_CALL, REMOVE_ROWS_PER_CALL, 500 - 2 * REMOVE_ROWS_PER_CALL]
    assert max(len(r.url) for r in deletes) <= MAX_REMOVE_URL_CHARS < 65_536 < len(sdk_delete.url)


def test_the_sdks_default_version_is_one_winback_knows():
    """The SDK release pins a Marketing API version; Winback's default is that one or newer."""
    known = [v.version for v in MetaCustomAudiences.api_versions]
    assert FacebookAdsApi.API_VERSION in known
    assert known.index(VERSION) <= known.index(FacebookAdsApi.API_VERSION)
