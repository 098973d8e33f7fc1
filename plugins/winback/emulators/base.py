"""A local HTTP server standing in for a platform's API: routes, its own membership
state, and injected faults (429 with Retry-After, 500) on a deterministic schedule.

Used by the contract tests, the sync benchmark and anyone who wants to try a sync
without a real account: `python -m winback.emulators meta_custom_audiences`.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-cased names
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body or b"null")
        except ValueError:
            raise Reject(400, {"error": "body is not JSON"}) from None

    def form(self) -> dict[str, Any]:
        """Fields of an urlencoded or multipart body; file fields as bytes. Repeated
        urlencoded keys (`field_names[]`) keep every value in a list."""
        kind = self.headers.get("content-type", "")
        if kind.startswith("multipart/form-data"):
            message = BytesParser(policy=HTTP).parsebytes(
                f"Content-Type: {kind}\r\n\r\n".encode() + self.body)
            fields: dict[str, Any] = {}
            for part in message.iter_parts():
                name = part.get_param("name", header="content-disposition")
                payload = part.get_payload(decode=True) or b""
                fields[name] = payload if part.get_filename() else payload.decode("utf-8")
            return fields
        parsed = parse_qs(self.body.decode("utf-8"), keep_blank_values=True)
        return {k: (v if k.endswith("]") else v[-1]) for k, v in parsed.items()}


class Reject(Exception):
    """Raised by a route: answer with this status and body."""

    def __init__(self, status: int, body: Any, headers: dict[str, str] | None = None):
        super().__init__(status)
        self.status, self.body, self.headers = status, body, headers or {}


Route = Callable[[Request, re.Match], Any]


@dataclass
class Faults:
    """Every `throttle_every`-th request is answered 429 (Retry-After: `retry_after`),
    every `fail_every`-th 500, before the route runs: nothing of it is applied."""

    throttle_every: int = 0
    fail_every: int = 0
    retry_after: str = "0"
    throttle_status: int = 429


@dataclass
class Emulator:
    """Subclasses add routes with `route(method, pattern)` in `setup()` and keep state."""

    token: str = "test-token"
    faults: Faults = field(default_factory=Faults)
    # Crash tests: once this many calls were applied, each later call is applied and
    # then left unanswered until `release` is set (the client sees no confirmation).
    hold_after: int = 0

    def __post_init__(self) -> None:
        self.routes: list[tuple[str, re.Pattern, Route]] = []
        self.lock = threading.RLock()
        self.log: list[dict[str, Any]] = []  # every request: method, path, status
        self.calls = 0
        self.applied = 0
        self.holding = threading.Event()
        self.release = threading.Event()
        self.setup()
        self._server: ThreadingHTTPServer | None = None

    def setup(self) -> None:
        raise NotImplementedError

    def route(self, method: str, pattern: str, handler: Route) -> None:
        self.routes.append((method, re.compile(pattern + r"$"), handler))

    # -- serving -----------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        assert self._server is not None, "start() the emulator first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self, port: int = 0) -> Emulator:
        self._server = _Server(("127.0.0.1", port), _handler(self))
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.release.set()
        if self._server:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def handle(self, request: Request) -> tuple[int, Any, dict[str, str]]:
        with self.lock:
            self.calls += 1
            n = self.calls
        f = self.faults
        if f.throttle_every and n % f.throttle_every == 0:
            return self._logged(request, f.throttle_status, {"error": "rate limited"}, {"Retry-After": f.retry_after})
        if f.fail_every and n % f.fail_every == 0:
            return self._logged(request, 500, {"error": "internal error"}, {})
        for method, pattern, handler in self.routes:
            match = pattern.match(request.path)
            if match and method == request.method:
                try:
                    with self.lock:
                        body = handler(request, match)
                        self.applied += 1
                        hold = bool(self.hold_after) and self.applied > self.hold_after
                except Reject as exc:
                    return self._logged(request, exc.status, exc.body, exc.headers)
                if hold:
                    self.holding.set()
                    self.release.wait()
                return self._logged(request, 200, body, {})
        return self._logged(request, 404, {"error": f"no route {request.method} {request.path}"}, {})

    def _logged(self, request: Request, status: int, body: Any, headers: dict[str, str]):
        with self.lock:
            self.log.append({"method": request.method, "path": request.path, "status": status})
        return status, body, headers

    def requests_to(self, pattern: str, status: int | None = 200) -> list[dict[str, Any]]:
        return [r for r in self.log if re.search(pattern, r["path"]) and (status is None or r["status"] == status)]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):  # a client that gave up and left
        pass


def _handler(emulator: Emulator):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def _serve(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            parts = urlsplit(self.path)
            request = Request(
                method=self.command, path=parts.path,
                query={k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()},
                headers={k.lower(): v for k, v in self.headers.items()}, body=body)
            status, payload, headers = emulator.handle(request)
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    return Handler


def bearer(request: Request, token: str) -> None:
    """Require `Authorization: Bearer <token>` (401 otherwise)."""
    if request.headers.get("authorization") != f"Bearer {token}":
        raise Reject(401, {"error": {"message": "invalid access token", "code": 190}})


SHA256_HEX = re.compile(r"[0-9a-f]{64}")
