"""`python -m winback check`: read every configured source through its mapping, load
nothing, and say what a load would do and what the build would lack.

The records go through the same steps as a load (the extractor, the source's `where`,
the canonical SQL, the typing, the Great Expectations rules), on the in-process DuckDB
only: no warehouse is opened, so a check can run before any warehouse exists and next
to a running pipeline. Sampled values are shown only for timestamps and numbers; text
values (emails, names, phones) are counted, never printed.
"""

from __future__ import annotations

import difflib
import logging
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc

from winback.clock import utcnow
from winback.config import Config
from winback.ingest.canonical import (
    OUT_OF_RANGE_SUFFIX,
    RAW_SUFFIX,
    UNPARSED_SUFFIX,
    engine,
    for_checks,
    keep_rows,
    raw_select,
    typed_select,
    with_origin,
)
from winback.ingest.quarantine import MALFORMED_RULE
from winback.ingest.sources import SourceError, Window, make_extractor
from winback.ingest.validation import over_limit, row_rules, rule_columns, validator
from winback.schema import ENTITIES, ENTITY_ORDER, Entity

log = logging.getLogger(__name__)

SAMPLES = 3  # example values shown per column that does not parse
METRICA_DAYS = 7  # days of a Logs API source a check reads
# Typed columns whose values may be shown: not a person's birth date.
SHOWN_TYPES = frozenset({"timestamp", "money", "number", "integer", "boolean"})


@dataclass
class EntityCheck:
    entity: str
    kind: str
    origins: int = 0
    rows: int = 0
    filtered: int = 0
    sampled: bool = False
    mapped: dict[str, str] = field(default_factory=dict)  # canonical -> the shop's column
    not_mapped: list[str] = field(default_factory=list)
    error: str | None = None  # the source cannot be read as configured: what ingest would say
    unknown_values: dict[str, dict[str, int]] = field(default_factory=dict)
    values_snippet: str | None = None
    unparsed: dict[str, dict] = field(default_factory=dict)  # column -> count, format, examples
    out_of_range: dict[str, dict] = field(default_factory=dict)  # column -> before/after counts, bounds
    bad_rows: int = 0
    per_rule: dict[str, int] = field(default_factory=dict)
    nulled: dict[str, int] = field(default_factory=dict)  # field-level rule -> values set to null
    max_bad_share: float = 0.0
    filled: dict[str, int] = field(default_factory=dict)  # canonical column -> rows with a value
    event_types: dict[str, int] = field(default_factory=dict)  # events: canonical type -> rows

    @property
    def bad_share(self) -> float:
        return over_limit(self.rows, self.bad_rows, self.nulled, self.max_bad_share)[0]

    @property
    def would_load(self) -> bool:
        """The load's own rule (validation.over_limit)."""
        if self.error:
            return False
        share, too_many_nulled = over_limit(self.rows, self.bad_rows, self.nulled, self.max_bad_share)
        return share <= self.max_bad_share and not too_many_nulled

    def as_dict(self) -> dict:
        return {**asdict(self), "bad_share": round(self.bad_share, 6), "would_load": self.would_load}


@dataclass
class CheckReport:
    entities: list[EntityCheck]
    lacks: list[str]
    seconds: float

    @property
    def ok(self) -> bool:
        return all(e.would_load for e in self.entities)

    def as_dict(self) -> dict:
        return {"ok": self.ok, "entities": [e.as_dict() for e in self.entities], "lacks": self.lacks,
                "seconds": round(self.seconds, 3)}


def check(config: Config, entities: list[str] | None = None, sample: int | None = None) -> CheckReport:
    began = time.perf_counter()
    names = [e for e in ENTITY_ORDER if e in config.sources and (not entities or e in entities)]
    results = [check_entity(config, name, sample) for name in names]
    return CheckReport(results, build_lacks(config, results) if not entities else [], time.perf_counter() - began)


def check_entity(config: Config, name: str, sample: int | None = None) -> EntityCheck:
    entity = ENTITIES[name]
    source = config.source(name)
    result = EntityCheck(name, source.kind, max_bad_share=config.max_bad_share(name))
    rules = row_rules(entity, config.validation)
    fields = {rule.name: rule.field for rule in rules if rule.field}
    columns = rule_columns(rules)
    gx = validator()
    suite = gx.suites(f"{name}.check", rules)
    unknown: dict[str, Counter] = {}
    bounds = _bounds(config)
    try:
        extractor = make_extractor(config, name)
        if sample is not None:  # readers gather chunk_rows before handing a batch over
            extractor.chunk_rows = min(extractor.chunk_rows, max(sample, 1))
        window = _window(source)
        origins = extractor.origins(window, {})
        result.origins = len(origins)
        for origin in origins:
            for batch in extractor.read(origin, window):
                table = with_origin(batch.table, batch.origin, batch.first_row)
                if sample is not None and result.rows + table.num_rows > sample:
                    table, result.sampled = table.slice(0, max(sample - result.rows, 0)), True
                table, left_out = keep_rows(entity, source, batch.mapping, table)
                result.filtered += left_out
                result.mapped = dict(batch.mapping.columns)
                typed = _typed(entity, config, batch.mapping, table)
                result.rows += typed.num_rows
                _tally(result, entity, typed, gx.check(for_checks(typed, columns), suite), fields, unknown, bounds)
                if result.sampled:
                    break
            if result.sampled:
                break
        if extractor.rejected:
            result.bad_rows += len(extractor.rejected)
            result.rows += len(extractor.rejected)
            result.per_rule[MALFORMED_RULE] = len(extractor.rejected)
    except SourceError as exc:
        result.error = str(exc)
    result.not_mapped = [c for c in entity.column_names if c not in result.mapped]
    result.unknown_values = {c: dict(counts.most_common()) for c, counts in unknown.items() if counts}
    result.values_snippet = values_snippet(entity, result.unknown_values)
    return result


def _window(source) -> Window:
    """Everything, except from Metrica's Logs API: there every day read is a log request
    Metrica must prepare, so the last METRICA_DAYS days stand for the rest."""
    if source.kind == "yandex_metrica":
        return Window(utcnow() - timedelta(days=METRICA_DAYS), None)
    return Window()


def _typed(entity: Entity, config: Config, mapping, table: pa.Table) -> pa.Table:
    con = engine()
    con.register("batch", table)
    try:
        raw = con.execute(raw_select(entity, config, mapping, load_id="check")).fetch_arrow_table()
    finally:
        con.unregister("batch")
    con.register("check_raw", raw)
    try:
        return con.execute(typed_select(entity, config, "check_raw")).fetch_arrow_table()
    finally:
        con.unregister("check_raw")


def _tally(result: EntityCheck, entity: Entity, typed: pa.Table, failures: dict, fields: dict[str, str],
           unknown: dict[str, Counter], bounds: tuple[datetime, datetime]) -> None:
    bad = set()
    for rule, positions in failures.items():
        counts = result.nulled if rule in fields else result.per_rule
        counts[rule] = counts.get(rule, 0) + len(positions)
        if rule not in fields:
            bad.update(positions.tolist())
    result.bad_rows += len(bad)
    for column in entity.columns:
        values = typed.column(column.name)
        result.filled[column.name] = result.filled.get(column.name, 0) + len(values) - values.null_count
        if column.allowed is not None:
            outside = pc.and_(pc.invert(pc.is_in(values, pa.array(sorted(column.allowed)))), pc.is_valid(values))
            shop_values = typed.column(column.name + RAW_SUFFIX).filter(outside)
            unknown.setdefault(column.name, Counter()).update(shop_values.to_pylist())
        name = column.name + UNPARSED_SUFFIX
        if name in typed.column_names:
            texts = typed.column(name).drop_null()
            too_large = column.name + OUT_OF_RANGE_SUFFIX
            if len(texts):
                entry = result.unparsed.setdefault(column.name, {"count": 0, "type": column.type, "examples": []})
                entry["count"] += len(texts)
                if column.type in SHOWN_TYPES and len(entry["examples"]) < SAMPLES:
                    seen = entry["examples"]
                    seen += [v for v in pc.unique(texts.slice(0, 1000)).to_pylist() if v not in seen]
                    del seen[SAMPLES:]
            if too_large in typed.column_names and typed.column(too_large).null_count < typed.num_rows:
                entry = result.unparsed.setdefault(column.name, {"count": 0, "type": column.type, "examples": []})
                entry["too_large"] = entry.get("too_large", 0) + typed.num_rows - typed.column(too_large).null_count
        if column.type == "timestamp":
            _count_range(result, column.name, values, bounds)
    if entity.name == "events":
        for value, count in Counter(typed.column("event_type").drop_null().to_pylist()).items():
            result.event_types[value] = result.event_types.get(value, 0) + count


def _bounds(config: Config) -> tuple[datetime, datetime]:
    now = utcnow()
    return (datetime.combine(config.validation.earliest_timestamp, datetime.min.time()),
            now + config.validation.future_tolerance)


def _count_range(result: EntityCheck, column: str, values, bounds: tuple[datetime, datetime]) -> None:
    """Timestamps before validation.earliest_timestamp or beyond now + future_tolerance."""
    earliest, latest = bounds
    before = pc.sum(pc.less(values, pa.scalar(earliest, values.type))).as_py() or 0
    after = pc.sum(pc.greater(values, pa.scalar(latest, values.type))).as_py() or 0
    if before or after:
        entry = result.out_of_range.setdefault(column, {"before": 0, "after": 0, "earliest": earliest.isoformat(),
                                                        "latest": latest.isoformat(timespec="seconds")})
        entry["before"] += before
        entry["after"] += after


def values_snippet(entity: Entity, unknown: dict[str, dict[str, int]]) -> str | None:
    """A `values:` block to paste under sources.<entity>: each value outside the
    canonical set mapped to its closest canonical value, or commented out when none is close."""
    if not unknown:
        return None
    lines = ["values:"]
    for column, counts in unknown.items():
        allowed = sorted(entity.column(column).allowed or ())
        lines.append(f"  {column}:")
        for value, count in counts.items():
            guess = difflib.get_close_matches(str(value).lower(), allowed, n=1, cutoff=0.6)
            if guess:
                lines.append(f"    {_yaml_key(value)}: {guess[0]}    # {count:,} rows; closest canonical value")
            else:
                lines.append(f"    # {_yaml_key(value)}: ?    # {count:,} rows; one of {', '.join(allowed)}")
        lines.append("    _other: quarantine    # or drop, or a canonical value, for any other value")
    return "\n".join(lines)


def _yaml_key(value) -> str:
    text = str(value)
    return text if text.replace("_", "").replace("-", "").isalnum() and not text[0].isdigit() else repr(text)


# -- what the build will lack ------------------------------------------------------------------------
def build_lacks(config: Config, results: list[EntityCheck]) -> list[str]:
    """What segments, marts and audiences will be empty or poorer, and why."""
    by_name = {r.entity: r for r in results}
    lacks = []

    def empty(entity: str, column: str) -> bool:
        found = by_name.get(entity)
        return found is not None and found.rows > 0 and found.filled.get(column, 0) == 0

    if "customers" not in by_name:
        lacks.append("no customers source: no emails, phones or consent, so every email, sms, call and ads "
                     "audience will be empty")
    else:
        if empty("customers", "email"):
            lacks.append("customers have no email: email audiences will be empty")
        elif empty("customers", "email_consent"):
            lacks.append("customers have no email_consent: nobody counts as consenting to email, so email "
                         "audiences will be empty (map the shop's subscription flag)")
        if empty("customers", "phone"):
            lacks.append("customers have no phone: call lists and sms audiences will be empty")
        if empty("customers", "ads_consent"):
            lacks.append("customers have no ads_consent: ads audiences will be empty")
        if empty("customers", "birth_date"):
            lacks.append("customers have no birth_date: the birthday trigger will be empty")
    if empty("orders", "delivered_at"):
        lacks.append("orders have no delivered_at: feedback_due, the thank_you trigger and late deliveries "
                     "will be empty")
    if empty("orders", "promo_code"):
        lacks.append("orders have no promo_code: discount dependence and referral codes cannot be measured")
    if "order_items" not in by_name:
        lacks.append("no order_items source: no categories, so churn follows the shop-wide cycle and the "
                     "replenishment trigger is empty")
    elif empty("order_items", "category"):
        lacks.append("order items have no category: churn follows the shop-wide cycle, not each category's, "
                     "and the replenishment trigger is empty")
    if "events" not in by_name:
        lacks.append("no events source: abandoned_carts, browse_abandoners and registered_not_bought will be empty")
    else:
        events = by_name["events"]
        if empty("events", "product_id"):
            lacks.append("events have no product_id: abandoned_carts and browse_abandoners will be empty")
        elif events.rows and not events.event_types.get("add_to_cart"):
            lacks.append("events have no add_to_cart: abandoned_carts will be empty (map the shop's add-to-cart "
                         "event name under values.event_type)")
        if events.rows and not events.event_types.get("product_view"):
            lacks.append("events have no product_view: browse_abandoners will be empty")
        if empty("events", "customer_id") and empty("orders", "visitor_id"):
            lacks.append("neither events nor orders link a visitor to a customer: site visits count for no "
                         "customer (map customer_id on events or visitor_id on orders)")
    if "feedback" not in by_name:
        lacks.append("no feedback source: customers are negative only by cancelled or returned orders and "
                     "late deliveries, never by a low score")
    return lacks


# -- output -------------------------------------------------------------------------------------------
def format_report(report: CheckReport, config: Config) -> str:
    lines = []
    for r in report.entities:
        source = config.source(r.entity)
        where = getattr(source, "path", None) or getattr(source, "table", None) or getattr(source, "url", None) \
            or getattr(source, "query", None) or ""
        read = f"{r.rows:,} rows read" + (" (a sample: --sample)" if r.sampled else "")
        lines.append(f"{r.entity} ({r.kind}: {where}): {r.origins:,} origin(s), {read}"
                     + (f", {r.filtered:,} left out by where / _other: drop" if r.filtered else ""))
        if r.error:
            lines.append(f"  cannot be read: {r.error}")
            lines.append("  => would FAIL")
            continue
        lines.append("  mapped: " + ", ".join(f"{c} <- {s}" for c, s in r.mapped.items()))
        if r.not_mapped:
            lines.append("  not mapped (empty or default): " + ", ".join(r.not_mapped))
        for column, counts in r.unknown_values.items():
            shown = ", ".join(f"{v!r} {n:,}" for v, n in list(counts.items())[:10])
            lines.append(f"  {column}: values outside the canonical set: {shown}")
        if r.values_snippet:
            lines.append(f"  paste under sources.{r.entity} (and check each guess):")
            lines += ["    " + line for line in r.values_snippet.splitlines()]
        for column, entry in r.unparsed.items():
            if entry.get("count"):
                how = _format_tried(source, entry["type"])
                examples = ", ".join(repr(v) for v in entry.get("examples", []))
                lines.append(f"  {column}: {entry['count']:,} values do not parse as {how}"
                             + (f", e.g. {examples}" if examples else ""))
            if entry.get("too_large"):
                lines.append(f"  {column}: {entry['too_large']:,} values are infinite or too large")
        for column, entry in r.out_of_range.items():
            if entry["before"]:
                lines.append(f"  {column}: {entry['before']:,} before {entry['earliest'][:10]} "
                             "(validation.earliest_timestamp)")
            if entry["after"]:
                lines.append(f"  {column}: {entry['after']:,} after {entry['latest']} "
                             "(now + validation.future_tolerance)")
        rules = ", ".join(f"{rule} {n:,}" for rule, n in sorted(r.per_rule.items(), key=lambda kv: -kv[1]))
        lines.append(f"  would quarantine {r.bad_rows:,} of {r.rows:,} rows ({r.bad_share:.1%}; limit "
                     f"{r.max_bad_share:.1%}, validation.max_bad_share)" + (f": {rules}" if rules else ""))
        for rule, n in sorted(r.nulled.items()):
            lines.append(f"  would set {n:,} values to null ({rule})")
        lines.append("  => would load" if r.would_load else "  => would FAIL: too many bad rows for max_bad_share")
    if report.lacks:
        lines.append("What the build will lack:")
        lines += [f"  - {lack}" for lack in report.lacks]
    lines.append(f"{'every entity would load' if report.ok else 'some entity would not load'} "
                 f"(checked in {report.seconds:.1f}s)")
    return "\n".join(lines)


def _format_tried(source, kind: str) -> str:
    if kind in ("timestamp", "date"):
        fmt = getattr(source, "timestamp_format", None)
        return f"timestamp_format {fmt!r}" if fmt else "ISO 8601 (no timestamp_format set)"
    if kind in ("money", "number", "integer"):
        return f"a number (decimal {getattr(source, 'decimal', '.')!r})"
    return kind
