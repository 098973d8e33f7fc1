"""What the two Google destinations (Ads API Customer Match, Data Manager) share: the
OAuth 2.0 refresh-token flow that obtains their access token (kept as oauth.py keeps
every destination's), the consent and account settings as Google shows them, and
reading Google's error answers."""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator

from winback.credentials import SecretError
from winback.httperror import HttpError
from winback.sync.destinations.base import Settings
from winback.sync.destinations.oauth import AccessToken

if TYPE_CHECKING:
    from winback.sync.destinations.base import Destination

# developers.google.com/identity/protocols/oauth2/web-server#offline: a refresh token is
# exchanged at the token endpoint for an access token that lasts `expires_in` seconds
# (an hour; oauth.py renews it shortly before).
DEFAULT_TOKEN_URL = "https://oauth2.googleapis.com/token"
TOKEN_LIFETIME = 3600.0  # seconds, when the answer has no expires_in
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


class GoogleOAuth(AccessToken):
    """Google's access token for one destination: the `token` secret used as it is, or
    one obtained with the refresh flow (and renewed by it). `service` names the
    platform in messages."""

    def __init__(self, destination: Destination, service: str):
        super().__init__(destination, service, self._grant, fixed_refused=(
            "the `token` secret is an access token, which Google expires after an hour: set "
            "refresh_token, client_id and client_secret for scheduled syncs"))
        self._oauth: dict[str, str] | None = None  # the refresh flow's secrets, once read

    def _grant(self) -> tuple[str, float]:
        dest = self.destination
        if self._oauth is None:
            try:
                refresh_token = dest.secret("refresh_token")
            except SecretError as no_refresh:
                try:
                    return dest.secret("token"), math.inf
                except SecretError as no_token:
                    raise SecretError(
                        f"{dest.name}: {self.service} needs OAuth credentials: refresh_token, client_id and "
                        f"client_secret (scheduled syncs), or token (an access token, valid an hour). "
                        f"{no_refresh}; {no_token}") from None
            try:
                self._oauth = {"refresh_token": refresh_token, "client_id": dest.secret("client_id"),
                               "client_secret": dest.secret("client_secret")}
            except SecretError as missing:
                raise SecretError(f"{dest.name}: refresh_token is set, so client_id and client_secret "
                                  f"must be too: {missing}") from None
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
        return answer["access_token"], float(answer.get("expires_in") or TOKEN_LIFETIME)


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
