"""UniSender: contacts imported into a mailing list with `importContacts` (500 a call),
and taken out of that list again without unsubscribing them."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from winback.httperror import HttpError
from winback.sync.destinations.base import (
    ATTRIBUTES,
    Destination,
    Member,
    Outcome,
    PlatformId,
    Settings,
    batches,
    check_attribute_names,
)

# unisender.com/ru/support/api/contacts/importcontacts: "Импортировать можно данные не
# более 500 контактов за вызов".
MAX_CONTACTS_PER_IMPORT = 500
# Same page: a call times out 30 s after the request reached the server; retry at most
# twice. Our client waits a little longer than the server (the default of
# `destinations.<name>.http`, which a configuration may still override).
CALL_TIMEOUT_SECONDS = 30
MAX_RETRIES = 2
# Same page: at most 50 user fields per account; each mapped attribute uses one.
MAX_USER_FIELDS = 50
# UniSender answers errors with HTTP 200 and {"error", "code"}. These codes mean "later"
# (codes from its API error list; limits themselves unconfirmed): wait and resend.
RETRY_LATER_CODES = {"retry_later", "api_call_limit_exceeded_for_api_key", "api_call_limit_exceeded_for_ip"}
RETRY_LATER_ATTEMPTS = 5
# Codes that concern the account, not one contact: stop instead of failing row by row.
ACCOUNT_CODES = {"invalid_api_key", "access_denied", "not_enough_money", "unknown_method"} | RETRY_LATER_CODES
# importContacts system fields (same page): the list a contact joins, and the list it is
# excluded from (`email_excluded_list_ids`: taken out of the list, not unsubscribed).
LIST_FIELD = "email_list_ids"
EXCLUDED_FIELD = "email_excluded_list_ids"
# Every attribute but product_ids (a list, not a field value).
FIELD_ATTRIBUTES = tuple(a for a in ATTRIBUTES if a != "product_ids")
# UniSender's messages quote the address they are about; errors and row reasons keep the
# reason and drop the personal data.
ADDRESS = re.compile(r"[^\s\"'<>,;]+@[^\s\"'<>,;]+")


class UniSenderOptions(Settings):
    fields: dict[str, str] = Field(
        default_factory=lambda: {"first_name": "Name"},
        description="audience attribute -> UniSender user field (create fields other than Name first)")
    removal: Literal["import", "exclude"] = Field(
        default="import",
        description="import: importContacts with email_excluded_list_ids, 500 a call; "
                    "exclude: the `exclude` method, one contact a call")

    @field_validator("fields")
    @classmethod
    def _known(cls, value: dict[str, str]) -> dict[str, str]:
        check_attribute_names(value)
        if len(value) > MAX_USER_FIELDS:
            raise ValueError(f"UniSender accounts have at most {MAX_USER_FIELDS} user fields")
        return value


class UniSenderTarget(Settings):
    list_id: PlatformId = Field(pattern=r"^\d+$", description="the mailing list id (getLists)")


class UniSender(Destination):
    kind = "unisender"
    channels = frozenset({"email"})
    identifiers = ("email", "phone")  # the list is for email; the phone is kept on the contact
    hashed = False  # it needs the real address to send to
    phone_format = "e164"  # "+79261232323": UniSender wants phones in international format
    attributes = FIELD_ATTRIBUTES  # as user fields, mapped by options.fields
    batch_size = MAX_CONTACTS_PER_IMPORT
    modes = ("mirror", "add_only")
    pool_slots = 1  # concurrency limits unconfirmed: one sync per account at a time
    default_base_url = "https://api.unisender.com/ru/api"
    http_defaults: ClassVar[dict[str, Any]] = {"timeout": CALL_TIMEOUT_SECONDS + 5, "max_retries": MAX_RETRIES}
    Options = UniSenderOptions
    Target = UniSenderTarget

    @classmethod
    def sent_attributes(cls, options: UniSenderOptions) -> tuple[str, ...]:
        return tuple(a for a in cls.attributes if a in options.fields)

    # -- HTTP --------------------------------------------------------------------------
    def _call(self, method: str, fields: list[tuple[str, str]], pretend: dict[str, Any]) -> dict[str, Any]:
        """POST a form with the key in the body (never in the URL, which ends up in logs);
        UniSender's errors come back with HTTP 200 and become HttpError here."""
        form = [("format", "json"), ("api_key", self.secret("token"))] + fields
        for attempt in range(RETRY_LATER_ATTEMPTS + 1):
            answer = self.http.request("POST", self.url(method), data=form, pretend=pretend).json() or {}
            code = answer.get("code")
            if "error" not in answer:
                return answer
            if code not in RETRY_LATER_CODES or attempt == RETRY_LATER_ATTEMPTS:
                raise HttpError(_scrub(f"UniSender {method}: {code or 'error'}: {answer['error']}"), 200,
                                _scrub(json.dumps(answer, ensure_ascii=False))[:500])
            time.sleep(min(2 ** attempt, 60))
        raise AssertionError("unreachable")

    def _import(self, names: list[str], rows: list[list[str]]) -> dict[str, Any]:
        # overwrite_lists=0 keeps the contact's other lists; overwrite_tags=0 its tags.
        fields = [(f"field_names[{j}]", name) for j, name in enumerate(names)]
        fields += [(f"data[{i}][{j}]", value) for i, row in enumerate(rows) for j, value in enumerate(row)]
        fields += [("overwrite_tags", "0"), ("overwrite_lists", "0")]
        answer = self._call("importContacts", fields, pretend={"result": {"total": len(rows), "log": []}})
        return answer.get("result") or {}

    # -- members -----------------------------------------------------------------------
    def add(self, members: Sequence[Member]) -> Outcome:
        outcome = Outcome()
        without_email = {m.key: "UniSender: no valid email address; an email list takes contacts by address"
                         for m in members if "email" not in m.ids}
        outcome.rejected.update(without_email)
        sendable = [m for m in members if m.key not in without_email]
        attribute_fields = list(self.options.fields.items())
        for batch in batches(sendable, MAX_CONTACTS_PER_IMPORT):
            by_email = _by_email(batch)
            with_phone = any("phone" in keyed[0].ids for keyed in by_email.values())
            names = ["email", LIST_FIELD] + (["phone"] if with_phone else []) + [f for _, f in attribute_fields]
            rows = []
            for email, keyed in by_email.items():
                member = keyed[0]
                row = [email, self.target.list_id] + ([member.ids.get("phone", "")] if with_phone else [])
                rows.append(row + [_text(member.attributes.get(a)) for a, _ in attribute_fields])
            result = self._import(names, rows)
            outcome.merge(self._outcome(batch, list(by_email), result))
        return outcome

    def remove(self, members: Sequence[Member]) -> Outcome:
        """Take contacts out of the list only: they stay in the account with their status
        and their other lists."""
        if self.options.removal == "exclude":
            return self._exclude_one_by_one(members)
        outcome = Outcome()
        for batch in batches([m for m in members if "email" in m.ids], MAX_CONTACTS_PER_IMPORT):
            emails = list(_by_email(batch))
            result = self._import(["email", EXCLUDED_FIELD], [[e, self.target.list_id] for e in emails])
            outcome.merge(self._outcome(batch, emails, result))
        outcome.accepted.extend(m.key for m in members if "email" not in m.ids)  # never on an email list
        return outcome

    def _exclude_one_by_one(self, members: Sequence[Member]) -> Outcome:
        """The `exclude` method takes one contact per call (contact_type, contact, list_ids)."""
        outcome = Outcome()
        for member in members:
            if "email" not in member.ids:
                outcome.accepted.append(member.key)
                continue
            try:
                self._call("exclude", [("contact_type", "email"), ("contact", member.ids["email"]),
                                       ("list_ids", self.target.list_id)], pretend={"result": {}})
            except HttpError as exc:
                if _error_code(exc) in ACCOUNT_CODES or exc.status != 200:
                    raise  # the account or the service, not this contact: the engine records the unit
                outcome.rejected[member.key] = str(exc)
                continue
            outcome.accepted.append(member.key)
        return outcome

    def _outcome(self, batch: Sequence[Member], emails: list[str], result: dict[str, Any]) -> Outcome:
        """`result.log` holds one entry per refused row: {index, code, message}, index
        counting rows of this call's `data` from 0."""
        by_email = _by_email(batch)
        rejected = {}
        for entry in result.get("log") or []:
            try:
                email = emails[int(entry.get("index"))]
            except (TypeError, ValueError, IndexError):
                continue  # a note about no row in particular
            reason = _scrub(str(entry.get("message") or "rejected"))
            for member in by_email[email]:
                rejected[member.key] = f"UniSender {entry.get('code') or 'error'}: {reason}"
        return Outcome(accepted=[m.key for m in batch if m.key not in rejected], rejected=rejected,
                       figures={name: result.get(name, 0) for name in ("inserted", "updated", "invalid")})


def _by_email(members: Sequence[Member]) -> dict[str, list[Member]]:
    """Members by address: customers sharing one address are one UniSender contact, sent once."""
    out: dict[str, list[Member]] = {}
    for member in members:
        out.setdefault(member.ids["email"], []).append(member)
    return out


def _scrub(text: str) -> str:
    return ADDRESS.sub("<address>", text)


def _text(value: Any) -> str:
    # Form fields are text; an empty value clears a field whose value is gone (assumed).
    return "" if value is None else str(value)


def _error_code(exc: HttpError) -> str | None:
    try:
        return json.loads(exc.body or "{}").get("code")
    except (ValueError, AttributeError):
        return None
