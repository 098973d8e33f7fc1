"""The one YAML configuration file: its model, composed of each stage's settings
(ingest/settings.py, build/settings.py, sync/settings.py), validation and loading.

`load_config()` is the only entry point; it raises `ConfigError` whose message names
every offending key (``sources.orders.columns.totl_amount: ...``) and the file.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    BeforeValidator,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from winback import private_files
from winback.build.settings import (
    AudienceSpec,
    BuildSettings,
    SegmentSettings,
    default_audiences,
)
from winback.ingest.settings import (
    KIND_ENTITIES,
    OTHER_ACTIONS,
    OTHER_VALUE,
    SOURCE_KINDS,
    FileSource,
    Ga4ExportSource,
    HttpSource,
    IngestSettings,
    Source,
    SqlSource,
    ValidationSettings,
    YandexMetricaSource,
)
from winback.measure.settings import MeasurementSettings
from winback.schema import ENTITIES, ORDER_STATUSES, iso_currencies
from winback.settings import Settings, check_timezone
from winback.sync.settings import DestinationConfig, SyncSettings, check_links

CONFIG_ENV = "WINBACK_CONFIG"
WAREHOUSE_ENV = "WINBACK_WAREHOUSE_URL"
HOME_ENV = "WINBACK_HOME"
DEFAULT_CONFIG = Path("include/config/winback.yaml")


class ConfigError(ValueError):
    """The configuration file is missing or invalid; the message names the key."""


def _octal_mode(value: Any) -> int:
    # YAML reads 0600 as an octal int already; "0600" and "600" are octal text.
    if isinstance(value, str) and re.fullmatch(r"0?o?[0-7]{3}", value):
        value = int(value.replace("o", ""), 8)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 0o777:
        raise ValueError(f"{value!r} is not a file mode (write it in octal, e.g. '0600')")
    return value


FileMode = Annotated[int, BeforeValidator(_octal_mode)]


class Permissions(Settings):
    """Modes of the files and folders Winback creates that hold personal data."""

    file_mode: FileMode = Field(default=0o600, description="e.g. '0640' to let a group read")
    folder_mode: FileMode = Field(default=0o700, description="e.g. '0750'")


class Config(Settings):
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
    measurement: MeasurementSettings = Field(default_factory=MeasurementSettings)
    destinations: dict[str, DestinationConfig] = Field(default_factory=dict)
    permissions: Permissions = Field(default_factory=Permissions)
    # Where relative paths point and where the file came from; set by load_config.
    _home: Path = PrivateAttr(default_factory=Path.cwd)
    _path: Path | None = PrivateAttr(default=None)

    _check_tz = field_validator("timezone")(check_timezone)

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
            holds, feeds = KIND_ENTITIES.get(source.kind, ("", ()))
            if feeds and entity_name not in feeds:  # said alone: its preset mapping fits no other entity
                problems.append(f"sources.{entity_name}.kind: {source.kind} holds {holds}; it feeds "
                                f"{', '.join(feeds)}, not {entity_name}: read {entity_name} from a file, sql or "
                                f"http source")
                continue
            for canonical in list(source.columns) + list(source.values):
                if canonical not in entity.column_names:
                    problems.append(
                        f"sources.{entity_name}.columns.{canonical}: not a column of {entity_name}; "
                        f"expected one of {', '.join(entity.column_names)}"
                    )
            problems += _value_map_problems(entity, source)
            if source.generate_keys:
                key = f"sources.{entity_name}.generate_keys"
                if source.kind != "file":
                    problems.append(f"{key}: only file sources make keys (from the file and line); "
                                    f"map the {source.kind} source's own id to {', '.join(entity.key)}")
                elif len(entity.key) != 1 or entity.derived_key_from:
                    problems.append(f"{key}: {entity_name} is keyed by "
                                    f"{'its content already' if entity.derived_key_from else ', '.join(entity.key)}")
                elif entity.key[0] in source.columns:
                    problems.append(f"{key}: {entity.key[0]} is mapped (to {source.columns[entity.key[0]]!r}); "
                                    "drop one of the two")
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

    def source(self, entity: str) -> FileSource | Ga4ExportSource | SqlSource | HttpSource | YandexMetricaSource:
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
            message = "unknown key (check the spelling against docs/configuration.md)"
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


def _value_map_problems(entity, source) -> list[str]:
    """`values:` maps to canonical values where the column has a fixed set, and `_other`
    is drop, quarantine or one of them."""
    problems = []
    for name, mapping in source.values.items():
        column = next((c for c in entity.columns if c.name == name), None)
        allowed = sorted(column.allowed) if column is not None and column.allowed is not None else None
        key = f"sources.{entity.name}.values.{name}"
        for shop_value, canonical in mapping.items():
            if shop_value == OTHER_VALUE:
                if canonical not in OTHER_ACTIONS and allowed is not None and canonical not in allowed:
                    problems.append(f"{key}.{OTHER_VALUE}: {canonical!r} is not drop, quarantine or one of "
                                    f"{', '.join(allowed)}")
            elif allowed is not None and canonical not in allowed:
                problems.append(f"{key}.{shop_value}: {canonical!r} is not one of {', '.join(allowed)}")
    return problems
