"""Brevo (ex-Sendinblue) contact lists: members imported into a list as a CSV through the
background contact import (polled until done), removed from the list 150 addresses a call."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from winback.httperror import HttpError
from winback.sync.destinations.base import (
    ATTRIBUTES,
    Destination,
    Member,
    Outcome,
    Settings,
    batches,
    check_attribute_names,
)
from winback.sync.transport import DryRunTransport

# developers.brevo.com/reference/import-contacts, fileBody: "Maximum allowed file body size
# is 10MB. However we recommend a safe limit of around 8 MB". Every CSV we send stays under
# the advised size; the emulator enforces the hard one.
MAX_FILE_BODY_BYTES = 10 * 1024 * 1024
FILE_BODY_BYTES = 8 * 1024 * 1024
CSV_DELIMITER = ";"  # same page: "Use semicolon to separate multiple attributes"
# Our choice, not Brevo's: members per confirmed unit. Brevo's import has no row limit
# (only the byte limit above), and every import costs status polls from a small budget.
ROWS_PER_UNIT = 50_000
# developers.brevo.com/reference/remove-contact-from-list: "a maximum of 150 emails for
# removal in one request".
MAX_REMOVE_EMAILS = 150
# developers.brevo.com/docs/api-limits, general tier: /v3/contacts/* 10 requests a second;
# "all other endpoints" (GET /v3/processes/{id} among them) 100 requests an hour, which is
# why the import status is polled with a growing interval.
CONTACTS_REQUESTS_PER_SECOND = 10
# GET /v3/processes/{id} statuses (reference/get-processes: queued, processing, completed;
# failed and cancelled per an earlier version of that page, unconfirmed).
PROCESS_DONE = "completed"
PROCESS_FAILED = frozenset({"failed", "cancelled", "canceled", "aborted", "error"})
# Brevo's own default attribute for the first name is FIRSTNAME; the others are custom
# attributes the account must create first (an unknown attribute is ignored by the import).
DEFAULT_ATTRIBUTE_NAMES: dict[str, str | None] = {
    "first_name": "FIRSTNAME", "lifecycle_stage": "LIFECYCLE_STAGE", "value_tier": "VALUE_TIER",
    "offer": "OFFER", "cart_value": "CART_VALUE", "product_ids": "PRODUCT_IDS", "winback_offer": "WINBACK_OFFER",
}


class BrevoOptions(Settings):
    attribute_names: dict[str, str | None] = Field(
        default_factory=dict, description="audience attribute -> Brevo contact attribute (null: not sent); "
                                          "merged over the defaults")
    clear_empty_attributes: bool = Field(
        default=False, description="an empty value erases the contact's attribute (emptyContactsAttributes)")
    notify_on_import: bool = Field(default=False, description="let Brevo e-mail the account after each import")
    poll_initial_seconds: float = Field(default=5.0, gt=0, description="first wait for an import's status")
    poll_max_seconds: float = Field(default=60.0, gt=0, description="the wait doubles up to this")
    import_timeout_seconds: float = Field(default=3600.0, gt=0,
                                          description="an import not completed by then fails the run")

    @field_validator("attribute_names")
    @classmethod
    def _known(cls, names: dict[str, str | None]) -> dict[str, str | None]:
        check_attribute_names(names)
        bad = [v for v in names.values() if v is not None and not (v and v.replace("_", "").isalnum()
                                                                   and v == v.upper())]
        if bad:
            raise ValueError(f"Brevo attribute names are upper-case letters, digits and _: {bad}")
        return names


class BrevoTarget(Settings):
    list_id: int = Field(gt=0, description="the Brevo contact list id")


class Brevo(Destination):
    kind = "brevo"
    channels = frozenset({"email"})
    identifiers = ("email",)  # list membership is removed by address, so the address is the key
    hashed = False  # an ESP needs the real address
    attributes = ATTRIBUTES
    batch_size = ROWS_PER_UNIT
    remove_batch_size = MAX_REMOVE_EMAILS
    modes = ("mirror", "add_only")
    pool_slots = 1  # both rate limits are per account
    min_interval = 1 / CONTACTS_REQUESTS_PER_SECOND
    default_base_url = "https://api.brevo.com"
    secret_names = ("token",)  # the API key, sent as the `api-key` header
    Options = BrevoOptions
    Target = BrevoTarget

    @classmethod
    def sent_attributes(cls, options: BrevoOptions) -> tuple[str, ...]:
        names = {**DEFAULT_ATTRIBUTE_NAMES, **options.attribute_names}
        return tuple(a for a in cls.attributes if names.get(a))

    def _headers(self) -> dict[str, str]:
        return {"api-key": self.secret("token"), "Accept": "application/json"}

    def _columns(self) -> list[tuple[str, str]]:
        names = {**DEFAULT_ATTRIBUTE_NAMES, **self.options.attribute_names}
        return [(a, names[a]) for a in self.sent_attributes(self.options)]

    def _csv_files(self, members: Sequence[Member]) -> list[tuple[str, list[Member]]]:
        """CSV bodies of at most FILE_BODY_BYTES each, with the members in each."""
        columns = self._columns()
        header = _csv_line(["EMAIL"] + [name for _, name in columns])
        files: list[tuple[str, list[Member]]] = []
        lines, chunk, size = [header], [], len(header.encode())
        for m in members:
            line = _csv_line([m.ids["email"]] + [_cell(m.attributes.get(a)) for a, _ in columns])
            grows = len(line.encode())
            if chunk and size + grows > FILE_BODY_BYTES:
                files.append(("".join(lines), chunk))
                lines, chunk, size = [header], [], len(header.encode())
            lines.append(line)
            chunk.append(m)
            size += grows
        if chunk:
            files.append(("".join(lines), chunk))
        return files

    def add(self, members: Sequence[Member]) -> Outcome:
        """Start one import per CSV, then wait for all of them: a completed import confirms
        its rows except those in its invalid-email report."""
        pending: dict[int, list[Member]] = {}
        for body, chunk in self._csv_files(members):
            answer = self.http.request("POST", self.url("v3/contacts/import"), headers=self._headers(), json={
                "fileBody": body, "listIds": [self.target.list_id], "updateExistingContacts": True,
                "emptyContactsAttributes": self.options.clear_empty_attributes,
                "disableNotification": not self.options.notify_on_import,
            }, pretend={"processId": len(pending) + 1}).json()
            if not isinstance(answer, dict) or answer.get("processId") is None:
                raise HttpError("Brevo's contact import answered without a processId")
            pending[int(answer["processId"])] = chunk
        outcome = Outcome()
        for process_id, info in self._wait(list(pending)).items():
            invalid = self._invalid_emails(info)
            chunk = pending[process_id]
            outcome.merge(Outcome(
                accepted=[m.key for m in chunk if m.ids["email"] not in invalid],
                rejected={m.key: f"Brevo: {invalid[m.ids['email']]}" for m in chunk if m.ids["email"] in invalid},
                figures={"brevo_imports": 1, "brevo_invalid_emails": len(invalid)}))
        return outcome

    def _wait(self, process_ids: list[int]) -> dict[int, dict[str, Any]]:
        """Poll GET /v3/processes/{id} (100 requests an hour on the general tier) with a
        doubling interval until each import completed; raise when one failed or the
        timeout passed (its members are then sent again next run: the import is an upsert)."""
        dry_run = isinstance(self.http, DryRunTransport)  # nothing runs in the background
        done: dict[int, dict[str, Any]] = {}
        deadline = time.monotonic() + self.options.import_timeout_seconds
        interval = self.options.poll_initial_seconds
        while True:
            if not dry_run:
                time.sleep(max(0.0, min(interval, deadline - time.monotonic())))
            for process_id in [p for p in process_ids if p not in done]:
                try:
                    answer = self.http.request("GET", self.url(f"v3/processes/{process_id}"),
                                               headers=self._headers(),
                                               pretend={"id": process_id, "status": PROCESS_DONE}).json()
                except HttpError as exc:
                    if exc.status != 429:  # throttled past the client's retries: wait longer
                        raise
                    continue
                status = str(answer.get("status", "")).lower()
                if status == PROCESS_DONE:
                    done[process_id] = answer
                elif status in PROCESS_FAILED:
                    raise HttpError(f"Brevo import process {process_id} ended {status!r}")
            if len(done) == len(process_ids):
                return done
            if time.monotonic() >= deadline:
                raise HttpError(f"Brevo import process(es) {sorted(set(process_ids) - set(done))} not completed "
                                f"after {self.options.import_timeout_seconds:.0f}s; their members are sent again "
                                "next run")
            interval = min(interval * 2, self.options.poll_max_seconds)

    def _invalid_emails(self, process: dict[str, Any]) -> dict[str, str]:
        """Address -> reason, from the completed import's report of invalid addresses
        (`info.import.invalid_emails`, a URL of a CSV; its columns are unconfirmed, so any
        cell holding an @ is an address and a reason/error column, if any, the reason)."""
        url = ((process.get("info") or {}).get("import") or {}).get("invalid_emails")
        if not url:
            return {}
        # The report may live on a storage host: the API key only goes to the API's origin.
        same_origin = urlsplit(url).netloc == urlsplit(self.base_url).netloc
        text = self.http.request("GET", url, headers=self._headers() if same_origin else {}, pretend={}).text
        delimiter = CSV_DELIMITER if text.count(CSV_DELIMITER) >= text.count(",") else ","
        rows = list(csv.reader(io.StringIO(text), delimiter=delimiter))
        header = [c.strip().lower() for c in rows[0]] if rows else []
        has_header = bool(rows) and not any("@" in c for c in rows[0])
        reason_at = next((i for i, c in enumerate(header) if c in ("reason", "error", "message")), None) \
            if has_header else None
        invalid = {}
        for row in rows[1:] if has_header else rows:
            for cell in row:
                if "@" in cell:
                    reason = row[reason_at] if reason_at is not None and reason_at < len(row) else ""
                    invalid[cell.strip().lower()] = reason or "invalid email address (import report)"
        return invalid

    def remove(self, members: Sequence[Member]) -> Outcome:
        """Take addresses out of the list (the contacts stay in the account); Brevo answers
        which addresses it removed and which it could not."""
        outcome = Outcome()
        for batch in batches(members, MAX_REMOVE_EMAILS):
            keys: dict[str, list[str]] = {}
            for m in batch:
                keys.setdefault(m.ids["email"], []).append(m.key)
            answer = self.http.request(
                "POST", self.url(f"v3/contacts/lists/{self.target.list_id}/contacts/remove"),
                headers=self._headers(), json={"emails": list(keys)},
                pretend={"contacts": {"success": list(keys), "failure": []}}).json()
            contacts = answer.get("contacts") or {}
            removed = {str(e).lower() for e in contacts.get("success") or []}
            failed = {str(e).lower() for e in contacts.get("failure") or []}
            for email, member_keys in keys.items():
                if email in removed:
                    outcome.accepted.extend(member_keys)
                else:
                    reason = (f"Brevo could not remove the contact from list {self.target.list_id} "
                              "(not in the list, or no such contact)" if email in failed else
                              "Brevo did not report this address as removed")
                    outcome.rejected.update(dict.fromkeys(member_keys, reason))
        return outcome


def _cell(value: Any) -> str:
    if value is None:
        return ""
    # One physical line per contact: Brevo's CSV parser and quoted line breaks are unconfirmed.
    return " ".join(str(value).split()) if isinstance(value, str) else str(value)


def _csv_line(cells: list[str]) -> str:
    out = io.StringIO()
    csv.writer(out, delimiter=CSV_DELIMITER, lineterminator="\n").writerow(cells)
    return out.getvalue()
