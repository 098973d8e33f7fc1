"""Files: the folders, the manifest and every entity in the format and encoding its
source really uses (cp1251 CSV, monthly drops, JSONL or Parquet events), bad rows included."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import asdict
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from winback.sample_shop.catalog import _Catalog
from winback.sample_shop.chunk import _Chunk
from winback.sample_shop.contacts import OUTCOMES, REASON_COMMENTS, REASONS
from winback.sample_shop.mail import _Campaigns
from winback.sample_shop.spec import (
    _INT_NA,
    BAD_KINDS,
    CATEGORIES,
    CITIES,
    COMMENTS,
    CURRENCIES,
    DAY,
    EV_HOVER,
    EVENT_TYPES,
    MAILING_EVENTS,
    MOSCOW_UTC_OFFSET,
    PROMO_CODES,
    STATUSES,
    UTM_CHANNELS,
    ShopSpec,
)
from winback.sample_shop.table import _Table
from winback.sample_shop.timeline import _Timeline

ENTITY_DIRS = {"customers": "customers", "orders": "orders", "order_items": "order_items",
               "events": "events", "feedback": "feedback", "mailing_events": "mailing",
               "contact_outcomes": "contacts"}
WRITE_BATCH_ROWS = 100_000
WRITE_THREADS = 2

TS_CUSTOMERS = "%d.%m.%Y %H:%M:%S"
TS_ORDERS = "%Y-%m-%d %H:%M:%S"
TS_ISO_LOCAL = "%Y-%m-%dT%H:%M:%S"
TS_ISO_UTC = "%Y-%m-%dT%H:%M:%SZ"
TS_BIRTHDAYS = "%d.%m.%Y"  # the CRM's date part: a calendar day, read by customers.birth_date
BIRTH_DATE_SHARE = 0.6  # customers who told the shop their birthday
REFERRAL_EVERY = 3  # of the first orders with the welcome code, every third came with a friend's code


def _prepare_dirs(out_dir: Path) -> None:
    """Create the folders and remove files of an earlier run (stale parts would be read)."""
    patterns = {"customers": "customers_*.csv", "orders": "orders_*.csv",
                "order_items": "order_items_*.parquet", "events": "events_*.*",
                "feedback": "feedback_*.csv", "mailing": "mailing_*.csv", "contacts": "calls_*.csv"}
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


def _birth_dates(g: np.ndarray, tl: _Timeline) -> np.ndarray:
    """Birth dates (midnight, as epoch seconds) of BIRTH_DATE_SHARE of the customers, 18 to
    70 years before the shop's end; a hash of the customer number, so no draw of the
    generator moves and the rest of the shop stays as it was."""
    mixed = (g.astype(np.uint64) * np.uint64(2654435761) + np.uint64(97)) % np.uint64(2**32)
    known = (mixed % np.uint64(100)) < np.uint64(round(BIRTH_DATE_SHARE * 100))
    age_days = 18 * 365 + (mixed // np.uint64(100)) % np.uint64(52 * 365)
    born = (tl.end_ts // DAY - age_days.astype(np.int64)) * DAY
    return np.where(known, born, _INT_NA)


def _referrers(o: _Table, c: _Table) -> np.ndarray:
    """Customer number (1-based) of the referrer whose code a first order used instead of the
    welcome code, else 0: every REFERRAL_EVERY-th such order names the customer of the
    order before it (a buyer). Derived, not drawn, so the rest of the shop stays as it was."""
    previous = np.roll(o["cust"], 1)
    chosen = (o["first"] & (o["promo"] == 0) & (o["id"] % REFERRAL_EVERY == 0)
              & (previous != o["cust"]) & (np.arange(o.n) > 0))
    return np.where(chosen, c["g"][previous] + 1, 0)


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
        self._contacts(part, ch, manifest)

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
            "born": _ts(_birth_dates(c["g"], self.tl)),
        })
        select = (f"SELECT {_ids('C', 7, 'g')} AS client_id, email, phone, name, city, "
                  f"strftime(reg, '{TS_CUSTOMERS}') AS registered, se AS subscribed_email, "
                  f"ss AS subscribed_sms, ads AS ads_ok, strftime(unsub, '{TS_CUSTOMERS}') AS unsubscribed, "
                  f"strftime(upd, '{TS_CUSTOMERS}') AS updated, strftime(born, '{TS_BIRTHDAYS}') AS birthday")
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
            "referrer": pa.array(_referrers(o, c)[oi]),
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
            f"{_ids('V', 9, 'visitor')} AS visitor, "
            f"CASE WHEN referrer > 0 THEN 'REF-' || {_ids('C', 7, 'referrer')} ELSE CAST(promo AS VARCHAR) END AS promo"
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
            **{name: pa.array(f[name], mask=f[name] == _INT_NA) for name in ("service", "delivery", "product")},
        })
        select = (f"SELECT {_ids('O', 8, 'oid')} AS order_id, {_ids('C', 7, 'cid')} AS client_id, score, "
                  f"CAST(comment AS VARCHAR) AS comment, strftime(created, '{TS_ISO_LOCAL}') AS created, "
                  "service, delivery, product")
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

    def _contacts(self, part: int, ch: _Chunk, manifest: dict) -> None:
        """The call centre's export: one file per part, its own words for the columns."""
        k, c = ch.contacts, ch.customers
        outcome = np.where(k["bad"] == _bad_code("contact_outcomes", "unknown_outcome"), len(OUTCOMES), k["outcome"])
        table = pa.table({
            "cid": pa.array(c["g"][k["cust"]] + 1), "called": _ts(k["ts"]),
            "result": _dict(outcome, OUTCOMES + ("перезвонить",)), "reason": _dict(k["reason"], REASONS),
            "note": _dict(k["comment"], REASON_COMMENTS),
        })
        select = (f"SELECT {_ids('C', 7, 'cid')} AS client_id, 'call' AS channel, "
                  f"strftime(called, '{TS_ORDERS}') AS called_at, CAST(result AS VARCHAR) AS result, "
                  "CAST(reason AS VARCHAR) AS reason, CAST(note AS VARCHAR) AS note")
        self._submit(self._copy, table, select, self.out / "contacts" / f"calls_{part:03d}.csv", "FORMAT CSV, HEADER")
        manifest["entities"]["contact_outcomes"]["files"] += 1
        manifest["entities"]["contact_outcomes"]["rows"] += k.n
        self._count_bad(manifest, "contact_outcomes", k["bad"])
