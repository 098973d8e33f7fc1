"""Phones normalized once per warehouse: `identifier_cache` keeps each raw phone's E.164
form, or why it is not a number, so a second audience, another destination or a re-sync
never parses a phone again (parsing with phonenumbers costs ~25 s per million phones;
each sync task is its own process, so an in-process cache would not carry over).

One row per (kind, raw, region, parser): `raw` is the value exactly as audience_members
holds it, `parser` the phonenumbers version (its metadata decides what is valid, so an
upgrade parses again). Only E.164 is kept: the digits form and hashes derive from it.
The sync reads the cache in its plan query (one join of the planned members' phones),
parses the misses, and writes them back in a few bulk inserts that skip what another
sync task wrote meanwhile. After a run that wrote entries it drops those no audience
holds any more (and those of another region or parser version): the cache is at most
the raw phones of the current audiences. Emails are not cached: trimming and
lower-casing cost less than reading a cached value back (docs/benchmarks.md, Sync).

It holds phone numbers, as audience_members does, in the same warehouse; nothing here
logs a value.
"""

from __future__ import annotations

import phonenumbers
import pyarrow as pa
from sqlalchemy.engine import Connection

from winback.clock import utcnow
from winback.sync.identifiers import InvalidIdentifier, phone_e164
from winback.warehouse import Warehouse

CACHE_TABLE = "identifier_cache"
KEY = ("kind", "raw", "region", "parser")
CACHE_TABLES: dict[str, tuple[tuple[tuple[str, str], ...], tuple[str, ...]]] = {
    CACHE_TABLE: ((("kind", "text"), ("raw", "text"), ("region", "text"), ("parser", "text"), ("normal", "text"),
             ("reason", "text"), ("cached_at", "timestamp")), KEY),
}
PARSER = phonenumbers.__version__
FLUSH_ROWS = 100_000  # parsed phones kept in memory before they are written (one insert each)


def lookup(phone: str) -> str:
    """A LEFT JOIN to the cache (alias `cache`) on the column `phone`, with the parameters
    of `lookup_params`: `cache.normal` and `cache.reason` are both null for a miss."""
    return (f"LEFT JOIN {CACHE_TABLE} cache ON cache.kind = 'phone' AND cache.raw = {phone} "
            "AND cache.region = :phone_region AND cache.parser = :phone_parser")


def lookup_params(region: str) -> dict[str, str]:
    return {"phone_region": region, "phone_parser": PARSER}


class PhoneCache:
    """Phones of one run: cached ones as the plan found them, the others parsed once and
    kept for `flush`."""

    def __init__(self, region: str):
        self.region = region
        self.pending: dict[str, tuple[str | None, str | None]] = {}  # raw -> (E.164, reason), not written yet
        self.hits = self.parsed = self.written = 0  # phones found in the cache, parsed, written to it

    def e164(self, raw: str, normal: str | None, reason: str | None) -> str:
        """`raw` in E.164, from the cache's `normal` / `reason` when the plan found them;
        raises InvalidIdentifier with the (cached) reason."""
        if normal is not None or reason is not None:
            self.hits += 1
            if normal is None:
                raise InvalidIdentifier(reason)
            return normal
        known = self.pending.get(raw)
        if known is None:
            self.parsed += 1
            try:
                known = (phone_e164(raw, self.region), None)
            except InvalidIdentifier as exc:
                known = (None, str(exc))
            self.pending[raw] = known
        if known[0] is None:
            raise InvalidIdentifier(known[1])
        return known[0]

    def full(self) -> bool:
        return len(self.pending) >= FLUSH_ROWS

    def flush(self, warehouse: Warehouse, conn: Connection) -> int:
        """Write the phones parsed since the last flush (those another task wrote meanwhile
        are skipped), inside the caller's transaction; returns how many were pending."""
        if not self.pending:
            return 0
        raws = list(self.pending)
        rows = pa.table({
            "kind": pa.array(["phone"] * len(raws), pa.string()),
            "raw": pa.array(raws, pa.string()),
            "region": pa.array([self.region] * len(raws), pa.string()),
            "parser": pa.array([PARSER] * len(raws), pa.string()),
            "normal": pa.array([self.pending[r][0] for r in raws], pa.string()),
            "reason": pa.array([self.pending[r][1] for r in raws], pa.string()),
            "cached_at": pa.array([utcnow()] * len(raws), pa.timestamp("us")),
        })
        warehouse.insert_missing(conn, CACHE_TABLE, rows, KEY)
        self.pending.clear()
        self.written += len(raws)
        return len(raws)

    def purge(self, warehouse: Warehouse, conn: Connection) -> None:
        """Drop the entries no audience holds any more, and those another region or parser
        version wrote: what is left is at most the raw phones of the current audiences."""
        warehouse.execute(
            f"DELETE FROM {CACHE_TABLE} WHERE kind = 'phone' AND (region <> :region OR parser <> :parser "
            f"OR NOT EXISTS (SELECT 1 FROM audience_members m WHERE m.phone = {CACHE_TABLE}.raw))",
            {"region": self.region, "parser": PARSER}, conn=conn)

