"""The HTTP client every source and destination uses, against a real local server:
retries on throttling, server errors and broken connections, Retry-After, timeouts,
permanent client errors, logs that never carry the query string, credentials that
never follow a redirect to another host, an auth hook run for every attempt, and a
platform's rate-limit reset header when a throttled answer has no Retry-After."""

from __future__ import annotations

import base64
import json
import logging
import socket
import threading
import time
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
from sync_support import Clock
from winback import httpclient
from winback.httpclient import HttpClient, HttpError

SECRET = "SECRET-t0ken-42"


class Script:
    """What the server answers on each path: a list of steps consumed one per request
    (the last one repeats). A step is a status code, or a dict with status, headers,
    body, delay (seconds before answering) or close=True (drop the connection)."""

    def __init__(self):
        self.steps: dict[str, list] = {}
        self.requests: list[dict] = []
        self.lock = threading.Lock()

    def on(self, path: str, *steps) -> None:
        self.steps[path] = list(steps)

    def next_step(self, path: str) -> dict:
        with self.lock:
            steps = self.steps.get(path, [404])
            step = steps.pop(0) if len(steps) > 1 else steps[0]
        return step if isinstance(step, dict) else {"status": step}

    def seen(self, path: str) -> list[dict]:
        return [r for r in self.requests if r["path"] == path]


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):  # a client that timed out and left
        pass


def _handler(script: Script):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def _answer(self):
            parts = urlsplit(self.path)
            with script.lock:
                script.requests.append({
                    "method": self.command, "path": parts.path, "query": parse_qs(parts.query),
                    "headers": dict(self.headers), "at": time.monotonic(),
                })
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            step = script.next_step(parts.path)
            if step.get("delay"):
                time.sleep(step["delay"])
            if step.get("close"):
                self.close_connection = True
                return
            body = json.dumps(step.get("body", {"status": step["status"]})).encode()
            self.send_response(step["status"])
            for name, value in step.get("headers", {}).items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

    return Handler


def _serve():
    """(base URL, Script) of a real HTTP server on 127.0.0.1, stopped afterwards."""
    script = Script()
    httpd = _Server(("127.0.0.1", 0), _handler(script))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", script
    httpd.shutdown()
    httpd.server_close()


server = pytest.fixture(_serve)
other_server = pytest.fixture(_serve)  # a second origin: another port, or "localhost" for another host


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_throttling_waits_as_long_as_retry_after_says_then_succeeds(server):
    base, script = server
    script.on("/orders", {"status": 429, "headers": {"Retry-After": "1"}}, {"status": 200, "body": {"ok": 1}})
    client = HttpClient(backoff_initial=0.01, max_retries=3)
    began = time.monotonic()
    response = client.get(f"{base}/orders")
    elapsed = time.monotonic() - began
    assert response.json() == {"ok": 1}
    first, second = script.seen("/orders")
    # The backoff alone (0.01 s) would have retried at once: the server's 1 s was honoured.
    assert second["at"] - first["at"] >= 1.0
    assert elapsed < 3.0


def test_server_errors_are_retried_with_short_backoff_until_success(server):
    base, script = server
    script.on("/orders", 500, 503, 502, 504, 500, {"status": 200, "body": {"data": []}})
    client = HttpClient(backoff_initial=0.01, max_retries=5)
    began = time.monotonic()
    response = client.get(f"{base}/orders", params={"page": "1"})
    elapsed = time.monotonic() - began
    assert response.status_code == 200 and response.json() == {"data": []}
    assert len(script.seen("/orders")) == 6
    assert all(r["query"] == {"page": ["1"]} for r in script.seen("/orders"))
    # A first backoff of 0.01 s doubling five times is about 0.3 s, not seconds.
    assert elapsed < 1.5


def test_retries_exhausted_raise_an_http_error_naming_request_and_status(server):
    base, script = server
    script.on("/v1/orders", 503)
    client = HttpClient(backoff_initial=0.01, max_retries=2)
    with pytest.raises(HttpError) as failure:
        client.get(f"{base}/v1/orders", params={"page": "3"})
    message = str(failure.value)
    assert f"GET {base}/v1/orders" in message
    assert "503" in message and "2 retries" in message
    assert failure.value.status == 503
    assert len(script.seen("/v1/orders")) == 3  # the first try and two retries


@pytest.mark.parametrize("status", [400, 401, 404])
def test_client_errors_are_not_retried(server, status):
    base, script = server
    script.on("/orders", {"status": status, "body": {"error": "no such thing"}})
    client = HttpClient(backoff_initial=0.01, max_retries=5)
    with pytest.raises(HttpError) as failure:
        client.get(f"{base}/orders")
    assert failure.value.status == status
    assert f"GET {base}/orders: HTTP {status}" in str(failure.value)
    assert "no such thing" in failure.value.body
    assert len(script.seen("/orders")) == 1


def test_a_dropped_connection_is_retried(server):
    base, script = server
    script.on("/orders", {"status": 200, "close": True}, {"status": 200, "body": {"ok": 2}})
    client = HttpClient(backoff_initial=0.01, max_retries=2)
    assert client.get(f"{base}/orders").json() == {"ok": 2}
    assert len(script.seen("/orders")) == 2


def test_a_server_that_always_drops_the_connection_gives_an_http_error(server):
    base, script = server
    script.on("/orders", {"status": 200, "close": True})
    client = HttpClient(backoff_initial=0.01, max_retries=2)
    with pytest.raises(HttpError) as failure:
        client.get(f"{base}/orders")
    assert f"GET {base}/orders" in str(failure.value) and "2 retries" in str(failure.value)
    assert failure.value.status is None
    assert len(script.seen("/orders")) == 3


def test_nothing_listening_gives_an_http_error_after_retries():
    url = f"http://127.0.0.1:{free_port()}/api/orders"
    client = HttpClient(backoff_initial=0.01, max_retries=2, timeout=2)
    began = time.monotonic()
    with pytest.raises(HttpError) as failure:
        client.get(url, params={"token": SECRET})
    assert "GET http://127.0.0.1:" in str(failure.value) and "/api/orders" in str(failure.value)
    assert "ConnectionError" in str(failure.value) and "2 retries" in str(failure.value)
    assert SECRET not in str(failure.value)
    assert client.retries_made == 2
    assert time.monotonic() - began < 3.0


def test_a_slow_server_times_out_and_the_timeout_is_retried(server):
    base, script = server
    script.on("/slow", {"status": 200, "delay": 2.0})
    script.on("/fine", {"status": 200, "delay": 0.1, "body": {"ok": 3}})
    client = HttpClient(timeout=0.3, backoff_initial=0.01, max_retries=1)
    began = time.monotonic()
    with pytest.raises(HttpError) as failure:
        client.get(f"{base}/slow")
    elapsed = time.monotonic() - began
    assert "Timeout" in str(failure.value) and f"GET {base}/slow" in str(failure.value)
    assert len(script.seen("/slow")) == 2
    # Two tries of 0.3 s each, not two of the server's 2 s.
    assert elapsed < 1.5
    # A response within the timeout is fine.
    assert client.get(f"{base}/fine").json() == {"ok": 3}


def test_an_unparseable_retry_after_falls_back_to_backoff(server):
    base, script = server
    script.on("/orders", {"status": 503, "headers": {"Retry-After": "soon"}},
              {"status": 429, "headers": {"Retry-After": formatdate(time.time() - 60, usegmt=True)}},
              {"status": 200, "body": {"ok": 4}})
    client = HttpClient(backoff_initial=0.01, max_retries=3)
    began = time.monotonic()
    assert client.get(f"{base}/orders").json() == {"ok": 4}
    assert len(script.seen("/orders")) == 3
    assert time.monotonic() - began < 1.0  # a date in the past means: retry now


def test_logs_and_errors_never_carry_the_query_string(server, caplog):
    base, script = server
    script.on("/orders", 500, {"status": 429, "headers": {"Retry-After": "0"}}, 503)
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="winback")
    client = HttpClient(backoff_initial=0.01, max_retries=3)
    with pytest.raises(HttpError) as failure:
        client.get(f"{base}/orders", params={"token": SECRET, "page": "1"})
    assert [r["query"]["token"] for r in script.seen("/orders")] == [[SECRET]] * 4
    retries = [r for r in caplog.records if r.name.startswith("winback")]
    # Each retry was logged with method, host and path ...
    assert len(retries) == 3
    assert all(f"GET {base}/orders" in r.getMessage() for r in retries)
    assert [("HTTP 500" in m, "HTTP 429" in m, "HTTP 503" in m)
            for m in (r.getMessage() for r in retries)] == [(True, False, False), (False, True, False),
                                                           (False, False, True)]
    # ... and nothing logged or raised shows the query string.
    for record in caplog.records:
        assert SECRET not in record.getMessage()
        assert "token=" not in record.getMessage()
    assert SECRET not in str(failure.value) and "token=" not in str(failure.value)


CREDENTIALS = {"Authorization": f"Bearer {SECRET}", "X-Api-Key": SECRET, "api-key": SECRET,
               "developer-token": SECRET, "X-Winback-Signature": f"sha256={SECRET}"}


def credentials_seen(request: dict) -> set[str]:
    """Headers of a request received that hold the secret (Basic auth encodes it)."""
    encoded = base64.b64encode(f"user:{SECRET}".encode()).decode()
    return {name for name, value in request["headers"].items() if SECRET in value or encoded in value}


@pytest.mark.parametrize("status", [302, 307])
@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
def test_credentials_never_follow_a_redirect_to_another_origin(server, other_server, status, host):
    """requests strips Authorization alone: before the fix X-Api-Key, api-key,
    developer-token and the rest reached the other host. 127.0.0.1 and localhost are
    two hosts to requests, another port on one host is another origin too."""
    base, script = server
    other_base, other = other_server
    elsewhere = other_base.replace("127.0.0.1", host) + "/landing"
    script.on("/start", {"status": status, "headers": {"Location": elsewhere}})
    other.on("/landing", {"status": 200, "body": {"ok": 5}})
    client = HttpClient(max_retries=0, headers={"X-Api-Key": SECRET})
    reply = client.post(f"{base}/start", json={"a": 1}, auth=("user", SECRET),
                        headers={**CREDENTIALS, "Accept": "application/json"})
    [first], [landed] = script.seen("/start"), other.seen("/landing")
    assert reply.json() == {"ok": 5} and landed["method"] == ("POST" if status == 307 else "GET")
    assert credentials_seen(first) == {*CREDENTIALS, "Authorization"}  # sent where they belong
    assert credentials_seen(landed) == set()
    assert landed["headers"]["Accept"] == "application/json"  # plain headers go on


def test_a_redirect_within_the_same_origin_keeps_the_credentials(server):
    base, script = server
    script.on("/start", {"status": 302, "headers": {"Location": "/landing"}})
    script.on("/landing", {"status": 200, "body": {"ok": 6}})
    client = HttpClient(max_retries=0, headers={"X-Api-Key": SECRET})
    assert client.get(f"{base}/start", headers=CREDENTIALS).json() == {"ok": 6}
    [landed] = script.seen("/landing")
    assert credentials_seen(landed) == set(CREDENTIALS)


def test_an_auth_hook_runs_for_every_attempt(server):
    """Signing schemes re-sign each retry: requests prepares every attempt anew and calls
    the request's `auth` callable on it."""
    base, script = server
    script.on("/hook", 503, 503, {"status": 200, "body": {"ok": 7}})
    attempts = []

    def sign(request):
        attempts.append(request.body)
        request.headers["X-Attempt"] = str(len(attempts))
        return request

    client = HttpClient(backoff_initial=0.01, max_retries=3)
    assert client.post(f"{base}/hook", data=b"payload", auth=sign).json() == {"ok": 7}
    assert attempts == [b"payload"] * 3
    assert [r["headers"]["X-Attempt"] for r in script.seen("/hook")] == ["1", "2", "3"]


@pytest.mark.parametrize(("answer", "max_wait", "waited"), [
    ({"status": 429, "headers": {"x-sib-ratelimit-reset": "45"}}, 300, 45.0),  # Brevo's throttling
    ({"status": 429, "headers": {"x-sib-ratelimit-reset": "3600"}}, 300, 300.0),  # capped like Retry-After
    ({"status": 429, "headers": {"x-sib-ratelimit-reset": "45", "Retry-After": "2"}}, 300, 2.0),  # Retry-After wins
])
def test_a_throttled_answer_without_retry_after_waits_until_the_rate_limit_resets(server, monkeypatch, answer,
                                                                                 max_wait, waited):
    """Brevo answers 429 with `x-sib-ratelimit-reset` (seconds until its limit resets,
    developers.brevo.com/docs/limit-headers) and no Retry-After. Before the fix the client
    retried after its own backoff (0.01 s here) into the same exhausted limit."""
    clock = Clock()
    monkeypatch.setattr(httpclient, "time", clock)
    base, script = server
    script.on("/v3/contacts/import", answer, {"status": 200, "body": {"processId": 1}})
    client = HttpClient(backoff_initial=0.01, max_retries=3, max_wait=max_wait)
    assert client.post(f"{base}/v3/contacts/import").json() == {"processId": 1}
    assert clock.slept == [waited] and client.waited_seconds == waited
    assert len(script.seen("/v3/contacts/import")) == 2


def test_a_reset_header_on_a_server_error_is_not_a_wait(server, monkeypatch):
    """The reset header comes on every Brevo answer: a 5xx is a failure to back off from,
    not a limit to wait out."""
    clock = Clock()
    monkeypatch.setattr(httpclient, "time", clock)
    base, script = server
    script.on("/v3/contacts/import", {"status": 503, "headers": {"x-sib-ratelimit-reset": "45"}},
              {"status": 429, "headers": {"x-sib-ratelimit-reset": "soon"}}, {"status": 200, "body": {"ok": 8}})
    client = HttpClient(backoff_initial=0.01, max_retries=3)
    assert client.post(f"{base}/v3/contacts/import").json() == {"ok": 8}
    assert len(clock.slept) == 2 and all(wait < 0.1 for wait in clock.slept)  # backoff both times
