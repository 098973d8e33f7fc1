"""What the two Google destinations (Ads API Customer Match, Data Manager) share: the
OAuth 2.0 refresh-token flow and the authorized request built on it, the consent and
account settings as Google shows them, and reading Google's error answers."""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator

from winback.credentials import SecretError
from winback.destinations.base import Settings
from winback.httperror import HttpError
from winback.transport import DryRunTransport

if TYPE_CHECKING:
    from winback.destinations.base import Destination
    from winback.transport import Reply

log = logging.getLogger(__name__)

# developers.google.com/identity/protocols/oauth2/web-server#offline: a refresh token is
# exchanged at the token endpoint for an access token that lasts `expires_in` seconds
# (an hour); a new one is fetched this long before the old one lapses.
DEFAULT_TOKEN_URL = "https://oauth2.googleapis.com/token"
TOKEN_REFRESH_MARGIN = 60.0  # seconds
# A dry run sends nothing and so exchanges no credentials: its requests carry this.
DRY_RUN_ACCESS_TOKEN = "dry-run-access-token"
# Either refresh_token + client_id + client_secret (scheduled syncs: access tokens expire
# after an hour) or token, an access token used as it is.
OAUTH_SECRET_NAMES = ("token", "client_id", "client_secret", "refresh_token")

Consent = Literal["GRANTED", "DENIED"]
ACCOUNT_ID = r"^\d{10}$"  # a Google Ads account (customer) id without its dashes


class GoogleOptions(Settings):
    """Settings both Google destinations take: consent, the OAuth endpoint, the version."""

    # Google requires consent for EU users; the values state what the shop collected.
    ad_user_data_consent: Consent = "GRANTED"
    ad_personalization_consent: Consent = "GRANTED"
    token_url: str = Field(default=DEFAULT_TOKEN_URL, pattern=r"^https?://",
                           description="OAuth 2.0 token endpoint the refresh token is exchanged at")
    api_version: str | None = Field(default=None, pattern=r"^v\d+$",
                                    description="the API version to call (default: the newest Winback knows)")


def without_dashes(value: Any) -> Any:
    """An account id as the Google Ads UI shows it (123-456-7890) -> 1234567890."""
    return value.replace("-", "") if isinstance(value, str) else value


def account_ids(*names: str):
    """A before-validator for the named account id fields (dashes allowed)."""
    return field_validator(*names, mode="before")(lambda cls, value: without_dashes(value))


class GoogleOAuth:
    """The access token of one destination: `token` used as it is, or obtained with the
    refresh flow at the first request and renewed a minute before it expires or once
    after a 401. `service` names the platform in messages."""

    def __init__(self, destination: Destination, service: str):
        self.destination = destination
        self.service = service
        self._access_token: str | None = None
        self._expires_at = math.inf  # time.monotonic() after which the token must be renewed
        self._oauth: dict[str, str] | None = None  # the refresh flow's secrets, once read
        self._lock = threading.Lock()

    def token(self) -> str:
        """The access token for the next request."""
        with self._lock:
            if self._access_token is None or time.monotonic() >= self._expires_at:
                self._obtain()
            assert self._access_token is not None
            return self._access_token

    def request(self, method: str, url: str, *, headers: dict[str, str] | None = None,
                renewable: Callable[[HttpError], bool] = lambda exc: True, **kwargs: Any) -> Reply:
        """One request carrying the access token. A 401 that `renewable` blames on the
        token gets one new token (if the refresh flow can give one) and is sent again;
        after that the 401 stands."""
        renewed = False
        while True:
            token = self.token()
            try:
                return self.destination.http.request(method, url, headers={"Authorization": f"Bearer {token}",
                                                                           **(headers or {})}, **kwargs)
            except HttpError as exc:
                if exc.status != 401 or renewed or not renewable(exc):
                    raise
                renewed = True  # expired early or revoked
                if not self._renew_after_refusal(token):
                    raise HttpError(f"{exc} (the `token` secret is an access token, which Google expires "
                                    "after an hour: set refresh_token, client_id and client_secret for "
                                    "scheduled syncs)", exc.status, exc.body) from None

    def _obtain(self) -> None:
        dest = self.destination
        if isinstance(dest.http, DryRunTransport):
            # Nothing is sent, so no credential is read or exchanged (a dry run needs
            # none): the requests written carry a placeholder, redacted like any token.
            self._access_token, self._expires_at = DRY_RUN_ACCESS_TOKEN, math.inf
            return
        if self._oauth is None:
            try:
                refresh_token = dest.secret("refresh_token")
            except SecretError as no_refresh:
                try:
                    self._access_token, self._expires_at = dest.secret("token"), math.inf
                except SecretError as no_token:
                    raise SecretError(
                        f"{dest.name}: {self.service} needs OAuth credentials: refresh_token, client_id and "
                        f"client_secret (scheduled syncs), or token (an access token, valid an hour). "
                        f"{no_refresh}; {no_token}") from None
                return
            try:
                self._oauth = {"refresh_token": refresh_token, "client_id": dest.secret("client_id"),
                               "client_secret": dest.secret("client_secret")}
            except SecretError as missing:
                raise SecretError(f"{dest.name}: refresh_token is set, so client_id and client_secret "
                                  f"must be too: {missing}") from None
        self._refresh()

    def _refresh(self) -> None:
        assert self._oauth is not None
        dest = self.destination
        requested_at = time.monotonic()
        try:
            reply = dest.http.request("POST", dest.options.token_url, data={"grant_type": "refresh_token",
                                                                            **self._oauth})
        except HttpError as exc:
            raise HttpError(f"{dest.name}: the OAuth token endpoint refused the refresh token "
                            f"({_oauth_error(exc.body)}): {exc}", exc.status, exc.body) from None
        answer = reply.json() or {}
        if not answer.get("access_token"):
            raise HttpError(f"{dest.name}: the OAuth token endpoint answered without an access_token",
                            reply.status_code, None)
        lifetime = float(answer.get("expires_in") or 3600)
        self._access_token = answer["access_token"]
        self._expires_at = requested_at + lifetime - TOKEN_REFRESH_MARGIN
        log.info("%s: OAuth access token obtained (valid %d s)", dest.name, lifetime)

    def _renew_after_refusal(self, refused: str) -> bool:
        """After a 401: a new token if the refresh flow can give one (True), else no."""
        with self._lock:
            if self._oauth is None:
                return False
            if self._access_token == refused:  # another request may have renewed it already
                self._refresh()
            return True


def error_of(body: str | None) -> dict[str, Any]:
    """The `error` object of a Google API error answer (google.rpc.Status as JSON), or {}."""
    try:
        answer = json.loads(body or "")
    except ValueError:
        return {}
    error = answer.get("error") if isinstance(answer, dict) else None
    return error if isinstance(error, dict) else {}


def _oauth_error(body: str | None) -> str:
    """`error: error_description` of an OAuth error answer (RFC 6749 5.2), which names
    the problem (invalid_grant, invalid_client) and never echoes the credentials."""
    try:
        answer = json.loads(body or "")
    except ValueError:
        return "no OAuth error in the answer"
    if not isinstance(answer, dict) or not isinstance(answer.get("error"), str):
        return "no OAuth error in the answer"
    return f"{answer['error']}: {answer.get('error_description') or ''}".strip(": ")
