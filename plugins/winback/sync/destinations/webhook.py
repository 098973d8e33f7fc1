"""A generic signed JSON webhook: each change of an audience is POSTed as a batch of
members (add or remove) to an address of your own, for systems Winback has no module for."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import Field, field_validator

from winback.sync.destinations.base import (
    ATTRIBUTES,
    IDENTIFIERS,
    Destination,
    Member,
    Outcome,
    Settings,
    batches,
    check_attribute_map,
)

DEFAULT_BATCH_SIZE = 1_000
# Our own cap, not a platform's: 10,000 members are a body of a few MB, which common
# proxies and frameworks still accept (many default to 1-10 MB); larger batches only make
# a failed call more costly to resend.
MAX_BATCH_SIZE = 10_000
SIGNATURE_HEADER = "X-Winback-Signature"  # "sha256=" + hex HMAC-SHA256 of the signed string
TIMESTAMP_HEADER = "X-Winback-Timestamp"  # Unix seconds when the attempt was sent; part of the signed string
# What a receiver should accept as fresh. Every attempt is signed as it leaves, so this
# covers clock skew and transit only, never the throttling before a retry.
SIGNATURE_TOLERANCE_SECONDS = 300


class WebhookOptions(Settings):
    batch_size: int = Field(default=DEFAULT_BATCH_SIZE, ge=1, le=MAX_BATCH_SIZE,
                            description="members per POST")
    hash_identifiers: bool = Field(default=False,
                                   description="send email and phone as SHA-256 hex of the normalized value")
    attributes: dict[str, str] = Field(
        default_factory=lambda: {a: a for a in ATTRIBUTES},
        description="attribute -> key in each added member's `attributes` object; replaces the default "
                    "(every attribute under its own name)")

    @field_validator("attributes")
    @classmethod
    def _known(cls, value: dict[str, str]) -> dict[str, str]:
        return check_attribute_map(value)


class WebhookTarget(Settings):
    path: str = Field(default="", pattern=r"^[^?#\s]*$",
                      description="appended to base_url for this audience (e.g. audiences/lapsed)")


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """The X-Winback-Signature value: HMAC-SHA256, keyed with the signing secret, of the
    ASCII timestamp, a ".", then the raw request body bytes exactly as sent."""
    digest = hmac.new(secret.encode("utf-8"), timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


class _Signed:
    """requests' auth hook, which the HTTP client runs for every attempt: each retry
    leaves with the current time and its own signature, so a delivery throttled for
    minutes still arrives fresh. The body, delivery_id included, is the same each time."""

    def __init__(self, secret: str):
        self.secret = secret

    def __call__(self, request: Any) -> Any:
        timestamp = str(int(time.time()))
        request.headers[TIMESTAMP_HEADER] = timestamp
        request.headers[SIGNATURE_HEADER] = signature(self.secret, timestamp, request.body)
        return request


class Webhook(Destination):
    kind = "webhook"
    channels = frozenset({"email", "sms", "call", "ads"})
    identifiers = IDENTIFIERS
    hashed = False  # unless options.hash_identifiers (is_hashed)
    phone_format = "e164"
    attributes = ATTRIBUTES
    # The engine's unit; each POST carries options.batch_size of it.
    batch_size = MAX_BATCH_SIZE
    removes_by_identifier = False  # removals name the member_key
    modes = ("mirror", "add_only")
    requires_base_url = True  # no default receiver
    secret_names = ("signing_secret",)
    Options = WebhookOptions
    Target = WebhookTarget

    @classmethod
    def sent_attributes(cls, options: WebhookOptions) -> tuple[str, ...]:
        return tuple(options.attributes)

    @classmethod
    def is_hashed(cls, options: WebhookOptions) -> bool:
        return options.hash_identifiers

    def _endpoint(self) -> str:
        return self.url(self.target.path) if self.target.path else self.base_url

    def _post(self, operation: Literal["add", "remove"], members: Sequence[Member]) -> Outcome:
        outcome = Outcome()
        url = self._endpoint()
        for batch in batches(members, self.options.batch_size):
            entries = []
            for m in batch:
                entry: dict[str, Any] = {"member_key": m.key, **m.ids}
                if operation == "add":
                    entry["attributes"] = {key: m.attributes.get(a) for a, key in self.options.attributes.items()}
                entries.append(entry)
            # delivery_id: one per batch, kept by its retries and signed with the body, so
            # a receiver can apply each delivery once and refuse a captured one replayed.
            body = json.dumps({
                "audience": self.audience, "destination": self.name, "operation": operation,
                "delivery_id": uuid.uuid4().hex, "members": entries,
                "sent_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            }, ensure_ascii=False, separators=(",", ":"), default=str).encode("utf-8")
            reply = self.http.request("POST", url, data=body, headers={"Content-Type": "application/json"},
                                      auth=_Signed(self.secret("signing_secret")), pretend={"errors": []})
            outcome.merge(_outcome(batch, reply))
        return outcome

    def add(self, members: Sequence[Member]) -> Outcome:
        return self._post("add", members)

    def remove(self, members: Sequence[Member]) -> Outcome:
        return self._post("remove", members)


def _outcome(batch: Sequence[Member], reply: Any) -> Outcome:
    """Every member is accepted unless the answer lists it under `errors`."""
    try:
        answer = reply.json() if reply.text.strip() else {}
    except ValueError:
        answer = {}  # a 2xx with a non-JSON body: the whole batch was taken
    errors = answer.get("errors") if isinstance(answer, dict) else None
    keys = {m.key for m in batch}
    rejected = {}
    for error in errors if isinstance(errors, list) else []:
        if isinstance(error, dict) and str(error.get("member_key")) in keys:
            rejected[str(error["member_key"])] = f"webhook: {error.get('reason') or 'rejected'}"
    return Outcome(accepted=[m.key for m in batch if m.key not in rejected], rejected=rejected)
