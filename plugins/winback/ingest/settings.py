"""Settings of the ingest stage: the sources (file, ga4_export, sql, http, yandex_metrica)
with their column mappings, and the ingest and validation sections of the configuration."""

from __future__ import annotations

import re
from datetime import date, timedelta
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from winback.schema import iso_currencies
from winback.settings import Settings, check_timezone

# `values.<column>._other`: what becomes of a value the map does not name and that is
# not already canonical.
OTHER_VALUE = "_other"
OTHER_ACTIONS = ("drop", "quarantine")
WHITESPACE = "whitespace"  # delimiter: any run of spaces or tabs (CDNOW-style aligned text)


class RowTest(Settings):
    """Which of the shop's rows a source keeps, by one of its own columns (text compared
    after trimming). A null value is in no list: `in` drops it, `not_in` keeps it."""

    values: list[str] | None = Field(default=None, alias="in")
    not_in: list[str] | None = None

    model_config = ConfigDict(**Settings.model_config, populate_by_name=True)

    @model_validator(mode="after")
    def _one_test(self) -> RowTest:
        if (self.values is None) == (self.not_in is None):
            raise ValueError("give exactly one of in, not_in")
        return self


class SourceBase(Settings):
    """What every source kind shares: the column mapping and how to read values."""

    columns: dict[str, str] = Field(
        default_factory=dict,
        description="canonical column -> the shop's column (dotted path for JSON)",
    )
    timestamp_format: str | None = Field(
        default=None, description="strftime format of timestamps; ISO 8601 when omitted"
    )
    timezone: str | None = Field(
        default=None, description="zone of naive timestamps; defaults to the top-level timezone"
    )
    values: dict[str, dict[str, str]] = Field(
        default_factory=dict,
        description="per canonical column, the shop's value -> canonical value (e.g. statuses); "
                    "`_other`: drop, quarantine (the default) or a canonical value, for a value the map "
                    "does not name and that is not canonical already",
    )
    where: dict[str, list[str] | RowTest] = Field(
        default_factory=dict,
        description="the shop's column -> the values to keep (a list or `in:`), or `not_in:` the values "
                    "to leave out; rows left out are counted in load_runs.rows_filtered, never quarantined",
    )
    generate_keys: bool = Field(
        default=False,
        description="file sources without a key column: each record's key is made from its file's name "
                    "and line, so re-reading the same file gives the same keys",
    )
    max_bad_share: float | None = Field(default=None, ge=0, le=1)
    chunk_rows: int | None = Field(default=None, ge=1000)

    _check_tz = field_validator("timezone")(check_timezone)


class FileDrop(SourceBase):
    """Where files are dropped and how they are packed: shared by the file kinds."""

    path: str = Field(description="glob of the drop files, relative to the project home")
    compression: Literal["auto", "none", "gzip", "zstd", "bz2"] = Field(
        default="auto", description="auto: by the file name's ending (.gz, .zst, .bz2)")
    block_size_mb: int = Field(
        default=16, ge=1, le=1024,
        description="read block in MiB (CSV, JSON lines): the longest record must fit in one")


class FileSource(FileDrop):
    kind: Literal["file"]
    format: Literal["csv", "parquet", "jsonl"] = "csv"
    delimiter: str = Field(
        default=",", description="one character, or `whitespace`: any run of spaces or tabs separates "
                                 "columns and spaces at a line's ends are ignored (aligned text, no quoting)")
    quote: str = Field(default='"', min_length=1, max_length=1)
    encoding: str = "utf-8"
    header: bool = True
    column_names: list[str] | None = Field(
        default=None, description="names of the columns when the CSV has no header"
    )
    decimal: Literal[".", ","] = "."
    bad_lines: Literal["error", "quarantine"] = "error"

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        import codecs

        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown encoding {value!r} (e.g. utf-8, cp1251)") from None
        return value

    @field_validator("delimiter")
    @classmethod
    def _one_character_or_whitespace(cls, value: str) -> str:
        if len(value) != 1 and value != WHITESPACE:
            raise ValueError(f"one character, or {WHITESPACE!r} for columns aligned with spaces or tabs")
        return value

    @model_validator(mode="after")
    def _header_or_names(self) -> FileSource:
        if self.format == "csv" and not self.header and not self.column_names:
            raise ValueError("a CSV without header needs column_names")
        return self


# GA4 event names without a canonical type that GA4 itself sends: collected
# automatically, by enhanced measurement, or recommended for e-commerce. Skipped rather
# than quarantined (they are most of an export); any other unmapped name is quarantined.
GA4_SKIPPED_EVENTS = (
    "first_visit", "session_start", "user_engagement", "scroll", "click", "file_download",
    "form_start", "form_submit", "video_start", "video_progress", "video_complete",
    "first_open", "screen_view", "app_remove", "app_update", "os_update",
    "view_item_list", "select_item", "view_promotion", "select_promotion", "view_cart",
    "add_to_wishlist", "add_shipping_info", "add_payment_info", "refund",
)
GA4_ENTITIES = ("events", "orders", "order_items")


class Ga4ExportSource(FileDrop):
    """GA4's BigQuery export (tables events_YYYYMMDD) dropped as Parquet or JSON lines
    files; the mapping to canonical columns is preset (winback.ingest.sources.ga4)."""

    kind: Literal["ga4_export"]
    format: Literal["parquet", "jsonl"] = "parquet"
    skip_events: list[str] = Field(
        default_factory=lambda: list(GA4_SKIPPED_EVENTS),
        description="event names not loaded into events (e.g. add page_view to keep only e-commerce)")
    purchase_events: list[str] = Field(
        default_factory=lambda: ["purchase"], min_length=1,
        description="event names that are orders, for sources of orders and order_items")

    @model_validator(mode="after")
    def _times_are_the_exports(self) -> Ga4ExportSource:
        if self.timestamp_format:
            raise ValueError("timestamp_format: does not apply, GA4's times are microseconds since 1970 in UTC")
        return self


class SqlSource(SourceBase):
    kind: Literal["sql"]
    url: str | None = Field(default=None, description="SQLAlchemy URL without a password")
    url_env: str | None = Field(default=None, description="environment variable holding the URL")
    conn_id: str | None = Field(default=None, description="Airflow Connection holding the URL")
    table: str | None = None
    query: str | None = None
    incremental_column: str | None = Field(
        default=None,
        description="the shop's updated-at column; defaults to the one mapped to updated_at",
    )
    lookback: timedelta = Field(
        default=timedelta(0), description="re-read this much before the watermark (late commits)"
    )

    @model_validator(mode="after")
    def _one_location(self) -> SqlSource:
        given = [k for k in ("url", "url_env", "conn_id") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError("give exactly one of url, url_env, conn_id")
        if self.url and re.search(r"://[^/@]*:[^/@]*@", self.url):
            raise ValueError("url must not contain a password; use url_env or conn_id")
        if bool(self.table) == bool(self.query):
            raise ValueError("give exactly one of table, query")
        if self.table and not re.fullmatch(r"[A-Za-z_][\w$]*(\.[A-Za-z_][\w$]*)?", self.table):
            raise ValueError(f"table {self.table!r} is not a plain [schema.]table name")
        return self


class Pagination(Settings):
    type: Literal["page", "cursor", "none"] = "page"
    page_param: str = "page"
    start_page: int = 1
    page_size_param: str | None = "per_page"
    page_size: int = Field(default=500, ge=1)
    cursor_param: str = "cursor"
    next_cursor_path: str = Field(
        default="next_cursor", description="dotted path of the next cursor in the response"
    )
    max_pages: int = Field(default=100_000, ge=1, description="a runaway-API guard")


class HttpAuth(Settings):
    conn_id: str | None = Field(default=None, description="Airflow Connection: password is the token")
    token_env: str | None = Field(default=None, description="environment variable holding the token")
    header: str = "Authorization"
    scheme: str | None = "Bearer"

    @model_validator(mode="after")
    def _one_secret(self) -> HttpAuth:
        if bool(self.conn_id) == bool(self.token_env):
            raise ValueError("give exactly one of conn_id, token_env")
        return self


class HttpSource(SourceBase):
    kind: Literal["http"]
    url: str
    records_path: str | None = Field(
        default="data", description="dotted path of the record list in each page; null if the page is the list"
    )
    pagination: Pagination = Field(default_factory=Pagination)
    updated_since_param: str | None = "updated_since"
    updated_until_param: str | None = None
    params: dict[str, str] = Field(default_factory=dict)
    auth: HttpAuth | None = None
    timeout: float = Field(default=30.0, gt=0, description="seconds per request")
    max_retries: int = Field(default=5, ge=0, description="retries on 429, 5xx and connection errors")
    retry_backoff: float = Field(default=1.0, ge=0, description="first backoff in seconds, doubling")
    lookback: timedelta = timedelta(0)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"https?://", value):
            raise ValueError("url must start with http:// or https://")
        if re.search(r"://[^/@]*:[^/@]*@", value):
            raise ValueError("url must not contain credentials; use auth")
        return value


class MetricaAuth(HttpAuth):
    # Yandex's APIs take the token as `Authorization: OAuth <token>`
    # (https://yandex.ru/dev/metrika/en/intro/authorization).
    scheme: str | None = "OAuth"


# What each Logs API source yields, per canonical column: a field of Metrica's (its
# name as the API spells it) or one the extractor derives (product rows, the kind of
# event, the shop's customer id from the hit's parameters); see
# winback.ingest.sources.yandex_metrica. A user's `columns` override any of them.
METRICA_DEFAULT_COLUMNS: dict[str, dict[str, str]] = {
    "hits": {
        "event_id": "event_key",
        "visitor_id": "ym:pv:clientID",
        "customer_id": "customer_param",
        "session_id": "ym:pv:visitID",
        "event_type": "event_kind",
        "product_id": "product_id",
        "category": "product_category",
        "value": "product_value",
        "occurred_at": "event_time",
        "utm_source": "ym:pv:UTMSource",
        "utm_medium": "ym:pv:UTMMedium",
        "utm_campaign": "ym:pv:UTMCampaign",
    },
    "visits": {
        "event_id": "event_key",
        "visitor_id": "ym:s:clientID",
        "customer_id": "customer_param",
        "session_id": "ym:s:visitID",
        "event_type": "event_kind",
        "product_id": "product_id",
        "category": "product_category",
        "value": "product_value",
        "occurred_at": "event_time",
        "utm_source": "ym:s:automaticUTMSource",
        "utm_medium": "ym:s:automaticUTMMedium",
        "utm_campaign": "ym:s:automaticUTMCampaign",
    },
}
# Metrica's e-commerce action of a product (its productEventType) -> canonical event
# type; "pageview" is the extractor's own kind for a page view. A kind neither here nor
# skipped is kept as it is and quarantined by the event_type rule, not lost.
METRICA_EVENT_TYPES = {
    "pageview": "page_view",
    "detail": "product_view",
    "add": "add_to_cart",
    "remove": "remove_from_cart",
    "purchase": "purchase",
}


class YandexMetricaSource(SourceBase):
    """Yandex Metrica's Logs API: a log request per window of whole days, polled until
    processed, downloaded part by part (TSV), then cleaned. Feeds `events` only."""

    kind: Literal["yandex_metrica"]
    counter_id: int = Field(gt=0, description="the Metrica tag (counter) number")
    source: Literal["hits", "visits"] = Field(
        default="hits", description="hits: every page view and e-commerce action; visits: sessions")
    fields: list[str] = Field(
        default_factory=list,
        description="more Metrica fields to request; the ones the mapping needs are always requested")
    auth: MetricaAuth
    api_url: str = Field(default="https://api-metrika.yandex.net", description="overridable for a stand-in")
    customer_param: str | None = Field(
        default="UserID",
        description="key of the hit's (visit's) parameters holding the shop's own customer id; null: none")
    skip_product_events: list[str] = Field(
        default_factory=lambda: ["view_item_list", "click"],
        description="e-commerce actions that are no canonical event (list impressions, clicks) and are dropped")
    attribution: str | None = Field(default=None, description="attribution model of the log request")
    poll_interval: float = Field(default=10.0, gt=0, description="seconds between status checks")
    max_wait: timedelta = Field(
        default=timedelta(hours=3), description="how long a log request may take to be processed")
    max_days_per_request: int = Field(
        default=365, ge=1, le=366, description="days per log request; Metrica takes at most a year")
    timeout: float = Field(default=60.0, gt=0, description="seconds per HTTP request")
    max_retries: int = Field(default=5, ge=0, description="retries on 429, 5xx and connection errors")
    retry_backoff: float = Field(default=1.0, ge=0, description="first backoff in seconds, doubling")
    lookback: timedelta = Field(
        default=timedelta(days=3), description="re-read this much before the watermark: Metrica completes "
                                               "a day's data for up to three days")

    @field_validator("api_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"https?://", value):
            raise ValueError("api_url must start with http:// or https://")
        return value.rstrip("/")

    @model_validator(mode="before")
    @classmethod
    def _default_mapping(cls, data):
        """The Logs API's columns and event kinds by default, the user's mapping over them."""
        if not isinstance(data, dict):
            return data
        source = data.get("source", "hits")
        defaults = dict(METRICA_DEFAULT_COLUMNS.get(source, {}))
        if data.get("customer_param", "UserID") is None:
            defaults.pop("customer_id", None)
        values = dict(data.get("values") or {})
        values["event_type"] = {**METRICA_EVENT_TYPES, **(values.get("event_type") or {})}
        return {**data, "columns": {**defaults, **(data.get("columns") or {})}, "values": values}

    @model_validator(mode="after")
    def _fields_of_the_source(self) -> YandexMetricaSource:
        prefix = "ym:pv:" if self.source == "hits" else "ym:s:"
        foreign = [f for f in self.fields if not f.startswith(prefix)]
        if foreign:
            raise ValueError(f"fields of the {self.source} source start with {prefix}: {', '.join(foreign)}")
        return self


Source = Annotated[FileSource | Ga4ExportSource | SqlSource | HttpSource | YandexMetricaSource,
                   Field(discriminator="kind")]
SOURCE_KINDS = ("file", "ga4_export", "sql", "http", "yandex_metrica")
# Kinds that hold only some entities, with what they hold and which entities they feed.
KIND_ENTITIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "ga4_export": ("events and purchases", GA4_ENTITIES),
    "yandex_metrica": ("site visits only: page views, product views, carts and purchases", ("events",)),
}
# Kinds read from dropped files: a file registry says what is new, not a watermark.
FILE_KINDS = ("file", "ga4_export")


class IngestSettings(Settings):
    schedule: str | None = Field(default="@daily", description="cron or preset; null = manual only")
    start_date: date = date(2024, 1, 1)
    retries: int = Field(default=3, ge=0)
    retry_delay: timedelta = timedelta(minutes=2)
    max_retry_delay: timedelta = timedelta(hours=1)
    chunk_rows: int = Field(default=500_000, ge=1000, description="rows per chunk; bounds memory")
    landing_dir: str = Field(
        default="data/landing",
        description="folder for a load's raw and valid Parquet files; every worker must see it",
    )


class ValidationSettings(Settings):
    max_bad_share: float = Field(default=0.05, ge=0, le=1)
    earliest_timestamp: date = date(2000, 1, 1)
    future_tolerance: timedelta = timedelta(days=1)
    currencies: list[str] | None = Field(
        default=None, description="allowed currency codes; any ISO 4217 code when omitted"
    )

    @field_validator("currencies")
    @classmethod
    def _iso_codes(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return value
        unknown = sorted(set(value) - iso_currencies())
        if unknown:
            raise ValueError(f"not ISO 4217 currency codes: {', '.join(unknown)}")
        return value
