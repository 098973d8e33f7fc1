"""Ingest from the shop's HTTP API, end to end through extract -> validate -> load, on
DuckDB and on PostgreSQL, against a real local "shop API" server: page and cursor
pagination, bearer auth from the environment or an Airflow Connection, retries on
throttling and server errors, incremental runs from the watermark, explicit windows,
and the errors a user sees when the API misbehaves."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import pytest
from winback.ingest.pipeline import ingest
from winback.ingest.sources import SourceError, SourceUnavailable

TOKEN = "tok-7f3c9a-very-secret"

COLUMNS = {
    "order_id": "id",
    "customer_id": "customer.id",
    "created_at": "created",
    "total_amount": "total",
    "status": "status",
    "updated_at": "updated",
}


def iso(moment: datetime) -> str:
    """ISO 8601 in UTC with a Z, as the shop writes timestamps."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text)


def order(id_: str, customer: str, created: str, total: float, status: str, updated: str) -> dict:
    return {"id": id_, "customer": {"id": customer, "name": f"Customer {customer}"},
            "created": created, "total": total, "status": status, "updated": updated,
            "items": [{"sku": "A1", "qty": 1}]}


class ShopApi:
    """The shop's order API: records sorted by `updated`, filtered by updated_since /
    updated_until, paginated by page number or by cursor, behind a bearer token.

    `failures` maps a page (page number, or the cursor value; None for the first cursor
    page) to statuses answered once each, before the page itself. `always` answers
    every request with that status. `broken_pages` answer "data" as an object."""

    def __init__(self, token: str = TOKEN, mode: str = "page", cursor_page_size: int = 2,
                 max_per_page: int = 100):
        self.orders: list[dict] = []
        self.max_per_page = max_per_page  # a larger per_page is capped, as real APIs do
        self.token = token
        self.mode = mode
        self.cursor_page_size = cursor_page_size
        self.failures: dict = {}
        self.always: int | None = None
        self.broken_pages: set = set()
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        self.url = ""

    # -- what the tests look at --------------------------------------------------------
    def page_requests(self) -> list:
        """The page (or cursor) of each request, in order."""
        key = "page" if self.mode == "page" else "cursor"
        return [r["params"].get(key) for r in self.requests]

    # -- serving -------------------------------------------------------------------------
    def answer(self, path: str, params: dict, headers: dict) -> tuple[int, dict, dict]:
        with self.lock:
            self.requests.append({"path": path, "params": params, "headers": headers})
            if path != "/api/orders":
                return 404, {}, {"error": "not found"}
            if headers.get("Authorization") != f"Bearer {self.token}":
                return 401, {}, {"error": "invalid or missing token"}
            if self.always is not None:
                return self.always, {}, {"error": "unavailable"}
            key = params.get("page") if self.mode == "page" else params.get("cursor")
            pending = self.failures.get(key)
            if pending:
                status = pending.pop(0)
                return status, ({"Retry-After": "1"} if status == 429 else {}), {"error": f"HTTP {status}"}
            selected = sorted(self.orders, key=lambda o: (parse_iso(o["updated"]), o["id"]))
            if "updated_since" in params:
                since = parse_iso(params["updated_since"])
                selected = [o for o in selected if parse_iso(o["updated"]) >= since]
            if "updated_until" in params:
                until = parse_iso(params["updated_until"])
                selected = [o for o in selected if parse_iso(o["updated"]) < until]
            if self.mode == "page":
                page = int(params.get("page", 1))
                size = min(int(params.get("per_page", self.max_per_page)), self.max_per_page)
                body = {"data": selected[(page - 1) * size: page * size], "meta": {"page": page}}
            else:
                offset = int(params.get("cursor", "c0")[1:])
                end = offset + self.cursor_page_size
                body = {"data": selected[offset:end],
                        "next_cursor": f"c{end}" if end < len(selected) else None}
                page = key
            if page in self.broken_pages:
                body["data"] = {"message": "temporarily unavailable"}
            return 200, {}, body


def _handler(api: ShopApi):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_GET(self):
            parts = urlsplit(self.path)
            params = {k: v[-1] for k, v in parse_qs(parts.query).items()}
            status, extra, body = api.answer(parts.path, params, dict(self.headers))
            data = json.dumps(body).encode()
            self.send_response(status)
            for name, value in extra.items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


def _serve(api: ShopApi):
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(api))
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    api.url = f"http://127.0.0.1:{httpd.server_address[1]}/api/orders"
    return httpd


@pytest.fixture
def shop_api():
    """shop_api(mode="page" | "cursor") -> a running ShopApi, stopped after the test."""
    servers = []

    def start(mode: str = "page", **options) -> ShopApi:
        api = ShopApi(mode=mode, **options)
        servers.append(_serve(api))
        return api

    yield start
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


JANUARY = [
    order("1", "C1", "2025-01-05T10:00:00Z", 10.5, "paid", "2025-01-05T10:00:00Z"),
    order("2", "C2", "2025-01-06T11:00:00Z", 20, "shipped", "2025-01-07T09:00:00Z"),
    order("3", "C1", "2025-01-08T12:00:00+03:00", 30.25, "delivered", "2025-01-09T08:00:00Z"),
    order("4", "C3", "2025-01-10T13:00:00Z", 5, "paid", "2025-01-11T10:00:00Z"),
    order("5", "C4", "2025-01-12T14:00:00Z", 99.99, "cancelled", "2025-01-13T10:00:00Z"),
]


def http_config(write_config, warehouse_url, url, *, auth=None, pagination=None, **extra):
    source = {
        "kind": "http",
        "url": url,
        "columns": dict(COLUMNS),
        "auth": auth or {"token_env": "SHOP_API_TOKEN"},
        "pagination": pagination or {"type": "page", "page_size": 2},
        "max_retries": 3,
        "retry_backoff": 0.01,
        "timeout": 5,
        **extra,
    }
    return write_config({"orders": source}, warehouse=warehouse_url)


@pytest.fixture
def token_env(monkeypatch):
    monkeypatch.setenv("SHOP_API_TOKEN", TOKEN)


def loaded_orders(open_warehouse, config) -> dict[str, tuple]:
    wh = open_warehouse(config)
    rows = wh.rows("SELECT order_id, customer_id, created_at, total_amount, status, currency, updated_at "
                   "FROM orders ORDER BY order_id")
    return {r[0]: tuple(r[1:]) for r in rows}


def test_page_pagination_loads_every_order_retrying_throttling_and_errors(
        write_config, warehouse_url, shop_api, token_env, open_warehouse):
    api = shop_api("page")
    api.orders = list(JANUARY)
    api.failures = {"2": [429], "3": [500]}
    config = http_config(write_config, warehouse_url, api.url)
    began = time.monotonic()
    [result] = ingest(config)
    assert time.monotonic() - began >= 1.0  # Retry-After: 1 was honoured
    assert (result["rows"], result["rows_valid"], result["inserted"]) == (5, 5, 5)
    orders = loaded_orders(open_warehouse, config)
    assert set(orders) == {"1", "2", "3", "4", "5"}
    # The nested customer.id is mapped by its dotted path; timestamps land in UTC.
    assert orders["1"] == ("C1", datetime(2025, 1, 5, 10, 0), Decimal("10.50"), "paid", "RUB",
                           datetime(2025, 1, 5, 10, 0))
    assert orders["3"][:2] == ("C1", datetime(2025, 1, 8, 9, 0))
    assert orders["5"][3] == "cancelled"
    # Page 2 was throttled once and page 3 failed once: both were asked again.
    assert api.page_requests() == ["1", "2", "2", "3", "3"]
    assert {r["params"]["per_page"] for r in api.requests} == {"2"}
    assert all(r["headers"]["Authorization"] == f"Bearer {TOKEN}" for r in api.requests)
    # The first run has no watermark: nothing limits the window's start.
    assert all("updated_since" not in r["params"] for r in api.requests)


def test_an_api_that_caps_the_page_size_still_gives_every_order(
        write_config, warehouse_url, shop_api, token_env, open_warehouse):
    api = shop_api("page", max_per_page=2)  # the shop's API serves at most 2 per page
    api.orders = list(JANUARY)
    config = http_config(write_config, warehouse_url, api.url, pagination={"type": "page", "page_size": 500})
    [result] = ingest(config)
    assert result["inserted"] == 5
    assert set(loaded_orders(open_warehouse, config)) == {"1", "2", "3", "4", "5"}
    assert api.page_requests() == ["1", "2", "3"]  # page 3 held 1 of 2: the last one


def test_a_single_short_page_and_an_api_that_repeats_its_last_page(
        write_config, warehouse_url, shop_api, token_env, open_warehouse):
    api = shop_api("page")
    api.orders = list(JANUARY[:3])
    config = http_config(write_config, warehouse_url, api.url, pagination={"type": "page", "page_size": 10})
    [result] = ingest(config)
    assert result["inserted"] == 3
    # Three of ten asked for: maybe all there is, maybe the API's own limit; page 2 says which.
    assert api.page_requests() == ["1", "2"]

    class Repeating(ShopApi):  # answers a page past the end with the last page again
        def answer(self, path, params, headers):
            params = {**params, "page": "1"}
            return super().answer(path, params, headers)

    repeating = Repeating()
    repeating.orders = list(JANUARY[3:])
    httpd = _serve(repeating)
    try:
        config = http_config(write_config, warehouse_url, repeating.url, pagination={"type": "page", "page_size": 10})
        [again] = ingest(config, start=datetime(2025, 1, 1))
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert (again["rows"], again["inserted"]) == (2, 2)
    assert len(repeating.requests) == 2
    assert set(loaded_orders(open_warehouse, config)) == {"1", "2", "3", "4", "5"}


def test_cursor_pagination_loads_every_order_with_a_token_from_an_airflow_connection(
        write_config, warehouse_url, shop_api, monkeypatch, open_warehouse):
    monkeypatch.delenv("SHOP_API_TOKEN", raising=False)
    monkeypatch.setenv("AIRFLOW_CONN_SHOP_API", json.dumps({"conn_type": "http", "password": TOKEN}))
    api = shop_api("cursor", cursor_page_size=2)
    api.orders = list(JANUARY)
    api.failures = {None: [429], "c2": [500]}
    config = http_config(write_config, warehouse_url, api.url, auth={"conn_id": "shop_api"},
                         pagination={"type": "cursor"})
    [result] = ingest(config)
    assert (result["rows"], result["inserted"]) == (5, 5)
    orders = loaded_orders(open_warehouse, config)
    assert set(orders) == {"1", "2", "3", "4", "5"}
    assert orders["2"][0] == "C2" and orders["4"][2] == Decimal("5.00")
    # The first page was throttled once, the one after cursor c2 failed once.
    assert api.page_requests() == [None, None, "c2", "c2", "c4"]
    assert all("page" not in r["params"] and "per_page" not in r["params"] for r in api.requests)
    assert all(r["headers"]["Authorization"] == f"Bearer {TOKEN}" for r in api.requests)


def test_a_second_run_asks_for_changes_since_the_watermark_and_applies_them(
        write_config, warehouse_url, shop_api, token_env, open_warehouse):
    now = datetime.now(UTC)
    api = shop_api("page")
    api.orders = [
        order("1", "C1", iso(now - timedelta(days=3)), 10, "paid", iso(now - timedelta(days=3))),
        order("2", "C2", iso(now - timedelta(days=2)), 20, "paid", iso(now - timedelta(days=2))),
        order("3", "C3", iso(now - timedelta(days=1)), 30, "paid", iso(now - timedelta(hours=5))),
    ]
    config = http_config(write_config, warehouse_url, api.url)
    [first] = ingest(config)
    assert first["inserted"] == 3
    wh = open_warehouse(config)
    watermark = wh.scalar("SELECT watermark FROM watermarks WHERE entity = 'orders'")
    assert watermark is not None and watermark >= now.replace(tzinfo=None)

    # The shop ships order 2 and takes a new order 4, both after the first run.
    later = datetime.now(UTC)
    api.orders[1] = order("2", "C2", iso(now - timedelta(days=2)), 20, "shipped", iso(later))
    api.orders.append(order("4", "C4", iso(later), 40, "paid", iso(later)))
    api.requests.clear()
    [second] = ingest(config)

    since = {r["params"].get("updated_since") for r in api.requests}
    # The watermark, in whole seconds (rounded down: the window only widens).
    assert since == {watermark.replace(tzinfo=UTC, microsecond=0).isoformat().replace("+00:00", "Z")}
    assert (second["rows"], second["inserted"], second["updated"]) == (2, 1, 1)
    statuses = dict(wh.rows("SELECT order_id, status FROM orders ORDER BY order_id"))
    assert statuses == {"1": "paid", "2": "shipped", "3": "paid", "4": "paid"}
    assert wh.scalar("SELECT watermark FROM watermarks WHERE entity = 'orders'") > watermark


def test_an_explicit_window_is_sent_to_the_api_and_only_its_orders_load(
        write_config, warehouse_url, shop_api, token_env, open_warehouse):
    api = shop_api("page")
    api.orders = list(JANUARY)
    config = http_config(write_config, warehouse_url, api.url, updated_until_param="updated_until",
                         params={"shop": "main"})
    moscow = ZoneInfo("Europe/Moscow")
    # Aware bounds are converted to UTC: 03:00 in Moscow is midnight UTC.
    [result] = ingest(config, start=datetime(2025, 1, 7, 3, 0, tzinfo=moscow), end=datetime(2025, 1, 11, 10, 0))
    assert result["inserted"] == 2
    assert set(loaded_orders(open_warehouse, config)) == {"2", "3"}
    first = api.requests[0]["params"]
    assert first["updated_since"] == "2025-01-07T00:00:00Z"
    assert first["updated_until"] == "2025-01-11T10:00:00Z"
    assert first["shop"] == "main"
    wh = open_warehouse(config)
    assert wh.scalar("SELECT watermark FROM watermarks WHERE entity = 'orders'") == datetime(2025, 1, 11, 10, 0)


def test_a_rejected_token_fails_naming_the_url_and_status_but_not_the_token(
        write_config, warehouse_url, shop_api, monkeypatch, open_warehouse):
    monkeypatch.setenv("SHOP_API_TOKEN", "tok-wrong-but-still-secret")
    api = shop_api("page")
    api.orders = list(JANUARY)
    config = http_config(write_config, warehouse_url, api.url)
    with pytest.raises(SourceError) as failure:
        ingest(config)
    message = str(failure.value)
    assert not isinstance(failure.value, SourceUnavailable)  # a wrong token is not worth retrying
    assert api.url in message and "401" in message
    assert "tok-wrong-but-still-secret" not in message
    assert len(api.requests) == 1  # a 401 is not retried
    wh = open_warehouse(config)
    run = wh.rows("SELECT status, message FROM load_runs")[0]
    assert run.status == "failed" and "401" in run.message
    assert "tok-wrong-but-still-secret" not in run.message
    assert wh.scalar("SELECT count(*) FROM orders") == 0


def test_records_path_that_is_not_a_list_names_the_page(
        write_config, warehouse_url, shop_api, token_env, open_warehouse):
    api = shop_api("page")
    api.orders = list(JANUARY)
    api.broken_pages = {2}
    config = http_config(write_config, warehouse_url, api.url)
    with pytest.raises(SourceError) as failure:
        ingest(config)
    message = str(failure.value)
    assert f"{api.url} page 2" in message
    assert "'data'" in message and "dict" in message
    # Nothing of the failed run was loaded, and no watermark was set.
    wh = open_warehouse(config)
    assert wh.scalar("SELECT count(*) FROM orders") == 0
    assert wh.scalar("SELECT count(*) FROM watermarks") == 0

    config = http_config(write_config, warehouse_url, api.url, records_path="meta")
    with pytest.raises(SourceError, match=r"page 1: expected a list of records at 'meta'"):
        ingest(config)


def test_a_persistently_unavailable_api_raises_source_unavailable(
        write_config, warehouse_url, shop_api, token_env, open_warehouse):
    api = shop_api("page")
    api.orders = list(JANUARY)
    api.always = 503
    config = http_config(write_config, warehouse_url, api.url, max_retries=2)
    began = time.monotonic()
    with pytest.raises(SourceUnavailable) as failure:
        ingest(config)
    assert time.monotonic() - began < 3.0
    assert api.url in str(failure.value) and "503" in str(failure.value)
    assert api.page_requests() == ["1", "1", "1"]  # the first try and max_retries=2 retries
    wh = open_warehouse(config)
    assert wh.scalar("SELECT status FROM load_runs") == "failed"
    assert wh.scalar("SELECT count(*) FROM watermarks") == 0
