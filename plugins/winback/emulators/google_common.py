"""What the Google emulators share: Google's OAuth 2.0 token endpoint (`POST /token`: a
refresh token and client credentials give a short-lived access token for a scope), the
check of the access token a request carries, and Customer Match lists as Google keeps
them (users of hashed identifiers, removed by any one of them)."""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from winback.emulators.base import Emulator, Reject, Request


@dataclass
class GoogleEmulator(Emulator):
    # The OAuth client and the refresh token it was granted (for `scope`); access tokens
    # issued for them last token_lifetime seconds, or token_uses API calls when set (a
    # token that lapses before its stated time, as a revoked one does). `token` (the
    # emulator's static credential) stays valid too, for any scope.
    client_id: str = "test-client-id"
    client_secret: str = "test-client-secret"
    refresh_token: str = "test-refresh-token"
    scope: str = ""
    token_lifetime: int = 3599
    token_uses: int = 0
    issued: dict[str, list] = field(default_factory=dict)  # access token -> [expires at, uses left, scope]
    lists: dict[str, dict[str, tuple]] = field(default_factory=dict)  # list id -> {first hash: ((kind, hash), ...)}
    _index: dict[str, dict[str, str]] = field(default_factory=dict)  # list id -> any hash -> first hash

    def setup(self) -> None:
        self.route("POST", r"/token", self._token)

    # -- Customer Match lists ------------------------------------------------------------
    def hashes(self, user_list_id: str, kind: str = "EMAIL") -> set[str]:
        """The hashed identifiers of this kind the list holds (what tests look at)."""
        out = set()
        for user in self.lists.get(user_list_id, {}).values():
            out |= {value for k, value in user if k == kind}
        return out

    def add_user(self, user_list_id: str, identifiers: tuple[tuple[str, str], ...]) -> None:
        first = identifiers[0][1]
        self.lists.setdefault(user_list_id, {})[first] = identifiers
        self._index.setdefault(user_list_id, {}).update({v: first for _, v in identifiers})

    def remove_user(self, user_list_id: str, identifiers: tuple[tuple[str, str], ...]) -> None:
        """Takes out every user holding any of these identifiers."""
        held, index = self.lists.get(user_list_id, {}), self._index.get(user_list_id, {})
        for first in {index[v] for _, v in identifiers if v in index}:
            for _, value in held.pop(first, ()):
                index.pop(value, None)

    def clear(self, user_list_id: str) -> None:
        self.lists.pop(user_list_id, None)
        self._index.pop(user_list_id, None)

    def _token(self, request: Request, match: re.Match) -> dict:
        """developers.google.com/identity/protocols/oauth2/web-server#offline: a form of
        grant_type=refresh_token, client_id, client_secret, refresh_token."""
        form = request.form()
        if form.get("grant_type") != "refresh_token":
            raise Reject(400, {"error": "unsupported_grant_type", "error_description": "Invalid grant_type"})
        if not all(form.get(k) for k in ("client_id", "client_secret", "refresh_token")):
            raise Reject(400, {"error": "invalid_request",
                               "error_description": "Missing required parameter: client_id, client_secret "
                                                    "or refresh_token"})
        if form["client_id"] != self.client_id:
            raise Reject(401, {"error": "invalid_client", "error_description": "The OAuth client was not found."})
        if form["client_secret"] != self.client_secret:
            raise Reject(401, {"error": "invalid_client", "error_description": "Unauthorized"})
        if form["refresh_token"] != self.refresh_token:
            raise Reject(400, {"error": "invalid_grant", "error_description": "Token has been expired or revoked."})
        access_token = "ya29.emulated-" + secrets.token_urlsafe(12)
        self.issued[access_token] = [time.monotonic() + self.token_lifetime, self.token_uses or -1, self.scope]
        return {"access_token": access_token, "expires_in": self.token_lifetime, "scope": self.scope,
                "token_type": "Bearer"}

    def bearer_scope(self, request: Request, expired: Callable[[], Reject]) -> str | None:
        """The scope of the request's access token (None: the static `token`, any scope).
        A lapsed one raises `expired()`; none or an unknown one a plain 401."""
        given = request.headers.get("authorization", "")
        access_token = given.removeprefix("Bearer ")
        if access_token in self.issued:
            expires_at, uses_left, scope = self.issued[access_token]
            if time.monotonic() >= expires_at or uses_left == 0:
                raise expired()
            if uses_left > 0:
                self.issued[access_token][1] = uses_left - 1
            return scope
        if given != f"Bearer {self.token}":
            raise Reject(401, {"error": {"code": 401, "status": "UNAUTHENTICATED",
                                         "message": "Request is missing required authentication credential."}})
        return None
