"""The OAuth 2.0 access token of one destination, kept the one way for every platform that
authorizes with an expiring Bearer token (Google Ads, Google Data Manager, SendPulse):
obtained at the first request, reused until shortly before it expires, replaced once when
the platform refuses it with a 401 (then the 401 stands). How a token is obtained (the
grant, its secrets, the messages that say what to set) is each destination's own."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from winback.httperror import HttpError
from winback.sync.transport import DryRunTransport

if TYPE_CHECKING:
    from winback.sync.destinations.base import Destination
    from winback.sync.transport import Reply

log = logging.getLogger(__name__)

# Tokens last an hour (Google: developers.google.com/identity/protocols/oauth2/web-server
# #offline; SendPulse: see destinations/sendpulse.py); a new one is obtained this long
# before the old one lapses, so none expires on its way to the platform.
TOKEN_REFRESH_MARGIN = 60.0  # seconds
# A dry run sends nothing and so exchanges no credentials: its requests carry this.
DRY_RUN_ACCESS_TOKEN = "dry-run-access-token"

# Obtains a token: (access token, its lifetime in seconds). math.inf is a token given as
# it is (a secret): it never expires here, and asking again would give the same one.
Obtain = Callable[[], tuple[str, float]]


class AccessToken:
    """The access token of `destination`, obtained with `obtain`. `service` names the
    platform in the log; `fixed_refused`, if given, is added to the 401 that a token
    given as it is ends in (it cannot be renewed: the message says what to set)."""

    def __init__(self, destination: Destination, service: str, obtain: Obtain, *,
                 fixed_refused: str | None = None):
        self.destination = destination
        self.service = service
        self.obtain = obtain
        self.fixed_refused = fixed_refused
        self._access_token: str | None = None
        self._expires_at = math.inf  # time.monotonic() after which the token must be renewed
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
        """One request through the destination's transport carrying the access token. A 401
        that `renewable` blames on the token gets one new token (if one can be obtained)
        and is sent again; after that the 401 stands."""
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
                    if self.fixed_refused is None:
                        raise
                    raise HttpError(f"{exc} ({self.fixed_refused})", exc.status, exc.body) from None

    def _obtain(self) -> None:
        if isinstance(self.destination.http, DryRunTransport):
            # Nothing is sent, so no credential is read or exchanged (a dry run needs
            # none): the requests written carry a placeholder, redacted like any token.
            self._access_token, self._expires_at = DRY_RUN_ACCESS_TOKEN, math.inf
            return
        requested_at = time.monotonic()  # the lifetime counts from the asking
        self._access_token, lifetime = self.obtain()
        self._expires_at = requested_at + lifetime - TOKEN_REFRESH_MARGIN
        if math.isfinite(lifetime):
            log.info("%s: %s access token obtained (valid %d s)", self.destination.name, self.service, lifetime)

    def _renew_after_refusal(self, refused: str) -> bool:
        """After a 401: a new token if one can be obtained (True); a token given as it is
        cannot (False)."""
        with self._lock:
            if self._expires_at == math.inf:
                return False
            if self._access_token == refused:  # another request may have renewed it already
                self._obtain()
            return True
