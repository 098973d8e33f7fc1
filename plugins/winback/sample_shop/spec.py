"""What to generate (ShopSpec, the SCALES presets, spec_for) and the tunables and
vocabularies that several of the drawing modules and the writer share."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date

import numpy as np


@dataclass(frozen=True)
class ShopSpec:
    customers: int = 20_000
    months: int = 18
    end: date | None = None  # last day of history; None = today (UTC)
    seed: int = 42
    orders_per_customer: float = 4.0  # target mean over all customers (±10 %)
    events_per_customer: float = 50.0  # target mean incl. anonymous visitors' events (±15 %)
    bad_share: float = 0.002  # share of deliberately bad rows per entity
    chunk_customers: int = 50_000  # customers generated per chunk: bounds memory
    events_format: str = "jsonl"  # "jsonl" or "parquet"


SCALES = {
    "demo": ShopSpec(),
    "large": ShopSpec(customers=1_000_000, orders_per_customer=10.0, events_per_customer=50.0),
}


def spec_for(scale: str = "demo", **overrides) -> ShopSpec:
    """A preset of SCALES with the given fields replaced; None means "keep the preset's"."""
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; expected one of {', '.join(SCALES)}")
    return replace(SCALES[scale], **{k: v for k, v in overrides.items() if v is not None})


def _check_spec(spec: ShopSpec) -> None:
    if spec.customers < 1 or spec.months < 1 or spec.chunk_customers < 1:
        raise ValueError("customers, months and chunk_customers must be positive")
    if spec.events_format not in ("jsonl", "parquet"):
        raise ValueError(f"events_format must be 'jsonl' or 'parquet', not {spec.events_format!r}")
    if not 0 <= spec.bad_share < 0.5:
        raise ValueError("bad_share must be in [0, 0.5)")
    if spec.orders_per_customer <= 0 or spec.events_per_customer <= 0:
        raise ValueError("orders_per_customer and events_per_customer must be positive")
    # Ids are zero-padded to fixed widths (C + 7 digits, O + 8 digits).
    if spec.customers > 9_999_999:
        raise ValueError("client ids have 7 digits: at most 9,999,999 customers")
    if spec.customers * spec.orders_per_customer > 80_000_000:
        raise ValueError("order ids have 8 digits: at most 80 million orders")


# --------------------------------------------------------------------------------------
# Tunables. Shares are of all customers unless the name says otherwise.
# --------------------------------------------------------------------------------------

DAY = 86_400
HOUR = 3_600
MINUTE = 60
# Moscow has had no daylight saving since 2014, so local = UTC + 3 h all year.
MOSCOW_UTC_OFFSET = 3 * HOUR


@dataclass(frozen=True)
class Category:
    name: str
    prefix: str
    cycle_days: float  # typical gap between two purchases of the same customer
    gap_shape: float  # gamma shape of the gaps: high = steady rhythm
    price_min: float
    price_max: float
    skus: int
    max_qty: int
    main_share: float  # share of buyers whose main category this is
    repeat_sku_share: float  # re-orders of the very same product (same bag of food)
    addon_weight: float  # how often it is added as a side line to another order


CATEGORIES = (
    Category("pet_food", "PET", 28, 6.0, 400, 6_000, 400, 3, 0.22, 0.75, 0.25),
    Category("coffee", "COF", 30, 5.0, 500, 2_500, 250, 3, 0.22, 0.60, 0.30),
    Category("cosmetics", "COS", 60, 3.0, 300, 8_000, 600, 2, 0.22, 0.40, 0.30),
    Category("electronics", "ELE", 540, 2.0, 3_000, 90_000, 500, 1, 0.16, 0.05, 0.12),
    Category("plumbing", "PLM", 900, 2.5, 1_500, 60_000, 300, 1, 0.10, 0.10, 0.03),
    Category("furniture", "FUR", 3_000, 1.5, 5_000, 120_000, 250, 1, 0.08, 0.02, 0.0),
)

# Customer kinds. Non-buyers register and never order; window shoppers are non-buyers
# who browse a lot.
NON_BUYER, ONE_OFF, OCCASIONAL, REGULAR, LOYAL = range(5)
# Customers with a second device use their first one for this share of orders and visits.
PRIMARY_DEVICE_SHARE = 0.75

# Orders.
CURRENCIES = ("RUB", "USD", "EUR")
STATUSES = ("new", "paid", "shipped", "delivered", "completed", "canceled", "refunded")
ST_NEW, ST_PAID, ST_SHIPPED, ST_DELIVERED, ST_COMPLETED, ST_CANCELED, ST_REFUNDED = range(7)
PROMO_CODES = ("WELCOME10", "BLACKFRIDAY", "SALE5", "BACK15", "VIP20")

# Feedback comments by score band.
COMMENTS = {
    "low": ("Долгая доставка", "Товар пришёл повреждённым, оформила возврат",
            'Не соответствует описанию, "премиум" только на упаковке',
            "Отменили заказ без объяснений", "Курьер опоздал на 3 часа, очень неудобно"),
    "mid": ("Нормально", "В целом неплохо, но упаковка так себе", "Доставка могла быть быстрее",
            "Цена кусается, качество среднее"),
    "high": ("Всё отлично, спасибо!", "Быстро, удобно, буду заказывать ещё", "Кот доволен :)",
             "Отличный кофе, как всегда", "Пришло на день раньше, супер"),
}

# Mailing events.
MAILING_EVENTS = ("sent", "open", "click", "unsubscribe")
ME_SENT, ME_OPEN, ME_CLICK, ME_UNSUBSCRIBE = range(4)

# Site events.
EVENT_TYPES = ("page_view", "product_view", "search", "add_to_cart", "remove_from_cart",
               "checkout_start", "purchase", "login", "signup", "hover")
(EV_PAGE, EV_PRODUCT, EV_SEARCH, EV_ATC, EV_REMOVE, EV_CHECKOUT, EV_PURCHASE, EV_LOGIN,
 EV_SIGNUP, EV_HOVER) = range(10)
UTM_CHANNELS = (  # (source, medium, campaign, weight); "email" uses a mailing campaign
    (None, None, None, 0.35), ("yandex", "cpc", "search_brand", 0.1),
    ("yandex", "cpc", "retargeting", 0.08), ("google", "organic", None, 0.14),
    ("yandex", "organic", None, 0.12), ("vk", "social", "promo_post", 0.08),
    ("telegram", "social", "channel", 0.03), ("email", "newsletter", "email", 0.10),
)

# Session kinds.
S_PURCHASE, S_ABANDON, S_BROWSE, S_SIGNUP = range(4)

# Bad rows: each injected row carries exactly one defect of its entity's kinds.
BAD_KINDS = {
    "customers": ("malformed_email", "implausible_phone"),
    "orders": ("negative_amount", "missing_customer", "unknown_currency", "future_date",
               "unparseable_date", "unknown_status"),
    "order_items": (),
    "events": ("unknown_event_type", "missing_ids"),
    "feedback": ("score_zero", "score_eleven"),
    "mailing_events": ("unknown_event",),
    "contact_outcomes": ("unknown_outcome",),
}

# Cities and their weights: drawn with the contacts, named by the writer.
CITIES = (("Москва", 0.3), ("Санкт-Петербург", 0.15), ("Новосибирск", 0.05),
          ("Екатеринбург", 0.06), ("Казань", 0.05), ("Нижний Новгород", 0.05),
          ("Челябинск", 0.04), ("Самара", 0.04), ("Омск", 0.03), ("Ростов-на-Дону", 0.05),
          ("Уфа", 0.04), ("Красноярск", 0.04), ("Воронеж", 0.04), ("Пермь", 0.03),
          ("Волгоград", 0.03))

# Chunks draw from (seed, part); shared reference data from three-number seeds, so no
# part number can ever collide with them.
_CATALOG_STREAM = (0, 1)
_CAMPAIGN_STREAM = (0, 2)
# A missing int64 value: a status never reached, a time that never came.
_INT_NA = np.iinfo(np.int64).max
