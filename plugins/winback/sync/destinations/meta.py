"""Meta (Facebook) Custom Audiences: hashed emails and phones added to and removed from
a customer-list audience through the Marketing API; full replace through `usersreplace`
sessions. Requests carry what Meta's Business SDK sends (`payload` and `session` as
JSON-encoded form fields, in the query string of a DELETE), checked against the SDK in
tests/destinations/test_meta_sdk.py."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Iterable, Sequence
from datetime import date
from typing import Any
from urllib.parse import quote_plus

from pydantic import Field

from winback.credentials import SecretError
from winback.httperror import HttpError
from winback.sync.destinations.base import (
    ApiVersion,
    Destination,
    Member,
    Outcome,
    PlatformId,
    Settings,
    SyncError,
    batches,
)

GUIDE = "https://developers.facebook.com/docs/marketing-api/audiences/guides/custom-audiences"
USERS_REFERENCE = "https://developers.facebook.com/docs/marketing-api/reference/custom-audience/users"
VERSIONS = "https://developers.facebook.com/documentation/ads-commerce/marketing-api/marketing-api-changelog/versions"
# Custom Audiences are Marketing API endpoints, whose versions expire sooner than the Graph
# API's (the Graph API table still lists v21.0 until 2027; the Marketing API's ended it
# on 2025-09-09). Newest first: the first is the default.
API_VERSIONS = (
    ApiVersion("v27.0", None, VERSIONS),
    ApiVersion("v26.0", None, VERSIONS),
    ApiVersion("v25.0", date(2027, 2, 23), VERSIONS),
    ApiVersion("v24.0", date(2026, 11, 10), VERSIONS),
    ApiVersion("v23.0", date(2026, 6, 9), VERSIONS),
    ApiVersion("v22.0", date(2026, 2, 19), VERSIONS),
    ApiVersion("v21.0", date(2025, 9, 9), VERSIONS),
)

MAX_ROWS_PER_CALL = 10_000  # developers.facebook.com, Custom Audiences: "up to 10,000 users per request"
# Meta's SDKs send a removal's parameters in the URL, where removals of 1,000-2,000 rows
# failed (github.com/facebook/facebook-python-business-sdk/issues/279 and /367,
# facebook-java-business-sdk/issues/179 and /345): a removal keeps its URL under 32 KiB.
MAX_REMOVE_URL_CHARS = 32_768
_ROW_URL_CHARS = len(quote_plus(json.dumps(["0" * 64] * 2, separators=(",", ":")) + ","))  # 2 hashes, URL-encoded
REMOVE_ROWS_PER_CALL = (MAX_REMOVE_URL_CHARS - 1_024) // _ROW_URL_CHARS  # 1 KiB: address, schema, session
THROTTLE_CODES = {4, 17, 32, 613, 80003}  # Graph API rate-limit error codes (80003: custom audience throttling)
THROTTLE_RETRIES = 5
# An audience flagged under Meta's 2025 restrictions (operation_status 471) refuses every
# membership change with this subcode until the restriction is resolved (USERS_REFERENCE).
UPLOAD_BLOCKED_SUBCODE = 1713230
SCHEMA_KEYS = {"email": "EMAIL", "phone": "PHONE"}
SESSION_IDS = 2**53  # session_id is an int64; below 2^53 any JSON reader keeps it exact


class MetaOptions(Settings):
    api_version: str | None = Field(default=None, pattern=r"^v\d+\.\d+$", description=(
        "Marketing API version, e.g. v26.0 (default: the newest Winback knows)"))


class MetaTarget(Settings):
    audience_id: PlatformId = Field(pattern=r"^\d+$", description="the customer-list Custom Audience id")


class MetaCustomAudiences(Destination):
    kind = "meta_custom_audiences"
    channels = frozenset({"ads"})
    identifiers = ("email", "phone")
    hashed = True
    phone_format = "digits"  # country code first, no "+", no leading zeros
    # Meta's SDK strips dots around a value before hashing: "ivan@mail.ru." is ivan@mail.ru.
    email_rules = frozenset({"no_trailing_dot"})
    api_versions = API_VERSIONS
    batch_size = MAX_ROWS_PER_CALL
    remove_batch_size = REMOVE_ROWS_PER_CALL
    modes = ("mirror", "add_only", "replace")
    pool_slots = 1  # throttling is per ad account: one sync at a time per account
    default_base_url = "https://graph.facebook.com"
    # Apps with "Require App Secret" refuse calls without appsecret_proof.
    optional_secret_names = ("app_secret",)
    Options = MetaOptions
    Target = MetaTarget

    def url(self, path: str) -> str:
        return super().url(f"{self.api_version}/{path}")

    def _params(self, members: Sequence[Member], session: dict[str, Any]) -> dict[str, str]:
        """`payload` and `session` as the SDK encodes them (CustomAudienceMixin.format_params,
        then every object parameter as compact JSON with sorted keys)."""
        keys = [k for k in self.identifiers if any(k in m.ids for m in members)]
        payload = {"schema": [SCHEMA_KEYS[k] for k in keys], "is_raw": True,
                   "data": [[m.ids.get(k, "") for k in keys] for m in members]}
        return {"payload": _json(payload), "session": _json(session)}

    def _call(self, method: str, path: str, params: dict[str, str], rows: int) -> dict:
        headers = {"Authorization": f"Bearer {self.secret('token')}"}
        query = self._proof()
        # Graph reads a DELETE's parameters from its query string, as the SDK sends them.
        sent = {"params": {**params, **query}} if method == "DELETE" else {"data": params, "params": query or None}
        for attempt in range(THROTTLE_RETRIES + 1):
            try:
                reply = self.http.request(method, self.url(path), headers=headers, pretend={"num_received": rows},
                                          **sent)
                return reply.json()
            except HttpError as exc:
                error = _graph_error(exc)
                if error.get("error_subcode") == UPLOAD_BLOCKED_SUBCODE:
                    raise SyncError(
                        f"Meta blocks changes to audience {self.target.audience_id} (operation_status 471, "
                        f"\"{error.get('error_user_title') or 'Audience Upload Blocked'}\"): it was flagged under "
                        "Meta's custom audience restrictions; appeal in Audience Manager or point this audience at "
                        "a new one. Not retried.") from None
                # Meta throttles with HTTP 400 and an error code as often as with 429.
                if attempt == THROTTLE_RETRIES or error.get("code") not in THROTTLE_CODES:
                    raise
                time.sleep(min(2 ** attempt, 60))
        raise AssertionError("unreachable")

    def _proof(self) -> dict[str, str]:
        """appsecret_proof when an app secret is configured (the SDK sends it in the query)."""
        try:
            app_secret = self.secret("app_secret")
        except SecretError:
            return {}
        return {"appsecret_proof": appsecret_proof(app_secret, self.secret("token"))} if app_secret else {}

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

    def _users(self, method: str, members: Sequence[Member], rows_per_call: int) -> Outcome:
        """One upload session (Meta's guide requires one on /users) for this call's members."""
        outcome, session_id = Outcome(), _session_id()
        chunks = list(batches(members, rows_per_call))
        for seq, chunk in enumerate(chunks, 1):
            session = {"session_id": session_id, "batch_seq": seq, "last_batch_flag": seq == len(chunks),
                       "estimated_num_total": len(members)}
            answer = self._call(method, f"{self.target.audience_id}/users", self._params(chunk, session), len(chunk))
            outcome.merge(self._outcome(chunk, answer))
        return outcome

    def add(self, members: Sequence[Member]) -> Outcome:
        return self._users("POST", members, MAX_ROWS_PER_CALL)

    def remove(self, members: Sequence[Member]) -> Outcome:
        return self._users("DELETE", members, REMOVE_ROWS_PER_CALL)

    def replace(self, pages: Iterable[Sequence[Member]]) -> Outcome:
        """One usersreplace session; the last batch is only known once the pages run
        out, so each batch is held back until the next one exists."""
        session_id = _session_id()
        outcome, seq, pending = Outcome(), 0, None

        def send(batch: Sequence[Member], last: bool) -> None:
            nonlocal seq
            seq += 1
            session = {"session_id": session_id, "batch_seq": seq, "last_batch_flag": last}
            answer = self._call("POST", f"{self.target.audience_id}/usersreplace", self._params(batch, session),
                                len(batch))
            outcome.merge(self._outcome(batch, answer))

        for page in pages:
            for batch in batches(page, MAX_ROWS_PER_CALL):
                if pending is not None:
                    send(pending, last=False)
                pending = batch
        if pending is not None:
            send(pending, last=True)
        return outcome


def appsecret_proof(app_secret: str, token: str) -> str:
    """HMAC-SHA256 of the access token keyed by the app secret, hex (Graph's appsecret_proof)."""
    return hmac.new(app_secret.encode("utf-8"), token.encode("utf-8"), hashlib.sha256).hexdigest()


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _session_id() -> int:
    return secrets.randbelow(SESSION_IDS - 1) + 1


def _graph_error(exc: HttpError) -> dict:
    try:
        error = json.loads(exc.body or "{}").get("error")
    except (ValueError, AttributeError):
        return {}
    return error if isinstance(error, dict) else {}
