"""Requests caught as they are about to leave the process (requests' transport adapter),
for the tests that pin a platform's wire format: recorded and answered in-process, or
recorded and passed on to an emulator."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests
from winback.emulators.base import Request


@dataclass
class Sent:
    """One request as it was about to leave the process."""

    method: str
    url: str
    headers: dict[str, str]  # lower-cased names
    body: bytes

    @property
    def path(self) -> str:
        return urlsplit(self.url).path

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.url).query)

    def json(self) -> Any:
        return json.loads(self.body or b"null")

    def form(self) -> dict[str, Any]:
        """Fields of a urlencoded or multipart body (file fields as bytes)."""
        return Request(self.method, self.path, {}, self.headers, self.body).form()


Answer = Callable[[Sent], Any]


def record_requests(monkeypatch, answer: Answer | None = None) -> list[Sent]:
    """Every request sent through `requests` (the HttpClient, an SDK built on requests) is
    recorded; answered 200 with answer(request) as JSON, or, without `answer`, passed on to
    where it was addressed (a local emulator). Nothing else reaches the network."""
    sent: list[Sent] = []
    passed_on = requests.adapters.HTTPAdapter.send

    def send(adapter, request, **kwargs):
        body = request.body.encode() if isinstance(request.body, str) else request.body or b""
        caught = Sent(request.method, request.url, {k.lower(): v for k, v in request.headers.items()}, body)
        sent.append(caught)
        if answer is None:
            return passed_on(adapter, request, **kwargs)
        response = requests.Response()
        response.status_code, response.url, response.request = 200, request.url, request
        response.headers["Content-Type"] = "application/json"
        response._content = json.dumps(answer(caught)).encode()
        return response

    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", send)
    return sent
