"""Customers of one pair who share an identifier (a household's address, so also its
hash): the platform keeps it while any of them is synced, whoever leaves or changes
address, on DuckDB and PostgreSQL. Mailchimp (plain addresses in a segment) and Meta
(SHA-256 of email and phone, a person matched on any of them).

Before the fix a leaver's removal took the shared address (or hash) off the platform
while `sync_state` still listed the other customer as synced: drift no later run
repaired, since nothing about that customer changed."""

from __future__ import annotations

from destinations.contract import AUDIENCE, write_config
from destinations.test_mailchimp import KEY, MAILCHIMP
from destinations.test_meta import META, sha
from sync_support import (
    normalized_email,
    normalized_phone,
    person,
    table,
    write_members,
)
from winback.emulators.mailchimp import MailchimpEmulator
from winback.emulators.meta import MetaEmulator
from winback.sync.engine import sync
from winback.warehouse import Warehouse

SHARED = "family@example.com"


def synced(warehouse: Warehouse) -> set[str]:
    return {r["member_key"] for r in table(warehouse, "sync_state")}


def test_mailchimp_keeps_an_address_another_member_holds(tmp_path, warehouse_url, monkeypatch):
    monkeypatch.setenv("WINBACK_TEST_DEST_TOKEN", KEY)
    one, two, three, four = (person(1, email=f" {SHARED.upper()}"), person(2, email=SHARED), person(3),
                             person(4, email=f"{SHARED} "))
    with MailchimpEmulator(token=KEY) as emu:
        config = write_config(tmp_path, MAILCHIMP, emu.base_url, warehouse_url)
        warehouse = Warehouse(config.warehouse_url)
        write_members(warehouse, AUDIENCE, "email", [one, two, three])
        sync(config, warehouse=warehouse)
        first = emu.segment()

        # 1 leaves, 2 moves to an address of their own, 4 joins with the shared one: the
        # address goes nowhere (2's old address and 1's are 4's now).
        write_members(warehouse, AUDIENCE, "email", [person(2), three, four])
        [second] = sync(config, warehouse=warehouse)
        after_second, state_second = emu.segment(), synced(warehouse)

        # 4, the last holder, leaves: now the address goes.
        write_members(warehouse, AUDIENCE, "email", [person(2), three])
        [third] = sync(config, warehouse=warehouse)
        after_third, state_third = emu.segment(), synced(warehouse)
        warehouse.dispose()

    assert first == {SHARED, normalized_email(3)}
    assert after_second == {SHARED, normalized_email(2), normalized_email(3)}
    removals = [b["members_to_remove"] for p, b in emu.received if "/segments/" in p and b.get("members_to_remove")]
    assert removals == [[SHARED]]  # sent once: by the third run, for the last holder
    assert second["status"] == "succeeded" and second["removed"] == 2 and second["remove_failed"] == 0
    assert second["figures"]["identifiers_kept_shared"] == 2  # 2's old address, then 1's
    assert state_second == {"c0000002", "c0000003", "c0000004"}  # the leaver's row is gone
    assert third["removed"] == 1 and after_third == {normalized_email(2), normalized_email(3)}
    assert state_third == {"c0000002", "c0000003"}


def test_meta_keeps_a_hash_another_member_holds_and_removes_the_rest(tmp_path, warehouse_url, monkeypatch):
    monkeypatch.setenv("WINBACK_TEST_DEST_TOKEN", "test-token")
    one, two = person(1, email=SHARED), person(2, email=SHARED.upper())  # one address, two phones
    with MetaEmulator() as emu:
        config = write_config(tmp_path, META, emu.base_url, warehouse_url)
        warehouse = Warehouse(config.warehouse_url)
        write_members(warehouse, AUDIENCE, "ads", [one, two, person(3)])
        sync(config, warehouse=warehouse)
        write_members(warehouse, AUDIENCE, "ads", [two, person(3)])
        [left] = sync(config, warehouse=warehouse)
        emails, phones, state = emu.hashes("555"), emu.hashes("555", "PHONE"), synced(warehouse)
        deleted = emu.rows_by_method.get("DELETE", 0)
        warehouse.dispose()

    digits = {n: normalized_phone(n).lstrip("+") for n in (1, 2, 3)}
    assert emails == {sha(SHARED), sha(normalized_email(3))}
    assert left["status"] == "succeeded" and left["removed"] == 1
    assert left["figures"]["identifiers_kept_shared"] == 1
    assert deleted == 1  # one row: the leaver's own phone, without the shared email hash
    assert phones == {sha(digits[2]), sha(digits[3])}
    assert state == {"c0000002", "c0000003"}
