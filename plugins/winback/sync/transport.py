"""How destinations reach their platform: live over the shared HttpClient (retries,
Retry-After, client-side pacing), or in a dry run, where every request is written to
owner-only files with secrets scrubbed and nothing is sent."""

from __future__ import annotations

import base64
import json
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote, quote_plus

from winback.private_files import open_private, private_dir, write_private

if TYPE_CHECKING:  # requests is heavy for DAG parsing; destinations import this module
    from winback.httpclient import HttpClient

_REDACTED_HEADERS = {"authorization", "x-api-key", "api-key", "developer-token"}


class Reply(Protocol):
    status_code: int
    text: str

    def json(self) -> Any: ...


class Transport(Protocol):
    requests: int

    def request(self, method: str, url: str, *, pretend: Any = None, **kwargs: Any) -> Reply:
        """Send a request; `pretend` is what a dry run answers instead (for flows whose
        next call needs an id from this one)."""
        ...

    def close(self) -> None: ...


class LiveTransport:
    def __init__(self, client: HttpClient, min_interval: float = 0.0):
        self.client = client
        self.min_interval = min_interval
        self.requests = 0
        self._next_at = 0.0
        self._lock = threading.Lock()

    @property
    def retries(self) -> int:
        return self.client.retries_made

    def request(self, method: str, url: str, *, pretend: Any = None, **kwargs: Any) -> Reply:
        if self.min_interval:
            with self._lock:  # pacing is waiting, not failing
                delay = self._next_at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                self._next_at = time.monotonic() + self.min_interval
        self.requests += 1
        return self.client.request(method, url, **kwargs)

    def close(self) -> None:
        self.client.close()


class DryRunReply:
    status_code = 200

    def __init__(self, body: Any):
        self._body = {} if body is None else body
        self.text = json.dumps(self._body)

    def json(self) -> Any:
        return self._body


class DryRunTransport:
    """Writes each request to `folder/requests.jsonl` (bodies of uploaded files beside
    it) exactly as it would be sent, minus credentials. The folder and files are the
    owner's only: they hold the members' addresses."""

    retries = 0

    def __init__(self, folder: Path, secrets: list[str]):
        self.folder = private_dir(folder)
        self.secrets = [s for s in secrets if s]
        self.requests = 0
        self._log = open_private(folder / "requests.jsonl", "w", encoding="utf-8")

    def request(self, method: str, url: str, *, pretend: Any = None, **kwargs: Any) -> Reply:
        self.requests += 1
        headers = dict(kwargs.get("headers") or {})
        auth = kwargs.get("auth")
        if isinstance(auth, tuple):  # HTTP basic auth: its header is the credential itself
            headers["Authorization"] = "***"
        elif callable(auth):  # a signing hook: the headers it would add
            headers = dict(auth(_Unsent(headers, kwargs.get("data"))).headers)
        record: dict[str, Any] = {"seq": self.requests, "method": method, "url": url,
                                  "headers": {k: ("***" if k.lower() in _REDACTED_HEADERS else v)
                                              for k, v in headers.items()}}
        for name in ("params", "json", "data"):
            if kwargs.get(name) is not None:
                record[name] = _decoded(kwargs[name])
        for field, (filename, content, *_) in (kwargs.get("files") or {}).items():
            if isinstance(filename, str) or filename is None:
                saved = self.folder / f"{self.requests:05d}-{filename or field}"
                data = content if isinstance(content, bytes) else str(content).encode()
                for form in self._forms():
                    data = data.replace(form.encode(), b"***")
                write_private(saved, data)
                record.setdefault("files", {})[field] = saved.name
        self._log.write(json.dumps(self._redact(record), ensure_ascii=False, default=str) + "\n")
        return DryRunReply(pretend)

    def _forms(self) -> list[str]:
        """Every form a secret can take in a request: as it is, escaped inside JSON text,
        URL-encoded (query strings, form bodies), base64 (basic auth); longest first."""
        forms = set()
        for secret in self.secrets:
            forms |= {secret, json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1],
                      quote(secret), quote(secret, safe=""), quote_plus(secret),
                      base64.b64encode(secret.encode()).decode(), base64.urlsafe_b64encode(secret.encode()).decode()}
        return sorted(forms, key=len, reverse=True)

    def _redact(self, value: Any) -> Any:
        """The record with secrets scrubbed from every string before it is serialised
        (serialising first would escape them out of reach of a plain replace)."""
        if isinstance(value, dict):
            return {self._redact(k): self._redact(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self._redact(v) for v in value]
        if isinstance(value, str):
            for form in self._forms():
                value = value.replace(form, "***")
        return value

    def close(self) -> None:
        self._log.close()


class _Unsent:
    """What a request's auth hook is given in a dry run: its headers and body."""

    def __init__(self, headers: dict[str, str], body: Any):
        self.headers, self.body = headers, body


def _decoded(value: Any) -> Any:
    if isinstance(value, bytes):
        try:
            return json.loads(value)
        except ValueError:
            return value.decode("utf-8", "replace")
    return value
