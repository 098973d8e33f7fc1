"""GA4's BigQuery export (the daily tables events_YYYYMMDD) dropped as Parquet or JSON
lines files: a file source whose records are nested, unnested here into flat ones.

One GA4 event is one row with repeated records inside. Each is read as a flat record
whose columns are dotted paths of the export's schema (`user_pseudo_id`,
`collected_traffic_source.manual_source`, `items.item_id`, `event_params.ga_session_id`),
one record per item of `items` when an item's field is mapped, plus a few derived
columns (`event_type`, `utm_source`, ...). The preset mapping below maps those onto the
canonical columns; `columns:` overrides any of it. Files, compression, the file registry
and error reporting are the file source's (`FileExtractor`).

Schema: https://support.google.com/analytics/answer/7029846 (event_timestamp in
microseconds UTC; event_params/user_properties are repeated key + value records;
"(not set)" marks a missing value). JSON lines as `bq extract` writes them: INT64 values
are JSON strings (to keep 64 bits), so every JSON leaf is read as text.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from winback.ingest.canonical import engine, ident, literal
from winback.ingest.settings import Ga4ExportSource
from winback.ingest.sources import Batch, SourceError
from winback.ingest.sources.files import FileExtractor, _json_readable

# A record is a dict of its fields; a leaf is None; a repeated record is [its fields].
_VALUE = {"string_value": None, "int_value": None, "float_value": None, "double_value": None}
_CAMPAIGN = {"campaign_id": None, "campaign_name": None, "source": None, "medium": None,
             "term": None, "content": None, "source_platform": None, "creative_format": None,
             "marketing_tactic": None}
EXPORT_SCHEMA: dict = {
    "event_date": None,
    "event_timestamp": None,
    "event_previous_timestamp": None,
    "event_name": None,
    "event_params": [{"key": None, "value": _VALUE}],
    "event_value_in_usd": None,
    "event_bundle_sequence_id": None,
    "event_server_timestamp_offset": None,
    "user_id": None,
    "user_pseudo_id": None,
    "is_active_user": None,
    "user_first_touch_timestamp": None,
    "user_properties": [{"key": None, "value": {**_VALUE, "set_timestamp_micros": None}}],
    "user_ltv": {"revenue": None, "currency": None},
    "privacy_info": {"analytics_storage": None, "ads_storage": None, "uses_transient_token": None},
    "device": {
        "category": None, "mobile_brand_name": None, "mobile_model_name": None,
        "mobile_marketing_name": None, "mobile_os_hardware_model": None, "operating_system": None,
        "operating_system_version": None, "vendor_id": None, "advertising_id": None, "language": None,
        "time_zone_offset_seconds": None, "is_limited_ad_tracking": None,
        "web_info": {"browser": None, "browser_version": None, "hostname": None},
    },
    "geo": {"continent": None, "sub_continent": None, "country": None, "region": None, "metro": None,
            "city": None},
    "app_info": {"id": None, "version": None, "install_store": None, "firebase_app_id": None,
                 "install_source": None},
    "traffic_source": {"name": None, "medium": None, "source": None},
    "collected_traffic_source": {
        "manual_campaign_id": None, "manual_campaign_name": None, "manual_source": None,
        "manual_medium": None, "manual_term": None, "manual_content": None,
        "manual_source_platform": None, "manual_creative_format": None,
        "manual_marketing_tactic": None, "gclid": None, "dclid": None, "srsltid": None,
    },
    "session_traffic_source_last_click": {
        "manual_campaign": _CAMPAIGN,
        "cross_channel_campaign": {"campaign_id": None, "campaign_name": None, "source": None,
                                   "medium": None, "source_platform": None},
        "google_ads_campaign": {"customer_id": None, "account_name": None, "campaign_id": None,
                                "campaign_name": None, "ad_group_id": None, "ad_group_name": None},
    },
    "stream_id": None,
    "platform": None,
    "event_dimensions": {"hostname": None},
    "ecommerce": {
        "total_item_quantity": None, "purchase_revenue_in_usd": None, "purchase_revenue": None,
        "refund_value_in_usd": None, "refund_value": None, "shipping_value_in_usd": None,
        "shipping_value": None, "tax_value_in_usd": None, "tax_value": None, "unique_items": None,
        "transaction_id": None,
    },
    "items": [{
        "item_id": None, "item_name": None, "item_brand": None, "item_variant": None,
        "item_category": None, "item_category2": None, "item_category3": None,
        "item_category4": None, "item_category5": None, "price_in_usd": None, "price": None,
        "quantity": None, "item_revenue_in_usd": None, "item_revenue": None,
        "item_refund_in_usd": None, "item_refund": None, "coupon": None, "affiliation": None,
        "location_id": None, "item_list_id": None, "item_list_name": None, "item_list_index": None,
        "promotion_id": None, "promotion_name": None, "creative_name": None, "creative_slot": None,
        "item_params": [{"key": None, "value": _VALUE}],
    }],
    "batch_event_index": None,
    "batch_ordering_id": None,
    "batch_page_id": None,
}
# Repeated key/value records, read by key: `event_params.ga_session_id`.
KEYED = ("event_params", "user_properties", "items.item_params")
# Integers of microseconds since the epoch in UTC, read as UTC times.
MICROSECONDS = ("event_timestamp", "event_previous_timestamp", "user_first_touch_timestamp")
NOT_SET = "(not set)"

# GA4's event names (recommended and automatically collected) -> canonical event types.
EVENT_TYPES = {
    "page_view": "page_view",
    "view_item": "product_view",
    "add_to_cart": "add_to_cart",
    "remove_from_cart": "remove_from_cart",
    "begin_checkout": "checkout_start",
    "purchase": "purchase",
    "login": "login",
    "sign_up": "signup",
    "search": "search",
    "view_search_results": "search",
}

# What each entity's columns read when `columns:` does not say otherwise.
PRESET_COLUMNS = {
    "events": {
        "visitor_id": "user_pseudo_id",
        "customer_id": "user_id",
        "session_id": "event_params.ga_session_id",
        "event_type": "event_type",
        "product_id": "items.item_id",
        "category": "items.item_category",
        "value": "item_or_event_value",
        "occurred_at": "event_timestamp",
        "utm_source": "utm_source",
        "utm_medium": "utm_medium",
        "utm_campaign": "utm_campaign",
    },
    "orders": {
        "order_id": "ecommerce.transaction_id",
        "customer_id": "user_id_or_visitor",
        "visitor_id": "user_pseudo_id",
        "created_at": "event_timestamp",
        "total_amount": "order_total",
        "currency": "event_params.currency",
        "promo_code": "event_params.coupon",
    },
    "order_items": {
        "order_id": "ecommerce.transaction_id",
        "product_id": "items.item_id",
        "category": "items.item_category",
        "quantity": "items.quantity",
        "price": "items.price",
    },
}
# Columns computed from several of the export's, and the paths each one reads.
DERIVED = {
    # the canonical type of event_name (other names pass as they are, for `values:`)
    "event_type": ("event_name",),
    # an item's price on an item's row, else the event's `value` parameter
    "item_or_event_value": ("items.price", "event_params.value"),
    # the event's own campaign (utm_* on its page) first, else the user's first one
    "utm_source": ("collected_traffic_source.manual_source", "traffic_source.source"),
    "utm_medium": ("collected_traffic_source.manual_medium", "traffic_source.medium"),
    "utm_campaign": ("collected_traffic_source.manual_campaign_name", "traffic_source.name"),
    # the shop's id of a logged-in buyer, else the browser's (guest checkouts)
    "user_id_or_visitor": ("user_id", "user_pseudo_id"),
    # the purchase's revenue, else its `value` parameter
    "order_total": ("ecommerce.purchase_revenue", "event_params.value"),
}
VISITOR_PREFIX = "v:"
ITEM = "_item"  # the 1-based position of the row's item in `items`


def schema_tree(schema: pa.Schema) -> dict:
    """A file's columns in the form of EXPORT_SCHEMA."""

    def node(kind: pa.DataType):
        if pa.types.is_struct(kind):
            return {kind.field(i).name: node(kind.field(i).type) for i in range(kind.num_fields)}
        if (pa.types.is_list(kind) or pa.types.is_large_list(kind)) and pa.types.is_struct(kind.value_type):
            return [node(kind.value_type)]
        return None

    return {f.name: node(f.type) for f in schema}


def duckdb_type(node) -> str:
    """DuckDB's type for a node, every leaf text (JSON lines hold INT64 as strings)."""
    if node is None:
        return "VARCHAR"
    if isinstance(node, list):
        return duckdb_type(node[0]) + "[]"
    return "STRUCT(" + ", ".join(f"{ident(k)} {duckdb_type(v)}" for k, v in node.items()) + ")"


def leaf_paths(tree: dict) -> list[str]:
    """Every dotted path a flat record can read by name (keyed records by `<name>.<key>`)."""
    paths = []

    def walk(prefix: str, node) -> None:
        if prefix in KEYED:
            paths.append(f"{prefix}.<key>")
        elif node is None:
            paths.append(prefix)
        elif isinstance(node, dict):
            for name, child in node.items():
                walk(f"{prefix}.{name}" if prefix else name, child)
        elif prefix == "items":
            walk(prefix, node[0])

    walk("", tree)
    return paths


def _text(expr: str) -> str:
    return f"nullif(CAST({expr} AS VARCHAR), {literal(NOT_SET)})"


class FlatRecord:
    """SQL of the flat record's columns over one file's nested rows (`tree` is the
    file's schema); `tops` collects the export's columns the expressions read."""

    def __init__(self, tree: dict, source: Ga4ExportSource):
        self.tree = tree
        self.source = source
        self.tops: set[str] = set()

    @property
    def has_items(self) -> bool:
        return isinstance(self.tree.get("items"), list)

    def available(self, wanted: list[str]) -> list[str]:
        present = [p for p in list(DERIVED) + wanted if self.expr(p) is not None]
        return sorted(set(leaf_paths(self.tree)) | set(present))

    def expr(self, path: str) -> str | None:
        """SQL text of a flat column, None if this file cannot have it."""
        if path in DERIVED:
            return self._derived(path)
        for keyed in KEYED:
            if path.startswith(keyed + ".") and path != keyed + ".<key>":
                return self._keyed(keyed, path[len(keyed) + 1:])
        parts = path.split(".")
        node, expr = self.tree, None
        for part in parts:
            if isinstance(node, list) and expr == ident("items"):
                node, expr = node[0], f"{expr}[{ITEM}]"
            if not isinstance(node, dict) or part not in node:
                return None
            expr = ident(part) if expr is None else f"struct_extract({expr}, {literal(part)})"
            node = node[part]
        if node is not None:
            return None  # a record, not a value
        self.tops.add(parts[0])
        if path in MICROSECONDS:
            micros = f"TRY_CAST({ident(path)} AS BIGINT)"
            # Out of range or not a number: the text, for the rule that reports it.
            moment = (f"CASE WHEN {micros} BETWEEN 0 AND 253402300799999999 THEN "
                      f"strftime(make_timestamp({micros}), '%Y-%m-%dT%H:%M:%S.%fZ') END")
            return f"coalesce({moment}, CAST({ident(path)} AS VARCHAR))"
        return _text(expr)

    def _keyed(self, keyed: str, key: str) -> str | None:
        head, _, rest = keyed.partition(".")
        records = self.tree.get(head)
        if rest:  # items.item_params
            if not self.has_items or not isinstance(records[0].get(rest), list):
                return None
            records, base = records[0][rest], f"struct_extract({ident(head)}[{ITEM}], {literal(rest)})"
        elif isinstance(records, list):
            base = ident(head)
        else:
            return None
        value = records[0].get("value")
        if not isinstance(value, dict):
            return None
        self.tops.add(head)
        found = f"list_filter({base}, lambda p: p.key = {literal(key)})[1].value"
        texts = [_text(f"struct_extract({found}, {literal(f)})")
                 for f in ("string_value", "int_value", "double_value", "float_value") if f in value]
        return f"coalesce({', '.join(texts)})" if texts else None

    def _first(self, paths: tuple[str, ...]) -> str:
        present = [e for e in (self.expr(p) for p in paths) if e is not None]
        return f"coalesce({', '.join(present)})" if present else "CAST(NULL AS VARCHAR)"

    def _derived(self, name: str) -> str | None:
        paths = DERIVED[name]
        if name == "event_type":
            event_name = self.expr("event_name")
            if event_name is None:
                return None
            # A name the user's `values:` maps passes as it is, so their mapping wins.
            own = self.source.values.get("event_type", {})
            cases = " ".join(f"WHEN {literal(k)} THEN {literal(v)}" for k, v in EVENT_TYPES.items() if k not in own)
            return f"CASE {event_name} {cases} ELSE {event_name} END"
        if name == "item_or_event_value":
            price, value = self._first(paths[:1]), self._first(paths[1:])
            if not self.has_items:
                return value
            self.tops.add("items")
            return f"CASE WHEN {ITEM} <= coalesce(len({ident('items')}), 0) THEN {price} ELSE {value} END"
        if name == "user_id_or_visitor":
            user, visitor = self.expr("user_id"), self.expr("user_pseudo_id")
            parts = [e for e in (user, visitor and f"{literal(VISITOR_PREFIX)} || {visitor}") if e]
            return f"coalesce({', '.join(parts)})" if parts else None
        return self._first(paths)

    def select(self, columns: list[str], relation: str, entity: str) -> str:
        """The flat records of `relation` for `entity`: the events not skipped, or the
        purchases (one row per item where an item's field is read)."""
        self.tops = set()
        exprs = [f"{self.expr(c)} AS {ident(c)}" for c in columns]
        event_name = self.expr("event_name")
        if entity == "events":
            # A name the user's `values:` maps is theirs to load, listed or not.
            own = self.source.values.get("event_type", {})
            skipped = ", ".join(literal(n) for n in self.source.skip_events if n not in own) or "NULL"
            where = f"{event_name} IS NULL OR {event_name} NOT IN ({skipped})"
        else:
            purchases = ", ".join(literal(n) for n in self.source.purchase_events)
            where = f"{event_name} IN ({purchases})"
        per_item = self.has_items and any(c.startswith("items.") or c == "item_or_event_value" for c in columns)
        if not per_item:
            return f"SELECT {', '.join(exprs)} FROM {relation} WHERE {where}"
        self.tops.add("items")
        # Events are kept without items (one row); order lines exist only for items.
        least = 1 if entity == "events" else 0
        items = (f"unnest(generate_series(1, greatest(coalesce(len({ident('items')}), 0), {least}))) AS {ITEM}")
        return f"SELECT {', '.join(exprs)} FROM (SELECT *, {items} FROM {relation} WHERE {where})"


class Ga4ExportExtractor(FileExtractor):
    kind = "ga4_export"
    source: Ga4ExportSource

    def __init__(self, config, entity: str):
        super().__init__(config, entity)
        # The preset mapping under the user's `columns:`.
        self.source = self.source.model_copy(
            update={"columns": {**PRESET_COLUMNS[entity], **self.source.columns}})

    def _read_parquet(self, path: Path, name: str, codec: str | None) -> Iterator[Batch]:
        try:
            tree = schema_tree(pq.read_schema(path))
        except (pa.ArrowInvalid, OSError) as exc:
            raise SourceError(f"{name}: not a readable Parquet file: {exc}") from None
        try:
            # DuckDB streams the row groups and reads only the columns the query names.
            yield from self._flat_batches(tree, name, lambda tops: f"read_parquet({literal(str(path))})")
        except SourceError:
            raise
        except Exception as exc:  # noqa: BLE001 - duckdb raises several error classes
            raise SourceError(f"{name}: cannot be read as a GA4 export: {str(exc).splitlines()[0]}") from None

    def _read_jsonl(self, path: Path, name: str, codec: str | None) -> Iterator[Batch]:
        try:
            with _json_readable(path, codec) as (readable, compression):

                def relation(tops: set[str]) -> str:
                    # Declared, not sampled: a field no sampled record holds is still read.
                    declared = ", ".join(f"{literal(top)}: {literal(duckdb_type(EXPORT_SCHEMA[top]))}"
                                         for top in sorted(tops))
                    return (f"read_json({literal(str(readable))}, format='newline_delimited', "
                            f"compression={literal(compression)}, maximum_object_size={self._block_bytes}, "
                            f"columns={{{declared}}})")

                yield from self._flat_batches(EXPORT_SCHEMA, name, relation)
        except SourceError:
            raise
        except Exception as exc:  # noqa: BLE001 - duckdb raises several error classes for bad JSON
            raise SourceError(self._jsonl_problem(path, name, codec, exc)) from None

    def _flat_batches(self, tree: dict, name: str, relation) -> Iterator[Batch]:
        """The file's flat records in batches; `relation(tops)` reads the file's rows,
        given the export's columns the flat record reads."""
        flat = FlatRecord(tree, self.source)
        if flat.expr("event_name") is None:
            raise SourceError(f"{name}: not a GA4 export: it has no event_name column")
        mapping = self._mapping(flat.available([*self.source.columns.values(), *self.source.where]), name)
        select = flat.select(mapping.read_columns, "ga4_rows", self.entity.name)
        query = f"WITH ga4_rows AS (SELECT * FROM {relation(flat.tops)}) {select}"
        con = engine().cursor()
        try:
            rows = 0
            for record_batch in con.sql(query).to_arrow_reader(self.chunk_rows):
                if record_batch.num_rows:
                    yield Batch(pa.Table.from_batches([record_batch]), name, rows + 1, mapping)
                    rows += record_batch.num_rows
        finally:
            con.close()
