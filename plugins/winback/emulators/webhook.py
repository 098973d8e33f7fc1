"""A receiver of Winback's signed webhook: checks the HMAC signature and the timestamp's
freshness against its `clock` (401 otherwise), applies each delivery_id once (a replay
gets the first answer again and changes nothing), checks the body's shape and batch size
and the identifiers' form (plain normalized, or SHA-256 hex with `hashed`), answers
per-row `errors`, and keeps each audience's members. Its `token` is the signing secret."""

from __future__ import annotations

import hmac
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from winback.emulators.base import SHA256_HEX, Emulator, Reject, Request
from winback.sync.destinations.base import IDENTIFIERS
from winback.sync.destinations.webhook import (
    MAX_BATCH_SIZE,
    SIGNATURE_TOLERANCE_SECONDS,
    signature,
)

FIELDS = {"audience", "destination", "operation", "delivery_id", "members", "sent_at"}
FORMS = {  # what a plain identifier must look like once Winback normalized it
    "email": re.compile(r"[^@\sA-Z]+@[^@\sA-Z]+\.[^@\sA-Z.]+"),
    "phone": re.compile(r"\+[1-9][0-9]{6,14}"),
}


@dataclass
class WebhookEmulator(Emulator):
    hashed: bool = False  # expect email and phone as SHA-256 hex
    max_members: int = MAX_BATCH_SIZE
    tolerance: int = SIGNATURE_TOLERANCE_SECONDS
    audiences: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # audience -> key -> member
    rejected_values: set[str] = field(default_factory=set)  # identifier values answered as per-row errors
    paths: dict[str, int] = field(default_factory=dict)  # path -> batches received there
    keep_bodies: bool = False  # keep every accepted body in `bodies` (wire-format tests)
    bodies: list[dict[str, Any]] = field(default_factory=list)
    clock: Callable[[], float] = time.time  # what "now" is when judging a timestamp
    answers: dict[str, dict] = field(default_factory=dict)  # delivery_id -> the answer it got
    replays: int = 0  # deliveries received again (answered as before, not applied)

    def setup(self) -> None:
        self.route("POST", r"/.*", self._receive)

    def values(self, audience: str, identifier: str = "email") -> set[str]:
        return {m[identifier] for m in self.audiences.get(audience, {}).values() if identifier in m}

    def _verify(self, request: Request) -> None:
        timestamp = request.headers.get("x-winback-timestamp", "")
        given = request.headers.get("x-winback-signature", "")
        if not timestamp.isdigit() or abs(self.clock() - int(timestamp)) > self.tolerance:
            raise Reject(401, {"error": "missing or stale X-Winback-Timestamp"})
        if not hmac.compare_digest(given, signature(self.token, timestamp, request.body)):
            raise Reject(401, {"error": "signature mismatch"})

    def _receive(self, request: Request, match: re.Match) -> dict:
        self._verify(request)
        if not request.headers.get("content-type", "").startswith("application/json"):
            raise Reject(415, {"error": "expected application/json"})
        body = request.json()
        if not isinstance(body, dict) or set(body) != FIELDS:
            raise Reject(400, {"error": f"body must have exactly {', '.join(sorted(FIELDS))}"})
        delivery = body["delivery_id"]
        if not isinstance(delivery, str) or not delivery:
            raise Reject(400, {"error": "delivery_id must be a non-empty string"})
        if delivery in self.answers:  # a retry whose answer was lost, or a captured request replayed
            self.replays += 1
            return self.answers[delivery]
        operation, members = body["operation"], body["members"]
        if operation not in ("add", "remove") or not isinstance(members, list) or not members:
            raise Reject(400, {"error": "operation must be add or remove, members a non-empty list"})
        if len(members) > self.max_members:
            raise Reject(400, {"error": f"{len(members)} members; at most {self.max_members} per request"})
        for m in members:
            problem = self._invalid(m, operation)
            if problem:
                raise Reject(400, {"error": problem})
        held = self.audiences.setdefault(str(body["audience"]), {})
        errors = []
        for m in members:
            refused = next((v for k, v in m.items() if k in IDENTIFIERS and v in self.rejected_values), None)
            if refused is not None:
                errors.append({"member_key": m["member_key"], "reason": "identifier on the blocklist"})
            elif operation == "add":
                held[m["member_key"]] = m
            else:
                held.pop(m["member_key"], None)
        self.paths[request.path] = self.paths.get(request.path, 0) + 1
        if self.keep_bodies:
            self.bodies.append(body)
        self.answers[delivery] = {"errors": errors} if errors else {}
        return self.answers[delivery]

    def _invalid(self, member: Any, operation: str) -> str | None:
        if not isinstance(member, dict) or not isinstance(member.get("member_key"), str):
            return "each member needs a member_key"
        unknown = set(member) - {"member_key", "attributes", *IDENTIFIERS}
        if unknown:
            return f"unknown member fields {sorted(unknown)}"
        ids = {k: v for k, v in member.items() if k in IDENTIFIERS}
        if not ids or not all(isinstance(v, str) and v for v in ids.values()):
            return "a member needs at least one identifier"
        for name, form in FORMS.items():
            if name in ids and not (SHA256_HEX if self.hashed else form).fullmatch(ids[name]):
                return f"{name} is not {'a SHA-256 hex digest' if self.hashed else 'normalized'}"
        attributes = member.get("attributes")
        # Keys are the configured names (options.attributes), so any text key goes.
        if operation == "add" and not (isinstance(attributes, dict) and all(isinstance(k, str) and k for k in attributes)):
            return "attributes must be an object keyed by name"
        return None
