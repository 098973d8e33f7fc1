"""UniSender's API, as documented (docs/platforms.md, its importContacts page): form posts
with the key in `api_key`, `importContacts` of at most 500 rows answering per-row
problems in `result.log`, role addresses and spam traps refused on import, `exclude`
taking one contact out of lists. Errors come back as HTTP 200 with {"error", "code"}."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from winback.emulators.base import Emulator, Reject, Request

MAX_ROWS = 500
DEFAULT_LIST = "7001"
SYSTEM_FIELDS = {
    "email", "email_status", "email_list_ids", "email_subscribe_times", "email_unsubscribed_list_ids",
    "email_excluded_list_ids", "phone", "phone_status", "phone_list_ids", "phone_subscribe_times",
    "phone_unsubscribed_list_ids", "phone_excluded_list_ids", "tags", "delete",
}
# Role addresses UniSender names as refused on import (info@, sales@, no-reply@, all@),
# plus a few of the same kind.
ROLE_MAILBOXES = {"info", "sales", "no-reply", "noreply", "all", "admin", "support", "office", "postmaster"}
# Stricter than the engine's check on purpose: lower-case and trimmed only, so a
# destination that forgot to normalize gets caught.
EMAIL = re.compile(r"[a-z0-9._%+\-]+@[a-z0-9.\-]+\.[a-z]{2,}")
E164 = re.compile(r"\+[1-9][0-9]{6,14}")
INDEXED = re.compile(r"(field_names|data)\[(\d+)\](?:\[(\d+)\])?")


def error(message: str, code: str) -> dict[str, str]:
    """UniSender's answer to a failed call (HTTP 200)."""
    return {"error": message, "code": code}


@dataclass
class UniSenderEmulator(Emulator):
    lists: dict[str, set[str]] = field(default_factory=lambda: {DEFAULT_LIST: set()})  # list id -> addresses
    contacts: dict[str, dict[str, Any]] = field(default_factory=dict)  # address -> {"phone", "fields"}
    user_fields: set[str] = field(default_factory=lambda: {"Name"})  # fields created in the account
    spam_traps: set[str] = field(default_factory=set)  # addresses refused as spam traps
    max_rows: int = MAX_ROWS
    busy: int = 0  # the next this many calls are answered "retry_later" (HTTP 200, as UniSender does)
    received: list[dict[str, Any]] = field(default_factory=list)  # the form of each applied call

    def setup(self) -> None:
        self.route("POST", r"/(?:ru|en)/api/importContacts", self._import)
        self.route("POST", r"/(?:ru|en)/api/exclude", self._exclude)

    def members(self, list_id: str = DEFAULT_LIST) -> set[str]:
        return set(self.lists.get(list_id, set()))

    def _form(self, request: Request) -> dict[str, Any] | None:
        """The call's fields, or None when the key is wrong (answered as UniSender does)."""
        form = {**request.query, **request.form()}
        if form.get("api_key") != self.token:
            return None
        if self.busy > 0:
            self.busy -= 1
            raise Reject(200, error("Сервис временно перегружен, повторите запрос позже", "retry_later"))
        if form.get("format") != "json":
            raise Reject(400, error("format=json is required by this emulator", "invalid_arg"))
        self.received.append(form)
        return form

    def _import(self, request: Request, match: re.Match) -> dict:
        form = self._form(request)
        if form is None:
            return error("Указан неверный ключ доступа к API", "invalid_api_key")
        names: dict[int, str] = {}
        cells: dict[int, dict[int, str]] = {}
        for key, values in form.items():
            found = INDEXED.fullmatch(key)
            value = values[-1] if isinstance(values, list) else values
            if found and found[1] == "field_names" and found[3] is None:
                names[int(found[2])] = value
            elif found and found[1] == "data" and found[3] is not None:
                cells.setdefault(int(found[2]), {})[int(found[3])] = value
        fields = [names[j] for j in sorted(names)]
        if "email" not in fields and "phone" not in fields:
            return error("field_names must contain email or phone", "invalid_arg")
        unknown = [f for f in fields if f not in SYSTEM_FIELDS and f not in self.user_fields]
        if unknown:
            return error(f"Unknown field names: {', '.join(unknown)}", "invalid_arg")
        if len(cells) > self.max_rows:
            raise Reject(400, error(f"{len(cells)} contacts; at most {self.max_rows} per importContacts call",
                                    "invalid_arg"))
        rows = [cells[i] for i in sorted(cells)]
        if sorted(cells) != list(range(len(rows))) or any(sorted(r) != list(range(len(fields))) for r in rows):
            return error("data rows must be numbered from 0 and have one value per field name", "invalid_arg")
        for listed in ("email_list_ids", "email_excluded_list_ids"):
            for row in rows:
                if listed in fields:
                    missing = [i for i in row[fields.index(listed)].split(",") if i and i not in self.lists]
                    if missing:
                        return error(f"List not found: {', '.join(missing)}", "invalid_arg")
        overwrite_lists = form.get("overwrite_lists") == "1"
        log, inserted, updated = [], 0, 0
        for index, cells_of_row in enumerate(rows):
            row = {name: cells_of_row[j] for j, name in enumerate(fields)}
            problem = self._problem(row)
            if problem:
                log.append({"index": index, "code": problem[0], "message": problem[1]})
                continue
            email = row.get("email", "")
            if not email:
                continue  # a phone-only contact: not on any email list
            known = email in self.contacts
            contact = self.contacts.setdefault(email, {"phone": "", "fields": {}})
            inserted, updated = inserted + (not known), updated + known
            if row.get("phone"):
                contact["phone"] = row["phone"]
            contact["fields"].update({k: v for k, v in row.items() if k in self.user_fields})
            joins = [i for i in row.get("email_list_ids", "").split(",") if i]
            if overwrite_lists and "email_list_ids" in row:
                for members in self.lists.values():
                    members.discard(email)
            for list_id in joins:
                self.lists[list_id].add(email)
            for list_id in [i for i in row.get("email_excluded_list_ids", "").split(",") if i]:
                self.lists[list_id].discard(email)
        return {"result": {"total": len(rows), "inserted": inserted, "updated": updated, "deleted": 0,
                           "new_emails": inserted, "invalid": len(log), "log": log}}

    def _problem(self, row: dict[str, str]) -> tuple[str, str] | None:
        email, phone = row.get("email", ""), row.get("phone", "")
        if email:
            if not EMAIL.fullmatch(email):
                return "invalid_email", f"Адрес {email} некорректен"
            if email.split("@")[0] in ROLE_MAILBOXES:
                return "role_address", f"Ролевой адрес {email} не импортирован: используйте подтверждение подписки"
            if email in self.spam_traps:
                return "spam_trap", f"Адрес {email} распознан как спам-ловушка и не импортирован"
        if phone and not E164.fullmatch(phone):
            return "invalid_phone", f"Телефон {phone} должен быть в международном формате (+79261232323)"
        if not email and not phone:
            return "empty_contact", "Нет ни email, ни телефона"
        return None

    def _exclude(self, request: Request, match: re.Match) -> dict:
        form = self._form(request)
        if form is None:
            return error("Указан неверный ключ доступа к API", "invalid_api_key")
        if form.get("contact_type") not in ("email", "phone") or not form.get("contact"):
            return error("contact_type (email or phone) and contact are required", "invalid_arg")
        if "," in form["contact"]:
            return error("exclude takes one contact per call", "invalid_arg")
        list_ids = [i for i in str(form.get("list_ids", "")).split(",") if i] or list(self.lists)
        missing = [i for i in list_ids if i not in self.lists]
        if missing:
            return error(f"List not found: {', '.join(missing)}", "invalid_arg")
        for list_id in list_ids:  # assumed: excluding someone not on the list is no error
            self.lists[list_id].discard(form["contact"])
        return {"result": {}}
