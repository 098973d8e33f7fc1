"""The one HTTP session helper: timeouts, and retries with backoff on 429, 5xx and
connection errors, honouring Retry-After (or, on a throttled answer without it, a
platform's rate-limit reset header). Throttling is waiting, not failure.

Each attempt is prepared anew, so a requests `auth` callable runs once per attempt: a
signing scheme re-signs every retry (the webhook's timestamp stays fresh). A redirect
to another origin carries no credential: only the plain headers in REDIRECT_HEADERS
follow it, whatever the header a key travels in.

Logs carry method, host and path only: query strings and bodies may hold tokens or
personal data.
"""

from __future__ import annotations

import email.utils
import logging
import random
import time
from dataclasses import dataclass
from datetime import UTC
from typing import Any
from urllib.parse import urlsplit

import requests
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
)

from winback.httperror import HttpError

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
DEFAULT_MAX_WAIT = 300.0  # seconds: a Retry-After longer than this is capped
# Headers saying in how many seconds a rate limit resets, read on a throttled answer (a
# retryable status below 500) that has no Retry-After. Brevo throttles that way:
# "x-sib-ratelimit-reset: Time remaining until the rate limit resets, expressed in the
# granularity unit (typically seconds)" (https://developers.brevo.com/docs/limit-headers).
# Only headers documented as seconds-from-now belong here: X-RateLimit-Reset is an epoch
# time on some platforms and seconds on others.
RESET_HEADERS = ("x-sib-ratelimit-reset",)
# The only headers a redirect to another origin keeps. requests itself drops only
# Authorization there; keys also travel as X-Api-Key, api-key, developer-token, a
# configured source header or a signature, so every header not known to be plain goes.
# (Cookie is requests' own, rebuilt from its jar for the new host's domain.)
REDIRECT_HEADERS = frozenset({"accept", "accept-encoding", "accept-language", "content-type", "content-length",
                              "content-encoding", "transfer-encoding", "user-agent", "connection", "cache-control",
                              "cookie"})


class _NoQueryStrings(logging.Filter):
    """urllib3 logs each request's URL at DEBUG, query string included (where Meta's removals
    carry hashed identifiers, as its SDK sends them): the URL is cut at its "?"."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(a.split("?", 1)[0] if isinstance(a, str) else a for a in record.args)
        return True


for _name in ("urllib3.connectionpool", "urllib3.util.retry"):  # filters do not reach child loggers
    logging.getLogger(_name).addFilter(_NoQueryStrings())


class _Session(requests.Session):
    def rebuild_auth(self, prepared_request: requests.PreparedRequest, response: requests.Response) -> None:
        """requests' hook for each redirect: beyond its own Authorization rule, no header
        but the plain ones goes to another origin (host, port or scheme, by requests'
        should_strip_auth: 127.0.0.1 and localhost are two hosts)."""
        if self.should_strip_auth(response.request.url, prepared_request.url):
            for name in [n for n in prepared_request.headers if n.lower() not in REDIRECT_HEADERS]:
                del prepared_request.headers[name]
        super().rebuild_auth(prepared_request, response)


class RetryableResponse(Exception):
    def __init__(self, response: requests.Response):
        super().__init__(f"HTTP {response.status_code}")
        self.response = response


def retry_after_seconds(response: requests.Response) -> float | None:
    """Seconds the server asked us to wait (Retry-After as seconds or an HTTP date)."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None  # not a number nor an HTTP date: fall back to our own backoff
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)  # HTTP dates are GMT
    return max(0.0, parsed.timestamp() - time.time())


def reset_seconds(response: requests.Response) -> float | None:
    """Seconds until the rate limit resets, from the first of RESET_HEADERS present."""
    for name in RESET_HEADERS:
        value = response.headers.get(name)
        if value:
            try:
                return max(0.0, float(value))
            except ValueError:
                return None  # not a number: fall back to our own backoff
    return None


def describe(method: str, url: str) -> str:
    parts = urlsplit(url)
    return f"{method} {parts.scheme}://{parts.netloc}{parts.path}"


@dataclass
class HttpClient:
    """A requests session with one retry policy, shared by sources and destinations."""

    timeout: float = 30.0
    max_retries: int = 5
    backoff_initial: float = 1.0
    backoff_max: float = 60.0
    max_wait: float = DEFAULT_MAX_WAIT
    headers: dict[str, str] | None = None
    retry_statuses: frozenset[int] = RETRY_STATUSES

    def __post_init__(self) -> None:
        self.session = _Session()
        if self.headers:
            self.session.headers.update(self.headers)
        self.retries_made = 0
        self.waited_seconds = 0.0

    def close(self) -> None:
        self.session.close()

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self.timeout)
        retrying = Retrying(
            stop=stop_after_attempt(self.max_retries + 1),
            wait=self._wait,
            sleep=lambda seconds: time.sleep(seconds),  # this module's time, which tests replace by a clock
            retry=retry_if_exception_type(
                (RetryableResponse, requests.ConnectionError, requests.Timeout)
            ),
            before_sleep=self._before_sleep,
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    response = self.session.request(method, url, **kwargs)
                    if response.status_code in self.retry_statuses:
                        raise RetryableResponse(response)
        except RetryableResponse as exc:
            raise HttpError(
                f"{describe(method, url)}: HTTP {exc.response.status_code} after "
                f"{self.max_retries} retries",
                exc.response.status_code,
                exc.response.text[:500],
            ) from None
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise HttpError(
                f"{describe(method, url)}: {type(exc).__name__} after {self.max_retries} retries"
            ) from None
        if response.status_code >= 400:
            raise HttpError(
                f"{describe(method, url)}: HTTP {response.status_code}",
                response.status_code,
                response.text[:500],
            )
        return response

    def get(self, url: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> requests.Response:
        return self.request("POST", url, **kwargs)

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RetryableResponse):
            asked = retry_after_seconds(exc.response)
            if asked is None and exc.response.status_code < 500:  # throttled, not broken
                asked = reset_seconds(exc.response)
            if asked is not None:
                return min(asked, self.max_wait)
        return self._backoff(state.attempt_number)

    def _backoff(self, attempt: int) -> float:
        """backoff_initial doubling per retry, capped, with jitter of up to one
        backoff_initial (tenacity's default jitter is a flat second, which would make a
        short configured backoff meaningless)."""
        try:
            delay = self.backoff_initial * 2 ** (attempt - 1)
        except OverflowError:
            delay = self.backoff_max
        return min(delay + random.uniform(0, self.backoff_initial), self.backoff_max)

    def _before_sleep(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        self.retries_made += 1
        self.waited_seconds += wait
        what = f"HTTP {exc.response.status_code}" if isinstance(exc, RetryableResponse) else type(exc).__name__
        request = exc.response.request if isinstance(exc, RetryableResponse) else None
        target = describe(request.method, request.url) if request is not None else "request"
        log.warning("%s: %s, retry %d in %.1fs", target, what, state.attempt_number, wait)
