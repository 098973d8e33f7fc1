"""How destinations reach their platform: live over the shared HttpClient (retries,
Retry-After, client-side pacing), or in a dry run, where every request is written to a
file with secrets scrubbed and nothing is sent."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

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
    it) exactly as it would be sent, minus credentials."""

    retries = 0

    def __init__(self, folder: Path, secrets: list[str]):
        self.folder = folder
        self.secrets = [s for s in secrets if s]
        self.requests = 0
        folder.mkdir(parents=True, exist_ok=True)
        self._log = (folder / "requests.jsonl").open("w", encoding="utf-8")

    def request(self, method: str, url: str, *, pretend: Any = None, **kwargs: Any) -> Reply:
        self.requests += 1
        record: dict[str, Any] = {"seq": self.requests, "method": method, "url": url}
        headers = kwargs.get("headers") or {}
        record["headers"] = {k: ("***" if k.lower() in _REDACTED_HEADERS else v) for k, v in headers.items()}
        for name in ("params", "json", "data"):
            if kwargs.get(name) is not None:
                record[name] = _decoded(kwargs[name])
        for field, (filename, content, *_) in (kwargs.get("files") or {}).items():
            if isinstance(filename, str) or filename is None:
                saved = self.folder / f"{self.requests:05d}-{filename or field}"
                saved.write_bytes(content if isinstance(content, bytes) else str(content).encode())
                record.setdefault("files", {})[field] = saved.name
        self._log.write(self._scrub(json.dumps(record, ensure_ascii=False, default=str)) + "\n")
        return DryRunReply(pretend)

    def _scrub(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text

    def close(self) -> None:
        self._log.close()


def _decoded(value: Any) -> Any:
    if isinstance(value, bytes):
        try:
            return json.loads(value)
        except ValueError:
            return value.decode("utf-8", "replace")
    return value
