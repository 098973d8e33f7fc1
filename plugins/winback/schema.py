"""Canonical entities: the columns, keys and allowed values every source is mapped onto.

Everything downstream (validation rules, staging DDL, upserts, the marts) reads its
column lists from here, so adding a canonical column is a one-line change.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

ColumnType = Literal["text", "timestamp", "date", "money", "number", "integer", "boolean"]


@dataclass(frozen=True)
class Column:
    name: str
    type: ColumnType
    required: bool = False
    # A value used when the source does not map the column at all (not for nulls).
    default: str | None = None
    allowed: frozenset[str] | None = None
    # "email" / "phone" / "currency" / "score" add a plausibility rule for the column.
    check: str | None = None
    # An optional detail of the record (a contact, a consent flag, a price): a value
    # breaking its rules is set to null and reported, and the record still loads.
    # Otherwise the whole record is quarantined.
    field_level: bool = False

    @property
    def magnitude_checked(self) -> bool:
        """Infinite numbers, and numbers too large for the column, break `<name>_in_range`
        (a score has a range rule of its own, so they break `<name>_parses` there)."""
        return self.type in ("money", "number", "integer") and self.check != "score"


@dataclass(frozen=True)
class Entity:
    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    # The timestamp that orders versions of one record: a newer version replaces an
    # older one, never the other way round.
    version_by: tuple[str, ...]
    # When the key is not mapped, it is derived from these columns (events have no id
    # in most analytics exports).
    derived_key_from: tuple[str, ...] = ()
    # At least one of these must be present on every row.
    one_of: tuple[str, ...] = ()
    description: str = ""
    optional_entity: bool = True
    # Rows per chunk at most, unless the source sets chunk_rows: wide rows need smaller
    # chunks to stay within the ingest's memory budget (three chunks are in flight).
    max_chunk_rows: int | None = None

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)

    @property
    def required_columns(self) -> list[str]:
        return [c.name for c in self.columns if c.required]

    @property
    def defaults(self) -> dict[str, str]:
        return {c.name: c.default for c in self.columns if c.default is not None}


ORDER_STATUSES = frozenset(
    {"pending", "paid", "shipped", "delivered", "completed", "cancelled", "returned"}
)
# Statuses that count as a purchase for segments; cancelled and returned are kept
# apart because they are signals of a bad experience.
PURCHASE_STATUSES = frozenset({"paid", "shipped", "delivered", "completed"})
EVENT_TYPES = frozenset(
    {
        "page_view",
        "product_view",
        "search",
        "add_to_cart",
        "remove_from_cart",
        "checkout_start",
        "purchase",
        "login",
        "signup",
    }
)
MAILING_EVENT_TYPES = frozenset(
    {"sent", "delivered", "open", "click", "unsubscribe", "bounce", "complaint"}
)
CONTACT_CHANNELS = frozenset({"call", "sms", "email"})
CONTACT_RESULTS = frozenset({"reached", "no_answer", "refused", "agreed_to_return", "wrong_number"})
# Outcomes where a person answered (a refusal is an answer too).
REACHED_RESULTS = frozenset({"reached", "refused", "agreed_to_return"})
# Why a customer says they stopped buying; empty when they gave no reason.
CHURN_REASONS = frozenset(
    {"price", "delivery", "quality", "service", "assortment", "forgot", "moved", "other"}
)

CUSTOMERS = Entity(
    name="customers",
    description="People who registered or bought; contacts and consent.",
    columns=(
        Column("customer_id", "text", required=True),
        Column("email", "text", check="email", field_level=True),
        Column("phone", "text", check="phone", field_level=True),
        Column("first_name", "text"),
        Column("city", "text"),
        # The web-analytics id the shop keeps on the customer (Metrica's ClientID, GA's
        # client id): links that visitor's visits to the customer (identity_map).
        Column("visitor_id", "text"),
        Column("registered_at", "timestamp", field_level=True),
        # A calendar day (no time zone): the birthday trigger (segments.triggers).
        Column("birth_date", "date", field_level=True),
        # Unreadable consent is no consent; an unreadable unsubscribe date still
        # quarantines the customer (dropping it would mail someone who left).
        Column("email_consent", "boolean", field_level=True),
        Column("sms_consent", "boolean", field_level=True),
        Column("ads_consent", "boolean", field_level=True),
        Column("unsubscribed_at", "timestamp"),
        Column("updated_at", "timestamp"),
    ),
    key=("customer_id",),
    version_by=("updated_at", "registered_at"),
)

ORDERS = Entity(
    name="orders",
    description="One row per order, its latest status.",
    columns=(
        Column("order_id", "text", required=True),
        Column("customer_id", "text", required=True),
        Column("created_at", "timestamp", required=True),
        Column("total_amount", "money", required=True),
        Column("status", "text", default="completed", allowed=ORDER_STATUSES),
        Column("currency", "text", check="currency"),
        Column("updated_at", "timestamp"),
        Column("delivered_at", "timestamp", field_level=True),
        Column("visitor_id", "text"),
        Column("promo_code", "text"),
    ),
    key=("order_id",),
    version_by=("updated_at", "created_at"),
    optional_entity=False,
)

ORDER_ITEMS = Entity(
    name="order_items",
    description="Order lines: what was bought, in which product category.",
    columns=(
        Column("order_id", "text", required=True),
        Column("product_id", "text", required=True),
        Column("category", "text"),
        Column("quantity", "number", default="1"),
        Column("price", "money", field_level=True),
        Column("updated_at", "timestamp"),
    ),
    key=("order_id", "product_id"),
    version_by=("updated_at",),
)

EVENTS = Entity(
    name="events",
    max_chunk_rows=250_000,  # at 500k, validating 54M events peaked at 2.1 GB RSS; at 250k, 1.76 GB
    description="Site visits: views, cart adds, checkouts, logins (web-analytics export).",
    columns=(
        Column("event_id", "text"),
        Column("visitor_id", "text"),
        Column("customer_id", "text"),
        Column("session_id", "text"),
        Column("event_type", "text", required=True, allowed=EVENT_TYPES),
        Column("product_id", "text"),
        Column("category", "text"),
        Column("value", "money", field_level=True),
        Column("occurred_at", "timestamp", required=True),
        Column("utm_source", "text"),
        Column("utm_medium", "text"),
        Column("utm_campaign", "text"),
    ),
    key=("event_id",),
    version_by=("occurred_at",),
    derived_key_from=(
        "visitor_id",
        "customer_id",
        "session_id",
        "event_type",
        "product_id",
        "occurred_at",
    ),
    one_of=("visitor_id", "customer_id"),
)

FEEDBACK = Entity(
    name="feedback",
    description="Scores (1-10) customers gave to an order: overall, and optionally service, delivery, product.",
    columns=(
        Column("order_id", "text", required=True),
        Column("customer_id", "text"),
        Column("score", "integer", required=True, check="score"),
        # Optional separate scores: an unreadable one is dropped, the overall score still loads.
        Column("service_score", "integer", check="score", field_level=True),
        Column("delivery_score", "integer", check="score", field_level=True),
        Column("product_score", "integer", check="score", field_level=True),
        Column("comment", "text"),
        Column("created_at", "timestamp", required=True),
    ),
    key=("order_id",),
    version_by=("created_at",),
)

MAILING_EVENTS = Entity(
    name="mailing_events",
    description="Mailing engagement from the ESP: sent, open, click, unsubscribe per campaign.",
    columns=(
        Column("event_id", "text"),
        Column("customer_id", "text", required=True),
        Column("campaign_id", "text", required=True),
        Column("event_type", "text", required=True, allowed=MAILING_EVENT_TYPES),
        Column("occurred_at", "timestamp", required=True),
    ),
    key=("event_id",),
    version_by=("occurred_at",),
    derived_key_from=("customer_id", "campaign_id", "event_type", "occurred_at"),
)

CONTACT_OUTCOMES = Entity(
    name="contact_outcomes",
    description="What came of calling or writing to a customer, and the reason they gave for leaving.",
    columns=(
        Column("contact_id", "text"),
        Column("customer_id", "text", required=True),
        Column("channel", "text", required=True, allowed=CONTACT_CHANNELS),
        Column("contacted_at", "timestamp", required=True),
        Column("outcome", "text", required=True, allowed=CONTACT_RESULTS),
        Column("reason", "text", allowed=CHURN_REASONS),
        # Free text typed by the caller: may name people or addresses, so it is stored,
        # never logged.
        Column("comment", "text"),
    ),
    key=("contact_id",),
    # A corrected export of the same contact (same key and time) replaces the first one.
    version_by=("contacted_at",),
    # Call-centre exports rarely carry an id: one customer, channel and moment is one contact.
    derived_key_from=("customer_id", "channel", "contacted_at"),
)

ENTITIES: dict[str, Entity] = {
    e.name: e for e in (CUSTOMERS, ORDERS, ORDER_ITEMS, EVENTS, FEEDBACK, MAILING_EVENTS, CONTACT_OUTCOMES)
}
# Load order for a run: parents before children is not required (no foreign keys in
# staging) but keeps the demo's summary readable.
ENTITY_ORDER: tuple[str, ...] = tuple(ENTITIES)



@functools.cache
def iso_currencies() -> frozenset[str]:
    """ISO 4217 codes, from the CLDR data shipped with Babel (imported only when asked)."""
    from babel.numbers import list_currencies

    return frozenset(code for code in list_currencies() if len(code) == 3 and code.isalpha())
