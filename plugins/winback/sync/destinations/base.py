"""The small protocol every destination implements, and what it declares about its
platform (identifiers, hashing, batch and rate limits, removal support).

The sync engine does everything platform-neutral: diffing against the synced state,
normalizing and hashing identifiers in the form the class declares, cutting the work
into confirmed units of `commit_rows`, recording outcomes. A destination only turns
members into the platform's requests and reads the platform's answers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import BeforeValidator

from winback.settings import Settings
from winback.sync.identifiers import EmailRule, PhoneFormat

if TYPE_CHECKING:
    from winback.sync.transport import Transport

SyncMode = Literal["mirror", "add_only", "replace"]
Channel = Literal["email", "sms", "call", "ads"]
IDENTIFIERS = ("email", "phone", "customer_id", "visitor_id")
# What an audience member can carry besides identifiers (columns of audience_members):
# the first release's seven, then what a message or a caller needs about the customer.
ATTRIBUTES = ("first_name", "lifecycle_stage", "value_tier", "offer", "cart_value", "product_ids", "winback_offer",
              "amount_to_free_delivery", "main_category", "days_since_last_order", "last_feedback_score",
              "last_order_status", "last_reason", "predicted_clv_365d",
              # the cart's step, the trigger's occasion, loyalty and service (issue 13's playbook)
              "step", "trigger", "occasion_on", "milestone", "years", "category", "loyalty_tier",
              "next_loyalty_tier", "amount_to_next_tier", "late_deliveries")
# Attributes that are whole numbers (pandas reads an integer column with gaps as floats).
INTEGER_ATTRIBUTES = frozenset({"days_since_last_order", "last_feedback_score", "step", "milestone", "years",
                                "late_deliveries"})
MONEY_ATTRIBUTES = frozenset({"cart_value", "amount_to_free_delivery", "predicted_clv_365d", "amount_to_next_tier"})


# A platform's id (list, audience, segment): text, though YAML reads `list_id: 7001` as a number.
PlatformId = Annotated[str, BeforeValidator(lambda value: str(value) if isinstance(value, int) else value)]


class NoSettings(Settings):
    pass


@dataclass(frozen=True)
class Member:
    """One audience member as the platform gets it."""

    key: str  # audience_members.member_key: the customer id, or "v:" + visitor id
    ids: dict[str, str]  # identifier -> value in the platform's form (hashed if it wants hashes)
    attributes: dict[str, Any] = field(default_factory=dict)  # only those the destination declares


@dataclass
class Outcome:
    """What the platform confirmed for a set of members."""

    accepted: list[str] = field(default_factory=list)  # member keys
    rejected: dict[str, str] = field(default_factory=dict)  # member key -> the platform's reason
    figures: dict[str, Any] = field(default_factory=dict)  # match counts etc. the platform reports

    def merge(self, other: Outcome) -> Outcome:
        self.accepted.extend(other.accepted)
        self.rejected.update(other.rejected)
        for name, value in other.figures.items():
            if isinstance(value, (int, float)) and isinstance(self.figures.get(name), (int, float)):
                self.figures[name] += value
            else:
                self.figures[name] = value
        return self

    @classmethod
    def all_accepted(cls, members: Sequence[Member], **figures: Any) -> Outcome:
        return cls(accepted=[m.key for m in members], figures=dict(figures))


@dataclass(frozen=True)
class ApiVersion:
    """One version of a platform's API and the day the platform stops serving it."""

    version: str  # as it appears in the URL: "v25.0", "v23"
    sunset: date | None  # None: no end announced yet
    source: str  # where the date is documented (a URL), so it can be checked again


class RemovalUnsupported(NotImplementedError):
    pass


class SyncError(RuntimeError):
    """A sync that cannot go on as configured: no audiences built, or a platform's
    rule the audience breaks (e.g. too few members for a VK list). The pair fails with
    this message; other pairs go on."""


class Destination:
    """Base class: subclasses set the class attributes and implement add (and remove or
    replace). Limits are named constants in each module, citing their source."""

    kind: ClassVar[str]
    channels: ClassVar[frozenset[str]]  # audience channels it can receive
    identifiers: ClassVar[tuple[str, ...]]  # accepted identifiers, in the order sent
    hashed: ClassVar[bool] = False  # SHA-256 hex of the normalized value
    phone_format: PhoneFormat = "e164"  # an instance may set it from its options
    email_rules: ClassVar[frozenset[EmailRule]] = frozenset()  # the platform's own email normalization
    # Versioned APIs: the versions Winback knows, newest first (the default); an instance
    # uses options.api_version when set.
    api_versions: ClassVar[tuple[ApiVersion, ...]] = ()
    attributes: ClassVar[tuple[str, ...]] = ()  # attributes it can store (merge fields, tags)
    # The order members are sent in within a run: an SQL ORDER BY over audience_members'
    # columns (a call list puts the most valuable first); member_key order when None.
    order_by: ClassVar[str | None] = None
    batch_size: ClassVar[int]  # members per add call
    remove_batch_size: ClassVar[int | None] = None  # members per remove call (default batch_size)
    commit_rows: ClassVar[int | None] = None  # members per confirmed unit (default batch_size)
    # The platform takes out whoever holds a value it is sent for removal (lists keyed by
    # address or hash), so the engine never sends a value another member still holds.
    # False for receivers keyed by member_key (webhook, CSV), which get every removal whole.
    removes_by_identifier: ClassVar[bool] = True
    modes: ClassVar[tuple[SyncMode, ...]] = ("mirror", "add_only")
    default_mode: ClassVar[SyncMode] = "mirror"
    pool_slots: ClassVar[int] = 1  # concurrent tasks the platform tolerates per account
    min_interval: ClassVar[float] = 0.0  # seconds between two requests (client-side pacing)
    retry_statuses: ClassVar[frozenset[int]] = frozenset()  # beyond 429/5xx, e.g. Mailchimp's 403
    default_base_url: ClassVar[str] = ""
    requires_base_url: ClassVar[bool] = False  # no default address (a webhook's receiver)
    http_defaults: ClassVar[dict[str, Any]] = {}  # HttpSettings the platform advises (timeout ...)
    secret_names: ClassVar[tuple[str, ...]] = ("token",)  # required
    optional_secret_names: ClassVar[tuple[str, ...]] = ()  # self.secret(name) raises SecretError if unset
    Options: ClassVar[type[Settings]] = NoSettings  # destination-wide settings (account ids ...)
    Target: ClassVar[type[Settings]] = NoSettings  # per-audience settings (list or audience id)

    def __init__(self, *, name: str, audience: str, options: Settings, target: Settings,
                 transport: Transport, secret: Callable[[str], str], base_url: str, out_dir=None):
        self.name = name
        self.audience = audience
        self.options = options
        self.target = target
        self.http = transport
        self.secret = secret
        self.base_url = base_url.rstrip("/")
        self.out_dir = out_dir

    @classmethod
    def is_hashed(cls, options: Settings) -> bool:
        """Whether identifiers leave as SHA-256 (a destination may let options decide)."""
        return cls.hashed

    @classmethod
    def sent_attributes(cls, options: Settings) -> tuple[str, ...]:
        """The attributes this destination's options send. The engine re-sends a member
        when one of these changes, so an attribute nobody maps (days_since_last_order
        changes every day) never costs an update."""
        return cls.attributes

    @classmethod
    def unit_rows(cls) -> int:
        return cls.commit_rows or cls.batch_size

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"

    @property
    def api_version(self) -> str | None:
        """The API version this instance calls (options.api_version, else the newest known)."""
        configured = getattr(self.options, "api_version", None)
        return configured or (self.api_versions[0].version if self.api_versions else None)

    def api_version_warning(self, today: date) -> str | None:
        """Why the configured API version may not work today, or None: it is past its
        documented sunset, or not one Winback knows."""
        version = self.api_version
        if version is None:
            return None
        newest = self.api_versions[0]
        known = next((v for v in self.api_versions if v.version == version), None)
        if known is None:
            return (f"{self.kind}: API version {version} is not one Winback knows (the newest it knows is "
                    f"{newest.version}); check it is still served")
        if known.sunset is not None and known.sunset <= today:
            return (f"{self.kind}: API version {version} was sunset on {known.sunset} ({known.source}); "
                    f"requests will fail: set options.api_version to {newest.version} or newer")
        return None

    def add(self, members: Sequence[Member]) -> Outcome:
        """Add or update members (attributes included); called with at most unit_rows()."""
        raise NotImplementedError

    def remove(self, members: Sequence[Member]) -> Outcome:
        """Remove members (their ids are what was sent when they were added)."""
        raise RemovalUnsupported(f"{self.kind} cannot remove single members; use mode replace")

    def replace(self, pages: Iterable[Sequence[Member]]) -> Outcome:
        """Make the platform's list exactly these members (pages of at most unit_rows())."""
        raise NotImplementedError(f"{self.kind} has no full replace; use mode mirror")

    def finish(self) -> dict[str, Any]:
        """Called once after a successful run: figures for sync_runs (e.g. a job's match rate)."""
        return {}


def check_attribute_names(mapping: dict[str, Any]) -> dict[str, Any]:
    """An `attribute -> platform field` mapping from options: its keys must be attributes."""
    unknown = set(mapping) - set(ATTRIBUTES)
    if unknown:
        raise ValueError(f"no such attribute {', '.join(sorted(unknown))}; expected some of {', '.join(ATTRIBUTES)}")
    return mapping


def check_attribute_map(mapping: dict[str, str], taken: Sequence[str] = ()) -> dict[str, str]:
    """An `attribute -> name` map that names what it sends (CSV headers, webhook keys):
    attributes only, each name unique, not empty and not one of `taken`."""
    check_attribute_names(mapping)
    names = list(mapping.values())
    clash = sorted({n for n in names if names.count(n) > 1 or n in taken})
    if clash or not all(names):
        raise ValueError(f"names must be unique, not empty and not {', '.join(taken) or 'taken'}: "
                         f"{', '.join(clash) or 'an empty name'}")
    return mapping


def batches(members: Sequence[Member], size: int) -> Iterator[Sequence[Member]]:
    for start in range(0, len(members), size):
        yield members[start:start + size]
