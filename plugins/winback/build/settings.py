"""Settings of the build stage: lifecycle and churn rules, RFM map, carts, audiences
(`segments:` and `audiences:`) and when and how builds run (`build:`).

Every threshold of the domain (docs/domain.md) is a key here with a default, so a shop
tunes its rules in the YAML file and sees the effect in the tables (docs/build.md).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from pydantic import (
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from winback.measure.settings import AudienceMeasurement
from winback.schema import CHURN_REASONS
from winback.settings import Settings

LIFECYCLE_STAGES = ("archived", "negative", "newcomer", "one_off", "lapsed", "at_risk", "loyal", "regular")


class ScoreRange(Settings):
    """Inclusive range of RFM scores (1–5)."""

    r: tuple[int, int]
    f: tuple[int, int]

    @model_validator(mode="after")
    def _scores(self) -> ScoreRange:
        for axis in ("r", "f"):
            low, high = getattr(self, axis)
            if not 1 <= low <= high <= 5:
                raise ValueError(f"{axis}: expected [low, high] with 1 <= low <= high <= 5, got [{low}, {high}]")
        return self


# The widely used R x F grid (Putler / "RFM segments" map), each cell in exactly one segment.
DEFAULT_RFM_SEGMENTS: dict[str, dict] = {
    "champions": {"r": (5, 5), "f": (4, 5)},
    "loyal": {"r": (3, 4), "f": (4, 5)},
    "potential_loyalist": {"r": (4, 5), "f": (2, 3)},
    "new": {"r": (5, 5), "f": (1, 1)},
    "promising": {"r": (4, 4), "f": (1, 1)},
    "need_attention": {"r": (3, 3), "f": (3, 3)},
    "about_to_sleep": {"r": (3, 3), "f": (1, 2)},
    "at_risk": {"r": (1, 2), "f": (3, 4)},
    "cant_lose_them": {"r": (1, 2), "f": (5, 5)},
    "hibernating": {"r": (2, 2), "f": (1, 2)},
    "lost": {"r": (1, 1), "f": (1, 2)},
}


class RfmSettings(Settings):
    segments: dict[str, ScoreRange] = Field(
        default_factory=lambda: {k: ScoreRange(**v) for k, v in DEFAULT_RFM_SEGMENTS.items()},
        description="segment name -> R and F score ranges; together they must cover the 5x5 grid once",
    )

    @model_validator(mode="after")
    def _covers_grid(self) -> RfmSettings:
        owners: dict[tuple[int, int], list[str]] = {(r, f): [] for r in range(1, 6) for f in range(1, 6)}
        for name, cell in self.segments.items():
            for r in range(cell.r[0], cell.r[1] + 1):
                for f in range(cell.f[0], cell.f[1] + 1):
                    owners[(r, f)].append(name)
        gaps = [f"R{r}F{f}" for (r, f), names in owners.items() if not names]
        overlaps = [f"R{r}F{f} ({', '.join(names)})" for (r, f), names in owners.items() if len(names) > 1]
        problems = ([f"segments: no segment covers {', '.join(gaps)}"] if gaps else []) + (
            [f"segments: cells in more than one segment: {'; '.join(overlaps)}"] if overlaps else [])
        if problems:
            raise ValueError("\n".join(problems))
        return self


class CategoryOverride(Settings):
    at_risk_days: float = Field(gt=0)
    churn_days: float = Field(gt=0)

    @model_validator(mode="after")
    def _order(self) -> CategoryOverride:
        if self.churn_days < self.at_risk_days:
            raise ValueError("churn_days must not be smaller than at_risk_days")
        return self


class ChurnSettings(Settings):
    own_rhythm_min_gaps: int = Field(default=3, ge=1, description="repeat gaps needed to use a customer's own rhythm")
    own_at_risk_factor: float = Field(default=1.5, gt=0, description="x own median gap -> at risk")
    own_churn_factor: float = Field(default=2.5, gt=0, description="x own median gap -> lapsed")
    category_at_risk_factor: float = Field(default=1.0, gt=0, description="x category p80 gap -> at risk")
    category_churn_factor: float = Field(default=1.0, gt=0, description="x category p90 gap -> lapsed")
    min_category_support: int = Field(default=30, ge=1, description="repeat gaps a category needs to have its own cycle")
    min_threshold_days: float = Field(default=14, ge=0, description="no churn threshold is shorter than this")
    default_at_risk_days: float = Field(default=90, gt=0, description="when the shop has no repeat purchases at all")
    default_churn_days: float = Field(default=180, gt=0)
    categories: dict[str, CategoryOverride] = Field(default_factory=dict, description="fixed thresholds per category")

    @model_validator(mode="after")
    def _order(self) -> ChurnSettings:
        problems = []
        if self.own_churn_factor < self.own_at_risk_factor:
            problems.append("own_churn_factor must not be smaller than own_at_risk_factor")
        if self.default_churn_days < self.default_at_risk_days:
            problems.append("default_churn_days must not be smaller than default_at_risk_days")
        if problems:
            raise ValueError("\n".join(problems))
        return self


class LifecycleSettings(Settings):
    newcomer_days: int = Field(default=30, ge=1, description="first purchase at most this many days ago")
    loyal_min_purchase_days: int = Field(default=5, ge=2)
    negative_window_days: int = Field(default=90, ge=1, description="how long a bad experience marks a customer")
    negative_max_score: int = Field(
        default=6, ge=1, le=10,
        description="feedback at or below this is negative (the lowest of the overall, service, delivery and "
                    "product scores of the last feedback)")
    late_delivery_is_negative: bool = Field(
        default=True, description="a purchase delivered later than promised (segments.delivery) inside the negative "
                                  "window makes the customer negative: a quality call, not a promo")
    archive_after_ignored_mailings: int = Field(default=5, ge=1, description="lapsed and ignored this many mailings in a row")
    signal_days: int = Field(default=90, ge=1, description="a visit or mailing click this recent is a sign of coming back")
    recent_activity_days: int = Field(default=30, ge=1, description="window of 'recent visits and cart adds'")
    value_tiers: tuple[float, float] = Field(
        default=(0.2, 0.5), description="top share that is 'high' and top share that is at least 'medium'")

    @model_validator(mode="after")
    def _tiers(self) -> LifecycleSettings:
        high, medium = self.value_tiers
        if not 0 < high <= medium <= 1:
            raise ValueError("value_tiers: expected [high, medium] with 0 < high <= medium <= 1")
        return self


class ModelSettings(Settings):
    enabled: bool = True
    min_repeat_customers: int = Field(default=50, ge=1, description="fewer repeat buyers than this: no fit")
    check_days: int | None = Field(
        default=90, ge=0,
        description="every build also fits BG/NBD on the data up to this many days before the as-of day and "
                    "compares its predicted repeat purchases in those days with the real ones (model_checks); "
                    "0 or null = no check")


class CartCategory(Settings):
    """The timing of one product category's carts and views; unset keys keep the carts default."""

    abandon_after_hours: float | None = Field(
        default=None, gt=0, description="a cart holding this category is abandoned this long after its last add")
    browse_lookback_days: int | None = Field(
        default=None, ge=1, description="views of this category count this many days back")


class CartSettings(Settings):
    abandon_after_hours: float = Field(default=3, gt=0, description="no order this long after the last add")
    follow_up_hours: float | None = Field(
        default=24, gt=0, description="a cart still open this long after it became abandoned is at step 2 "
                                      "(abandoned_carts.step): the second reminder; null = one step only")
    categories: dict[str, CartCategory] = Field(
        default_factory=dict, description="per product category: abandon_after_hours (a cart waits for its "
                                          "slowest category) and browse_lookback_days")
    lookback_days: int = Field(default=14, ge=1, description="carts older than this are forgotten")
    free_delivery_threshold: float = Field(default=4000, ge=0, description="break-even order value for free delivery")
    browse_lookback_days: int = Field(default=7, ge=1)
    browse_after_hours: float = Field(default=24, gt=0)
    window_shopper_min_sessions: int = Field(default=5, ge=1, description="sessions with views and no order, ever")
    window_shopper_days: int = Field(default=90, ge=1)
    feedback_after_delivery_hours: float = Field(default=24, gt=0)
    registered_within_days: int = Field(default=30, ge=1)
    last_visit_days: tuple[int, int] = Field(default=(10, 18), description="last visit between these many days ago")


class DeliverySettings(Settings):
    promised_days: float = Field(default=3, gt=0, description="a purchase delivered later than this after the "
                                                              "order is late")
    categories: dict[str, Annotated[float, Field(gt=0)]] = Field(
        default_factory=dict, description="promised days per product category ({furniture: 14}); an order is "
                                          "promised the longest of its items' categories")


class AdvocateSettings(Settings):
    min_score: int = Field(default=9, ge=1, le=10, description="last feedback score of a happy customer")
    long_cycle_days: float = Field(
        default=365, gt=0, description="a one-off buyer whose main category is re-bought less often than this "
                                       "(category_cycles.typical_gap_days, learned or configured) and who scored "
                                       "at least min_score is an advocate too")
    long_cycle_categories: list[str] = Field(
        default_factory=list, description="categories bought once in years whatever the data says (their "
                                          "repeat gaps come from the few who bought twice, so they read short)")


class ChurnReasonSettings(Settings):
    period_days: int = Field(
        default=365, ge=1, description="churn_reasons counts the last reason customers stated within this many days")


# The offer for a lapsed or at-risk customer, by the last reason they gave for leaving;
# `none` is for no stated reason and for reasons the map does not name.
NO_REASON = "none"
DEFAULT_WINBACK_OFFERS: dict[str, str] = {
    "price": "discount", "delivery": "free_delivery", "quality": "quality_call", "service": "quality_call",
    "other": "reminder", NO_REASON: "reminder",
}
OfferName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,39}$")]


TRIGGERS = ("birthday", "milestone", "anniversary", "replenishment", "thank_you")
TierName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,39}$")]


class TriggerSettings(Settings):
    """When each personal occasion is due (triggers_due, docs/build.md#triggers)."""

    birthday_days_before: int = Field(
        default=3, ge=0, description="birthday: due from this many days before the birthday to the day itself")
    milestones: list[int] = Field(
        default_factory=lambda: [2, 5, 10],
        description="milestone: the customer's N-th purchase day for each N, due the day after it")
    anniversary_days: int = Field(
        default=365, ge=1, description="anniversary: due every this many days since the first purchase day")
    replenishment_max_cycle_days: float = Field(
        default=60, gt=0,
        description="replenishment: only customers whose main category is re-bought in fewer days than this "
                    "(its own cycle in category_cycles, learned or configured)")
    replenishment_days_before: int = Field(
        default=5, ge=0, description="replenishment: due this many days before the expected next order")
    thank_you_within_hours: float = Field(
        default=48, gt=0, description="thank_you: due while a purchase was delivered at most this many hours ago")
    stay_due_days: int = Field(
        default=1, ge=1,
        description="milestone, anniversary and replenishment stay due this many days from their due day, so a "
                    "skipped daily build does not lose them")

    @field_validator("milestones")
    @classmethod
    def _milestones(cls, milestones: list[int]) -> list[int]:
        wrong = [n for n in milestones if n < 1]
        if wrong:
            raise ValueError(f"milestones are purchase numbers (1 or more), got {', '.join(map(str, wrong))}")
        return sorted(set(milestones))


class LoyaltySettings(Settings):
    tiers: dict[TierName, float] = Field(
        default_factory=lambda: {"bronze": 0, "silver": 20000, "gold": 60000},
        description="tier -> cumulative purchase revenue from which a customer holds it "
                    "(customer_segments.loyalty_tier); a customer below the lowest threshold has none")
    close_share: float = Field(
        default=0.1, ge=0, lt=1,
        description="close to the next tier: amount_to_next_tier at most this share of that tier's threshold")

    @field_validator("tiers")
    @classmethod
    def _tiers(cls, tiers: dict[str, float]) -> dict[str, float]:
        if not tiers:
            raise ValueError("at least one tier is needed")
        negative = [name for name, threshold in tiers.items() if threshold < 0]
        if negative:
            raise ValueError(f"thresholds must not be negative: {', '.join(negative)}")
        if len(set(tiers.values())) < len(tiers):
            raise ValueError("two tiers share a threshold")
        return dict(sorted(tiers.items(), key=lambda item: item[1]))


class DiscountSettings(Settings):
    driven_min_orders: int = Field(
        default=3, ge=1, description="is_discount_driven needs at least this many purchases")
    driven_share: float = Field(
        default=0.6, gt=0, le=1, description="is_discount_driven: at least this share of purchases used a promo code")
    discount_offers: list[OfferName] = Field(
        default_factory=lambda: ["discount"],
        description="the winback_offers that are discounts, kept from discount-driven customers")
    driven_offer: OfferName | None = Field(
        default="reminder",
        description="winback_offer a discount-driven customer gets instead of a discount offer; "
                    "null = they get the discount like everyone else")


class ReferralSettings(Settings):
    promo_prefix: str | None = Field(
        default="REF-",
        description="a promo code of this prefix (any case) followed by the referrer's customer_id marks a "
                    "referral; null = no referral codes")
    utm_sources: list[str] = Field(
        default_factory=lambda: ["referral"],
        description="a visit with one of these utm_source values and the referrer's customer_id as "
                    "utm_campaign, before the first purchase, marks a referral")


class SegmentSettings(Settings):
    purchase_statuses: list[str] = Field(
        default_factory=lambda: ["paid", "shipped", "delivered", "completed"],
        description="order statuses that count as a purchase")
    rfm: RfmSettings = Field(default_factory=RfmSettings)
    churn: ChurnSettings = Field(default_factory=ChurnSettings)
    lifecycle: LifecycleSettings = Field(default_factory=LifecycleSettings)
    models: ModelSettings = Field(default_factory=ModelSettings)
    carts: CartSettings = Field(default_factory=CartSettings)
    delivery: DeliverySettings = Field(default_factory=DeliverySettings)
    advocates: AdvocateSettings = Field(default_factory=AdvocateSettings)
    lapsed_share_alert: float = Field(
        default=0.05, gt=0, le=1, description="alert when the lapsed share moves more than this between builds")
    churn_reasons: ChurnReasonSettings = Field(default_factory=ChurnReasonSettings)
    winback_offers: dict[str, OfferName] = Field(
        default_factory=lambda: dict(DEFAULT_WINBACK_OFFERS),
        description="stated reason for leaving -> customer_segments.winback_offer of a lapsed or at-risk customer; "
                    "`none` (required): no stated reason, or a reason not in the map; replaces the default map")
    triggers: TriggerSettings = Field(default_factory=TriggerSettings)
    loyalty: LoyaltySettings = Field(default_factory=LoyaltySettings)
    discounts: DiscountSettings = Field(default_factory=DiscountSettings)
    referrals: ReferralSettings = Field(default_factory=ReferralSettings)

    @field_validator("winback_offers")
    @classmethod
    def _offer_reasons(cls, offers: dict[str, str]) -> dict[str, str]:
        known = {*CHURN_REASONS, NO_REASON}
        unknown = sorted(set(offers) - known)
        if unknown:
            raise ValueError(f"unknown reason {', '.join(unknown)}; expected some of {', '.join(sorted(known))}")
        if NO_REASON not in offers:
            raise ValueError(f"`{NO_REASON}` is required: the offer when a customer stated no reason "
                             "(or one the map does not name)")
        return offers


# Which mart an audience draws from, and every column of it that `where` may test with
# its kind: text and bool columns take a list of values, number columns a list or a range,
# date and timestamp columns a number of days from the as-of day. Declared here rather
# than read from the warehouse so a configuration is checked when it loads (DAG parsing,
# `winback check`), before any build, and the kind says which test a column takes;
# tests/build/test_audience_where.py builds every source mart on DuckDB and PostgreSQL
# and names any column the SQL and this list disagree on, so the two cannot drift.
ColumnKind = Literal["text", "number", "bool", "date", "timestamp"]
AUDIENCE_SOURCES: dict[str, dict[str, ColumnKind]] = {
    "customer_segments": {
        "customer_id": "text", "lifecycle_stage": "text", "is_churned": "bool", "is_negative": "bool",
        "shows_interest": "bool", "churn_threshold_days": "number", "at_risk_threshold_days": "number",
        "churn_basis": "text", "main_category": "text", "days_since_last_order": "number",
        "expected_next_order_date": "date", "last_order_at": "timestamp", "last_order_status": "text",
        "purchase_days": "number", "revenue": "number", "last_feedback_score": "number", "last_reason": "text",
        "rfm_segment": "text", "r_score": "number", "f_score": "number", "m_score": "number", "p_alive": "number",
        "expected_purchases_90d": "number", "predicted_clv_365d": "number", "value_tier": "text",
        "winback_offer": "text", "loyalty_tier": "text", "next_loyalty_tier": "text",
        "amount_to_next_tier": "number", "close_to_next_tier": "bool", "is_discount_driven": "bool",
        "promo_order_share": "number", "is_advocate": "bool"},
    "abandoned_carts": {
        "cart_key": "text", "customer_id": "text", "visitor_id": "text", "items": "number", "product_ids": "text",
        "categories": "text", "cart_value": "number", "first_added_at": "timestamp", "last_added_at": "timestamp",
        "hours_since_last_add": "number", "offer": "text", "amount_to_free_delivery": "number",
        "step": "number", "abandon_after_hours": "number", "quantity": "number"},
    "browse_abandoners": {
        "browser_key": "text", "customer_id": "text", "visitor_id": "text", "products_viewed": "number",
        "product_ids": "text", "first_view_at": "timestamp", "last_view_at": "timestamp",
        "is_window_shopper": "bool"},
    "feedback_due": {
        "customer_id": "text", "order_id": "text", "ordered_at": "timestamp", "delivered_at": "timestamp",
        "total_amount": "number"},
    "registered_not_bought": {
        "customer_id": "text", "registered_at": "timestamp", "last_visit_at": "timestamp",
        "products_viewed": "number", "product_ids": "text"},
    "triggers_due": {
        "customer_id": "text", "trigger": "text", "due_on": "date", "occasion_on": "date", "milestone": "number",
        "years": "number", "category": "text", "order_id": "text", "lifecycle_stage": "text"},
}
AudienceSource = Literal["customer_segments", "abandoned_carts", "browse_abandoners", "feedback_due",
                         "registered_not_bought", "triggers_due"]
# Which test each kind of column takes.
KIND_TESTS: dict[str, frozenset[str]] = {
    "text": frozenset({"values"}), "bool": frozenset({"values"}), "number": frozenset({"values", "min", "max"}),
    "date": frozenset({"within_days", "older_than_days"}),
    "timestamp": frozenset({"within_days", "older_than_days"}),
}
TEST_KEYS = {"values": "in", "min": "min", "max": "max", "within_days": "within_days",
             "older_than_days": "older_than_days"}


class Condition(Settings):
    """A column test: a list of allowed values, a numeric range, or days from the as-of
    day; the parts given must all hold. A null value passes no test."""

    values: list[str | int | float | bool] | None = Field(default=None, alias="in")
    min: float | None = None
    max: float | None = None
    within_days: int | None = Field(
        default=None, ge=0, description="the date is at most this many days before or after the as-of day")
    older_than_days: int | None = Field(
        default=None, ge=0, description="the date is more than this many days before the as-of day")

    model_config = ConfigDict(**Settings.model_config, populate_by_name=True)

    def given(self) -> list[str]:
        return [name for name in TEST_KEYS if getattr(self, name) is not None]


class AudienceSpec(Settings):
    description: str = ""
    source: AudienceSource = "customer_segments"
    where: dict[str, list[str | int | float | bool] | Condition] = Field(
        default_factory=dict, description="column of the source mart -> a list of values or a condition "
                                          "(in, min, max, within_days, older_than_days); all must hold")
    channel: Literal["email", "sms", "call", "ads"]
    identifiers: list[Literal["email", "phone", "customer_id", "visitor_id"]] = Field(
        default_factory=lambda: ["email"], description="a member needs at least one of these")
    holdout: float = Field(default=0.1, ge=0, lt=1, description="share kept out as a control group")
    measurement: AudienceMeasurement = Field(
        default_factory=AudienceMeasurement, description="this audience's window and contact cost (docs/measurement.md)")

    @property
    def columns(self) -> dict[str, ColumnKind]:
        """The source mart's columns and their kinds (audience_members.sql reads them)."""
        return AUDIENCE_SOURCES[self.source]

    @model_validator(mode="after")
    def _columns(self) -> AudienceSpec:
        allowed = self.columns
        unknown = [c for c in self.where if c not in allowed]
        if unknown:
            raise ValueError(f"where: {', '.join(unknown)} not a column of {self.source}; "
                             f"expected some of {', '.join(allowed)}")
        problems = []
        for column, test in self.where.items():
            kind = allowed[column]
            given = ["values"] if isinstance(test, list) else test.given()
            values = test if isinstance(test, list) else test.values
            if not given:
                problems.append(f"where.{column}: no test; give in, min, max, within_days or older_than_days")
            wrong = [TEST_KEYS[g] for g in given if g not in KIND_TESTS[kind]]
            if wrong:
                takes = ", ".join(TEST_KEYS[t] for t in TEST_KEYS if t in KIND_TESTS[kind])
                problems.append(f"where.{column}: {', '.join(wrong)} does not apply to a {kind} column; "
                                f"it takes {takes}" + (" (or a list of values)" if "values" in KIND_TESTS[kind] else ""))
            elif values is not None and kind in ("text", "bool"):
                expected = str if kind == "text" else bool
                odd = [v for v in values if not isinstance(v, expected)]
                if odd:
                    problems.append(f"where.{column}: {', '.join(map(repr, odd))} is not a {kind} value")
        if problems:
            raise ValueError("\n".join(problems))
        trigger = self.where.get("trigger")
        if isinstance(trigger, list):
            wrong = [t for t in trigger if t not in TRIGGERS]
            if wrong:
                raise ValueError(f"where.trigger: unknown trigger {', '.join(map(str, wrong))}; "
                                 f"expected some of {', '.join(TRIGGERS)}")
        stage = self.where.get("lifecycle_stage")
        stage = stage.values if isinstance(stage, Condition) else stage
        if isinstance(stage, list):
            wrong = [s for s in stage if s not in LIFECYCLE_STAGES]
            if wrong:
                raise ValueError(f"where.lifecycle_stage: unknown stage {', '.join(map(str, wrong))}; "
                                 f"expected some of {', '.join(LIFECYCLE_STAGES)}")
        return self


# The playbook of docs/domain.md; used when the configuration has no `audiences` key.
DEFAULT_AUDIENCES: dict[str, dict] = {
    "newcomer_feedback": {"source": "feedback_due", "channel": "email", "holdout": 0.0,
                          "description": "ask for a 1-10 score within 24 h of the first delivery"},
    "at_risk_reminder": {"where": {"lifecycle_stage": ["at_risk"]}, "channel": "email",
                         "description": "overdue against their cycle: reminder, personal offer"},
    "lapsed_winback": {"where": {"lifecycle_stage": ["lapsed"]}, "channel": "email",
                       "description": "stopped buying: win-back mailing"},
    "lapsed_high_value_calls": {"where": {"lifecycle_stage": ["lapsed"], "value_tier": ["high"]},
                                "channel": "call", "identifiers": ["phone"],
                                "description": "worth a call: learn why they left"},
    "negative_quality_call": {"where": {"lifecycle_stage": ["negative"]}, "channel": "call",
                              "identifiers": ["phone"], "holdout": 0.0,
                              "description": "bad experience: quality department calls first, no promo"},
    "abandoned_cart": {"source": "abandoned_carts", "channel": "email",
                       "description": "catch-up offer against the free-delivery threshold"},
    "browse_retargeting": {"source": "browse_abandoners", "where": {"is_window_shopper": [False]},
                           "channel": "ads", "identifiers": ["email", "phone"],
                           "description": "viewed, no cart, no order: retargeting ads"},
    "loyal_upsell": {"where": {"lifecycle_stage": ["loyal"]}, "channel": "email",
                     "description": "upsell and cross-sell"},
    "advocates_referral": {"where": {"is_advocate": [True]}, "channel": "email",
                           "description": "happy regulars, and happy one-off buyers of long-cycle goods: "
                                          "invite to refer friends"},
    "registered_reminder": {"source": "registered_not_bought", "channel": "email",
                            "description": "registered, looked around, never bought: remind them of what "
                                           "they looked at"},
    "champions_lookalike": {"where": {"rfm_segment": ["champions"]}, "channel": "ads",
                            "identifiers": ["email", "phone"], "holdout": 0.0,
                            "description": "seed for lookalike audiences"},
    "birthday_greeting": {"source": "triggers_due", "where": {"trigger": ["birthday"]}, "channel": "email",
                          "description": "birthday in the next days: greeting with a small gift"},
    "milestone_thanks": {"source": "triggers_due", "where": {"trigger": ["milestone"]}, "channel": "email",
                         "description": "2nd, 5th, 10th purchase yesterday: thank them, tell them about the loyalty programme"},
    "anniversary_greeting": {"source": "triggers_due", "where": {"trigger": ["anniversary"]}, "channel": "email",
                             "description": "a year since the first purchase: anniversary mail"},
    "replenishment_reminder": {"source": "triggers_due", "where": {"trigger": ["replenishment"]},
                               "channel": "email",
                               "description": "consumables about to run out: reminder before the expected order"},
    "thank_you_care": {"source": "triggers_due", "where": {"trigger": ["thank_you"]}, "channel": "email",
                       "holdout": 0.0,
                       "description": "delivered in the last 48 h: the quality department's thank-you and care mail"},
    "loyalty_next_tier": {"where": {"close_to_next_tier": [True]}, "channel": "email",
                          "description": "close to the next loyalty tier: tell them how little is missing"},
}


def default_audiences() -> dict[str, AudienceSpec]:
    return {name: AudienceSpec(**spec) for name, spec in DEFAULT_AUDIENCES.items()}


class BuildSettings(Settings):
    schedule: str | None = Field(
        default=None, description="cron or preset besides the ingest Assets; null = only when fresh data landed")
    backfill_prefix: str = Field(
        default="backfill_", pattern=r"^[a-z][a-z0-9_]{0,30}$",
        description="a past as-of build writes its marts as <prefix><mart>, never the live ones")
    snapshot: str | None = Field(
        default="data/snapshot.duckdb",
        description="DuckDB warehouses: after each build the marts and history are copied to this "
                    "read-only file for analysts and BI tools (atomically replaced); null = none")
    report_dir: str = Field(
        default="data/report",
        description="folder of the report page (index.html) that the build DAG's report task and "
                    "`python -m winback report` write; relative to home")
    lock_wait: timedelta = Field(
        default=timedelta(minutes=30),
        description="PostgreSQL: how long a build waits for another build of the same warehouse")
