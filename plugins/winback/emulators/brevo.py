"""Brevo, as documented (docs/platforms.md): `POST /v3/contacts/import` of a `;`-separated CSV
(10 MB at most) run as a background process polled at `GET /v3/processes/{id}`, and
`POST /v3/contacts/lists/{id}/contacts/remove` of at most 150 addresses a call. It
throttles as Brevo does: 429 with `x-sib-ratelimit-reset` and no Retry-After."""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from typing import Any

from winback.emulators.base import Emulator, Reject, Request
from winback.sync.destinations.brevo import (
    CSV_DELIMITER,
    MAX_FILE_BODY_BYTES,
    MAX_REMOVE_EMAILS,
)

# developers.brevo.com/docs/limit-headers: a 429 carries the seconds until the limit
# resets in this header; Brevo sends no Retry-After.
RESET_HEADER = "x-sib-ratelimit-reset"

NORMALIZED_EMAIL = re.compile(r"[^@\sA-Z]+@[^@\sA-Z]+\.[^@\sA-Z.]+")  # trimmed, lower-case


@dataclass
class BrevoEmulator(Emulator):
    lists: dict[int, set[str]] = field(default_factory=dict)  # list id -> addresses in it
    contacts: dict[str, dict[str, str]] = field(default_factory=dict)  # address -> attributes
    processes: dict[int, dict[str, Any]] = field(default_factory=dict)
    rejected_emails: set[str] = field(default_factory=set)  # reported back as invalid by imports
    refused_removals: set[str] = field(default_factory=set)  # answered as removal failures
    polls_until_done: int = 1  # status polls answered "in_process" before an import completes
    max_file_bytes: int = MAX_FILE_BODY_BYTES
    max_remove: int = MAX_REMOVE_EMAILS
    imported_rows: int = 0
    keep_files: bool = False  # keep every fileBody received in `files` (wire-format tests)
    files: list[str] = field(default_factory=list)

    def setup(self) -> None:
        self.route("POST", r"/v3/contacts/import", self._import)
        self.route("GET", r"/v3/processes/(?P<id>\d+)", self._process)
        self.route("GET", r"/reports/(?P<id>\d+)/invalid_emails\.csv", self._report)
        self.route("POST", r"/v3/contacts/lists/(?P<list>\d+)/contacts/remove", self._remove)

    def handle(self, request: Request) -> tuple[int, Any, dict[str, str]]:
        status, body, headers = super().handle(request)
        if status == 429 and "Retry-After" in headers:
            headers = {RESET_HEADER if name == "Retry-After" else name: value for name, value in headers.items()}
        return status, body, headers

    def members(self, list_id: int) -> set[str]:
        return set(self.lists.get(int(list_id), set()))

    def _auth(self, request: Request) -> None:
        if request.headers.get("api-key") != self.token:
            raise Reject(401, {"code": "unauthorized", "message": "Key not found"})

    def _import(self, request: Request, match: re.Match) -> dict:
        self._auth(request)
        body = request.json() or {}
        text = body.get("fileBody")
        if not isinstance(text, str) or not text:
            raise Reject(400, {"code": "missing_parameter", "message": "fileBody is missing"})
        if len(text.encode("utf-8")) > self.max_file_bytes:
            raise Reject(400, {"code": "invalid_parameter",
                               "message": f"fileBody is larger than {self.max_file_bytes} bytes"})
        list_ids = body.get("listIds")
        if not isinstance(list_ids, list) or not list_ids or not all(isinstance(i, int) and i > 0 for i in list_ids):
            raise Reject(400, {"code": "invalid_parameter", "message": "listIds must be positive integers"})
        for flag in ("updateExistingContacts", "emptyContactsAttributes", "disableNotification"):
            if flag in body and not isinstance(body[flag], bool):
                raise Reject(400, {"code": "invalid_parameter", "message": f"{flag} must be a boolean"})
        if self.keep_files:
            self.files.append(text)
        rows = list(csv.reader(io.StringIO(text), delimiter=CSV_DELIMITER))
        header = rows[0] if rows else []
        if "EMAIL" not in header:
            raise Reject(400, {"code": "invalid_parameter", "message": "the file has no EMAIL column"})
        at = header.index("EMAIL")
        contacts, invalid = [], []
        for row in rows[1:]:
            if len(row) != len(header):
                raise Reject(400, {"code": "invalid_parameter", "message": "a line does not match the header"})
            email = row[at]
            if not NORMALIZED_EMAIL.fullmatch(email) or email in self.rejected_emails:
                invalid.append(email)
            else:
                contacts.append((email, {k: v for k, v in zip(header, row) if k != "EMAIL"}))
        process_id = len(self.processes) + 1
        self.processes[process_id] = {
            "contacts": contacts, "invalid": invalid, "lists": list_ids, "polls": 0,
            "erase": bool(body.get("emptyContactsAttributes")) and body.get("updateExistingContacts", True),
            "update": body.get("updateExistingContacts", True), "status": "queued"}
        self.imported_rows += len(rows) - 1
        return {"processId": process_id}

    def _process(self, request: Request, match: re.Match) -> dict:
        self._auth(request)
        process = self.processes.get(int(match["id"]))
        if process is None:
            raise Reject(404, {"code": "document_not_found", "message": "Process does not exist"})
        process["polls"] += 1
        if process["status"] != "completed" and process["polls"] > self.polls_until_done:
            self._complete(process)
        answer: dict[str, Any] = {"id": int(match["id"]), "name": "IMPORTUSER", "status": process["status"]}
        if process["status"] == "completed":
            host = request.headers.get("host", "127.0.0.1")
            answer["info"] = {"import": {
                "invalid_emails": f"http://{host}/reports/{match['id']}/invalid_emails.csv" if process["invalid"]
                else None, "duplicate_email_id": None}}
        else:
            process["status"] = answer["status"] = "in_process"
        return answer

    def _complete(self, process: dict[str, Any]) -> None:
        for email, attributes in process["contacts"]:
            held = self.contacts.get(email)
            if held is None:
                self.contacts[email] = {k: v for k, v in attributes.items() if v != ""}
            elif process["update"]:
                held.update({k: v for k, v in attributes.items() if v != "" or process["erase"]})
            for list_id in process["lists"]:
                self.lists.setdefault(list_id, set()).add(email)
        process["status"] = "completed"

    def _report(self, request: Request, match: re.Match) -> bytes:
        process = self.processes.get(int(match["id"]))
        if process is None:
            raise Reject(404, {"code": "document_not_found", "message": "no report"})
        lines = ["EMAIL;REASON"] + [f"{email};Invalid email address" for email in process["invalid"]]
        return ("\n".join(lines) + "\n").encode()

    def _remove(self, request: Request, match: re.Match) -> dict:
        self._auth(request)
        body = request.json() or {}
        emails = body.get("emails")
        if not isinstance(emails, list) or not emails:
            raise Reject(400, {"code": "missing_parameter", "message": "emails is missing"})
        if len(emails) > self.max_remove:
            raise Reject(400, {"code": "invalid_parameter",
                               "message": f"You can pass a maximum of {self.max_remove} emails for removal"})
        held = self.lists.setdefault(int(match["list"]), set())
        success, failure = [], []
        for email in emails:
            if email in held and email not in self.refused_removals:
                held.discard(email)
                success.append(email)
            else:
                failure.append(email)
        return {"contacts": {"success": success, "failure": failure}}
