"""SendPulse, as documented (destinations/sendpulse.py cites where): client-credentials
tokens from `POST /oauth/access_token` that expire, mailing lists changed through
`POST` / `DELETE /addressbooks/{id}/emails` (at most 100 addresses a removal), and the
account's request limit answered with 429."""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from winback.emulators.base import Emulator, Reject, Request
from winback.sync.destinations.sendpulse import (
    MAX_REMOVE_EMAILS,
    TOKEN_LIFETIME,
)

# Stricter than the engine's check on purpose: trimmed and lower-case, so a destination
# that forgot to normalize is caught here.
NORMALIZED_EMAIL = re.compile(r"[^@\sA-Z]+@[^@\sA-Z]+\.[^@\sA-Z.]+")
CLIENT_ID = "test-client-id"
CLIENT_SECRET = "test-client-secret"


def sendpulse_error(status: int, code: int, message: str) -> Reject:
    return Reject(status, {"error_code": code, "message": message})


@dataclass
class SendPulseEmulator(Emulator):
    client_id: str = CLIENT_ID
    client_secret: str = CLIENT_SECRET
    lists: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # list id -> address -> variables
    token_lifetime: float = TOKEN_LIFETIME
    max_remove: int = MAX_REMOVE_EMAILS
    # Requests in any second (token requests included) before it answers 429; 0: no limit.
    # Off by default: the contract's injected faults make retries that, at the tests' short
    # backoff, would run into it; SendPulse's own limit is destinations.sendpulse.REQUESTS_PER_SECOND.
    requests_per_second: int = 0
    clock: Callable[[], float] = time.monotonic  # tests pass a controlled one
    received: list[tuple[str, str, Any]] = field(default_factory=list)  # (method, path, JSON body) applied
    tokens: dict[str, float] = field(default_factory=dict)  # access token -> when it expires
    revoke_after: int = 0  # once this many list calls were applied, every token handed out is revoked

    def setup(self) -> None:
        self._recent: list[float] = []
        self.route("POST", r"/oauth/access_token", self._access_token)
        self.route("POST", r"/addressbooks/(?P<list>\d+)/emails", self._add)
        self.route("DELETE", r"/addressbooks/(?P<list>\d+)/emails", self._remove)

    def members(self, list_id: str) -> set[str]:
        return set(self.lists.get(str(list_id), {}))

    def handle(self, request: Request) -> tuple[int, Any, dict[str, str]]:
        if self.requests_per_second:
            with self.lock:
                now = self.clock()
                # (a microsecond's slack: ten steps of 0.1 s on a float clock fall short of 1.0)
                self._recent = [at for at in self._recent if at > now - 1.0 + 1e-6]
                over = len(self._recent) >= self.requests_per_second
                if not over:  # a refused request does not count against the limit
                    self._recent.append(now)
            if over:  # SendPulse documents no Retry-After: the client backs off on its own
                return self._logged(request, 429, {"error_code": 429, "message": "Too Many Requests"}, {})
        return super().handle(request)

    def _access_token(self, request: Request, match: re.Match) -> dict:
        body = request.json() if request.headers.get("content-type", "").startswith("application/json") \
            else request.form()
        body = body or {}
        if body.get("grant_type") != "client_credentials":
            raise Reject(400, {"error": "unsupported_grant_type", "message": "grant_type must be client_credentials"})
        if body.get("client_id") != self.client_id or body.get("client_secret") != self.client_secret:
            raise Reject(401, {"error": "invalid_client", "message": "Client authentication failed"})
        token = secrets.token_hex(16)
        self.tokens[token] = self.clock() + self.token_lifetime
        return {"access_token": token, "token_type": "Bearer", "expires_in": int(self.token_lifetime)}

    def _auth(self, request: Request) -> None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        expires = self.tokens.get(token) if scheme == "Bearer" else None
        if expires is None or self.clock() >= expires:
            raise Reject(401, {"error": "access_denied", "message": "The access token provided is invalid or "
                                                                      "has expired"})

    def _emails(self, request: Request) -> list[Any]:
        self._auth(request)
        emails = (request.json() or {}).get("emails")
        if not isinstance(emails, list) or not emails:
            raise sendpulse_error(400, 8, "emails: a non-empty array is required")
        return emails

    def _add(self, request: Request, match: re.Match) -> dict:
        entries = self._emails(request)
        held = self.lists.setdefault(match["list"], {})
        parsed = []
        for entry in entries:
            email, variables = (entry, {}) if isinstance(entry, str) else (entry.get("email"), entry.get("variables"))
            if not isinstance(email, str) or not NORMALIZED_EMAIL.fullmatch(email) or not isinstance(variables, dict):
                raise sendpulse_error(400, 213, "emails: each entry is an address or {email, variables}")
            parsed.append((email, variables))
        for email, variables in parsed:  # an upsert: variables sent replace those held
            held.setdefault(email, {}).update(variables)
        self._applied(request)
        return {"result": True}

    def _remove(self, request: Request, match: re.Match) -> dict:
        emails = self._emails(request)
        if len(emails) > self.max_remove:
            raise sendpulse_error(400, 8, f"emails: at most {self.max_remove} addresses a call")
        held = self.lists.setdefault(match["list"], {})
        for email in emails:
            held.pop(email, None)
        self._applied(request)
        return {"result": True}

    def _applied(self, request: Request) -> None:
        self.received.append((request.method, request.path, request.json()))
        if self.revoke_after and len(self.received) == self.revoke_after:
            self.tokens.clear()  # as when the account's API secret is changed
