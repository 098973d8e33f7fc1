"""Mailchimp Marketing API, as documented (docs/platforms.md): batch subscribe/update of at
most 500 members, static segments changed 500 addresses at a time, HTTP basic auth with
the API key, per-member errors in a 200 answer. Throttles with 429 or 403 via `Faults`."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from typing import Any

from winback.emulators.base import Emulator, Reject, Request
from winback.sync.identifiers import md5_hex

MAX_MEMBERS = 500
MAX_SEGMENT_CHANGES = 500
STATUSES = {"subscribed", "unsubscribed", "cleaned", "pending", "transactional"}
COMPLIANCE_STATES = {"unsubscribed", "cleaned"}  # Mailchimp will not resubscribe these through the API
# Stricter than the engine's check on purpose: a lower-case, trimmed address only, so a
# destination that forgot to normalize gets caught here.
EMAIL = re.compile(r"[a-z0-9._%+\-]+@[a-z0-9.\-]+\.[a-z]{2,}")
DEFAULT_LIST = "a1b2c3d4e5"
DEFAULT_SEGMENT = "4242"


def api_error(status: int, title: str, detail: str) -> Reject:
    """Mailchimp's error document (application/problem+json)."""
    return Reject(status, {"type": "https://mailchimp.com/developer/marketing/docs/errors/", "title": title,
                           "status": status, "detail": detail, "instance": ""})


@dataclass
class MailchimpEmulator(Emulator):
    # list id -> address -> {"status", "merge_fields"}
    lists: dict[str, dict[str, dict[str, Any]]] = field(default_factory=lambda: {DEFAULT_LIST: {}})
    # list id -> static segment id -> addresses
    segments: dict[str, dict[str, set[str]]] = field(
        default_factory=lambda: {DEFAULT_LIST: {DEFAULT_SEGMENT: set()}})
    rejected_emails: set[str] = field(default_factory=set)  # answered "looks fake or invalid"
    max_members: int = MAX_MEMBERS
    max_segment_changes: int = MAX_SEGMENT_CHANGES
    received: list[tuple[str, Any]] = field(default_factory=list)  # (path, JSON body) of applied calls

    def setup(self) -> None:
        self.route("POST", r"/3\.0/lists/(?P<list>[^/]+)", self._batch_subscribe)
        self.route("POST", r"/3\.0/lists/(?P<list>[^/]+)/segments/(?P<segment>\d+)", self._segment_members)

    def segment(self, list_id: str = DEFAULT_LIST, segment_id: str = DEFAULT_SEGMENT) -> set[str]:
        return set(self.segments.get(list_id, {}).get(segment_id, set()))

    def _auth(self, request: Request) -> None:
        """HTTP basic auth: any user name, the API key as password."""
        scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
        try:
            password = base64.b64decode(encoded).decode().partition(":")[2]
        except (binascii.Error, UnicodeDecodeError):
            password = ""
        if scheme.lower() != "basic" or password != self.token:
            raise api_error(401, "API Key Invalid", "Your API key may be invalid, or you've attempted to access "
                                                  "the wrong datacenter.")

    def _list(self, list_id: str) -> dict[str, dict[str, Any]]:
        if list_id in self.segments:  # a list named only by its segments exists, empty
            self.lists.setdefault(list_id, {})
        if list_id not in self.lists:
            raise api_error(404, "Resource Not Found", "The requested resource could not be found.")
        return self.lists[list_id]

    def _batch_subscribe(self, request: Request, match: re.Match) -> dict:
        self._auth(request)
        held = self._list(match["list"])
        body = request.json() or {}
        members = body.get("members")
        if not isinstance(members, list) or not members:
            raise api_error(400, "Invalid Resource", "members: an array of at least one member is required")
        if len(members) > self.max_members:
            raise api_error(400, "Invalid Resource", f"members: {len(members)} items; at most "
                                                   f"{self.max_members} per call")
        if any(not isinstance(m, dict) or m.get("status") not in STATUSES or not isinstance(m.get("email_address"), str)
               for m in members):
            raise api_error(400, "Invalid Resource", "each member needs email_address and a valid status")
        self.received.append((request.path, body))
        update = bool(body.get("update_existing"))
        created, updated, errors, seen = [], [], [], set()
        for member in members:
            email, status = member["email_address"], member["status"]
            refusal = self._refusal(held, email, status, update, seen)
            seen.add(email)
            if refusal:
                errors.append({"email_address": email, "error": refusal[0], "error_code": refusal[1]})
            elif email not in held:
                held[email] = {"status": status, "merge_fields": dict(member.get("merge_fields") or {})}
                created.append({"id": md5_hex(email), "email_address": email, "status": status})
            else:
                held[email]["status"] = status
                held[email]["merge_fields"].update(member.get("merge_fields") or {})
                updated.append({"id": md5_hex(email), "email_address": email, "status": status})
        return {"new_members": created, "updated_members": updated, "errors": errors,
                "total_created": len(created), "total_updated": len(updated), "error_count": len(errors)}

    def _refusal(self, held: dict[str, dict[str, Any]], email: str, status: str, update: bool,
                 seen: set[str]) -> tuple[str, str] | None:
        """Why Mailchimp refuses this member (message, error_code), or None."""
        if email in seen:
            return f"{email} is a duplicate in this request", "ERROR_GENERIC"
        if not EMAIL.fullmatch(email) or email in self.rejected_emails:
            return f"{email} looks fake or invalid, please enter a real email address.", "ERROR_GENERIC"
        if email in held and not update:
            return (f"{email} is already a list member. Use PUT to insert or update list members.",
                    "ERROR_CONTACT_EXISTS")
        if email in held and held[email]["status"] in COMPLIANCE_STATES and status == "subscribed":
            return (f"{email} is already a list member in compliance state due to unsubscribe, bounce, or "
                    "compliance review and cannot be subscribed."), "ERROR_GENERIC"
        return None

    def _segment_members(self, request: Request, match: re.Match) -> dict:
        self._auth(request)
        held = self._list(match["list"])
        segment = self.segments.get(match["list"], {}).get(match["segment"])
        if segment is None:
            raise api_error(404, "Resource Not Found", "The requested resource could not be found.")
        body = request.json() or {}
        to_add, to_remove = body.get("members_to_add") or [], body.get("members_to_remove") or []
        for name, values in (("members_to_add", to_add), ("members_to_remove", to_remove)):
            if len(values) > self.max_segment_changes:
                raise api_error(400, "Invalid Resource", f"{name}: {len(values)} items; at most "
                                                       f"{self.max_segment_changes} per call")
        self.received.append((request.path, body))
        strangers = [e for e in to_add if e not in held]
        added = [e for e in to_add if e in held and e not in segment]
        removed = [e for e in to_remove if e in segment]  # assumed: removing a non-member is a no-op
        segment.update(added)
        segment.difference_update(removed)
        errors = [{"email_addresses": strangers, "error": "Email addresses are not members of this list"}] \
            if strangers else []
        return {"members_added": [{"email_address": e, "id": md5_hex(e)} for e in added],
                "members_removed": [{"email_address": e, "id": md5_hex(e)} for e in removed],
                "errors": errors, "total_added": len(added), "total_removed": len(removed),
                "error_count": len(strangers)}
