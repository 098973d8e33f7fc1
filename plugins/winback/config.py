"""The one YAML configuration file: its model, validation and loading.

`load_config()` is the only entry point; it raises `ConfigError` whose message names
every offending key (``sources.orders.columns.totl_amount: ...``) and the file.
"""

from __future__ import annotations

import os
import re
from datetime import date, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from winback import private_files
from winback.schema import ENTITIES, ORDER_STATUSES, iso_currencies
from winback.segment_config import AudienceSpec, SegmentSettings, default_audiences
from winback.sync_config import DestinationConfig, SyncSettings, check_links

CONFIG_ENV = "WINBACK_CONFIG"
WAREHOUSE_ENV = "WINBACK_WAREHOUSE_URL"
HOME_ENV = "WINBACK_HOME"
DEFAULT_CONFIG = Path("include/config/winback.yaml")


class ConfigError(ValueError):
    """The configuration file is missing or invalid; the message names the key."""


class _Model(BaseModel):
    # Unknown keys are errors: a typo must not silently fall back to a default.
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_timezone(value: str | None) -> str | None:
    if value is None:
        return value
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r} (use an IANA name such as Europe/Moscow)") from None
    return value


class SourceBase(_Model):
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
        description="per canonical column, the shop's value -> canonical value (e.g. statuses)",
    )
    max_bad_share: float | None = Field(default=None, ge=0, le=1)
    chunk_rows: int | None = Field(default=None, ge=1000)

    _check_tz = field_validator("timezone")(_check_timezone)


class FileSource(SourceBase):
    kind: Literal["file"]
    path: str = Field(description="glob of the drop files, relative to the project home")
    format: Literal["csv", "parquet", "jsonl"] = "csv"
    delimiter: str = Field(default=",", min_length=1, max_length=1)
    quote: str = Field(default='"', min_length=1, max_length=1)
    encoding: str = "utf-8"
    header: bool = True
    column_names: list[str] | None = Field(
        default=None, description="names of the columns when the CSV has no header"
    )
    decimal: Literal[".", ","] = "."
    bad_lines: Literal["error", "quarantine"] = "error"
    compression: Literal["auto", "none", "gzip", "zstd", "bz2"] = Field(
        default="auto", description="auto: by the file name's ending (.gz, .zst, .bz2)")
    block_size_mb: int = Field(
        default=16, ge=1, le=1024,
        description="read block in MiB (CSV, JSON lines): the longest record must fit in one")

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        import codecs

        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown encoding {value!r} (e.g. utf-8, cp1251)") from None
        return value

    @model_validator(mode="after")
    def _header_or_names(self) -> FileSource:
        if self.format == "csv" and not self.header and not self.column_names:
            raise ValueError("a CSV without header needs column_names")
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


class Pagination(_Model):
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


class HttpAuth(_Model):
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


Source = Annotated[FileSource | SqlSource | HttpSource, Field(discriminator="kind")]
SOURCE_KINDS = ("file", "sql", "http")


class IngestSettings(_Model):
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


class ValidationSettings(_Model):
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


class BuildSettings(_Model):
    schedule: str | None = Field(
        default=None, description="cron or preset besides the ingest Assets; null = only when fresh data landed")
    backfill_prefix: str = Field(
        default="backfill_", pattern=r"^[a-z][a-z0-9_]{0,30}$",
        description="a past as-of build writes its marts as <prefix><mart>, never the live ones")
    snapshot: str | None = Field(
        default="data/snapshot.duckdb",
        description="DuckDB warehouses: after each build the marts and history are copied to this "
                    "read-only file for analysts and BI tools (atomically replaced); null = none")
    lock_wait: timedelta = Field(
        default=timedelta(minutes=30),
        description="PostgreSQL: how long a build waits for another build of the same warehouse")


def _octal_mode(value: Any) -> int:
    # YAML reads 0600 as an octal int already; "0600" and "600" are octal text.
    if isinstance(value, str) and re.fullmatch(r"0?o?[0-7]{3}", value):
        value = int(value.replace("o", ""), 8)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 0o777:
        raise ValueError(f"{value!r} is not a file mode (write it in octal, e.g. '0600')")
    return value


FileMode = Annotated[int, BeforeValidator(_octal_mode)]


class Permissions(_Model):
    """Modes of the files and folders Winback creates that hold personal data."""

    file_mode: FileMode = Field(default=0o600, description="e.g. '0640' to let a group read")
    folder_mode: FileMode = Field(default=0o700, description="e.g. '0750'")


class Config(_Model):
    home: str | None = Field(
        default=None,
        description="where relative paths point, relative to this file's folder (default: that folder); "
                    "WINBACK_HOME overrides")
    warehouse: str = "duckdb:///data/warehouse.duckdb"
    timezone: str = "UTC"
    default_currency: str = "RUB"
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    validation: ValidationSettings = Field(default_factory=ValidationSettings)
    sources: dict[str, Source]
    build: BuildSettings = Field(default_factory=BuildSettings)
    segments: SegmentSettings = Field(default_factory=SegmentSettings)
    audiences: dict[str, AudienceSpec] = Field(default_factory=default_audiences)
    sync: SyncSettings = Field(default_factory=SyncSettings)
    destinations: dict[str, DestinationConfig] = Field(default_factory=dict)
    permissions: Permissions = Field(default_factory=Permissions)
    # Where relative paths point and where the file came from; set by load_config.
    _home: Path = PrivateAttr(default_factory=Path.cwd)
    _path: Path | None = PrivateAttr(default=None)

    _check_tz = field_validator("timezone")(_check_timezone)

    @field_validator("default_currency")
    @classmethod
    def _currency(cls, value: str) -> str:
        if value not in iso_currencies():
            raise ValueError(f"{value!r} is not an ISO 4217 currency code")
        return value

    @field_validator("sources")
    @classmethod
    def _known_entities(cls, sources: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(sources) - set(ENTITIES))
        if unknown:
            raise ValueError(
                f"unknown entity {', '.join(unknown)}; expected some of {', '.join(ENTITIES)}"
            )
        if "orders" not in sources:
            raise ValueError("orders is required: every segment is built from orders")
        return sources

    @model_validator(mode="after")
    def _columns_are_canonical(self) -> Config:
        problems = []
        for entity_name, source in self.sources.items():
            entity = ENTITIES[entity_name]
            for canonical in list(source.columns) + list(source.values):
                if canonical not in entity.column_names:
                    problems.append(
                        f"sources.{entity_name}.columns.{canonical}: not a column of {entity_name}; "
                        f"expected one of {', '.join(entity.column_names)}"
                    )
        if problems:
            raise ValueError("\n".join(problems))
        return self

    @field_validator("segments")
    @classmethod
    def _statuses(cls, segments: SegmentSettings) -> SegmentSettings:
        unknown = sorted(set(segments.purchase_statuses) - ORDER_STATUSES)
        if unknown:
            raise ValueError(f"purchase_statuses: unknown status {', '.join(unknown)}; "
                             f"expected some of {', '.join(sorted(ORDER_STATUSES))}")
        return segments

    @field_validator("audiences", "destinations")
    @classmethod
    def _names(cls, named: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        # They become SQL literals, file names and Airflow task ids.
        bad = [n for n in named if not re.fullmatch(r"[a-z][a-z0-9_]{0,62}", n)]
        if bad:
            raise ValueError(f"{info.field_name.removesuffix('s')} names must be lowercase letters, digits and _: "
                             f"{', '.join(bad)}")
        return named

    @model_validator(mode="after")
    def _destinations_fit_audiences(self) -> Config:
        problems = check_links(self.destinations, self.audiences)
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def source(self, entity: str) -> FileSource | SqlSource | HttpSource:
        try:
            return self.sources[entity]
        except KeyError:
            raise ConfigError(f"no source configured for {entity!r} (sources.{entity})") from None

    @property
    def home_dir(self) -> Path:
        """The folder relative paths resolve against (see load_config)."""
        return self._home

    @property
    def path(self) -> Path | None:
        return self._path

    def resolve(self, path: str | Path) -> Path:
        path = Path(path)
        return path if path.is_absolute() else self._home / path

    @property
    def warehouse_url(self) -> str:
        """The warehouse URL with a relative DuckDB file made absolute against home."""
        url = self.warehouse
        prefix = "duckdb:///"
        if url.startswith(prefix) and not url.startswith(prefix + "/"):
            target = url[len(prefix):]
            if target and not target.startswith(":memory:"):
                return prefix + str(self.resolve(target))
        return url

    @property
    def landing_root(self) -> Path:
        return self.resolve(self.ingest.landing_dir)

    def max_bad_share(self, entity: str) -> float:
        override = self.source(entity).max_bad_share
        return self.validation.max_bad_share if override is None else override

    def chunk_rows(self, entity: str) -> int:
        override = self.source(entity).chunk_rows
        if override:
            return override
        cap = ENTITIES[entity].max_chunk_rows
        return min(self.ingest.chunk_rows, cap) if cap else self.ingest.chunk_rows

    def source_timezone(self, entity: str) -> str:
        return self.source(entity).timezone or self.timezone


_SUBKEY = re.compile(r"^(?P<key>[a-z_][a-z0-9_.]*): (?P<rest>.*)$")


def _format_errors(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        loc = list(item["loc"])
        if len(loc) > 2 and loc[0] == "sources" and loc[2] in SOURCE_KINDS:
            del loc[2]  # pydantic's discriminator tag, not a key of the file
        location = ".".join(str(part) for part in loc)
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key (check the spelling against the README's reference)"
        elif item["type"] == "missing":
            message = "required key is missing"
        for i, part in enumerate(message.splitlines()):
            # A nested model's validator names its own key first ("where: ...", one per
            # line): join it onto the location so every line reads as one dotted key.
            named = _SUBKEY.match(part) if location else None
            if named:
                lines.append(f"  {location}.{named['key']}: {named['rest']}")
            elif i or not location:
                lines.append(f"  {part}")  # a root validator names full keys itself
            else:
                lines.append(f"  {location}: {part}")
    return "\n".join(lines)


def default_config_path() -> Path:
    return Path(os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG)


def load_config(path: str | Path | None = None) -> Config:
    """Read, validate and return the configuration (``WINBACK_CONFIG`` when no path)."""
    path = Path(path) if path else default_config_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: configuration file not found (set {CONFIG_ENV} or --config)") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    if os.environ.get(WAREHOUSE_ENV):
        data["warehouse"] = os.environ[WAREHOUSE_ENV]
    try:
        config = Config(**data)
    except ValidationError as exc:
        raise ConfigError(f"{path}: invalid configuration:\n{_format_errors(exc)}") from None
    # Never the working directory: a scheduler started in another folder would read
    # nothing and show green runs.
    folder = path.resolve().parent
    home = Path(os.environ.get(HOME_ENV) or folder / (config.home or ".")).resolve()
    config._home = home
    config._path = path
    private_files.configure(config.permissions.file_mode, config.permissions.folder_mode)
    return config
