"""Meta (Facebook) Custom Audiences: hashed emails and phones added to and removed from
a customer-list audience; full replace through `usersreplace` sessions."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Sequence

from pydantic import Field

from winback.destinations.base import (
    Destination,
    Member,
    Outcome,
    PlatformId,
    Settings,
    batches,
)
from winback.httperror import HttpError

MAX_ROWS_PER_CALL = 10_000  # developers.facebook.com, Custom Audiences: "up to 10,000 users per request"
THROTTLE_CODES = {4, 17, 32, 613, 80003}  # Graph API rate-limit error codes (80003: custom audience throttling)
THROTTLE_RETRIES = 5
SCHEMA_KEYS = {"email": "EMAIL", "phone": "PHONE"}


class MetaTarget(Settings):
    audience_id: PlatformId = Field(pattern=r"^\d+$", description="the customer-list Custom Audience id")


class MetaCustomAudiences(Destination):
    kind = "meta_custom_audiences"
    channels = frozenset({"ads"})
    identifiers = ("email", "phone")
    hashed = True
    phone_format = "digits"  # country code first, no "+", no leading zeros
    batch_size = MAX_ROWS_PER_CALL
    modes = ("mirror", "add_only", "replace")
    pool_slots = 1  # throttling is per ad account: one sync at a time per account
    default_base_url = "https://graph.facebook.com/v21.0"
    Target = MetaTarget

    def _payload(self, members: Sequence[Member]) -> dict:
        keys = [k for k in self.identifiers if any(k in m.ids for m in members)]
        return {"schema": [SCHEMA_KEYS[k] for k in keys],
                "data": [[m.ids.get(k, "") for k in keys] for m in members]}

    def _call(self, method: str, path: str, body: dict) -> dict:
        headers = {"Authorization": f"Bearer {self.secret('token')}"}
        for attempt in range(THROTTLE_RETRIES + 1):
            try:
                reply = self.http.request(method, self.url(path), json=body, headers=headers,
                                          pretend={"num_received": len(body["payload"]["data"])})
                return reply.json()
            except HttpError as exc:
                # Meta throttles with HTTP 400 and an error code as often as with 429.
                if attempt == THROTTLE_RETRIES or _error_code(exc) not in THROTTLE_CODES:
                    raise
                time.sleep(min(2 ** attempt, 60))
        raise AssertionError("unreachable")

    def _outcome(self, members: Sequence[Member], answer: dict) -> Outcome:
        samples = answer.get("invalid_entry_samples") or {}
        if isinstance(samples, list):
            samples = {s: "invalid entry" for s in samples}
        rejected = {}
        if samples:
            for m in members:
                bad = next((v for v in m.ids.values() if v in samples), None)
                if bad is not None:
                    rejected[m.key] = f"Meta: {samples[bad]}"
        return Outcome(accepted=[m.key for m in members if m.key not in rejected], rejected=rejected,
                       figures={"num_received": answer.get("num_received", 0),
                                "num_invalid_entries": answer.get("num_invalid_entries", 0)})

    def _users(self, method: str, members: Sequence[Member]) -> Outcome:
        outcome = Outcome()
        for batch in batches(members, MAX_ROWS_PER_CALL):
            answer = self._call(method, f"{self.target.audience_id}/users", {"payload": self._payload(batch)})
            outcome.merge(self._outcome(batch, answer))
        return outcome

    def add(self, members: Sequence[Member]) -> Outcome:
        return self._users("POST", members)

    def remove(self, members: Sequence[Member]) -> Outcome:
        return self._users("DELETE", members)

    def replace(self, pages: Iterable[Sequence[Member]]) -> Outcome:
        """One usersreplace session; the last batch is only known once the pages run
        out, so each batch is held back until the next one exists."""
        session_id = str(uuid.uuid4().int % 10**15)
        outcome, seq, pending = Outcome(), 0, None

        def send(batch: Sequence[Member], last: bool) -> None:
            nonlocal seq
            seq += 1
            body = {"payload": self._payload(batch),
                    "session": {"session_id": session_id, "batch_seq": seq, "last_batch_flag": last}}
            outcome.merge(self._outcome(batch, self._call("POST", f"{self.target.audience_id}/usersreplace", body)))

        for page in pages:
            for batch in batches(page, MAX_ROWS_PER_CALL):
                if pending is not None:
                    send(pending, last=False)
                pending = batch
        if pending is not None:
            send(pending, last=True)
        return outcome


def _error_code(exc: HttpError) -> int | None:
    try:
        return int(json.loads(exc.body or "{}").get("error", {}).get("code"))
    except (ValueError, TypeError, AttributeError):
        return None
