"""Ingest site events from Yandex Metrica's Logs API, end to end through extract ->
validate -> load, on DuckDB and on PostgreSQL, against the Logs API emulator (which
enforces the flow: a request is downloadable only once processed, comes in parts, is
cleaned). The clock is controlled: polling and throttling never really wait."""

from __future__ import annotations

import itertools
import json
from datetime import date, datetime, timedelta
from decimal import Decimal

import pytest
from winback import httpclient
from winback.config import ConfigError
from winback.emulators.yandex_metrica import YandexMetricaEmulator, tsv_value
from winback.ingest.pipeline import ingest
from winback.ingest.sources import SourceError, SourceUnavailable
from winback.ingest.sources import yandex_metrica as metrica_source

from tests.sync_support import Clock

TOKEN = "y0_metrica-oauth-very-secret"
COUNTER = 44147844


def hit(watch: int, at: str, *, client: int = 555, pageview: int = 1, products=(), user: str | None = None,
        visit: int = 9001, utm: str = "") -> dict:
    """A hit as Metrica exports it; products are (id, category, price, quantity, action)."""
    record = {"ym:pv:watchID": watch, "ym:pv:dateTime": at, "ym:pv:clientID": client, "ym:pv:visitID": visit,
              "ym:pv:isPageView": pageview, "ym:pv:UTMSource": utm, "ym:pv:UTMMedium": "", "ym:pv:UTMCampaign": "",
              "ym:pv:parsedParamsKey1": ["UserID"] if user else [], "ym:pv:parsedParamsKey2": [user] if user else [],
              "ym:pv:productID": [p[0] for p in products], "ym:pv:productCategory": [p[1] for p in products],
              "ym:pv:productPrice": [p[2] for p in products], "ym:pv:productQuantity": [p[3] for p in products],
              "ym:pv:productEventType": [p[4] for p in products]}
    return record


MARCH = [
    hit(101, "2025-03-10 12:00:00", user="C42", utm="ya\\direct\tpromo"),  # a page view of a known customer
    hit(102, "2025-03-10 12:01:00", products=[("SKU-1", "Mugs", 400, 0, "detail"),  # a product page
                                              ("SKU-2", "Mugs", 250, 0, "detail")]),
    hit(103, "2025-03-10 12:02:00", pageview=0, products=[("SKU-1", "Mugs", 400, 2, "add")]),
    hit(104, "2025-03-11 09:00:00", pageview=0, products=[("SKU-2", "Mugs", 250, 1, "remove")]),
    hit(105, "2025-03-11 09:05:00", pageview=0, user="C42",
        products=[("SKU-1", "Mugs", 400, 2, "purchase"), ("SKU-3", "Plates", 100, 1, "purchase")]),
    hit(106, "2025-03-12 18:00:00", pageview=0, products=[("SKU-9", "Cups", 90, 0, "view_item_list")]),
    hit(107, "2025-03-12 18:01:00", pageview=0, client=777, products=[("SKU-4", "Cups", 90, 1, "wishlist")]),
    hit(108, "2025-03-12 18:02:00", pageview=0, client=777),  # a goal or a click: no canonical event
    {**hit(109, "2025-03-12 18:03:00", pageview=0, client=777), "ym:pv:productID": "['SKU-5',"},  # broken array
    hit(110, "2025-03-14 10:00:00"),  # after the window
]


@pytest.fixture
def clock(monkeypatch):
    """One controlled clock for polling (the source) and retries (the HTTP client)."""
    clock = Clock()
    monkeypatch.setattr(httpclient, "time", clock)
    monkeypatch.setattr(metrica_source, "time", clock)
    return clock


@pytest.fixture
def metrica():
    """metrica(**options) -> a running Logs API emulator, stopped after the test."""
    started: list[YandexMetricaEmulator] = []

    def start(**options) -> YandexMetricaEmulator:
        options.setdefault("today", date(2025, 3, 20))
        emulator = YandexMetricaEmulator(token=TOKEN, counter_id=COUNTER, **options)
        started.append(emulator.start())
        return emulator

    yield start
    for emulator in started:
        emulator.stop()


@pytest.fixture
def token_env(monkeypatch):
    monkeypatch.setenv("METRICA_TOKEN", TOKEN)


def metrica_config(write_config, warehouse_url, emulator, top: dict | None = None, **extra):
    source = {"kind": "yandex_metrica", "counter_id": COUNTER, "auth": {"token_env": "METRICA_TOKEN"},
              "api_url": emulator.base_url, "poll_interval": 5, "retry_backoff": 0.01, "timeout": 5, **extra}
    orders = {"kind": "file", "path": "drop/orders_*.csv"}
    return write_config({"orders": orders, "events": source}, warehouse=warehouse_url, timezone="Europe/Moscow",
                        **(top or {}))


def loaded_events(open_warehouse, config) -> dict[str, tuple]:
    rows = open_warehouse(config).rows(
        "SELECT event_id, visitor_id, customer_id, session_id, event_type, product_id, category, value, "
        "occurred_at, utm_source FROM events ORDER BY event_id")
    return {r[0]: tuple(r[1:]) for r in rows}


def test_hits_become_page_views_and_one_event_per_product(
        write_config, warehouse_url, metrica, token_env, clock, open_warehouse):
    emulator = metrica(hits=list(MARCH), polls_to_process=3, part_rows=3, throttle={"create": 1, "download": 1})
    config = metrica_config(write_config, warehouse_url, emulator, max_bad_share=0.5)
    [result] = ingest(config, ["events"], start=datetime(2025, 3, 9, 21), end=datetime(2025, 3, 12, 21))

    events = loaded_events(open_warehouse, config)
    # Moscow wall-clock times land in UTC; a page view keeps the hit's id, a product its position.
    assert events == {
        "101": ("555", "C42", "9001", "page_view", None, None, None, datetime(2025, 3, 10, 9, 0),
                "ya\\direct\tpromo"),  # TSV escapes undone
        "102": ("555", None, "9001", "page_view", None, None, None, datetime(2025, 3, 10, 9, 1), None),
        "102:1": ("555", None, "9001", "product_view", "SKU-1", "Mugs", Decimal("400.00"),
                  datetime(2025, 3, 10, 9, 1), None),
        "102:2": ("555", None, "9001", "product_view", "SKU-2", "Mugs", Decimal("250.00"),
                  datetime(2025, 3, 10, 9, 1), None),
        "103:1": ("555", None, "9001", "add_to_cart", "SKU-1", "Mugs", Decimal("800.00"),
                  datetime(2025, 3, 10, 9, 2), None),
        "104:1": ("555", None, "9001", "remove_from_cart", "SKU-2", "Mugs", Decimal("250.00"),
                  datetime(2025, 3, 11, 6, 0), None),
        "105:1": ("555", "C42", "9001", "purchase", "SKU-1", "Mugs", Decimal("800.00"),
                  datetime(2025, 3, 11, 6, 5), None),
        "105:2": ("555", "C42", "9001", "purchase", "SKU-3", "Plates", Decimal("100.00"),
                  datetime(2025, 3, 11, 6, 5), None),
    }
    # An action Winback does not know and products that are no array are kept, in quarantine.
    wh = open_warehouse(config)
    quarantined = wh.rows("SELECT record_key, rules, raw_record FROM quarantine WHERE entity = 'events' "
                          "ORDER BY record_key")
    assert [(r.record_key, r.rules) for r in quarantined] == [
        ("107:1", "event_type_allowed"), ("109:products", "event_type_allowed")]
    assert json.loads(quarantined[0].raw_record)["event_kind"] == "wishlist"  # the record as read
    assert result["rows_quarantined"] == 2

    # The flow: one request for the three days; polled until processed (two waits of
    # poll_interval); three parts of three records; a 429 on create and on the first
    # download retried after its Retry-After; cleaned at the end.
    [request] = emulator.requests.values()
    assert (request.date1, request.date2, request.status) == (date(2025, 3, 10), date(2025, 3, 12), "cleaned_by_user")
    assert emulator.steps() == [
        ("evaluate", 200), ("create", 429), ("create", 200), ("status", 200), ("status", 200), ("status", 200),
        ("download", 429), ("download", 200), ("download", 200), ("download", 200), ("clean", 200)]
    assert clock.slept.count(5) == 2 and clock.slept.count(1.0) == 2
    # The watermark is the end of the last whole day read (Moscow midnight).
    assert wh.scalar("SELECT watermark FROM watermarks WHERE entity = 'events'") == datetime(2025, 3, 12, 21, 0)


def test_a_window_longer_than_a_year_is_read_in_requests_of_at_most_a_year(
        write_config, warehouse_url, metrica, token_env, clock, open_warehouse):
    records = [hit(1, "2023-01-01 00:30:00"), hit(2, "2024-01-01 12:00:00"), hit(3, "2024-12-31 23:59:00"),
               hit(4, "2025-03-01 08:00:00")]
    emulator = metrica(hits=records, polls_to_process=1)
    config = metrica_config(write_config, warehouse_url, emulator)
    [result] = ingest(config, ["events"], start=datetime(2022, 12, 31, 21), end=datetime(2025, 3, 1, 21))
    assert set(loaded_events(open_warehouse, config)) == {"1", "2", "3", "4"}
    periods = sorted((r.date1, r.date2) for r in emulator.requests.values())
    assert periods[0][0] == date(2023, 1, 1) and periods[-1][1] == date(2025, 3, 1)
    assert all((last - first).days + 1 <= 365 for first, last in periods)
    assert all(nxt[0] == prev[1] + timedelta(days=1) for prev, nxt in itertools.pairwise(periods))
    assert len(periods) == 3 and result["origins"] == 3
    assert {r.status for r in emulator.requests.values()} == {"cleaned_by_user"}


def test_too_much_for_one_request_is_split_as_evaluate_says(
        write_config, warehouse_url, metrica, token_env, clock, open_warehouse):
    emulator = metrica(hits=list(MARCH), polls_to_process=1, max_possible_days=2)
    config = metrica_config(write_config, warehouse_url, emulator, max_bad_share=0.5)
    ingest(config, ["events"], start=datetime(2025, 3, 9, 21), end=datetime(2025, 3, 12, 21))
    assert sorted((r.date1, r.date2) for r in emulator.requests.values()) == [
        (date(2025, 3, 10), date(2025, 3, 11)), (date(2025, 3, 12), date(2025, 3, 12))]
    assert {"101", "105:2"} <= set(loaded_events(open_warehouse, config))


@pytest.mark.parametrize("warehouse_url", ["duckdb"], indirect=True)
def test_no_data_for_today_and_the_next_run_goes_on_from_the_watermark(
        write_config, warehouse_url, metrica, token_env, clock, open_warehouse, monkeypatch):
    from winback.ingest import pipeline

    def now_is(moment: datetime) -> None:
        monkeypatch.setattr(pipeline, "utcnow", lambda: moment)
        monkeypatch.setattr(metrica_source, "utcnow", lambda: moment)

    emulator = metrica(hits=list(MARCH[:5]), polls_to_process=1)
    config = metrica_config(write_config, warehouse_url, emulator, top={"ingest": {"start_date": "2025-03-01"}})
    # 10:00 UTC on 11 March is 13:00 in Moscow: the 11th is today, not yet in Metrica.
    now_is(datetime(2025, 3, 11, 10, 0))
    emulator.today = date(2025, 3, 11)
    ingest(config, ["events"])
    assert [(r.date1, r.date2) for r in emulator.requests.values()] == [(date(2025, 3, 1), date(2025, 3, 10))]
    assert set(loaded_events(open_warehouse, config)) == {"101", "102", "102:1", "102:2", "103:1"}

    now_is(datetime(2025, 3, 12, 10, 0))
    emulator.today = date(2025, 3, 12)
    ingest(config, ["events"])
    # From the watermark (the 11th, Moscow) less the three days Metrica may still complete.
    assert [(r.date1, r.date2) for r in emulator.requests.values()][-1] == (date(2025, 3, 8), date(2025, 3, 11))
    assert {"104:1", "105:1", "105:2"} <= set(loaded_events(open_warehouse, config))


@pytest.mark.parametrize("warehouse_url", ["duckdb"], indirect=True)
def test_a_request_not_processed_in_time_is_cancelled_and_the_run_fails_to_retry(
        write_config, warehouse_url, metrica, token_env, clock, open_warehouse):
    emulator = metrica(hits=list(MARCH), polls_to_process=100)
    config = metrica_config(write_config, warehouse_url, emulator, max_wait="PT30S")
    with pytest.raises(SourceUnavailable, match=r"not processed after 0:00:30 \(max_wait\)"):
        ingest(config, ["events"], start=datetime(2025, 3, 9, 21), end=datetime(2025, 3, 12, 21))
    [request] = emulator.requests.values()
    assert request.status == "canceled"
    assert ("download", 200) not in emulator.steps()
    assert open_warehouse(config).scalar("SELECT count(*) FROM events") == 0


@pytest.mark.parametrize("warehouse_url", ["duckdb"], indirect=True)
def test_a_missing_or_wrong_token_is_a_clear_error(write_config, warehouse_url, metrica, clock, monkeypatch):
    emulator = metrica(hits=list(MARCH))
    config = metrica_config(write_config, warehouse_url, emulator)
    monkeypatch.delenv("METRICA_TOKEN", raising=False)
    with pytest.raises(SourceError, match=r"Metrica counter 44147844: no OAuth token: environment variable "
                                          r"METRICA_TOKEN is not set"):
        ingest(config, ["events"], start=datetime(2025, 3, 9, 21), end=datetime(2025, 3, 12, 21))
    assert emulator.log == []
    monkeypatch.setenv("METRICA_TOKEN", "another")
    with pytest.raises(SourceError, match=r"evaluate 2025-03-10..2025-03-12: .*HTTP 403: Invalid oauth_token") as error:
        ingest(config, ["events"], start=datetime(2025, 3, 9, 21), end=datetime(2025, 3, 12, 21))
    assert not isinstance(error.value, SourceUnavailable)
    assert TOKEN not in str(error.value) and "another" not in str(error.value)


@pytest.mark.parametrize("warehouse_url", ["duckdb"], indirect=True)
def test_visits_give_a_page_view_and_each_product_action_at_its_own_time_with_a_token_from_a_connection(
        write_config, warehouse_url, metrica, clock, open_warehouse, monkeypatch):
    monkeypatch.delenv("METRICA_TOKEN", raising=False)
    monkeypatch.setenv("AIRFLOW_CONN_YANDEX_METRICA", json.dumps({"conn_type": "http", "password": TOKEN}))
    visit = {"ym:s:visitID": 7001, "ym:s:dateTime": "2025-03-10 12:00:00", "ym:s:clientID": 555,
             "ym:s:automaticUTMSource": "email", "ym:s:automaticUTMMedium": "", "ym:s:automaticUTMCampaign": "",
             "ym:s:parsedParamsKey1": ["UserID"], "ym:s:parsedParamsKey2": ["C42"],
             "ym:s:productID": ["SKU-1", "SKU-1"], "ym:s:productCategory": ["Mugs", "Mugs"],
             "ym:s:productPrice": [400, 400], "ym:s:productQuantity": [1, 1],
             "ym:s:productEventType": ["add", "purchase"],
             "ym:s:productEventTime": ["2025-03-10 12:05:00", "2025-03-10 12:09:00"]}
    emulator = metrica(visits=[visit], polls_to_process=1)
    config = metrica_config(write_config, warehouse_url, emulator, source="visits",
                            auth={"conn_id": "yandex_metrica"})
    ingest(config, ["events"], start=datetime(2025, 3, 9, 21), end=datetime(2025, 3, 10, 21))
    events = loaded_events(open_warehouse, config)
    assert {k: (v[1], v[3], v[4], v[7], v[8]) for k, v in events.items()} == {
        "7001": ("C42", "page_view", None, datetime(2025, 3, 10, 9, 0), "email"),
        "7001:1": ("C42", "add_to_cart", "SKU-1", datetime(2025, 3, 10, 9, 5), "email"),
        "7001:2": ("C42", "purchase", "SKU-1", datetime(2025, 3, 10, 9, 9), "email"),
    }


def test_metrica_feeds_events_only_and_checks_its_settings(write_config):
    source = {"kind": "yandex_metrica", "counter_id": COUNTER, "auth": {"token_env": "METRICA_TOKEN"}}
    with pytest.raises(ConfigError, match="sources.orders.kind: yandex_metrica holds site visits only"):
        write_config({"orders": source})
    orders = {"kind": "file", "path": "drop/orders_*.csv"}
    with pytest.raises(ConfigError, match=r"fields of the hits source start with ym:pv:: ym:s:visitID"):
        write_config({"orders": orders, "events": {**source, "fields": ["ym:s:visitID"]}})
    # counter_id and auth alone are enough: the mapping and event kinds have defaults,
    # a user's own keys go over them, and the OAuth scheme is Metrica's.
    config = write_config({"orders": orders, "events": {**source, "columns": {"customer_id": "ym:pv:counterUserIDHash"},
                                                       "values": {"event_type": {"wishlist": "product_view"}}}})
    events = config.source("events")
    assert events.columns["visitor_id"] == "ym:pv:clientID"
    assert events.columns["customer_id"] == "ym:pv:counterUserIDHash"
    assert events.values["event_type"]["detail"] == "product_view"
    assert events.values["event_type"]["wishlist"] == "product_view"
    assert events.auth.scheme == "OAuth"


def test_the_emulator_writes_arrays_and_text_as_metricas_tsv():
    assert tsv_value(["a,b", "it's"]) == "['a,b','it\\'s']"
    assert tsv_value([400, 250]) == "[400,250]"
    assert tsv_value("tab\there") == "tab\\there"
    assert tsv_value(None) == ""


def test_the_emulator_enforces_the_flow(metrica):
    import requests

    emulator = metrica(hits=list(MARCH), polls_to_process=2, part_rows=4)
    url = f"{emulator.base_url}/management/v1/counter/{COUNTER}"
    auth = {"Authorization": f"OAuth {TOKEN}"}
    period = {"date1": "2025-03-10", "date2": "2025-03-12", "source": "hits",
              "fields": "ym:pv:watchID,ym:pv:dateTime,ym:pv:productID"}
    assert requests.post(f"{url}/logrequests", params=period, timeout=5).status_code == 401
    assert requests.post(f"{url}/logrequests", params={**period, "date2": "2025-03-20"}, headers=auth,
                         timeout=5).status_code == 400  # today has no data
    assert requests.post(f"{url}/logrequests", params={**period, "fields": "ym:pv:nothing"}, headers=auth,
                         timeout=5).status_code == 400
    created = requests.post(f"{url}/logrequests", params=period, headers=auth, timeout=5).json()["log_request"]
    assert created["status"] == "created"
    rid = created["request_id"]
    assert requests.get(f"{url}/logrequest/{rid}/part/0/download", headers=auth, timeout=5).status_code == 400
    assert requests.post(f"{url}/logrequest/{rid}/clean", headers=auth, timeout=5).status_code == 400
    assert requests.get(f"{url}/logrequest/{rid}", headers=auth, timeout=5).json()["log_request"]["status"] == "created"
    processed = requests.get(f"{url}/logrequest/{rid}", headers=auth, timeout=5).json()["log_request"]
    assert processed["status"] == "processed" and [p["part_number"] for p in processed["parts"]] == [0, 1, 2]
    first = requests.get(f"{url}/logrequest/{rid}/part/0/download", headers=auth, timeout=5).text.splitlines()
    assert first[0] == "ym:pv:watchID\tym:pv:dateTime\tym:pv:productID"
    assert first[2] == "102\t2025-03-10 12:01:00\t['SKU-1','SKU-2']" and len(first) == 5
    assert requests.post(f"{url}/logrequest/{rid}/clean", headers=auth, timeout=5).status_code == 200
    assert requests.get(f"{url}/logrequest/{rid}/part/0/download", headers=auth, timeout=5).status_code == 400


def test_the_preset_reads_the_logs_api_as_shipped(tmp_path, monkeypatch, metrica, token_env, clock, open_warehouse):
    """include/config/presets/yandex_metrica.yaml with only its counter and the API's
    address changed (the emulator's), as a new user would run it."""
    import yaml
    from conftest import REPO
    from winback.config import load_config

    emulator = metrica(hits=[h for h in MARCH if h["ym:pv:watchID"] not in (107, 109)])  # the good ones
    document = yaml.safe_load((REPO / "include/config/presets/yandex_metrica.yaml").read_text(encoding="utf-8"))
    document["sources"]["events"].update(counter_id=COUNTER, api_url=emulator.base_url, poll_interval=1)
    (tmp_path / "my-shop.yaml").write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    monkeypatch.setenv("WINBACK_HOME", str(tmp_path))
    config = load_config(tmp_path / "my-shop.yaml")
    [result] = ingest(config, ["events"], start=datetime(2025, 3, 9, 21), end=datetime(2025, 3, 12, 21))
    assert (result["inserted"], result["rows_quarantined"]) == (8, 0)
    types = [r[0] for r in open_warehouse(config).rows("SELECT event_type FROM events ORDER BY event_id")]
    assert types == ["page_view", "page_view", "product_view", "product_view", "add_to_cart", "remove_from_cart",
                     "purchase", "purchase"]
