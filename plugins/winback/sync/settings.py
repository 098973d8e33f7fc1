"""Configuration of the audience sync: destinations (kind, credentials by name, base
URL, platform settings), which audiences each receives and how, and engine settings.

Credentials are never in the file: a destination names an Airflow Connection
(`conn_id`) or, for the CLI, secrets come from `<env_prefix>_<NAME>` variables."""

from __future__ import annotations

import re
from typing import Any

from pydantic import (
    Field,
    PrivateAttr,
    field_validator,
    model_validator,
)

from winback.settings import Settings
from winback.sync.destinations import KINDS, destination_class
from winback.sync.destinations.base import Destination, SyncMode


class HttpSettings(Settings):
    timeout: float = Field(default=30.0, gt=0, description="seconds per request")
    max_retries: int = Field(default=5, ge=0, description="retries on throttling, 5xx and connection errors")
    backoff_initial: float = Field(default=1.0, ge=0, description="first backoff in seconds, doubling, with jitter")
    backoff_max: float = Field(default=60.0, ge=0)
    max_wait: float = Field(default=300.0, ge=0, description="a longer Retry-After is capped to this")


class DestinationConfig(Settings):
    kind: str
    conn_id: str | None = Field(default=None, description="Airflow Connection holding the credentials")
    env_prefix: str | None = Field(default=None, description="CLI: secrets from <prefix>_TOKEN etc.")
    base_url: str | None = Field(default=None, description="override the platform's API address")
    options: dict[str, Any] = Field(default_factory=dict, description="platform settings (see docs/destinations.md)")
    audiences: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="audience name -> {mode, platform target settings}")
    http: HttpSettings = Field(default_factory=HttpSettings)
    _options: Settings = PrivateAttr()
    _targets: dict[str, tuple[SyncMode, Settings]] = PrivateAttr(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _platform_http_defaults(cls, data: Any) -> Any:
        """The platform's advised HTTP settings (e.g. UniSender's timeout) under the
        configured ones."""
        if isinstance(data, dict) and data.get("kind") in KINDS and isinstance(data.get("http", {}), dict):
            defaults = destination_class(data["kind"]).http_defaults
            if defaults:
                data = {**data, "http": {**defaults, **(data.get("http") or {})}}
        return data

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, kind: str) -> str:
        destination_class(kind)
        return kind

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"https?://", value):
            raise ValueError("base_url must start with http:// or https://")
        if value is not None and re.search(r"://[^/@]*:[^/@]*@", value):
            raise ValueError("base_url must not contain credentials; use conn_id or env_prefix")
        return value

    @model_validator(mode="after")
    def _platform_settings(self) -> DestinationConfig:
        cls = self.destination_class
        problems = []
        if cls.requires_base_url and not self.base_url:
            problems.append(f"base_url: required for {self.kind} (there is no default address)")
        try:
            self._options = cls.Options(**self.options)
        except ValueError as exc:
            problems += [f"options: {line}" for line in _errors(exc)]
        for audience, link in self.audiences.items():
            link = dict(link or {})
            mode = link.pop("mode", cls.default_mode)
            if mode not in cls.modes:
                problems.append(f"audiences.{audience}.mode: {mode!r} not supported by {self.kind}; "
                                f"expected one of {', '.join(cls.modes)}")
                continue
            try:
                self._targets[audience] = (mode, cls.Target(**link))
            except ValueError as exc:
                problems += [f"audiences.{audience}: {line}" for line in _errors(exc)]
        if problems:
            raise ValueError("\n".join(problems))
        return self

    @property
    def destination_class(self) -> type[Destination]:
        return destination_class(self.kind)

    @property
    def platform_options(self) -> Settings:
        return self._options

    def mode(self, audience: str) -> SyncMode:
        return self._targets[audience][0]

    def target(self, audience: str) -> Settings:
        return self._targets[audience][1]


class SyncSettings(Settings):
    dry_run: bool = Field(default=False, description="write the requests to files; send nothing, change nothing")
    out_dir: str = Field(default="data/sync", description="dry-run request files and CSV call lists")
    phone_region: str = Field(default="RU", description="region of phones written without a country code")
    max_row_attempts: int = Field(default=3, ge=1, description="a rejected member is retried this many runs")
    read_rows: int = Field(default=50_000, ge=1_000, description="members read from the warehouse at a time")

    @field_validator("phone_region")
    @classmethod
    def _region(cls, value: str) -> str:
        import phonenumbers

        if value.upper() not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"{value!r} is not a region phonenumbers knows (ISO 3166 alpha-2, e.g. RU)")
        return value.upper()


def _errors(exc: ValueError) -> list[str]:
    if hasattr(exc, "errors"):
        out = []
        for item in exc.errors():
            where = ".".join(str(p) for p in item["loc"])
            message = item["msg"].removeprefix("Value error, ")
            if item["type"] == "extra_forbidden":
                message = "unknown key"
            elif item["type"] == "missing":
                message = "required key is missing"
            out.append(f"{where}: {message}" if where else message)
        return out
    return [str(exc)]


def check_links(destinations: dict[str, DestinationConfig], audiences: dict) -> list[str]:
    """Each destination's audiences exist, fit its channels and share an identifier."""
    problems = []
    for name, dest in destinations.items():
        cls = dest.destination_class
        for audience in dest.audiences:
            spec = audiences.get(audience)
            where = f"destinations.{name}.audiences.{audience}"
            if spec is None:
                problems.append(f"{where}: no such audience; expected one of {', '.join(audiences)}")
                continue
            if spec.channel not in cls.channels:
                problems.append(f"{where}: a {spec.channel} audience cannot go to {dest.kind} "
                                f"(it takes {', '.join(sorted(cls.channels))} audiences)")
            if not set(spec.identifiers) & set(cls.identifiers):
                problems.append(f"{where}: the audience's identifiers ({', '.join(spec.identifiers)}) and what "
                                f"{dest.kind} accepts ({', '.join(cls.identifiers)}) have nothing in common")
    return problems


def pool_name(kind: str) -> str:
    """The Airflow pool shared by every sync task of one platform."""
    return f"winback_{kind}"


def pools(destinations: dict[str, DestinationConfig]) -> dict[str, dict[str, Any]]:
    """Pools for `airflow pools import`: one per platform in use, sized to what the
    platform tolerates at once per account."""
    return {pool_name(d.kind): {"slots": d.destination_class.pool_slots, "include_deferred": False,
                                "description": f"Winback sync tasks sending to {d.kind}"}
            for d in destinations.values()}
