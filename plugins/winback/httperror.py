"""The error of a request that failed for good; its own module so that code which only
catches it (destinations, read at DAG parse time) need not import requests."""

from __future__ import annotations


class HttpError(RuntimeError):
    """A request that failed for good: a 4xx other than 429, or retries exhausted."""

    def __init__(self, message: str, status: int | None = None, body: str | None = None):
        super().__init__(message)
        self.status = status
        self.body = body
