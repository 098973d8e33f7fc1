"""A deterministic, realistic sample online shop (customers, orders, items, site events,
feedback, mailings) written chunk by chunk in the formats include/config/winback.yaml reads."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, date, datetime
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

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
CONSUMABLES = (0, 1, 2)  # categories a second purchase rhythm can come from

# Customer kinds. Non-buyers register and never order; window shoppers are non-buyers
# who browse a lot.
NON_BUYER, ONE_OFF, OCCASIONAL, REGULAR, LOYAL = range(5)
KIND_SHARES = (0.09, 0.16, 0.33, 0.31, 0.11)
WINDOW_SHOPPER_SHARE_OF_NON_BUYERS = 0.35
# Gap multiplier against the category cycle and mean active lifetime (days) per kind.
KIND_GAP_FACTOR = (1.0, 1.0, 1.8, 1.0, 0.85)
KIND_LIFETIME_DAYS = (0.0, 0.0, 250.0, 420.0, 700.0)
# Probability of a second (and, for loyal, third) category rhythm per kind; durable-main
# repeaters usually also buy consumables, otherwise they could never repeat.
KIND_EXTRA_STREAM = (0.0, 0.0, 0.10, 0.20, 1.0)
LOYAL_THIRD_STREAM = 0.3
DURABLE_MAIN_EXTRA_STREAM = 0.6
PERSONAL_RHYTHM_SIGMA = 0.3
UNHAPPY_SHARE = 0.08
UNHAPPY_LIFETIME_FACTOR = 0.35
MIN_GAP_DAYS = 1.0

# First order: many buy in the registration session, the rest days or weeks later.
FIRST_ORDER_IMMEDIATE_SHARE = 0.55
FIRST_ORDER_DELAY_DAYS = 12.0

# Acquisition grows over the window (last month ~2.5x the first) with the seasons.
ACQUISITION_GROWTH = 2.5
MONTH_SEASON = {1: 0.78, 2: 0.88, 3: 1.0, 4: 1.0, 5: 0.95, 6: 0.9,
                7: 0.9, 8: 0.95, 9: 1.0, 10: 1.05, 11: 1.35, 12: 1.55}
# Local hour-of-day weights: evenings and lunch breaks, quiet nights.
HOUR_WEIGHTS = np.array([1, 0.5, 0.3, 0.2, 0.2, 0.3, 0.8, 1.5, 2.5, 3.5, 4, 4.5,
                         5, 5, 4.5, 4.5, 4.5, 5, 5.5, 6.5, 7, 6.5, 4.5, 2.5])

# Orders.
LINE_COUNT_P = {"default": (0.6, 0.25, 0.1, 0.05), "loyal": (0.4, 0.3, 0.2, 0.1)}
SAME_CATEGORY_LINE_SHARE = 0.5
FREE_DELIVERY_FROM = 4_000.0
DELIVERY_FEE = 299.0
DELIVERY_FEE_SHARE = 0.7  # the rest pick up from a point for free
CURRENCIES = ("RUB", "USD", "EUR")
CURRENCY_P = (0.985, 0.01, 0.005)
RUB_PER = (1.0, 90.0, 98.0)
ONLINE_PAYMENT_SHARE = 0.85  # cash-on-delivery orders stay "new" until shipped
CANCEL_P = {"happy": 0.033, "unhappy": 0.15}
REFUND_P = {"happy": 0.027, "unhappy": 0.12}
RETURN_WINDOW_DAYS = 14  # delivered orders become completed when it closes
STATUSES = ("new", "paid", "shipped", "delivered", "completed", "canceled", "refunded")
ST_NEW, ST_PAID, ST_SHIPPED, ST_DELIVERED, ST_COMPLETED, ST_CANCELED, ST_REFUNDED = range(7)
PROMO_CODES = ("WELCOME10", "BLACKFRIDAY", "SALE5", "BACK15", "VIP20")
WELCOME_PROMO_SHARE = 0.12
BLACK_FRIDAY_PROMO_SHARE = 0.25
OTHER_PROMO_SHARE = 0.04

# Feedback.
FEEDBACK_SHARE = {"happy": 0.28, "unhappy": 0.6}
SCORE_P_HAPPY = (0.015, 0.01, 0.015, 0.02, 0.04, 0.06, 0.10, 0.19, 0.22, 0.33)
SCORE_P_UNHAPPY = (0.22, 0.15, 0.14, 0.11, 0.1, 0.08, 0.06, 0.05, 0.05, 0.04)
COMMENT_SHARE = 0.5
COMMENTS = {
    "low": ("Долгая доставка", "Товар пришёл повреждённым, оформила возврат",
            'Не соответствует описанию, "премиум" только на упаковке',
            "Отменили заказ без объяснений", "Курьер опоздал на 3 часа, очень неудобно"),
    "mid": ("Нормально", "В целом неплохо, но упаковка так себе", "Доставка могла быть быстрее",
            "Цена кусается, качество среднее"),
    "high": ("Всё отлично, спасибо!", "Быстро, удобно, буду заказывать ещё", "Кот доволен :)",
             "Отличный кофе, как всегда", "Пришло на день раньше, супер"),
}

# Mailings: about four campaigns a month; the third goes to lapsing customers only.
CAMPAIGN_DAYS = (3, 10, 17, 24)
CAMPAIGN_NEWSLETTER, CAMPAIGN_PROMO, CAMPAIGN_WINBACK, CAMPAIGN_NEWS = range(4)
WINBACK_AFTER_DAYS = 60
NEWS_AUDIENCE_SHARE = 0.5
EMAIL_SHARE = 0.97
EMAIL_CONSENT_SHARE_OF_EMAILS = 0.88  # ~5 pp unsubscribe later -> ~80 % at the end
SMS_CONSENT_SHARE = 0.5
ADS_CONSENT_SHARE = 0.65
UNSUBSCRIBE_SHARE = 0.05
# Open propensity classes: never (these become "archived"), rarely, engaged.
OPEN_CLASS_P = (0.3, 0.3, 0.4)
OPEN_P = (0.0, 0.1, 0.4)
CLICK_P_GIVEN_OPEN = (0.0, 0.15, 0.25)
MAILING_EVENTS = ("sent", "open", "click", "unsubscribe")
ME_SENT, ME_OPEN, ME_CLICK, ME_UNSUBSCRIBE = range(4)

# Contacts.
PHONE_SHARE = 0.85
PROFILE_EDIT_SHARE = 0.25
EMAIL_ODD_CASE_SHARE = 0.07
EMAIL_UPPER_SHARE = 0.01
EMAIL_SPACES_SHARE = 0.03
SECOND_DEVICE_SHARE = 0.3
PRIMARY_DEVICE_SHARE = 0.75
CITY_SHARE = 0.95

# Site events. Budget order: signups and one purchase session per order are
# mandatory; then abandoned carts (up to ABANDON_BUDGET_CAP of what is left), then
# browsing. If the mandatory part alone exceeds the target, the optional part still
# gets MIN_OPTIONAL_EVENT_SHARE of it so every behaviour stays present.
ABANDONED_CART_SHARE = 0.70  # of sessions with add_to_cart
ABANDON_BUDGET_CAP = 0.9
MIN_OPTIONAL_EVENT_SHARE = 0.05
FOLLOWUP_ORDER_SHARE = 0.10  # orders preceded by an abandoned cart with the same items
ANONYMOUS_ABANDON_SHARE = 0.25
PRE_REGISTRATION_BROWSE_SHARE = 0.3
ANON_VISITORS_PER_CUSTOMER = 0.5
RECENT_REGISTRATION_DAYS = 45
BROWSE_SHARES = {"buyers": 0.45, "window": 0.3, "anonymous": 0.25}
WINDOW_SHOPPER_WEIGHT = 25.0
ACTIVE_TAIL_DAYS = 45  # customers keep visiting a while after their last order
PURCHASE_LOGIN_SHARE = 0.2
SESSION_MODE_P = (0.7, 0.15, 0.15)  # logged in / logs in during the session / anonymous
EVENT_GAP_MEAN_S = 40.0
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

# Bad rows: each injected row carries exactly one defect of its entity's kinds.
BAD_KINDS = {
    "customers": ("malformed_email", "implausible_phone"),
    "orders": ("negative_amount", "missing_customer", "unknown_currency", "future_date",
               "unparseable_date", "unknown_status"),
    "order_items": (),
    "events": ("unknown_event_type", "missing_ids"),
    "feedback": ("score_zero", "score_eleven"),
    "mailing_events": ("unknown_event",),
}
ENTITY_DIRS = {"customers": "customers", "orders": "orders", "order_items": "order_items",
               "events": "events", "feedback": "feedback", "mailing_events": "mailing"}

FIRST_NAMES = (  # (Cyrillic, Latin, female)
    ("Александр", "aleksandr", 0), ("Дмитрий", "dmitry", 0), ("Максим", "maksim", 0),
    ("Сергей", "sergey", 0), ("Андрей", "andrey", 0), ("Алексей", "aleksey", 0),
    ("Иван", "ivan", 0), ("Михаил", "mikhail", 0), ("Артём", "artem", 0),
    ("Никита", "nikita", 0), ("Евгений", "evgeny", 0), ("Павел", "pavel", 0),
    ("Владимир", "vladimir", 0), ("Олег", "oleg", 0), ("Роман", "roman", 0),
    ("Илья", "ilya", 0), ("Анна", "anna", 1), ("Мария", "maria", 1), ("Елена", "elena", 1),
    ("Ольга", "olga", 1), ("Наталья", "natalya", 1), ("Татьяна", "tatyana", 1),
    ("Екатерина", "ekaterina", 1), ("Юлия", "yulia", 1), ("Ирина", "irina", 1),
    ("Светлана", "svetlana", 1), ("Анастасия", "anastasia", 1), ("Дарья", "darya", 1),
    ("Ксения", "ksenia", 1), ("Полина", "polina", 1), ("Виктория", "viktoria", 1),
    ("Алёна", "alena", 1),
)
LAST_NAMES = ("ivanov", "smirnov", "kuznetsov", "popov", "vasiliev", "petrov", "sokolov",
              "mikhailov", "novikov", "fedorov", "morozov", "volkov", "alekseev", "lebedev",
              "semenov", "egorov", "pavlov", "kozlov", "stepanov", "nikolaev")
EMAIL_DOMAINS = (("mail.ru", 0.35), ("yandex.ru", 0.25), ("gmail.com", 0.2), ("bk.ru", 0.05),
                 ("list.ru", 0.04), ("inbox.ru", 0.03), ("rambler.ru", 0.04), ("ya.ru", 0.04))
CITIES = (("Москва", 0.3), ("Санкт-Петербург", 0.15), ("Новосибирск", 0.05),
          ("Екатеринбург", 0.06), ("Казань", 0.05), ("Нижний Новгород", 0.05),
          ("Челябинск", 0.04), ("Самара", 0.04), ("Омск", 0.03), ("Ростов-на-Дону", 0.05),
          ("Уфа", 0.04), ("Красноярск", 0.04), ("Воронеж", 0.04), ("Пермь", 0.03),
          ("Волгоград", 0.03))

# Chunks draw from (seed, part); shared reference data from three-number seeds, so no
# part number can ever collide with them.
_CATALOG_STREAM = (0, 1)
_CAMPAIGN_STREAM = (0, 2)
_INT_NA = np.iinfo(np.int64).max
WRITE_BATCH_ROWS = 100_000
WRITE_THREADS = 2

TS_CUSTOMERS = "%d.%m.%Y %H:%M:%S"
TS_ORDERS = "%Y-%m-%d %H:%M:%S"
TS_ISO_LOCAL = "%Y-%m-%dT%H:%M:%S"
TS_ISO_UTC = "%Y-%m-%dT%H:%M:%SZ"


# --------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------


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


def generate_shop(
    out_dir: Path, spec: ShopSpec, progress: Callable[[str], None] | None = None
) -> dict:
    """Writes the shop under out_dir (customers/, orders/, order_items/, events/, feedback/, mailing/)
    and out_dir/manifest.json; returns the manifest dict."""
    _check_spec(spec)
    say = progress or (lambda message: None)
    out_dir = Path(out_dir)
    tl = _timeline(spec)
    catalog = _catalog(spec.seed)
    campaigns = _campaign_schedule(spec.seed, tl)
    _prepare_dirs(out_dir)
    manifest = _empty_manifest(spec, tl)
    ids = _IdCounters()
    writer = _Writer(out_dir, tl, spec.events_format)
    n_chunks = math.ceil(spec.customers / spec.chunk_customers)
    try:
        for part in range(n_chunks):
            first = part * spec.chunk_customers
            n = min(spec.chunk_customers, spec.customers - first)
            rng = np.random.default_rng([spec.seed, part])
            # The previous part is still being written while this one is generated.
            chunk = _generate_chunk(rng, part, first, n, spec, tl, catalog, campaigns, ids)
            writer.write_chunk(part, chunk, catalog, campaigns, manifest)
            say(f"part {part + 1}/{n_chunks}: {n} customers, {chunk.orders.n} orders, "
                f"{chunk.events.n} events")
            del chunk
    finally:
        writer.close()
    manifest["order_updates"] = manifest["entities"]["orders"]["rows"] - manifest["entities"]["orders"]["distinct"]
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n",
                                           encoding="utf-8")
    say(f"done: {manifest['entities']['orders']['distinct']} orders, {manifest['entities']['events']['rows']} events")
    return manifest


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
# Time: naive Moscow local time as int64 seconds since 1970-01-01 00:00 "local".
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Timeline:
    start: date
    end: date
    months: tuple[str, ...]
    month_starts: np.ndarray  # local seconds of each month's first day
    start_ts: int
    end_ts: int  # end day 23:59:59
    days: int
    op_grid: np.ndarray  # operational (season-weighted) time at each day boundary
    acquisition_cdf: np.ndarray  # per day

    def to_op(self, t: np.ndarray) -> np.ndarray:
        """Calendar seconds -> operational days (busy months pass faster)."""
        return np.interp((t - self.start_ts) / DAY, np.arange(self.days + 1), self.op_grid)

    def from_op(self, op: np.ndarray) -> np.ndarray:
        return self.start_ts + np.interp(op, self.op_grid, np.arange(self.days + 1)) * DAY

    def month_of(self, t: np.ndarray) -> np.ndarray:
        idx = np.searchsorted(self.month_starts, t, side="right") - 1
        return np.clip(idx, 0, len(self.months) - 1)


def _timeline(spec: ShopSpec) -> _Timeline:
    end = spec.end or datetime.now(UTC).date()
    month0 = end.year * 12 + end.month - 1 - (spec.months - 1)
    start = date(month0 // 12, month0 % 12 + 1, 1)
    month_dates = [date((month0 + i) // 12, (month0 + i) % 12 + 1, 1) for i in range(spec.months)]
    epoch = date(1970, 1, 1)
    days = (end - start).days + 1
    day_dates = np.arange(np.datetime64(start), np.datetime64(end) + 1, dtype="datetime64[D]")
    month_number = day_dates.astype("datetime64[M]").astype(np.int64) % 12 + 1
    season = np.array([MONTH_SEASON[m] for m in range(1, 13)])[month_number - 1]
    op_grid = np.concatenate([[0.0], np.cumsum(season)])
    growth = ACQUISITION_GROWTH ** (np.arange(days) / max(days - 1, 1))
    acquisition = growth * season
    return _Timeline(
        start=start,
        end=end,
        months=tuple(f"{d.year:04d}-{d.month:02d}" for d in month_dates),
        month_starts=np.array([(d - epoch).days * DAY for d in month_dates], dtype=np.int64),
        start_ts=(start - epoch).days * DAY,
        end_ts=(end - epoch).days * DAY + DAY - 1,
        days=days,
        op_grid=op_grid,
        acquisition_cdf=np.cumsum(acquisition) / acquisition.sum(),
    )


def _time_of_day(rng: np.random.Generator, n: int) -> np.ndarray:
    hours = rng.choice(24, size=n, p=HOUR_WEIGHTS / HOUR_WEIGHTS.sum())
    return hours * HOUR + rng.integers(0, HOUR, n)


def _acquisition_times(rng: np.random.Generator, n: int, tl: _Timeline) -> np.ndarray:
    day = np.minimum(np.searchsorted(tl.acquisition_cdf, rng.random(n)), tl.days - 1)
    return tl.start_ts + day * DAY + _time_of_day(rng, n)


# --------------------------------------------------------------------------------------
# Reference data shared by all chunks.
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Catalog:
    offset: np.ndarray  # first global sku index per category
    size: np.ndarray  # skus per category
    sku_names: list[str]
    sku_category: np.ndarray
    price: np.ndarray


def _catalog(seed: int) -> _Catalog:
    rng = np.random.default_rng([seed, *_CATALOG_STREAM])
    names, cats, prices = [], [], []
    for c, cat in enumerate(CATEGORIES):
        raw = np.exp(rng.uniform(np.log(cat.price_min), np.log(cat.price_max), cat.skus))
        # Shop prices end in 9: 1299, 45990.
        step = np.where(raw >= 10_000, 100, 10)
        nice = np.maximum(np.round(raw / step) * step - np.where(step == 100, 10, 1), cat.price_min)
        names += [f"{cat.prefix}-{i + 1:04d}" for i in range(cat.skus)]
        cats.append(np.full(cat.skus, c, np.int8))
        prices.append(nice)
    size = np.array([cat.skus for cat in CATEGORIES])
    return _Catalog(
        offset=np.concatenate([[0], np.cumsum(size)[:-1]]),
        size=size,
        sku_names=names,
        sku_category=np.concatenate(cats),
        price=np.concatenate(prices).astype(np.float64),
    )


@dataclass(frozen=True)
class _Campaigns:
    names: list[str]
    send_ts: np.ndarray
    kind: np.ndarray  # position in the month: CAMPAIGN_NEWSLETTER ... CAMPAIGN_NEWS


def _campaign_schedule(seed: int, tl: _Timeline) -> _Campaigns:
    rng = np.random.default_rng([seed, *_CAMPAIGN_STREAM])
    names, sends, kinds = [], [], []
    for m, label in enumerate(tl.months):
        jitter = rng.integers(0, 3, len(CAMPAIGN_DAYS))
        minutes = rng.integers(0, 180, len(CAMPAIGN_DAYS))
        for i, day in enumerate(CAMPAIGN_DAYS):
            ts = int(tl.month_starts[m]) + (day - 1 + int(jitter[i])) * DAY + 10 * HOUR + int(minutes[i]) * MINUTE
            if tl.start_ts <= ts <= tl.end_ts:
                names.append(f"camp-{label}-{i + 1}")
                sends.append(ts)
                kinds.append(i)
    return _Campaigns(names, np.array(sends, np.int64), np.array(kinds, np.int8))


# --------------------------------------------------------------------------------------
# One chunk: customers, their orders, mailings and site sessions.
# --------------------------------------------------------------------------------------


class _IdCounters:
    """Running ids across chunks (chunks are generated in order, so this is deterministic)."""

    def __init__(self) -> None:
        self.order = 0
        self.session = 0
        self.anonymous_visitor = 0


@dataclass
class _Table:
    """Columns of equal length; n is their length."""

    cols: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(next(iter(self.cols.values()))) if self.cols else 0

    def __getitem__(self, key: str) -> np.ndarray:
        return self.cols[key]

    def take(self, index: np.ndarray) -> _Table:
        return _Table({k: v[index] for k, v in self.cols.items()})


@dataclass
class _Chunk:
    customers: _Table
    orders: _Table
    order_rows: _Table
    lines: _Table
    feedback: _Table
    mailing: _Table
    sessions: _Table
    events: _Table


def _generate_chunk(rng, part, first, n, spec, tl, catalog, campaigns, ids) -> _Chunk:
    cust = _draw_customers(rng, first, n, tl)
    orders = _simulate_orders(rng, cust, tl, round(spec.orders_per_customer * n))
    orders.cols["id"] = ids.order + 1 + np.arange(orders.n, dtype=np.int64)
    ids.order += orders.n
    lines = _draw_order_lines(rng, orders, cust, catalog)
    _price_orders(rng, orders, lines, cust, tl)
    transitions = _order_transitions(rng, orders, cust)
    order_rows = _order_rows(orders, transitions, tl)
    feedback = _draw_feedback(rng, orders, transitions, cust, tl)
    mailing = _draw_mailing(rng, cust, orders, campaigns, tl)
    _draw_contacts(rng, cust, tl, spec.customers)
    sessions, events = _draw_events(rng, cust, orders, lines, catalog, campaigns, tl, spec, ids)
    _inject_bad_rows(rng, part, spec.bad_share, cust, order_rows, sessions, events, feedback, mailing)
    return _Chunk(cust, orders, order_rows, lines, feedback, mailing, sessions, events)


def _draw_customers(rng, first: int, n: int, tl: _Timeline) -> _Table:
    kind = rng.choice(len(KIND_SHARES), size=n, p=KIND_SHARES).astype(np.int8)
    window = (kind == NON_BUYER) & (rng.random(n) < WINDOW_SHOPPER_SHARE_OF_NON_BUYERS)
    main_share = np.array([c.main_share for c in CATEGORIES])
    reg = _acquisition_times(rng, n, tl)
    # Nobody registers in the first minutes of the window: their sessions would start before it.
    reg = np.maximum(reg, tl.start_ts + 6 * HOUR)
    return _Table({
        "g": first + np.arange(n, dtype=np.int64),
        "kind": kind,
        "window": window,
        "main_cat": rng.choice(len(CATEGORIES), size=n, p=main_share / main_share.sum()).astype(np.int8),
        "personal": rng.lognormal(0.0, PERSONAL_RHYTHM_SIGMA, n),
        "unhappy": rng.random(n) < UNHAPPY_SHARE,
        "devices": 1 + (rng.random(n) < SECOND_DEVICE_SHARE).astype(np.int8),
        "reg": reg,
        "open_class": rng.choice(len(OPEN_CLASS_P), size=n, p=OPEN_CLASS_P).astype(np.int8),
        "has_email": rng.random(n) < EMAIL_SHARE,
    })


def _streams(rng, cust: _Table, buys: np.ndarray) -> _Table:
    """Purchase rhythms: every buyer has one in the main category; some add consumables."""
    n = cust.n
    kind = cust["kind"]
    durable_main = cust["main_cat"] >= len(CONSUMABLES)
    p_extra = np.array(KIND_EXTRA_STREAM)[kind]
    p_extra = np.where(durable_main & (kind != ONE_OFF) & (kind != NON_BUYER),
                       np.maximum(p_extra, DURABLE_MAIN_EXTRA_STREAM), p_extra)
    n_extra = (rng.random(n) < p_extra).astype(np.int64)
    n_extra += (kind == LOYAL) & (rng.random(n) < LOYAL_THIRD_STREAM)
    n_extra = np.where(buys, n_extra, 0)
    main_pos = np.flatnonzero(buys)
    extra_pos = np.repeat(np.arange(n), n_extra)
    _, nth = _expand(n_extra)
    # Extra rhythms come from consumables other than the main category.
    extra_cat = (cust["main_cat"][extra_pos] + 1 + nth + rng.integers(0, 2, extra_pos.size)) % len(CONSUMABLES)
    extra_cat = np.where(extra_cat == cust["main_cat"][extra_pos], (extra_cat + 1) % len(CONSUMABLES), extra_cat)
    return _Table({
        "cust": np.concatenate([main_pos, extra_pos]),
        "cat": np.concatenate([cust["main_cat"][main_pos], extra_cat]).astype(np.int8),
        "main": np.concatenate([np.ones(main_pos.size, bool), np.zeros(extra_pos.size, bool)]),
    })


def _simulate_orders(rng, cust: _Table, tl: _Timeline, target: int) -> _Table:
    """Renewal processes per rhythm in season-warped time, cut by a personal lifetime.

    One intensity factor k (gaps / k, lifetimes * k) is solved per chunk on the same
    random draws so that the chunk hits the target number of orders.
    """
    n = cust.n
    kind = cust["kind"]
    immediate = rng.random(n) < FIRST_ORDER_IMMEDIATE_SHARE
    delay = np.where(immediate, rng.uniform(10 * MINUTE, 40 * MINUTE, n),
                     rng.exponential(FIRST_ORDER_DELAY_DAYS * DAY, n) + HOUR)
    first = cust["reg"] + delay.astype(np.int64)
    buys = (kind != NON_BUYER) & (first <= tl.end_ts)
    lifetime = rng.exponential(1.0, n) * np.array(KIND_LIFETIME_DAYS)[kind]
    lifetime = np.where(cust["unhappy"], lifetime * UNHAPPY_LIFETIME_FACTOR, lifetime)

    st = _streams(rng, cust, buys)
    s_cust, s_cat = st["cust"], st["cat"]
    cycle = np.array([c.cycle_days for c in CATEGORIES])[s_cat]
    shape = np.array([c.gap_shape for c in CATEGORIES])[s_cat]
    mean_gap = cycle * np.array(KIND_GAP_FACTOR)[kind[s_cust]] * cust["personal"][s_cust]
    width = int(np.clip(8 * target / max(n, 1) + 16, 24, 160))
    # float32 is plenty for day offsets and halves the largest arrays of the chunk.
    offsets = rng.standard_gamma(np.broadcast_to(shape[:, None], (st.n, width)).astype(np.float32),
                                 dtype=np.float32)
    offsets *= (mean_gap / shape).astype(np.float32)[:, None]
    np.maximum(offsets, MIN_GAP_DAYS, out=offsets)
    offsets[:, 0] = np.where(st["main"], 0.0, rng.uniform(0.2, 1.0, st.n) * mean_gap)
    np.cumsum(offsets, axis=1, out=offsets)
    offsets[(kind[s_cust] == ONE_OFF), 1:] = np.inf
    first_op = tl.to_op(first[s_cust].astype(np.float64))
    first_day = (first[s_cust] - tl.start_ts) / DAY
    life = lifetime[s_cust]

    def valid_at(k: float) -> np.ndarray:
        stop_day = np.minimum(tl.days, first_day + life * k)
        horizon = np.interp(stop_day, np.arange(tl.days + 1), tl.op_grid) - first_op
        return offsets <= np.maximum(horizon, 0.0)[:, None] * k

    k = _solve_intensity(lambda k: int(valid_at(k).sum()), target)
    s_idx, col = np.nonzero(valid_at(k))  # row-major: per rhythm, in time order
    t = tl.from_op(first_op[s_idx] + offsets[s_idx, col].astype(np.float64) / k)

    t = tl.start_ts + np.floor((t - tl.start_ts) / DAY).astype(np.int64) * DAY + _time_of_day(rng, s_idx.size)
    opener = first[s_cust[s_idx]]
    t = np.where(st["main"][s_idx] & (col == 0), opener, np.maximum(t, opener + HOUR))
    o_ts = _keep_apart(t, s_idx, col.astype(np.int64), tl)
    keep = o_ts <= tl.end_ts
    s_idx, col, o_ts = s_idx[keep], col[keep], o_ts[keep]
    order = np.lexsort((s_idx, o_ts))  # by time; ties by rhythm keep it deterministic
    s_idx, col, o_ts = s_idx[order], col[order], o_ts[order]
    return _Table({
        "cust": s_cust[s_idx],
        "ts": o_ts,
        "cat": s_cat[s_idx],
        "stream": s_idx,
        "first": st["main"][s_idx] & (col == 0),
        "fav": rng.integers(0, 1 << 30, st.n)[s_idx],
    })


def _keep_apart(t: np.ndarray, rhythm: np.ndarray, nth: np.ndarray, tl: _Timeline) -> np.ndarray:
    """Orders of one rhythm stay in sequence and at least an hour apart.

    A running maximum per rhythm: rows are grouped by rhythm, and shifting each group
    by rhythm * SEGMENT keeps the maximum from leaking between groups.
    """
    segment = np.int64(1) << 36
    rel = t - nth * HOUR - tl.start_ts + DAY  # non-negative and far below `segment`
    base = rhythm.astype(np.int64) * segment
    return np.maximum.accumulate(rel + base) - base + nth * HOUR + tl.start_ts - DAY


def _solve_intensity(count: Callable[[float], int], target: int) -> float:
    lo, hi = math.log(0.02), math.log(200.0)
    best_k, best_err = 1.0, None
    for _ in range(60):
        mid = (lo + hi) / 2
        got = count(math.exp(mid))
        err = abs(got - target)
        if best_err is None or err < best_err:
            best_k, best_err = math.exp(mid), err
        if err <= max(1, target // 2000):
            break
        lo, hi = (mid, hi) if got < target else (lo, mid)
    return best_k


def _expand(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For per-owner counts: each element's owner and its position within the owner."""
    counts = np.asarray(counts, dtype=np.int64)
    owner = np.repeat(np.arange(counts.size), counts)
    starts = np.cumsum(counts) - counts
    return owner, np.arange(owner.size, dtype=np.int64) - starts[owner]


def _draw_order_lines(rng, orders: _Table, cust: _Table, catalog: _Catalog) -> _Table:
    loyal = cust["kind"][orders["cust"]] == LOYAL
    n_lines = 1 + np.where(loyal, rng.choice(4, orders.n, p=LINE_COUNT_P["loyal"]),
                           rng.choice(4, orders.n, p=LINE_COUNT_P["default"]))
    owner, pos = _expand(n_lines)
    addon_w = np.array([c.addon_weight for c in CATEGORIES])
    addon_cat = rng.choice(len(CATEGORIES), owner.size, p=addon_w / addon_w.sum())
    same = (pos == 0) | (rng.random(owner.size) < SAME_CATEGORY_LINE_SHARE)
    cat = np.where(same, orders["cat"][owner], addon_cat).astype(np.int64)
    size = catalog.size[cat]
    repeat_p = np.array([c.repeat_sku_share for c in CATEGORIES])[cat]
    fav = (pos == 0) & (rng.random(owner.size) < repeat_p)
    local = np.where(fav, orders["fav"][owner] % size, rng.integers(0, 1 << 30, owner.size) % size)
    local = _distinct_per_owner(owner, cat, local, size)
    sku = catalog.offset[cat] + local
    max_qty = np.array([c.max_qty for c in CATEGORIES])[cat]
    qty = 1 + rng.binomial(max_qty - 1, 0.3)
    return _Table({"order": owner, "pos": pos, "sku": sku, "cat": cat.astype(np.int8),
                   "qty": qty.astype(np.int64), "price": catalog.price[sku]})


def _distinct_per_owner(owner, cat, local, size) -> np.ndarray:
    """Shift repeated skus inside one order to the next sku until all lines differ."""
    local = local.copy()
    group = (owner.astype(np.int64) * len(CATEGORIES) + cat) << 16  # catalogues are < 65536
    while True:
        key = group + local
        order = np.argsort(key, kind="stable")
        sorted_key = key[order]
        hit = order[1:][sorted_key[1:] == sorted_key[:-1]]
        if hit.size == 0:
            return local
        local[hit] = (local[hit] + 1) % size[hit]


def _price_orders(rng, orders: _Table, lines: _Table, cust: _Table, tl: _Timeline) -> None:
    n = orders.n
    items = np.bincount(lines["order"], weights=lines["qty"] * lines["price"], minlength=n)
    fee = np.where((items < FREE_DELIVERY_FROM) & (rng.random(n) < DELIVERY_FEE_SHARE), DELIVERY_FEE, 0.0)
    currency = rng.choice(len(CURRENCIES), n, p=CURRENCY_P)
    orders.cols["items_total"] = items
    orders.cols["amount"] = np.round((items + fee) / np.array(RUB_PER)[currency], 2)
    orders.cols["currency"] = currency.astype(np.int8)
    orders.cols["n_lines"] = np.bincount(lines["order"], minlength=n)
    month_num = (tl.month_of(orders["ts"]) + int(tl.months[0][5:]) - 1) % 12 + 1
    day_in_month = (orders["ts"] - tl.month_starts[tl.month_of(orders["ts"])]) // DAY + 1
    black_friday = (month_num == 11) & (day_in_month >= 20)
    u = rng.random(n)
    promo = np.full(n, -1, np.int64)
    other = ~black_friday & (u < OTHER_PROMO_SHARE)
    promo[other] = 2 + rng.integers(0, len(PROMO_CODES) - 2, int(other.sum()))
    promo[black_friday & (u < BLACK_FRIDAY_PROMO_SHARE)] = 1
    promo[orders["first"] & (rng.random(n) < WELCOME_PROMO_SHARE)] = 0
    orders.cols["promo"] = promo
    second = (cust["devices"][orders["cust"]] == 2) & (rng.random(n) > PRIMARY_DEVICE_SHARE)
    orders.cols["device"] = second.astype(np.int64)


def _order_transitions(rng, orders: _Table, cust: _Table) -> _Table:
    """Status history per order: five slots of (time, status), _INT_NA when skipped."""
    n = orders.n
    t0 = orders["ts"]
    unhappy = cust["unhappy"][orders["cust"]]
    canceled = rng.random(n) < np.where(unhappy, CANCEL_P["unhappy"], CANCEL_P["happy"])
    refunded = ~canceled & (rng.random(n) < np.where(unhappy, REFUND_P["unhappy"], REFUND_P["happy"]))
    online = rng.random(n) < ONLINE_PAYMENT_SHARE
    paid = np.where(online, t0 + rng.integers(MINUTE, 20 * MINUTE, n), _INT_NA)
    cancel_at = np.where(online, paid, t0) + rng.integers(30 * MINUTE, 48 * HOUR, n)
    shipped = t0 + rng.integers(12 * HOUR, 72 * HOUR, n)
    delivered = shipped + rng.integers(DAY, 6 * DAY, n)
    final = np.where(refunded, delivered + rng.integers(DAY, (RETURN_WINDOW_DAYS - 1) * DAY, n),
                     delivered + RETURN_WINDOW_DAYS * DAY)
    times = np.stack([
        t0, paid,
        np.where(canceled, cancel_at, shipped),
        np.where(canceled, _INT_NA, delivered),
        np.where(canceled, _INT_NA, final),
    ], axis=1)
    codes = np.stack([
        np.full(n, ST_NEW), np.full(n, ST_PAID),
        np.where(canceled, ST_CANCELED, ST_SHIPPED),
        np.full(n, ST_DELIVERED),
        np.where(refunded, ST_REFUNDED, ST_COMPLETED),
    ], axis=1)
    return _Table({"times": times, "codes": codes,
                   "delivered": np.where(canceled, _INT_NA, delivered)})


def _order_rows(orders: _Table, tr: _Table, tl: _Timeline) -> _Table:
    """One row per order per monthly drop in which its status changed.

    The drop of a month shows the status at its end; an order reappears in a later
    month's drop whenever its status moved on in that month.
    """
    times, codes = tr["times"], tr["codes"]
    happened = times <= tl.end_ts
    o_idx, slot = np.nonzero(happened)  # row-major: per order, slots in time order
    t = times[o_idx, slot]
    month = tl.month_of(t)
    last = np.ones(o_idx.size, bool)
    last[:-1] = (o_idx[1:] != o_idx[:-1]) | (month[1:] != month[:-1])
    o_idx, slot, t, month = o_idx[last], slot[last], t[last], month[last]
    status = codes[o_idx, slot]
    shown_delivered = np.isin(status, (ST_DELIVERED, ST_COMPLETED, ST_REFUNDED))
    return _Table({
        "order": o_idx,
        "status": status.astype(np.int8),
        "updated": t,
        "delivered": np.where(shown_delivered, tr["delivered"][o_idx], _INT_NA),
        "month": month,
        "bad": np.zeros(o_idx.size, np.int8),
    })


def _draw_feedback(rng, orders: _Table, tr: _Table, cust: _Table, tl: _Timeline) -> _Table:
    delivered = tr["delivered"]
    unhappy = cust["unhappy"][orders["cust"]]
    share = np.where(unhappy, FEEDBACK_SHARE["unhappy"], FEEDBACK_SHARE["happy"])
    created = np.where(delivered < _INT_NA, delivered, 0) + rng.integers(2 * HOUR, 5 * DAY, orders.n)
    gives = (delivered <= tl.end_ts) & (rng.random(orders.n) < share) & (created <= tl.end_ts)
    idx = np.flatnonzero(gives)
    refunded = tr["codes"][idx, 4] == ST_REFUNDED
    sad = unhappy[idx] | refunded
    score = np.where(sad, rng.choice(10, idx.size, p=SCORE_P_UNHAPPY),
                     rng.choice(10, idx.size, p=SCORE_P_HAPPY)) + 1
    band = np.where(score <= 4, 0, np.where(score <= 7, 1, 2))
    pools = [COMMENTS["low"], COMMENTS["mid"], COMMENTS["high"]]
    starts = np.cumsum([0] + [len(p) for p in pools])[:-1]
    sizes = np.array([len(p) for p in pools])
    comment = starts[band] + rng.integers(0, 1 << 30, idx.size) % sizes[band]
    comment = np.where(rng.random(idx.size) < COMMENT_SHARE, comment, -1)
    return _Table({"order": idx, "score": score.astype(np.int64), "comment": comment,
                   "created": created[idx], "bad": np.zeros(idx.size, np.int8)})


def _last_order_before(orders: _Table, n: int, when: int) -> np.ndarray:
    """Per customer of the chunk, time of the last order before `when` (-1 if none)."""
    before = orders["ts"] < when
    last = np.full(n, -1, np.int64)
    np.maximum.at(last, orders["cust"][before], orders["ts"][before])
    return last


def _draw_mailing(rng, cust: _Table, orders: _Table, camp: _Campaigns, tl: _Timeline) -> _Table:
    n, c = cust.n, camp.send_ts.size
    consent = cust["has_email"] & (rng.random(n) < EMAIL_CONSENT_SHARE_OF_EMAILS)
    cust.cols["email_consent0"] = consent
    receives = consent[:, None] & (cust["reg"][:, None] < camp.send_ts[None, :])
    news_pick = rng.random((n, c)) < NEWS_AUDIENCE_SHARE
    for j in range(c):
        if camp.kind[j] == CAMPAIGN_WINBACK:
            last = _last_order_before(orders, n, int(camp.send_ts[j]))
            quiet = np.where(last >= 0, last < camp.send_ts[j] - WINBACK_AFTER_DAYS * DAY,
                             cust["reg"] < camp.send_ts[j] - 14 * DAY)
            receives[:, j] &= quiet
        elif camp.kind[j] == CAMPAIGN_NEWS:
            receives[:, j] &= news_pick[:, j]
    unsub_campaign = _choose_unsubscribes(rng, receives)
    after_unsub = np.arange(c)[None, :] > unsub_campaign[:, None]
    receives &= ~(after_unsub & (unsub_campaign >= 0)[:, None])

    who, which = np.nonzero(receives)
    sent = camp.send_ts[which] + rng.integers(0, 30 * MINUTE, who.size)
    klass = cust["open_class"][who]
    opened = rng.random(who.size) < np.array(OPEN_P)[klass]
    open_ts = sent + (rng.exponential(5 * HOUR, who.size) + MINUTE).astype(np.int64)
    opened &= open_ts <= tl.end_ts
    clicked = opened & (rng.random(who.size) < np.array(CLICK_P_GIVEN_OPEN)[klass])
    click_ts = open_ts + rng.integers(10, 15 * MINUTE, who.size)
    clicked &= click_ts <= tl.end_ts
    unsub = unsub_campaign[who] == which
    unsub_ts = np.minimum(sent + rng.integers(2 * MINUTE, 2 * DAY, who.size), tl.end_ts)
    unsub_at = np.full(n, _INT_NA, np.int64)
    unsub_at[who[unsub]] = unsub_ts[unsub]
    cust.cols["unsubscribed"] = unsub_at

    parts = [(np.ones(who.size, bool), sent, ME_SENT), (opened, open_ts, ME_OPEN),
             (clicked, click_ts, ME_CLICK), (unsub, unsub_ts, ME_UNSUBSCRIBE)]
    rows_who = np.concatenate([who[m] for m, _, _ in parts])
    rows = _Table({
        "cust": rows_who,
        "campaign": np.concatenate([which[m] for m, _, _ in parts]),
        "event": np.concatenate([np.full(int(m.sum()), code, np.int8) for m, _, code in parts]),
        "ts": np.concatenate([t[m] for m, t, _ in parts]),
    })
    rows = rows.take(np.lexsort((rows["event"], rows["campaign"], rows["cust"], rows["ts"])))
    rows.cols["bad"] = np.zeros(rows.n, np.int8)
    return rows


def _choose_unsubscribes(rng, receives: np.ndarray) -> np.ndarray:
    """Per customer, the campaign after which they unsubscribed (-1: never)."""
    n = receives.shape[0]
    if receives.shape[1] == 0:
        return np.full(n, -1, np.int64)
    counts = receives.sum(axis=1)
    eligible = counts > 0
    p = min(1.0, UNSUBSCRIBE_SHARE * n / max(int(eligible.sum()), 1))
    chosen = eligible & (rng.random(n) < p)
    nth = (rng.random(n) * counts).astype(np.int64)  # 0-based among received campaigns
    rank = np.cumsum(receives, axis=1) - 1
    hit = receives & (rank == nth[:, None]) & chosen[:, None]
    return np.where(chosen, hit.argmax(axis=1), -1)


def _draw_contacts(rng, cust: _Table, tl: _Timeline, total_customers: int) -> None:
    """Names, emails, phones, city and consents; emails are unique by construction."""
    n = cust.n
    g = cust["g"]
    name_idx = rng.integers(0, len(FIRST_NAMES), n)
    female = np.array([f for _, _, f in FIRST_NAMES])[name_idx].astype(bool)
    first_lat = np.array([lat for _, lat, _ in FIRST_NAMES])[name_idx]
    last = np.array(LAST_NAMES)[rng.integers(0, len(LAST_NAMES), n)]
    last = np.where(female, np.char.add(last, "a"), last)
    # A bijection of the customer number: unique digits without looking sequential.
    digits = max(4, len(str(total_customers)))
    number = ((g * 7919 + 104_729) % (10 ** digits)).astype(np.str_)
    initial = np.array([lat[0] for _, lat, _ in FIRST_NAMES])[name_idx]
    pattern = rng.integers(0, 5, n)
    local = np.select(
        [pattern == 0, pattern == 1, pattern == 2, pattern == 3],
        [_join(first_lat, ".", last), _join(first_lat, "_", last), _join(initial, "", last),
         _join(last, ".", first_lat)],
        first_lat,
    )
    domain_p = np.array([p for _, p in EMAIL_DOMAINS])
    domain = np.array([d for d, _ in EMAIL_DOMAINS])[rng.choice(len(EMAIL_DOMAINS), n, p=domain_p / domain_p.sum())]
    email = np.char.add(np.char.add(np.char.add(local, number), "@"), domain)
    style = rng.random(n)
    email = np.where(style < EMAIL_ODD_CASE_SHARE, np.char.title(email), email)
    email = np.where((style >= EMAIL_ODD_CASE_SHARE) & (style < EMAIL_ODD_CASE_SHARE + EMAIL_UPPER_SHARE),
                     np.char.upper(email), email)
    spaces = rng.random(n) < EMAIL_SPACES_SHARE
    email = np.where(spaces, np.char.add(np.char.add(" ", email), np.where(rng.random(n) < 0.5, " ", "")), email)
    cust.cols["email_local"] = np.char.add(local, number)
    cust.cols["email"] = email
    cust.cols["phone"] = _phones(rng, g)
    cust.cols["has_phone"] = rng.random(n) < PHONE_SHARE
    cust.cols["name"] = np.array([cyr for cyr, _, _ in FIRST_NAMES])[name_idx]
    city_p = np.array([p for _, p in CITIES])
    cust.cols["city"] = rng.choice(len(CITIES), n, p=city_p / city_p.sum())
    cust.cols["has_city"] = rng.random(n) < CITY_SHARE
    cust.cols["sms"] = cust["has_phone"] & (rng.random(n) < SMS_CONSENT_SHARE / PHONE_SHARE)
    cust.cols["ads"] = rng.random(n) < ADS_CONSENT_SHARE
    edit = cust["reg"] + (rng.random(n) * (tl.end_ts - cust["reg"])).astype(np.int64)
    updated = np.where(rng.random(n) < PROFILE_EDIT_SHARE, edit, cust["reg"])
    unsub = cust["unsubscribed"]
    cust.cols["updated"] = np.where(unsub < _INT_NA, np.maximum(updated, unsub), updated)
    cust.cols["bad"] = np.zeros(n, np.int8)


def _join(a: np.ndarray, sep: str, b: np.ndarray) -> np.ndarray:
    return np.char.add(np.char.add(a, sep), b)


def _digits(values: np.ndarray, width: int) -> np.ndarray:
    return np.strings.zfill(values.astype(np.str_), width)


def _phones(rng, g: np.ndarray) -> np.ndarray:
    """Russian mobile numbers in the formats shops really store side by side."""
    number = 9_000_000_000 + (g * 387_420_489 + 123_456_789) % 1_000_000_000
    code = _digits(number // 10_000_000, 3)
    a = _digits(number // 10_000 % 1_000, 3)
    b = _digits(number // 100 % 100, 2)
    c = _digits(number % 100, 2)
    plain = np.char.add(np.char.add(np.char.add(code, a), b), c)
    dashed = np.char.add(np.char.add(np.char.add(np.char.add(a, "-"), b), "-"), c)
    fmt = rng.integers(0, 4, g.size)
    return np.select(
        [fmt == 0, fmt == 1, fmt == 2],
        [np.char.add(np.char.add(np.char.add("8 (", code), ") "), dashed),
         np.char.add(np.char.add(np.char.add("+7 ", code), " "), dashed),
         np.char.add("7", plain)],
        np.char.add("+7", plain),
    )


# --------------------------------------------------------------------------------------
# Site sessions and their events.
# --------------------------------------------------------------------------------------

S_PURCHASE, S_ABANDON, S_BROWSE, S_SIGNUP = range(4)
M_LOGGED, M_LOGIN, M_ANON, M_SIGNUP = range(4)
# Event slots in session order; auth is early (after the landing page) or late (before
# the cart).
SLOTS = ("search", "page", "auth_early", "views", "auth_late", "atc", "remove", "checkout", "purchase")
(SLOT_SEARCH, SLOT_PAGE, SLOT_AUTH_EARLY, SLOT_VIEWS, SLOT_AUTH_LATE, SLOT_ATC, SLOT_REMOVE, SLOT_CHECKOUT,
 SLOT_PURCHASE) = range(len(SLOTS))
SLOT_EVENT = (EV_SEARCH, EV_PAGE, EV_LOGIN, EV_PRODUCT, EV_LOGIN, EV_ATC, EV_REMOVE, EV_CHECKOUT,
              EV_PURCHASE)
BASKET = 4


def _sessions(n: int, **cols) -> _Table:
    """A block of sessions; unspecified counts are zero and there is no basket."""
    # Small dtypes: a chunk holds hundreds of thousands of sessions.
    t = _Table({
        "kind": np.zeros(n, np.int8), "visitor": np.zeros(n, np.int64),
        "customer": np.full(n, -1, np.int64), "mode": np.full(n, M_ANON, np.int8),
        "anchor": np.zeros(n, np.int64), "anchor_end": np.zeros(n, bool),
        "basket": np.full((n, BASKET), -1, np.int32), "n_basket": np.zeros(n, np.int8),
        "cat": np.zeros(n, np.int8), "order": np.full(n, -1, np.int32),
        "utm": np.zeros(n, np.int8),
    })
    for slot in SLOTS:
        t.cols[slot] = np.zeros(n, np.int16)
    for key, value in cols.items():
        default = t.cols[key]
        t.cols[key] = np.broadcast_to(np.asarray(value).astype(default.dtype), default.shape).copy()
    return t


def _concat(tables: list[_Table]) -> _Table:
    keys = tables[0].cols.keys()
    return _Table({k: np.concatenate([t.cols[k] for t in tables]) for k in keys})


def _session_events(t: _Table) -> np.ndarray:
    return np.sum([t[s] for s in SLOTS], axis=0, dtype=np.int64)


def _take_within(t: _Table, budget: float, limit: int | None = None) -> _Table:
    """The first sessions of a (randomly ordered) block whose events fit the budget."""
    used = np.cumsum(_session_events(t))
    keep = int(np.searchsorted(used, budget, side="right"))
    if limit is not None:
        keep = min(keep, max(int(limit), 0))
    return t.take(np.arange(keep))


def _draw_events(rng, cust, orders, lines, catalog, camp, tl, spec, ids) -> tuple[_Table, _Table]:
    n = cust.n
    buys = np.bincount(orders["cust"], minlength=n) > 0
    visitors = _Visitors(rng, cust, spec.customers, ids)
    mandatory = [
        _signup_sessions(cust),
        _purchase_sessions(rng, orders, lines, cust, visitors),
        _recent_registrant_sessions(rng, cust, buys, visitors, catalog, tl),
    ]
    used = sum(int(_session_events(s).sum()) for s in mandatory)
    target = spec.events_per_customer * n
    optional = max(target - used, MIN_OPTIONAL_EVENT_SHARE * target)

    carts_with_purchase = orders.n
    carts_already = int((mandatory[2]["atc"] > 0).sum())
    wanted = ABANDONED_CART_SHARE / (1 - ABANDONED_CART_SHARE) * carts_with_purchase - carts_already
    active = _active_windows(cust, orders, buys, tl)
    # A cart-only visit has at least a view and an add: never draw more than fit the budget.
    wanted = min(wanted, ABANDON_BUDGET_CAP * optional / 2)
    abandon = _abandon_sessions(rng, cust, orders, lines, active, visitors, catalog, tl, int(max(wanted, 0)))
    abandon = _take_within(abandon, ABANDON_BUDGET_CAP * optional, limit=wanted)
    browse_budget = optional - _session_events(abandon).sum()
    browse = _browse_sessions(rng, cust, active, buys, visitors, catalog, tl, browse_budget)

    sessions = _concat(mandatory + [abandon, browse])
    sessions = sessions.take(np.flatnonzero(_session_events(sessions) > 0))
    sessions.cols["session_id"] = ids.session + 1 + np.arange(sessions.n, dtype=np.int64)
    ids.session += sessions.n
    _assign_utm(rng, sessions, camp, tl)
    events = _expand_sessions(rng, sessions, orders, catalog, tl)
    # Only what the events file needs per session stays in memory until it is written.
    keep = ("kind", "visitor", "customer", "session_id", "utm", "campaign")
    return _Table({k: sessions[k] for k in keep}), events


class _Visitors:
    """Cookie ids: two per customer (devices), then anonymous visitors after all customers."""

    def __init__(self, rng, cust: _Table, total_customers: int, ids: _IdCounters) -> None:
        self.cust = cust
        self.second = (cust["devices"] == 2)
        self.n_anonymous = max(1, round(ANON_VISITORS_PER_CUSTOMER * cust.n))
        self.anon_base = 2 * total_customers + ids.anonymous_visitor
        ids.anonymous_visitor += self.n_anonymous
        # Heavy-tailed visit propensity: a few anonymous visitors browse a lot.
        self.anon_weight = rng.pareto(1.5, self.n_anonymous) + 0.2

    def of(self, rng, pos: np.ndarray, device: np.ndarray | None = None) -> np.ndarray:
        if device is None:
            device = (self.second[pos] & (rng.random(pos.size) > PRIMARY_DEVICE_SHARE)).astype(np.int64)
        return 2 * self.cust["g"][pos] + 1 + device

    def anonymous(self, rng, n: int) -> np.ndarray:
        p = self.anon_weight / self.anon_weight.sum()
        return self.anon_base + 1 + rng.choice(self.n_anonymous, n, p=p)


def _signup_sessions(cust: _Table) -> _Table:
    """Every customer signed up from their first device: a landing page, then the signup."""
    return _sessions(cust.n, kind=S_SIGNUP, visitor=2 * cust["g"] + 1, customer=cust["g"],
                     mode=M_SIGNUP, anchor=cust["reg"], anchor_end=True, page=1, auth_early=1,
                     cat=cust["main_cat"])


def _purchase_sessions(rng, orders, lines, cust, visitors) -> _Table:
    n = orders.n
    login = rng.random(n) < PURCHASE_LOGIN_SHARE
    basket = np.full((n, BASKET), -1, np.int64)
    basket[lines["order"], lines["pos"]] = lines["sku"]
    c = orders["cust"]
    return _sessions(
        n, kind=S_PURCHASE, visitor=visitors.of(rng, c, orders["device"]), customer=cust["g"][c],
        mode=np.where(login, M_LOGIN, M_LOGGED), anchor=orders["ts"], anchor_end=True,
        basket=basket, n_basket=orders["n_lines"], cat=orders["cat"], order=np.arange(n),
        views=1, auth_late=login.astype(np.int64), atc=orders["n_lines"], checkout=1, purchase=1,
    )


def _random_baskets(rng, cat: np.ndarray, catalog: _Catalog) -> np.ndarray:
    """Four distinct skus of each session's category."""
    size = catalog.size[cat]
    base = rng.integers(0, 1 << 30, cat.size) % size
    step = 1 + rng.integers(0, 1 << 30, cat.size) % np.maximum(size // BASKET - 1, 1)
    j = np.arange(BASKET)[None, :]
    return catalog.offset[cat][:, None] + (base[:, None] + j * step[:, None]) % size[:, None]


def _recent_registrant_sessions(rng, cust, buys, visitors, catalog, tl) -> _Table:
    """Registered lately, no order, came back to look around about two weeks ago."""
    pos = np.flatnonzero(~buys & (cust["reg"] >= tl.end_ts - RECENT_REGISTRATION_DAYS * DAY))
    k = pos.size
    reg = cust["reg"][pos]
    two_weeks = tl.end_ts - rng.integers(10 * DAY, 18 * DAY, k)
    late = reg + HOUR + (rng.random(k) * np.maximum(tl.end_ts - reg - 2 * HOUR, 0)).astype(np.int64)
    anchor = np.where(two_weeks > reg + HOUR, two_weeks, late)
    cat = cust["main_cat"][pos].astype(np.int64)
    atc = (rng.random(k) < 0.4).astype(np.int64)
    return _sessions(k, kind=np.where(atc > 0, S_ABANDON, S_BROWSE), visitor=visitors.of(rng, pos),
                     customer=cust["g"][pos], mode=M_LOGGED, anchor=anchor, page=1,
                     views=2 + rng.integers(0, 2, k), atc=atc, basket=_random_baskets(rng, cat, catalog),
                     n_basket=BASKET, cat=cat)


def _active_windows(cust, orders, buys, tl) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per customer: [from, to] of their site visits and a weight for how often they come."""
    n = cust.n
    last = np.full(n, -1, np.int64)
    np.maximum.at(last, orders["cust"], orders["ts"])
    frm = cust["reg"] + MINUTE
    to = np.where(buys, np.minimum(tl.end_ts, last + ACTIVE_TAIL_DAYS * DAY),
                  np.where(cust["window"], tl.end_ts, np.minimum(tl.end_ts, cust["reg"] + 60 * DAY)))
    to = np.maximum(to, frm + HOUR)
    weight = np.where(buys, 1.0 + np.bincount(orders["cust"], minlength=n),
                      np.where(cust["window"], WINDOW_SHOPPER_WEIGHT, 1.0))
    return frm, to, weight


def _set_mode(rng, s: _Table) -> None:
    """Logged in, logging in during the visit (before the cart if any) or anonymous."""
    mode = rng.choice(3, s.n, p=SESSION_MODE_P).astype(np.int8)  # M_LOGGED, M_LOGIN, M_ANON
    s.cols["mode"] = mode
    login = mode == M_LOGIN
    s.cols["auth_late"] = (login & (s["atc"] > 0)).astype(np.int16)
    s.cols["auth_early"] = (login & (s["atc"] == 0)).astype(np.int16)


def _abandon_sessions(rng, cust, orders, lines, active, visitors, catalog, tl, wanted: int) -> _Table:
    """Carts without an order: some are bought hours or days later, most are not."""
    frm, to, weight = active
    # Followed by an order with the same items.
    gap = orders["ts"] - cust["reg"][orders["cust"]]
    can = np.flatnonzero(gap >= 2 * HOUR)
    k_follow = min(round(FOLLOWUP_ORDER_SHARE * orders.n), can.size, wanted)
    pick = np.sort(rng.choice(can, k_follow, replace=False)) if k_follow else np.zeros(0, np.int64)
    delay = np.minimum(rng.integers(HOUR, 72 * HOUR, k_follow), gap[pick] - 30 * MINUTE)
    basket = np.full((orders.n, BASKET), -1, np.int64)
    basket[lines["order"], lines["pos"]] = lines["sku"]
    c = orders["cust"][pick]
    follow = _sessions(
        k_follow, kind=S_ABANDON, visitor=visitors.of(rng, c, orders["device"][pick]),
        customer=cust["g"][c], mode=M_LOGGED, anchor=orders["ts"][pick] - delay,
        basket=basket[pick], n_basket=orders["n_lines"][pick], cat=orders["cat"][pick],
        views=orders["n_lines"][pick], atc=orders["n_lines"][pick],
        checkout=(rng.random(k_follow) < 0.3).astype(np.int64),
    )
    rest = max(wanted - k_follow, 0)
    k_anon = round(rest * ANONYMOUS_ABANDON_SHARE)
    owners = rng.choice(cust.n, rest - k_anon, p=weight / weight.sum())
    known = _cart_only(rng, rest - k_anon, catalog, _session_category(rng, cust["main_cat"][owners]))
    known.cols.update(
        visitor=visitors.of(rng, owners), customer=cust["g"][owners],
        anchor=frm[owners] + (rng.random(owners.size) * (to[owners] - frm[owners])).astype(np.int64),
    )
    _set_mode(rng, known)
    anon = _cart_only(rng, k_anon, catalog, rng.choice(len(CATEGORIES), k_anon))
    anon.cols.update(visitor=visitors.anonymous(rng, k_anon), anchor=_acquisition_times(rng, k_anon, tl))
    others = _concat([known, anon])
    return _concat([follow, others.take(rng.permutation(others.n))])


def _session_category(rng, main_cat: np.ndarray) -> np.ndarray:
    return np.where(rng.random(main_cat.size) < 0.65, main_cat,
                    rng.integers(0, len(CATEGORIES), main_cat.size)).astype(np.int64)


def _cart_only(rng, k: int, catalog: _Catalog, cat: np.ndarray) -> _Table:
    atc = 1 + (rng.random(k) < 0.2) + (rng.random(k) < 0.05)
    return _sessions(
        k, kind=S_ABANDON, basket=_random_baskets(rng, cat, catalog), n_basket=BASKET, cat=cat,
        # One product page, the rest added straight from the listing.
        search=(rng.random(k) < 0.1).astype(np.int64), views=1,
        atc=atc, remove=((atc >= 2) & (rng.random(k) < 0.3)).astype(np.int64),
        checkout=(rng.random(k) < 0.12).astype(np.int64),
    )


def _browse_only(rng, k: int, cat: np.ndarray, view_p: float) -> _Table:
    return _sessions(k, kind=S_BROWSE, cat=cat, search=(rng.random(k) < 0.35).astype(np.int64),
                     page=(rng.random(k) < 0.6).astype(np.int64), views=rng.geometric(view_p, k))


def _browse_sessions(rng, cust, active, buys, visitors, catalog, tl, budget: float) -> _Table:
    """Looking without a cart: before registering, between orders, window shoppers, anonymous."""
    frm, to, weight = active
    blocks = []
    # Anonymous visits from the cookie the customer later signs up with.
    pre = np.flatnonzero(rng.random(cust.n) < PRE_REGISTRATION_BROWSE_SHARE)
    reg = cust["reg"][pre]
    at = reg - rng.integers(HOUR, 20 * DAY, pre.size)
    keep = at >= tl.start_ts + HOUR
    pre, at = pre[keep], at[keep]
    pre_s = _browse_only(rng, pre.size, _session_category(rng, cust["main_cat"][pre]), 0.45)
    pre_s.cols.update(visitor=2 * cust["g"][pre] + 1, anchor=at)
    pre_s = _take_within(pre_s, budget * BROWSE_SHARES["buyers"] / 2)
    blocks.append(pre_s)
    budget -= _session_events(pre_s).sum()

    groups = (("buyers", buys, 0.45), ("window", cust["window"], 0.3))
    for name, members, view_p in groups:
        share = BROWSE_SHARES[name] / sum(BROWSE_SHARES.values())
        pos = np.flatnonzero(members)
        if pos.size == 0:
            continue
        k = max(int(budget * share / 2.0), 0) + 1  # sessions have >= 2 events on average
        w = weight[pos]
        owners = pos[rng.choice(pos.size, k, p=w / w.sum())]
        s = _browse_only(rng, k, _session_category(rng, cust["main_cat"][owners]), view_p)
        s.cols.update(
            visitor=visitors.of(rng, owners), customer=cust["g"][owners],
            anchor=frm[owners] + (rng.random(k) * (to[owners] - frm[owners])).astype(np.int64),
        )
        _set_mode(rng, s)
        s = _take_within(s, budget * share)
        blocks.append(s)
    share = BROWSE_SHARES["anonymous"] / sum(BROWSE_SHARES.values())
    k = max(int(budget * share / 2.0), 0) + 1
    anon = _browse_only(rng, k, rng.integers(0, len(CATEGORIES), k), 0.4)
    anon.cols.update(visitor=visitors.anonymous(rng, k), anchor=_acquisition_times(rng, k, tl))
    blocks.append(_take_within(anon, budget * share))
    return _concat(blocks)


def _assign_utm(rng, s: _Table, camp: _Campaigns, tl: _Timeline) -> None:
    """Traffic source per session; email visits carry a campaign of their month."""
    w = np.array([ch[3] for ch in UTM_CHANNELS])
    channel = rng.choice(len(UTM_CHANNELS), s.n, p=w / w.sum())
    email = len(UTM_CHANNELS) - 1
    channel = np.where((channel == email) & (s["customer"] < 0), 0, channel)
    s.cols["utm"] = channel.astype(np.int8)
    campaign = np.full(s.n, -1, np.int64)
    if camp.send_ts.size:
        # The latest campaign sent before the visit.
        last = np.searchsorted(camp.send_ts, s["anchor"], side="right") - 1
        campaign = np.where((channel == email) & (last >= 0), last, -1)
        s.cols["utm"] = np.where((channel == email) & (last < 0), 0, channel).astype(np.int8)
    s.cols["campaign"] = campaign


def _expand_sessions(rng, s: _Table, orders: _Table, catalog: _Catalog, tl: _Timeline) -> _Table:
    """One row per event; session-level columns stay in the session table (index `sess`)."""
    counts = np.stack([s[slot] for slot in SLOTS], axis=1).astype(np.int64)
    totals = counts.sum(axis=1)
    sess = np.repeat(np.arange(s.n, dtype=np.int32), totals)
    slot = np.repeat(np.tile(np.arange(len(SLOTS), dtype=np.int8), s.n), counts.ravel())
    flat = counts.ravel()
    j = (np.arange(sess.size, dtype=np.int64) - np.repeat(np.cumsum(flat) - flat, flat)).astype(np.int32)
    del counts, flat
    event = np.array(SLOT_EVENT, np.int8)[slot]
    mode = s["mode"][sess]
    event[(slot == SLOT_AUTH_EARLY) & (mode == M_SIGNUP)] = EV_SIGNUP
    item = _event_items(rng, s, sess, slot, j, catalog)
    del j
    price = _event_prices(s, sess, slot, item, orders, catalog)
    auth_slot = np.where(s["auth_late"] > 0, SLOT_AUTH_LATE, SLOT_AUTH_EARLY).astype(np.int8)[sess]
    known = (mode == M_LOGGED) | (((mode == M_LOGIN) | (mode == M_SIGNUP)) & (slot >= auth_slot))
    del auth_slot, mode, slot
    return _Table({"ts": _event_times(rng, s, totals, sess, tl), "sess": sess, "event": event,
                   "item": item, "price": price, "known": known,
                   "bad": np.zeros(sess.size, np.int8)})


def _event_items(rng, s: _Table, sess, slot, j, catalog: _Catalog) -> np.ndarray:
    """Views show basket items first, then other products of the category; carts hold the basket."""
    item = np.full(sess.size, -1, np.int32)
    view = slot == SLOT_VIEWS
    vs, vj = sess[view], j[view]
    cat = s["cat"][vs]
    other = catalog.offset[cat] + rng.integers(0, 1 << 30, vs.size) % catalog.size[cat]
    item[view] = np.where(vj < s["n_basket"][vs], s["basket"][vs, np.minimum(vj, BASKET - 1)], other)
    atc = slot == SLOT_ATC
    item[atc] = s["basket"][sess[atc], j[atc]]
    remove = slot == SLOT_REMOVE
    rs = sess[remove]
    item[remove] = s["basket"][rs, np.clip(s["atc"][rs] - 1, 0, BASKET - 1)]
    return item


def _event_prices(s: _Table, sess, slot, item, orders: _Table, catalog: _Catalog) -> np.ndarray:
    price = np.full(sess.size, np.nan)
    has_item = item >= 0
    price[has_item] = catalog.price[item[has_item]]
    order = s["order"]
    cart_value = _basket_value(s, catalog)
    cart_value[order >= 0] = orders["items_total"][order[order >= 0]]
    checkout = slot == SLOT_CHECKOUT
    price[checkout] = cart_value[sess[checkout]]
    purchase = slot == SLOT_PURCHASE
    price[purchase] = orders["amount"][order[sess[purchase]]]
    return price


def _basket_value(s: _Table, catalog: _Catalog) -> np.ndarray:
    """Value of the items added to the cart (qty 1 each) for sessions without an order."""
    j = np.arange(BASKET)[None, :]
    added = (j < s["atc"][:, None]) & (s["basket"] >= 0)
    prices = catalog.price[np.maximum(s["basket"], 0)]
    return np.where(added, prices, 0.0).sum(axis=1)


def _event_times(rng, s: _Table, totals: np.ndarray, sess: np.ndarray, tl: _Timeline) -> np.ndarray:
    """Seconds between clicks; purchase sessions end exactly at the order's time."""
    gap = 2 + rng.exponential(EVENT_GAP_MEAN_S, sess.size).astype(np.int64)
    first = np.cumsum(totals) - totals  # every session has at least one event
    gap[first] = 0
    offset = np.cumsum(gap)
    del gap
    offset -= np.repeat(offset[first], totals)
    duration = offset[first + totals - 1]
    start = np.where(s["anchor_end"], s["anchor"] - duration,
                     np.minimum(s["anchor"], tl.end_ts - duration))
    # The analytics export is in UTC: keep visits inside the window in UTC as well.
    start = np.maximum(start, np.where(s["anchor_end"], start, tl.start_ts + MOSCOW_UTC_OFFSET))
    offset += np.repeat(start, totals)
    return offset


# --------------------------------------------------------------------------------------
# Bad rows.
# --------------------------------------------------------------------------------------


def _bad_counts(n_bad: int, kinds: int, part: int) -> np.ndarray:
    """Split evenly over kinds; the remainder rotates with the part so totals stay even."""
    counts = np.full(kinds, n_bad // kinds, np.int64)
    extra = n_bad % kinds
    for i in range(extra):
        counts[(part + i) % kinds] += 1
    return counts


def _mark_bad(rng, table: _Table, eligible: np.ndarray, share: float, part: int, kinds: int) -> None:
    """Set table['bad'] to 1..kinds on round(share * rows) rows chosen among eligible."""
    if kinds == 0 or table.n == 0:
        return
    pool = np.flatnonzero(eligible)
    if pool.size < round(share * table.n):
        pool = np.arange(table.n)
    n_bad = min(round(share * table.n), pool.size)
    rows = rng.choice(pool, n_bad, replace=False)
    counts = _bad_counts(n_bad, kinds, part)
    table.cols["bad"][rows] = np.repeat(np.arange(1, kinds + 1), counts).astype(np.int8)


def _inject_bad_rows(rng, part, share, cust, order_rows, sessions, events, feedback, mailing) -> None:
    _mark_bad(rng, cust, np.ones(cust.n, bool), share, part, len(BAD_KINDS["customers"]))
    _mark_bad(rng, order_rows, np.ones(order_rows.n, bool), share, part, len(BAD_KINDS["orders"]))
    # Only harmless events: losing a cart, a purchase or an order's only view would
    # change behaviour.
    light = np.isin(events["event"], (EV_PAGE, EV_PRODUCT, EV_SEARCH))
    light &= sessions["kind"][events["sess"]] != S_PURCHASE
    _mark_bad(rng, events, light, share, part, len(BAD_KINDS["events"]))
    _mark_bad(rng, feedback, np.ones(feedback.n, bool), share, part, len(BAD_KINDS["feedback"]))
    engagement = np.isin(mailing["event"], (ME_OPEN, ME_CLICK))
    _mark_bad(rng, mailing, engagement, share, part, len(BAD_KINDS["mailing_events"]))


# --------------------------------------------------------------------------------------
# Writing.
# --------------------------------------------------------------------------------------


def _prepare_dirs(out_dir: Path) -> None:
    """Create the folders and remove files of an earlier run (stale parts would be read)."""
    patterns = {"customers": "customers_*.csv", "orders": "orders_*.csv",
                "order_items": "order_items_*.parquet", "events": "events_*.*",
                "feedback": "feedback_*.csv", "mailing": "mailing_*.csv"}
    for sub, pattern in patterns.items():
        folder = out_dir / sub
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob(pattern):
            if old.suffix in (".csv", ".jsonl", ".parquet"):
                old.unlink()


def _empty_manifest(spec: ShopSpec, tl: _Timeline) -> dict:
    """Facts per entity under "entities" (canonical names)."""
    spec_dict = asdict(spec)
    spec_dict["end"] = tl.end.isoformat()
    entities = {
        entity: {"dir": ENTITY_DIRS[entity], "files": 0, "rows": 0, "bad": {kind: 0 for kind in kinds}}
        for entity, kinds in BAD_KINDS.items()
    }
    entities["orders"]["distinct"] = 0
    entities["customers"]["buyers"] = 0
    return {"spec": spec_dict, "start": tl.start.isoformat(), "end": tl.end.isoformat(),
            "months": list(tl.months), "parts": 0, "entities": entities, "order_updates": 0}


def _ts(values: np.ndarray) -> pa.Array:
    values = np.asarray(values, np.int64)
    missing = values == _INT_NA
    return pa.array(np.where(missing, 0, values).astype("datetime64[s]"), mask=missing)


def _dict(codes: np.ndarray, names) -> pa.DictionaryArray:
    codes = np.asarray(codes, np.int64)
    missing = codes < 0
    return pa.DictionaryArray.from_arrays(
        pa.array(np.where(missing, 0, codes).astype(np.int32), mask=missing), pa.array(list(names), pa.string()))


def _ids(prefix: str, width: int, number: str) -> str:
    return f"'{prefix}' || lpad(CAST({number} AS VARCHAR), {width}, '0')"


def _bad_code(entity: str, kind: str) -> int:
    return BAD_KINDS[entity].index(kind) + 1


class _Writer:
    """Formats columns with DuckDB and writes each file as a task of a small thread pool.

    Tables are prepared (and counted for the manifest) on the calling thread; only the
    formatting and writing of whole files runs in the pool, so the bytes of every file
    are independent of thread timing. The caller generates the next chunk meanwhile.
    """

    def __init__(self, out_dir: Path, tl: _Timeline, events_format: str) -> None:
        self.out = out_dir
        self.tl = tl
        self.events_format = events_format
        self.con: duckdb.DuckDBPyConnection | None = None
        self.pool = ThreadPoolExecutor(max_workers=WRITE_THREADS, thread_name_prefix="shop-writer")
        self.pending: list[Future] = []

    def drain(self) -> None:
        """Wait for every submitted file; re-raise the first failure."""
        pending, self.pending = self.pending, []
        wait(pending)
        # DuckDB keeps freed memory cached for its connection's lifetime: one in-memory
        # database per chunk returns it to the system.
        if self.con is not None:
            self.con.close()
            self.con = None
        for future in pending:
            future.result()

    def close(self) -> None:
        try:
            self.drain()
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)

    def _submit(self, task: Callable, *args) -> None:
        self.pending.append(self.pool.submit(task, *args))

    def _run(self, table: pa.Table, sql: str, fetch: bool = False) -> pa.Table | None:
        cursor = self.con.cursor()  # a connection per task: registrations stay private
        try:
            # Record batches let DuckDB format on several cores; it keeps the row order.
            batches = table.to_batches(max_chunksize=WRITE_BATCH_ROWS)
            cursor.register("chunk_rows", pa.Table.from_batches(batches, schema=table.schema))
            if fetch:
                return cursor.sql(sql).to_arrow_table()
            cursor.execute(sql)
            return None
        finally:
            cursor.close()

    def _copy(self, table: pa.Table, select: str, path: Path, options: str, encoding: str | None = None) -> None:
        target = str(path).replace("'", "''")
        self._run(table, f"COPY ({select} FROM chunk_rows) TO '{target}' ({options})")
        if encoding:
            # DuckDB writes UTF-8 only.
            path.write_bytes(path.read_bytes().decode("utf-8").encode(encoding))

    def _parquet(self, table: pa.Table, select: str, path: Path) -> None:
        pq.write_table(self._run(table, f"{select} FROM chunk_rows", fetch=True), path, compression="zstd")

    def _monthly(self, part: int, entity: str, stem: str, ext: str, table: pa.Table,
                 month: np.ndarray, write: Callable[[pa.Table, Path], None], manifest: dict) -> None:
        """One file per month with rows; rows must already be sorted by month."""
        bounds = np.searchsorted(month, np.arange(len(self.tl.months) + 1))
        for m, label in enumerate(self.tl.months):
            lo, hi = int(bounds[m]), int(bounds[m + 1])
            if hi > lo:
                path = self.out / ENTITY_DIRS[entity] / f"{stem}_{label}_{part:03d}.{ext}"
                self._submit(write, table.slice(lo, hi - lo), path)
                manifest["entities"][entity]["files"] += 1
        manifest["entities"][entity]["rows"] += table.num_rows

    def _count_bad(self, manifest: dict, entity: str, bad: np.ndarray) -> None:
        counts = np.bincount(bad, minlength=len(BAD_KINDS[entity]) + 1)
        for i, kind in enumerate(BAD_KINDS[entity]):
            manifest["entities"][entity]["bad"][kind] += int(counts[i + 1])

    def write_chunk(self, part: int, ch: _Chunk, catalog: _Catalog, camp: _Campaigns, manifest: dict) -> None:
        """Count the chunk into the manifest and queue its files (after the previous chunk's)."""
        self.drain()
        self.con = duckdb.connect()
        self.con.execute("SET preserve_insertion_order = true")
        self.con.execute("SET allocator_flush_threshold = '32MB'")
        manifest["parts"] += 1
        self._customers(part, ch.customers, manifest)
        self._orders(part, ch, manifest)
        self._order_items(part, ch, catalog, manifest)
        self._events(part, ch, catalog, camp, manifest)
        self._feedback(part, ch, manifest)
        self._mailing(part, ch, camp, manifest)

    def _customers(self, part: int, c: _Table, manifest: dict) -> None:
        bad = c["bad"]
        email = np.where(bad == _bad_code("customers", "malformed_email"),
                         np.char.add(c["email_local"], "@@mail"), c["email"])
        phone = np.where(bad == _bad_code("customers", "implausible_phone"), "12-34", c["phone"])
        has_phone = c["has_phone"] | (bad == _bad_code("customers", "implausible_phone"))
        has_email = c["has_email"] | (bad == _bad_code("customers", "malformed_email"))
        consent = c["email_consent0"] & (c["unsubscribed"] == _INT_NA)
        table = pa.table({
            "g": pa.array(c["g"] + 1),
            "email": pa.array(email, pa.string(), mask=~has_email),
            "phone": pa.array(phone, pa.string(), mask=~has_phone),
            "name": pa.array(c["name"], pa.string()),
            "city": _dict(np.where(c["has_city"], c["city"], -1), [name for name, _ in CITIES]),
            "reg": _ts(c["reg"]),
            "se": pa.array(consent.astype(np.int8)),
            "ss": pa.array(c["sms"].astype(np.int8)),
            "ads": pa.array(c["ads"].astype(np.int8)),
            "unsub": _ts(c["unsubscribed"]),
            "upd": _ts(c["updated"]),
        })
        select = (f"SELECT {_ids('C', 7, 'g')} AS client_id, email, phone, name, city, "
                  f"strftime(reg, '{TS_CUSTOMERS}') AS registered, se AS subscribed_email, "
                  f"ss AS subscribed_sms, ads AS ads_ok, strftime(unsub, '{TS_CUSTOMERS}') AS unsubscribed, "
                  f"strftime(upd, '{TS_CUSTOMERS}') AS updated")
        path = self.out / "customers" / f"customers_{part:03d}.csv"
        # The CRM export is Windows-1251.
        self._submit(self._copy, table, select, path, "FORMAT CSV, HEADER, DELIMITER ';'", "cp1251")
        manifest["entities"]["customers"]["files"] += 1
        manifest["entities"]["customers"]["rows"] += c.n
        self._count_bad(manifest, "customers", bad)

    def _orders(self, part: int, ch: _Chunk, manifest: dict) -> None:
        r, o, c = ch.order_rows, ch.orders, ch.customers
        r = r.take(np.lexsort((r["order"], r["updated"], r["month"])))
        oi = r["order"]
        table = pa.table({
            "oid": pa.array(o["id"][oi]), "cid": pa.array(c["g"][o["cust"][oi]] + 1),
            "created": _ts(o["ts"][oi]), "amount": pa.array(o["amount"][oi]),
            "status": _dict(r["status"], STATUSES), "currency": _dict(o["currency"][oi], CURRENCIES),
            "upd": _ts(r["updated"]), "deliv": _ts(r["delivered"]),
            "visitor": pa.array(2 * c["g"][o["cust"][oi]] + 1 + o["device"][oi]),
            "promo": _dict(o["promo"][oi], PROMO_CODES), "bad": pa.array(r["bad"]),
        })
        b = {kind: _bad_code("orders", kind) for kind in BAD_KINDS["orders"]}
        select = (
            f"SELECT {_ids('O', 8, 'oid')} AS id, "
            f"CASE WHEN bad = {b['missing_customer']} THEN NULL ELSE {_ids('C', 7, 'cid')} END AS client_id, "
            f"CASE bad WHEN {b['future_date']} THEN '2031-06-15 ' || strftime(created, '%H:%M:%S') "
            f"WHEN {b['unparseable_date']} THEN strftime(created, '%Y') || '-13-45 10:00:00' "
            f"ELSE strftime(created, '{TS_ORDERS}') END AS date, "
            f"CAST(CASE WHEN bad = {b['negative_amount']} THEN -amount ELSE amount END AS DECIMAL(14, 2)) AS sum, "
            f"CASE WHEN bad = {b['unknown_status']} THEN 'lost' ELSE CAST(status AS VARCHAR) END AS status, "
            f"CASE WHEN bad = {b['unknown_currency']} THEN 'RUBL' ELSE CAST(currency AS VARCHAR) END AS currency, "
            f"strftime(upd, '{TS_ORDERS}') AS updated, strftime(deliv, '{TS_ORDERS}') AS delivered, "
            f"{_ids('V', 9, 'visitor')} AS visitor, CAST(promo AS VARCHAR) AS promo"
        )
        self._monthly(part, "orders", "orders", "csv", table, r["month"],
                      lambda t, p: self._copy(t, select, p, "FORMAT CSV, HEADER"), manifest)
        manifest["entities"]["orders"]["distinct"] += o.n
        manifest["entities"]["customers"]["buyers"] += int(np.unique(o["cust"]).size)
        self._count_bad(manifest, "orders", r["bad"])

    def _order_items(self, part: int, ch: _Chunk, catalog: _Catalog, manifest: dict) -> None:
        li, o = ch.lines, ch.orders
        month = self.tl.month_of(o["ts"][li["order"]])
        idx = np.lexsort((li["pos"], li["order"], month))
        li, month = li.take(idx), month[idx]
        table = pa.table({
            "oid": pa.array(o["id"][li["order"]]), "sku": _dict(li["sku"], catalog.sku_names),
            "cat": _dict(li["cat"], [cat.name for cat in CATEGORIES]),
            "qty": pa.array(li["qty"]), "price": pa.array(li["price"]),
        })
        select = (f"SELECT {_ids('O', 8, 'oid')} AS order_id, CAST(sku AS VARCHAR) AS sku, "
                  "CAST(cat AS VARCHAR) AS category, CAST(qty AS BIGINT) AS qty, CAST(price AS DOUBLE) AS price")
        self._monthly(part, "order_items", "order_items", "parquet", table, month,
                      lambda t, p: self._parquet(t, select, p), manifest)

    def _events(self, part: int, ch: _Chunk, catalog: _Catalog, camp: _Campaigns, manifest: dict) -> None:
        # The biggest table: each month's rows are gathered and formatted inside its own
        # task, so a chunk's events never exist twice in memory.
        order = np.argsort(ch.events["ts"], kind="stable")
        month = self.tl.month_of(ch.events["ts"][order] - MOSCOW_UTC_OFFSET)  # files by UTC month
        bounds = np.searchsorted(month, np.arange(len(self.tl.months) + 1))
        for m, label in enumerate(self.tl.months):
            lo, hi = int(bounds[m]), int(bounds[m + 1])
            if hi > lo:
                path = self.out / "events" / f"events_{label}_{part:03d}.{self.events_format}"
                self._submit(self._events_file, ch.events, ch.sessions, order[lo:hi], catalog, camp, path)
                manifest["entities"]["events"]["files"] += 1
        manifest["entities"]["events"]["rows"] += ch.events.n
        self._count_bad(manifest, "events", ch.events["bad"])

    def _events_file(self, e: _Table, s: _Table, idx: np.ndarray, catalog: _Catalog, camp: _Campaigns,
                     path: Path) -> None:
        sess = e["sess"][idx]
        bad = e["bad"][idx]
        b = {kind: _bad_code("events", kind) for kind in BAD_KINDS["events"]}
        no_ids = bad == b["missing_ids"]
        user = np.where(e["known"][idx] & ~no_ids, s["customer"][sess], -1)
        utm = s["utm"][sess]
        email = len(UTM_CHANNELS) - 1
        no_campaign = np.array([ch[2] is None for ch in UTM_CHANNELS])
        campaign = np.where(utm == email, len(UTM_CHANNELS) + s["campaign"][sess],
                            np.where(no_campaign[utm], -1, utm))
        item = e["item"][idx]
        price = e["price"][idx]
        table = pa.table({
            "ts": _ts(e["ts"][idx] - MOSCOW_UTC_OFFSET),
            "visitor": pa.array(s["visitor"][sess], mask=no_ids),
            "user": pa.array(np.maximum(user, 0) + 1, mask=user < 0),
            "session": pa.array(s["session_id"][sess]),
            "event": _dict(np.where(bad == b["unknown_event_type"], EV_HOVER, e["event"][idx]), EVENT_TYPES),
            "item": _dict(item, catalog.sku_names),
            "cat": _dict(np.where(item >= 0, catalog.sku_category[np.maximum(item, 0)], -1),
                         [cat.name for cat in CATEGORIES]),
            "price": pa.array(price, mask=np.isnan(price)),
            "src": _dict(np.where(utm == 0, -1, utm), [ch[0] or "" for ch in UTM_CHANNELS]),
            "med": _dict(np.where(utm == 0, -1, utm), [ch[1] or "" for ch in UTM_CHANNELS]),
            "camp": _dict(campaign, [ch[2] or "" for ch in UTM_CHANNELS] + list(camp.names)),
        })
        select = (
            f"SELECT strftime(ts, '{TS_ISO_UTC}') AS ts, {_ids('V', 9, 'visitor')} AS client_id, "
            f"{_ids('C', 7, 'user')} AS user_id, {_ids('S', 10, 'session')} AS session, "
            "CAST(event AS VARCHAR) AS event, CAST(item AS VARCHAR) AS item_id, "
            "CAST(cat AS VARCHAR) AS item_category, price, CAST(src AS VARCHAR) AS utm_source, "
            "CAST(med AS VARCHAR) AS utm_medium, CAST(camp AS VARCHAR) AS utm_campaign"
        )
        if self.events_format == "parquet":
            self._parquet(table, select, path)
        else:
            self._copy(table, select, path, "FORMAT JSON")

    def _feedback(self, part: int, ch: _Chunk, manifest: dict) -> None:
        f, o, c = ch.feedback, ch.orders, ch.customers
        f = f.take(np.lexsort((f["order"], f["created"])))
        comments = COMMENTS["low"] + COMMENTS["mid"] + COMMENTS["high"]
        b = {kind: _bad_code("feedback", kind) for kind in BAD_KINDS["feedback"]}
        score = np.where(f["bad"] == b["score_zero"], 0, np.where(f["bad"] == b["score_eleven"], 11, f["score"]))
        table = pa.table({
            "oid": pa.array(o["id"][f["order"]]), "cid": pa.array(c["g"][o["cust"][f["order"]]] + 1),
            "score": pa.array(score), "comment": _dict(f["comment"], comments), "created": _ts(f["created"]),
        })
        select = (f"SELECT {_ids('O', 8, 'oid')} AS order_id, {_ids('C', 7, 'cid')} AS client_id, score, "
                  f"CAST(comment AS VARCHAR) AS comment, strftime(created, '{TS_ISO_LOCAL}') AS created")
        self._submit(self._copy, table, select, self.out / "feedback" / f"feedback_{part:03d}.csv", "FORMAT CSV, HEADER")
        manifest["entities"]["feedback"]["files"] += 1
        manifest["entities"]["feedback"]["rows"] += f.n
        self._count_bad(manifest, "feedback", f["bad"])

    def _mailing(self, part: int, ch: _Chunk, camp: _Campaigns, manifest: dict) -> None:
        m, c = ch.mailing, ch.customers
        month = self.tl.month_of(m["ts"])  # rows are sorted by time already
        event = np.where(m["bad"] == _bad_code("mailing_events", "unknown_event"), len(MAILING_EVENTS), m["event"])
        table = pa.table({
            "cid": pa.array(c["g"][m["cust"]] + 1), "campaign": _dict(m["campaign"], camp.names),
            "event": _dict(event, MAILING_EVENTS + ("opened!!",)), "ts": _ts(m["ts"]),
        })
        select = (f"SELECT {_ids('C', 7, 'cid')} AS client_id, CAST(campaign AS VARCHAR) AS campaign, "
                  f"CAST(event AS VARCHAR) AS event, strftime(ts, '{TS_ISO_LOCAL}') AS ts")
        self._monthly(part, "mailing_events", "mailing", "csv", table, month,
                      lambda t, p: self._copy(t, select, p, "FORMAT CSV, HEADER"), manifest)
        self._count_bad(manifest, "mailing_events", m["bad"])
