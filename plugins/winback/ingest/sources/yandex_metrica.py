"""Yandex Metrica's Logs API: site visits as canonical events.

The flow, per window of whole days (at most a year per log request, longer windows are
split), as documented at https://yandex.ru/dev/metrika/en/logs/practice/quick-start:
evaluate (GET .../logrequests/evaluate; too much at once is split by the
max_possible_day_quantity it answers), create (POST .../logrequests), poll
(GET .../logrequest/{id}) until `processed`, download every part
(GET .../logrequest/{id}/part/{n}/download, TSV with a header of the field names),
clean (POST .../logrequest/{id}/clean; a request that never got processed is
cancelled instead) so the counter's 10 GB quota of prepared logs frees up.

Metrica works in days of the counter's time zone (the source's `timezone`) and has no
data for today: the window read ends at the last midnight. Rows of a part are shaped in
DuckDB, vectorized: a page-view hit is one `pageview` event, and every product of the
e-commerce arrays (ym:pv:productID, ym:pv:productEventType, ... parallel arrays,
written as ['a','b'] in the TSV) is an event of its own, keyed `<watchID>:<position>`.
Fields: https://yandex.ru/dev/metrika/en/logs/fields/hits and .../fields/visits.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as midnight_time
from zoneinfo import ZoneInfo

import pyarrow as pa
import pyarrow.csv as pacsv

from winback.clock import utcnow
from winback.config import Config
from winback.credentials import SecretError, env_value, token_from_connection
from winback.httpclient import HttpClient, HttpError
from winback.ingest.canonical import Mapping, MappingError, engine, ident, literal
from winback.ingest.settings import YandexMetricaSource
from winback.ingest.sources import (
    Batch,
    Extractor,
    Origin,
    RejectedLine,
    SourceError,
    SourceUnavailable,
    Window,
)

log = logging.getLogger(__name__)

BLOCK_BYTES = 16 << 20  # TSV read block: the longest hit must fit in one
# Columns the extractor derives beside Metrica's own fields (the default mapping's names).
DERIVED = ("event_key", "event_kind", "product_id", "product_category", "product_value", "event_time",
           "customer_param")


@dataclass(frozen=True)
class Layout:
    """Where a Logs API source keeps what the events need."""

    key: str  # one id per record; product rows add ":<position>"
    time: str  # in the counter's time zone
    page_view: str | None  # 1 on a page-view hit; None: every record is one page view
    products: dict[str, str]  # id, category, price, quantity, kind[, time] -> parallel arrays
    param_keys: tuple[str, str]  # first and second level keys of the parsed parameters


LAYOUTS = {
    "hits": Layout(
        key="ym:pv:watchID", time="ym:pv:dateTime", page_view="ym:pv:isPageView",
        products={"id": "ym:pv:productID", "category": "ym:pv:productCategory", "price": "ym:pv:productPrice",
                  "quantity": "ym:pv:productQuantity", "kind": "ym:pv:productEventType"},
        param_keys=("ym:pv:parsedParamsKey1", "ym:pv:parsedParamsKey2"),
    ),
    # A visit is one page view (its landing page) plus the e-commerce actions in it,
    # each at its own time.
    "visits": Layout(
        key="ym:s:visitID", time="ym:s:dateTime", page_view=None,
        products={"id": "ym:s:productID", "category": "ym:s:productCategory", "price": "ym:s:productPrice",
                  "quantity": "ym:s:productQuantity", "kind": "ym:s:productEventType",
                  "time": "ym:s:productEventTime"},
        param_keys=("ym:s:parsedParamsKey1", "ym:s:parsedParamsKey2"),
    ),
}


def local_midnight(day: date, zone: ZoneInfo) -> datetime:
    """The start of `day` in `zone`, as naive UTC."""
    return datetime.combine(day, midnight_time(), zone).astimezone(UTC).replace(tzinfo=None)


def local_day(moment: datetime, zone: ZoneInfo) -> datetime:
    return moment.replace(tzinfo=UTC).astimezone(zone)


def _unescaped(column: str) -> str:
    """A TSV field as text: Metrica's TSV writes a tab, line break and backslash as
    \\t, \\n and \\\\ (ClickHouse's TabSeparated escaping)."""
    name = ident(column)
    return (f"CASE WHEN strpos({name}, '\\') = 0 THEN {name} ELSE replace(replace(replace(replace("
            f"{name}, '\\\\', chr(1)), '\\t', chr(9)), '\\n', chr(10)), chr(1), '\\') END")


def shape_sql(layout: Layout, fields: list[str], source: YandexMetricaSource, relation: str) -> str:
    """SQL turning a part's records (relation of text columns named as the fields) into
    event rows: Metrica's scalar fields, plus the derived columns of DERIVED."""
    arrays = {role: f"TRY_CAST({ident(name)} AS VARCHAR[])" for role, name in layout.products.items()}
    scalars = [f for f in fields if f not in layout.products.values()]
    keys1, keys2 = (f"TRY_CAST({ident(k)} AS VARCHAR[])" for k in layout.param_keys)
    if source.customer_param:
        position = f"list_position({keys1}, {literal(source.customer_param)})"
        customer = f"CASE WHEN {position} > 0 THEN {keys2}[{position}] END"
    else:
        customer = "CAST(NULL AS VARCHAR)"
    passed = ", ".join(f"{_unescaped(f)} AS {ident(f)}" for f in scalars)
    carried = ", ".join(ident(f) for f in fields if f in layout.products.values())
    src = (f"SELECT {passed}{', ' + carried if carried else ''}, "
           + ", ".join(f"{expr} AS _{role}" for role, expr in arrays.items())
           + f", {customer} AS customer_param FROM {relation}")
    helpers = ", ".join(f"_{role}" for role in arrays)
    key, moment = ident(layout.key), ident(layout.time)
    null = "CAST(NULL AS VARCHAR)"
    pages_where = f"WHERE {ident(layout.page_view)} = '1'" if layout.page_view else ""
    pages = (f"SELECT * EXCLUDE ({helpers}), {key} AS event_key, 'pageview' AS event_kind, {null} AS product_id, "
             f"{null} AS product_category, {null} AS product_value, {moment} AS event_time FROM src {pages_where}")
    price, quantity = "TRY_CAST(_price[_n] AS DOUBLE)", "TRY_CAST(_quantity[_n] AS DOUBLE)"
    # Price times quantity (none or 0: one); a price that is no number goes on as text,
    # so the value rule names it instead of the value vanishing.
    value = (f"CASE WHEN {price} IS NULL THEN _price[_n] "
             f"ELSE CAST(round({price} * coalesce(nullif({quantity}, 0), 1), 2) AS VARCHAR) END")
    item_time = f"coalesce(_time[_n], {moment})" if "time" in arrays else moment
    skipped = ", ".join(literal(k) for k in source.skip_product_events) or "NULL"
    items = (f"SELECT * EXCLUDE ({helpers}, _n), {key} || ':' || _n AS event_key, _kind[_n] AS event_kind, "
             f"_id[_n] AS product_id, _category[_n] AS product_category, {value} AS product_value, "
             f"{item_time} AS event_time "
             f"FROM (SELECT *, UNNEST(range(1, len(_id) + 1)) AS _n FROM src WHERE len(_id) > 0) "
             f"WHERE _kind[_n] IS NULL OR _kind[_n] NOT IN ({skipped})")
    # Product arrays that do not read as arrays: one row whose kind says so, which the
    # event_type rule quarantines (with the record) instead of the products vanishing.
    raw_ids = ident(layout.products["id"])
    unreadable = (f"SELECT * EXCLUDE ({helpers}), {key} || ':products' AS event_key, "
                  f"'unreadable product arrays' AS event_kind, {null} AS product_id, {null} AS product_category, "
                  f"{null} AS product_value, {moment} AS event_time "
                  f"FROM src WHERE _id IS NULL AND coalesce({raw_ids}, '') NOT IN ('', '[]')")
    return (f"WITH src AS ({src}) {pages} UNION ALL BY NAME {items} UNION ALL BY NAME {unreadable}")


class YandexMetricaExtractor(Extractor):
    kind = "yandex_metrica"
    source: YandexMetricaSource

    def __init__(self, config: Config, entity: str):
        super().__init__(config, entity)
        if self.entity.name != "events":  # the configuration refuses it already
            raise SourceError(f"sources.{entity}: kind yandex_metrica feeds events only")
        self.layout = LAYOUTS[self.source.source]
        self.zone = ZoneInfo(config.source_timezone(entity))
        self.counter = f"Metrica counter {self.source.counter_id}"
        self.requests_made: list[dict] = []  # date1, date2, request id, parts: what the run asked for

    # -- what to request -------------------------------------------------------------------
    @property
    def fields(self) -> list[str]:
        """The fields to request: the layout's, those the mapping names, the user's."""
        layout = self.layout
        prefix = "ym:pv:" if self.source.source == "hits" else "ym:s:"
        wanted = [layout.key, layout.time, *([layout.page_view] if layout.page_view else []),
                  *layout.products.values()]
        if self.source.customer_param:
            wanted.extend(layout.param_keys)
        wanted += [c for c in [*self.source.columns.values(), *self.source.where] if c.startswith(prefix)]
        wanted += self.source.fields
        return list(dict.fromkeys(wanted))

    def readable(self, window: Window) -> Window:
        """Whole days of the counter's zone, none of today (Metrica has no data for it)."""
        start = window.start or local_midnight(self.config.ingest.start_date, self.zone)
        end = window.end or utcnow()
        first = local_day(start, self.zone).date()
        end_local = local_day(end, self.zone)
        after_last = end_local.date() + timedelta(days=0 if end_local.time() == midnight_time() else 1)
        today = local_day(utcnow(), self.zone).date()
        after_last = max(min(after_last, today), first)
        return Window(local_midnight(first, self.zone), local_midnight(after_last, self.zone))

    def origins(self, window: Window, loaded: dict[str, dict]) -> list[Origin]:
        window = self.readable(window)
        first = local_day(window.start, self.zone).date()
        after_last = local_day(window.end, self.zone).date()
        step = self.source.max_days_per_request
        origins = []
        day = first
        while day < after_last:
            last = min(day + timedelta(days=step - 1), after_last - timedelta(days=1))
            origins.append(Origin(f"metrica:{self.source.counter_id}:{self.source.source}:{day}..{last}",
                                  {"date1": day.isoformat(), "date2": last.isoformat()}))
            day = last + timedelta(days=1)
        return origins

    # -- the API ------------------------------------------------------------------------------
    def _client(self) -> HttpClient:
        auth = self.source.auth
        try:
            token = token_from_connection(auth.conn_id) if auth.conn_id else env_value(auth.token_env)
        except SecretError as exc:
            raise SourceError(f"{self.counter}: no OAuth token: {exc}") from None
        return HttpClient(
            timeout=self.source.timeout,
            max_retries=self.source.max_retries,
            backoff_initial=self.source.retry_backoff,
            headers={auth.header: f"{auth.scheme} {token}" if auth.scheme else token},
        )

    def _url(self, path: str) -> str:
        return f"{self.source.api_url}/management/v1/counter/{self.source.counter_id}/{path}"

    def _call(self, client: HttpClient, method: str, path: str, step: str, **kwargs):
        try:
            return client.request(method, self._url(path), **kwargs)
        except HttpError as exc:
            transient = exc.status is None or exc.status == 429 or exc.status >= 500
            said = _api_message(exc.body)
            error = SourceUnavailable if transient else SourceError
            raise error(f"{self.counter}: {step}: {exc}{': ' + said if said else ''}") from None

    def _json(self, response, step: str) -> dict:
        try:
            body = response.json()
        except ValueError:
            raise SourceError(f"{self.counter}: {step}: the answer is not JSON") from None
        if not isinstance(body, dict):
            raise SourceError(f"{self.counter}: {step}: unexpected answer")
        return body

    def _ranges(self, client: HttpClient, first: date, last: date) -> list[tuple[date, date]]:
        """[first, last] in as many requests as Metrica says it can prepare."""
        params = self._params(first, last)
        body = self._json(self._call(client, "GET", "logrequests/evaluate", f"evaluate {first}..{last}",
                                     params=params), "evaluate")
        verdict = body.get("log_request_evaluation") or {}
        if verdict.get("possible", True):
            return [(first, last)]
        days = int(verdict.get("max_possible_day_quantity") or 0)
        if days < 1:
            raise SourceUnavailable(
                f"{self.counter}: evaluate {first}..{last}: Metrica can prepare no log now (its quota of "
                f"prepared logs is full?); clean old log requests or retry later")
        ranges, day = [], first
        while day <= last:
            end = min(day + timedelta(days=days - 1), last)
            ranges.append((day, end))
            day = end + timedelta(days=1)
        log.info("%s: %s..%s is too much for one log request; %d requests of up to %d days",
                 self.counter, first, last, len(ranges), days)
        return ranges

    def _params(self, first: date, last: date) -> dict[str, str]:
        params = {"date1": first.isoformat(), "date2": last.isoformat(), "fields": ",".join(self.fields),
                  "source": self.source.source}
        if self.source.attribution:
            params["attribution"] = self.source.attribution
        return params

    def _create(self, client: HttpClient, first: date, last: date) -> int:
        step = f"create the log request for {first}..{last}"
        body = self._json(self._call(client, "POST", "logrequests", step, params=self._params(first, last)), step)
        request = body.get("log_request") or {}
        if "request_id" not in request:
            raise SourceError(f"{self.counter}: {step}: the answer has no log_request.request_id")
        return int(request["request_id"])

    def _processed(self, client: HttpClient, request_id: int) -> list[int]:
        """Poll until the request is processed; its part numbers."""
        step = f"log request {request_id}"
        waited = 0.0
        while True:
            body = self._json(self._call(client, "GET", f"logrequest/{request_id}", step), step)
            request = body.get("log_request") or {}
            status = request.get("status")
            if status == "processed":
                return sorted(int(p["part_number"]) for p in request.get("parts") or [])
            if status not in ("created", "awaiting_retry"):
                raise SourceError(f"{self.counter}: {step} is {status!r}, not processed; it cannot be "
                                  f"downloaded (a new run creates a new one)")
            if waited >= self.source.max_wait.total_seconds():
                raise SourceUnavailable(
                    f"{self.counter}: {step} not processed after {self.source.max_wait} (max_wait); "
                    f"Metrica's queue is long, retry later")
            time.sleep(self.source.poll_interval)
            waited += self.source.poll_interval

    def _release(self, client: HttpClient, request_id: int, processed: bool) -> None:
        """Clean a processed request (its prepared logs count against the quota), cancel
        one still waiting; a failure here is logged, the data is read already."""
        action = "clean" if processed else "cancel"
        try:
            self._call(client, "POST", f"logrequest/{request_id}/{action}", f"{action} log request {request_id}")
        except SourceError as exc:
            log.warning("%s", exc)

    def _part(self, client: HttpClient, request_id: int, part: int, name: str) -> Iterator[pa.RecordBatch]:
        """A part's records as text columns, streamed block by block."""
        step = f"log request {request_id} part {part}"
        response = self._call(client, "GET", f"logrequest/{request_id}/part/{part}/download", step, stream=True)
        response.raw.decode_content = True
        fields = self.fields

        def on_invalid(row) -> str:
            self.rejected.append(RejectedLine(name, row.number, row.text or "", f"expected {row.expected_columns} "
                                              f"fields, got {row.actual_columns}"))
            return "skip"

        try:
            reader = pacsv.open_csv(
                response.raw,
                pacsv.ReadOptions(block_size=BLOCK_BYTES, encoding="utf-8"),
                pacsv.ParseOptions(delimiter="\t", quote_char=False, escape_char=False,
                                   newlines_in_values=False, invalid_row_handler=on_invalid),
                pacsv.ConvertOptions(column_types={f: pa.string() for f in fields}, strings_can_be_null=False),
            )
            missing = [f for f in fields if f not in reader.schema.names]
            if missing:
                raise SourceError(f"{self.counter}: {step}: the TSV lacks the requested field "
                                  f"{', '.join(missing)}")
            for batch in reader:
                yield batch.select(fields)
        except pa.ArrowInvalid as exc:
            if "Empty CSV file" in str(exc):
                return  # a part without even a header: nothing in it
            raise SourceError(f"{self.counter}: {step}: not a TSV of the requested fields: "
                              f"{str(exc).splitlines()[0]}") from None
        except OSError as exc:
            raise SourceUnavailable(f"{self.counter}: {step}: the download broke off ({type(exc).__name__})") from None
        finally:
            response.close()

    # -- reading -------------------------------------------------------------------------------
    def _mapping(self, name: str) -> Mapping:
        try:
            return Mapping.resolve(self.entity, self.source, [*self.fields, *DERIVED], name)
        except MappingError as exc:
            raise SourceError(str(exc)) from None

    def _events(self, records: list[pa.RecordBatch], wanted: list[str]) -> pa.Table:
        table = pa.Table.from_batches(records)
        con = engine()
        con.register("metrica_records", table)
        try:
            sql = shape_sql(self.layout, self.fields, self.source, "metrica_records")
            shaped = con.sql(f"SELECT {', '.join(ident(c) for c in wanted)} FROM ({sql})").to_arrow_table()
        finally:
            con.unregister("metrica_records")
        return shaped

    def read(self, origin: Origin, window: Window) -> Iterator[Batch]:
        mapping = self._mapping(origin.name)
        wanted = mapping.read_columns
        first, last = date.fromisoformat(origin.fingerprint["date1"]), date.fromisoformat(origin.fingerprint["date2"])
        client = self._client()
        rows = 0
        try:
            for date1, date2 in self._ranges(client, first, last):
                request_id = self._create(client, date1, date2)
                processed = False
                try:
                    parts = self._processed(client, request_id)
                    processed = True
                    self.requests_made.append({"date1": date1, "date2": date2, "request_id": request_id,
                                               "parts": parts})
                    for part in parts:
                        name = f"{origin.name} request {request_id} part {part}"
                        buffered: list[pa.RecordBatch] = []
                        count = 0
                        for records in self._part(client, request_id, part, name):
                            buffered.append(records)
                            count += records.num_rows
                            if count >= self.chunk_rows:
                                events = self._events(buffered, wanted)
                                yield Batch(events, name, rows + 1, mapping)
                                rows += events.num_rows
                                buffered, count = [], 0
                        if buffered:
                            events = self._events(buffered, wanted)
                            yield Batch(events, name, rows + 1, mapping)
                            rows += events.num_rows
                finally:
                    self._release(client, request_id, processed)
        finally:
            client.close()
        log.info("%s: read %d event rows for %s", self.counter, rows, origin.name)


def _api_message(body: str | None) -> str:
    """Metrica's own words from an error answer ({"message": ...}), for the error."""
    if not body:
        return ""
    try:
        message = json.loads(body).get("message")
    except (ValueError, AttributeError):
        return ""
    return str(message)[:300] if message else ""
