"""The sync engine: push one audience to one destination, sending only what changed.

Per (audience, destination) pair it diffs the audience's non-holdout members against
`sync_state` (what the platform was last confirmed to hold) in SQL, spills that plan to
private files, then works through it in units of the destination's `unit_rows()`:
normalize and hash identifiers, send, and commit the confirmed members to `sync_state`
before the next unit. A run killed midway therefore resumes where it stopped, with at
most one unit sent twice. No warehouse connection is open while a destination talks to
its platform (on DuckDB the file's write lock is released too), so a slow platform never
keeps an ingest or a build waiting. Rejected members go to `sync_row_errors` with the
platform's reason and are retried on later runs up to `sync.max_row_attempts`; removals
run after additions and their failures never stop the additions, and an identifier
another member of the pair still holds is never sent for removal. Each run is recorded
in `sync_runs`.

A dry run writes the exact requests to files and changes nothing in the warehouse.
Logs carry counts and hashed keys only, never an address or a phone.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from winback.config import Config, ConfigError
from winback.credentials import SecretError, airflow_connection
from winback.httpclient import HttpClient
from winback.httperror import HttpError
from winback.private_files import open_private, private_dir, write_private
from winback.sync.destinations.base import (
    ATTRIBUTES,
    IDENTIFIERS,
    INTEGER_ATTRIBUTES,
    MONEY_ATTRIBUTES,
    Destination,
    Member,
    Outcome,
    RemovalUnsupported,
    SyncError,
)
from winback.sync.identifier_cache import (
    CACHE_TABLE,
    CACHE_TABLES,
    PhoneCache,
    lookup,
    lookup_params,
)
from winback.sync.identifiers import (
    InvalidIdentifier,
    normalize_email,
    normalize_phone,
    phone_in_format,
    sha256_hex,
)
from winback.sync.settings import DestinationConfig
from winback.sync.transport import DryRunTransport, LiveTransport
from winback.warehouse import Warehouse

log = logging.getLogger(__name__)
encode_json = msgspec.json.Encoder(order="sorted").encode  # per member: stdlib json cost 6 us a row

SYNC_TABLES: dict[str, tuple[tuple[tuple[str, str], ...], tuple[str, ...]]] = {
    # What each platform was last confirmed to hold, per member, with what was sent.
    "sync_state": (
        (("audience", "text"), ("destination", "text"), ("member_key", "text"), ("ids_hash", "text"),
         ("source_hash", "text"), ("sent_ids", "json"), ("run_id", "text"), ("synced_at", "timestamp")),
        ("audience", "destination", "member_key"),
    ),
    "sync_row_errors": (
        (("audience", "text"), ("destination", "text"), ("member_key", "text"), ("operation", "text"),
         ("source_hash", "text"), ("reason", "text"), ("attempts", "integer"), ("first_failed_at", "timestamp"),
         ("last_failed_at", "timestamp"), ("run_id", "text")),
        ("audience", "destination", "member_key", "operation"),
    ),
    "sync_runs": (
        (("run_id", "text"), ("audience", "text"), ("destination", "text"), ("kind", "text"), ("mode", "text"),
         ("status", "text"), ("started_at", "timestamp"), ("finished_at", "timestamp"), ("seconds", "number"),
         ("planned_adds", "integer"), ("planned_updates", "integer"), ("planned_removes", "integer"),
         ("sent", "integer"), ("accepted", "integer"), ("rejected", "integer"), ("invalid", "integer"),
         ("removed", "integer"), ("remove_failed", "integer"), ("requests", "integer"),
         ("retries", "integer"), ("figures", "json"), ("error", "text")),
        ("run_id",),
    ),
}
RUN_COUNTERS = ("planned_adds", "planned_updates", "planned_removes", "sent", "accepted", "rejected",
                "invalid", "removed", "remove_failed", "requests", "retries")
MEMBER_COLUMNS = ("member_key", "email", "phone", "customer_id", "visitor_id") + ATTRIBUTES
# The attributes a destination stored before they became configurable: its fingerprint
# keeps them whether its options send them or not, so upgrading re-sends nobody. Later
# ones count only when sent (see _Pair._fingerprint).
STORED_ATTRIBUTES = ATTRIBUTES[:7]
# Attributes added after the first release (see _Pair._fingerprint).
ADDED_ATTRIBUTES = ATTRIBUTES[6:]


def _arrow_type(column: str) -> pa.DataType:
    if column in MONEY_ATTRIBUTES:
        return pa.decimal128(18, 2)
    return pa.int64() if column in INTEGER_ATTRIBUTES else pa.string()


def _sql_type(column: str) -> str:
    if column in MONEY_ATTRIBUTES:
        return "NUMERIC(18, 2)"
    return "BIGINT" if column in INTEGER_ATTRIBUTES else "VARCHAR"


# One row of the plan: what to do with a member, the member as the audience has it, what
# was sent for it before (old_ids, from sync_state), and its phone as identifier_cache
# knows it (E.164 or why it is invalid; both null if not cached yet).
PLAN_SCHEMA = pa.schema([(c, _arrow_type(c)) for c in ("op", *MEMBER_COLUMNS, "ids_hash", "source_hash", "old_ids",
                                                       "phone_normal", "phone_reason")])
SENT_SCHEMA = pa.schema([(c, pa.string()) for c in ("member_key", "ids_hash", "source_hash", "sent_ids")])
INVALID_SCHEMA = pa.schema([(c, pa.string()) for c in ("member_key", "source_hash", "reason")])


@dataclass
class SyncRun:
    audience: str
    destination: str
    kind: str
    mode: str
    dry_run: bool
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RUN_COUNTERS, 0))
    figures: dict[str, Any] = field(default_factory=dict)
    status: str = "running"
    error: str | None = None
    seconds: float = 0.0
    requests_dir: Path | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "audience": self.audience, "destination": self.destination,
                "kind": self.kind, "mode": self.mode, "dry_run": self.dry_run, "status": self.status,
                "seconds": round(self.seconds, 3), **self.counts, "figures": self.figures, "error": self.error,
                "requests_dir": str(self.requests_dir) if self.requests_dir else None}


def pairs(config: Config, audience: str | None = None, destination: str | None = None) -> list[dict[str, str]]:
    """The configured (audience, destination) pairs, optionally narrowed."""
    if destination is not None and destination not in config.destinations:
        raise ConfigError(f"--destination {destination}: not configured under destinations")
    if audience is not None and audience not in config.audiences:
        raise ConfigError(f"--audience {audience}: not configured under audiences")
    return [{"audience": a, "destination": d}
            for d, dest in config.destinations.items() if destination in (None, d)
            for a in dest.audiences if audience in (None, a)]


def sync(config: Config, audience: str | None = None, destination: str | None = None,
         dry_run: bool | None = None, warehouse: Warehouse | None = None) -> list[dict[str, Any]]:
    """Sync every configured pair (or the named ones); returns one summary per pair."""
    chosen = pairs(config, audience, destination)
    if not chosen:
        raise ConfigError("no (audience, destination) pair to sync: add audiences under destinations.<name>.audiences")
    own = warehouse is None
    warehouse = warehouse or Warehouse(config.warehouse_url)
    runs = []
    try:
        for pair in chosen:
            try:
                runs.append(sync_pair(config, pair["audience"], pair["destination"], dry_run, warehouse))
            except (HttpError, SyncError, SecretError) as exc:  # one pair failing does not stop the others
                log.error("sync %s -> %s failed: %s", pair["audience"], pair["destination"], exc)
                runs.append({**pair, "status": "failed", "error": f"{type(exc).__name__}: {exc}"})
        return runs
    finally:
        if own:
            warehouse.dispose()


def sync_pair(config: Config, audience: str, destination: str, dry_run: bool | None = None,
              warehouse: Warehouse | None = None) -> dict[str, Any]:
    dest_config = config.destinations[destination]
    dry_run = config.sync.dry_run if dry_run is None else dry_run
    own = warehouse is None
    warehouse = warehouse or Warehouse(config.warehouse_url)
    try:
        return _Pair(config, audience, destination, dest_config, dry_run, warehouse).run().as_dict()
    finally:
        if own:
            warehouse.dispose()


class _Spill:
    """Rows a run keeps between two warehouse connections (its plan, what a full replace
    sent), in a private Arrow file written and read back a batch at a time: memory stays
    bounded and reading needs no connection."""

    def __init__(self, path: Path, schema: pa.Schema):
        self.path, self.schema = path, schema
        self._handle = open_private(path, "wb")  # members' addresses and names: owner-only
        self._writer: pa.ipc.RecordBatchFileWriter | None = pa.ipc.new_file(
            self._handle, schema, options=pa.ipc.IpcWriteOptions(compression="lz4"))

    def write(self, table: pa.Table) -> None:
        if table.num_rows:
            assert self._writer is not None, "a spill is written before it is read"
            self._writer.write_table(table.select(self.schema.names).cast(self.schema))

    def frames(self) -> Iterator[pd.DataFrame]:
        if self._writer is not None:
            self._writer.close()
            self._handle.close()
            self._writer = None
        with pa.memory_map(str(self.path)) as source:
            reader = pa.ipc.open_file(source)
            for i in range(reader.num_record_batches):
                yield reader.get_batch(i).to_pandas()


class _Pair:
    def __init__(self, config: Config, audience: str, destination: str, dest_config: DestinationConfig,
                 dry_run: bool, warehouse: Warehouse):
        self.config = config
        self.spec = config.audiences[audience]
        self.dest_config = dest_config
        self.cls = dest_config.destination_class
        self.warehouse = warehouse
        self.run_state = SyncRun(audience, destination, dest_config.kind, dest_config.mode(audience), dry_run)
        self.max_attempts = config.sync.max_row_attempts
        # Identifiers sent: what the platform accepts among those the audience allows.
        self.id_fields = [i for i in self.cls.identifiers if i in self.spec.identifiers]
        # Attributes read, fingerprinted and handed over: those the options send, and
        # those the destination stored before they became configurable.
        sent = set(self.cls.sent_attributes(dest_config.platform_options))
        self.attr_fields = [a for a in ATTRIBUTES if a in self.cls.attributes
                            and (a in sent or a in STORED_ATTRIBUTES)]
        self.params = {"audience": audience, "destination": destination}
        self.hashed = self.cls.is_hashed(dest_config.platform_options)
        # Phones parsed once per warehouse (identifier_cache.py), for pairs that send them.
        self.phones = PhoneCache(config.sync.phone_region) if "phone" in self.id_fields else None
        # Where the plan is spilled; one folder per pair, so a killed run leaves one behind at most.
        self.plans = config.resolve(config.sync.out_dir) / "plans" / f"{audience}__{destination}"
        self.conn: Connection | None = None
        self._kept: Connection | None = None

    # -- the run ---------------------------------------------------------------------
    def run(self) -> SyncRun:
        run = self.run_state
        started = time.monotonic()
        if not self.warehouse.table_exists("audience_members"):
            raise SyncError("audience_members does not exist yet: run `build` before `sync`")
        fresh = not self.warehouse.table_exists("sync_state")
        if fresh and not run.dry_run:
            self.warehouse.ensure_tables(SYNC_TABLES, duckdb_keys=False)
        # A dry run reads the phone cache if there is one and writes nothing to it.
        self.phones_cached = self.phones is not None and self.warehouse.table_exists(CACHE_TABLE)
        if self.phones is not None and not self.phones_cached and not run.dry_run:
            self.warehouse.ensure_tables(CACHE_TABLES, duckdb_keys=False)
            self.phones_cached = True
        self.destination = self._destination()  # credentials first: a missing one fails before the run starts
        if self.destination.api_version:
            run.figures["api_version"] = self.destination.api_version
            stale = self.destination.api_version_warning(_now().date())
            if stale:
                log.warning(stale)
        if not run.dry_run:
            self._record_run(started_at=_now())
        shutil.rmtree(self.plans, ignore_errors=True)
        private_dir(self.plans)
        try:
            if run.dry_run:
                # A dry run talks to no platform, so it keeps one connection throughout;
                # on a new warehouse it plans against empty session tables (creates nothing).
                self._kept = self.warehouse.engine.connect()
                if fresh:
                    for name, (columns, _key) in SYNC_TABLES.items():
                        body = ", ".join(f"{c} {self.warehouse.column_type(kind)}" for c, kind in columns)
                        self._kept.execute(sa.text(f"CREATE TEMPORARY TABLE {name} ({body})"))
            with self._connected():
                self._plan()
            log.info("sync %s -> %s (%s%s): %d to add, %d to update, %d to remove", run.audience,
                     run.destination, run.mode, ", dry run" if run.dry_run else "",
                     run.counts["planned_adds"], run.counts["planned_updates"], run.counts["planned_removes"])
            if run.mode == "replace":
                self._replace()
            else:
                self._send_changes()
                if run.mode == "mirror":
                    self._remove()
            self._store_phones()
            run.figures.update(self.destination.finish())
            run.status = "succeeded"
        except Exception as exc:
            run.status, run.error = "failed", f"{type(exc).__name__}: {exc}"
            raise
        finally:
            run.counts["requests"] = self.destination.http.requests
            run.counts["retries"] = getattr(self.destination.http, "retries", 0)
            self.destination.http.close()
            shutil.rmtree(self.plans, ignore_errors=True)
            if self._kept is not None:
                self._kept.close()
                self._kept = None
            run.seconds = time.monotonic() - started
            if not run.dry_run:
                self._record_run(finished_at=_now())
            elif run.requests_dir is not None:  # beside the requests: what they amount to
                write_private(run.requests_dir / "summary.json", json.dumps(run.as_dict(), indent=2, default=str))
            self._release()
            log.info("sync %s -> %s %s in %.1fs: %s", run.audience, run.destination, run.status, run.seconds,
                     ", ".join(f"{k} {v}" for k, v in run.counts.items() if v))
        return run

    @contextmanager
    def _connected(self) -> Iterator[Connection]:
        """A warehouse connection for one stretch of work between two platform calls,
        committed at the end and closed; on DuckDB the engine lets go of the file too (its
        write lock lasts while any connection of the process is open), so a platform that
        makes the destination wait for an hour keeps no ingest or build waiting."""
        if self._kept is not None:
            self.conn = self._kept
            yield self._kept
            return
        with self.warehouse.engine.connect() as conn:
            self.conn = conn
            try:
                yield conn
                conn.commit()
            finally:
                self.conn = None
        self._release()

    def _release(self) -> None:
        if self.warehouse.dialect == "duckdb":
            self.warehouse.dispose()

    def _destination(self) -> Destination:
        run, cfg = self.run_state, self.dest_config
        # Required secrets now (a missing one fails before the run starts); optional
        # ones when the destination asks, raising SecretError if absent.
        secrets = {name: self._secret(name) for name in self.cls.secret_names}
        if run.dry_run:
            run.requests_dir = (self.config.resolve(self.config.sync.out_dir) / "dry-run"
                                / f"{run.audience}__{run.destination}")
            transport = DryRunTransport(run.requests_dir, list(secrets.values()))
            out_dir = run.requests_dir
        else:
            client = HttpClient(timeout=cfg.http.timeout, max_retries=cfg.http.max_retries,
                                backoff_initial=cfg.http.backoff_initial, backoff_max=cfg.http.backoff_max,
                                max_wait=cfg.http.max_wait,
                                retry_statuses=frozenset({429, 500, 502, 503, 504}) | self.cls.retry_statuses)
            transport = LiveTransport(client, self.cls.min_interval)
            out_dir = self.config.resolve(self.config.sync.out_dir) / "files" / f"{run.audience}__{run.destination}"
        return self.cls(name=run.destination, audience=run.audience, options=cfg.platform_options,
                        target=cfg.target(run.audience), transport=transport,
                        secret=lambda name: self._secret_for(name, secrets, transport),
                        base_url=cfg.base_url or self.cls.default_base_url, out_dir=out_dir)

    def _secret_for(self, name: str, secrets: dict[str, str], transport) -> str:
        if name not in secrets:
            if name not in self.cls.optional_secret_names:
                raise SecretError(f"{self.cls.kind} asked for an undeclared secret {name!r}")
            secrets[name] = self._secret(name)
            if isinstance(transport, DryRunTransport) and secrets[name]:
                transport.secrets.append(secrets[name])  # scrubbed from the request files too
        return secrets[name]

    def _secret(self, name: str) -> str:
        cfg = self.dest_config
        try:
            if cfg.conn_id:
                conn = airflow_connection(cfg.conn_id)
                extra = conn.extra_dejson or {}
                value = (conn.password or extra.get(name)) if name == "token" else extra.get(name)
                if not value:
                    raise SecretError(f"Airflow Connection {cfg.conn_id!r} has no "
                                      f"{'password or ' if name == 'token' else ''}extra.{name}")
                return value
            variable = f"{cfg.env_prefix or 'WINBACK_' + self.run_state.destination.upper()}_{name.upper()}"
            value = os.environ.get(variable)
            if not value:
                raise SecretError(f"destinations.{self.run_state.destination}: environment variable {variable} "
                                  "is not set (or name an Airflow Connection with conn_id)")
            return value
        except SecretError:
            if self.run_state.dry_run and name in self.cls.secret_names:
                return ""  # a dry run sends nothing, so it needs no credentials
            raise

    # -- planning --------------------------------------------------------------------
    def _fingerprint(self, fields: list[str]) -> str:
        # The identifiers' form is part of it: switching hashing or the phone form
        # re-identifies everyone (old values out, new ones in).
        form = f"{int(self.hashed)}{self.destination.phone_format}{','.join(sorted(self.destination.email_rules))}"
        parts = " || '|' || ".join([f"'{form}'"] + [f"COALESCE(CAST({f} AS VARCHAR), '')" for f in fields
                                                      if f not in ADDED_ATTRIBUTES])
        # An attribute added later counts only when set, so upgrading does not re-send
        # every member whose value is empty anyway.
        added = "".join(f" || COALESCE('|{f}=' || CAST({f} AS VARCHAR), '')" for f in fields if f in ADDED_ATTRIBUTES)
        return f"md5({parts}{added})"

    def _plan(self) -> None:
        """Diff in SQL and spill the result: what is sent (add, update, reidentify, and in
        replace mode keep) and what is removed, each in the destination's order_by (a
        call list: most valuable first), else member_key order."""
        run = self.run_state
        ids_hash = self._fingerprint(self.id_fields)
        source_hash = self._fingerprint(self.id_fields + self.attr_fields)
        columns = ", ".join(MEMBER_COLUMNS)
        empty = ", ".join(f"CAST(NULL AS {_sql_type(c)}) AS {c}" for c in MEMBER_COLUMNS[1:])
        order = f"{self.cls.order_by}, member_key" if self.cls.order_by else "member_key"
        keep = "" if run.mode != "replace" else """
            UNION ALL
            SELECT 'keep', d.*, s.sent_ids FROM desired d JOIN state s ON s.member_key = d.member_key
            WHERE s.source_hash = d.source_hash"""
        if self.phones_cached:
            phones = f"FROM changes {lookup('changes.phone')}"
            plan_columns = [f"changes.{c}" for c in PLAN_SCHEMA.names[:-2]] + [
                "cache.normal AS phone_normal", "cache.reason AS phone_reason"]
        else:
            phones = "FROM changes"
            plan_columns = PLAN_SCHEMA.names[:-2] + ["CAST(NULL AS VARCHAR) AS phone_normal",
                                                     "CAST(NULL AS VARCHAR) AS phone_reason"]
        sql = f"""
            WITH desired AS (
                SELECT {columns}, {ids_hash} AS ids_hash, {source_hash} AS source_hash
                FROM audience_members
                WHERE audience = :audience AND NOT in_holdout
            ), state AS (
                SELECT member_key, ids_hash, source_hash, sent_ids FROM sync_state
                WHERE audience = :audience AND destination = :destination
            ), given_up AS (
                SELECT member_key, source_hash FROM sync_row_errors
                WHERE audience = :audience AND destination = :destination AND operation = 'add'
                  AND attempts >= :max_attempts
            ), changes AS (
                SELECT CASE WHEN s.member_key IS NULL THEN 'add'
                            WHEN s.ids_hash <> d.ids_hash THEN 'reidentify' ELSE 'update' END AS op,
                       d.*, s.sent_ids AS old_ids
                FROM desired d LEFT JOIN state s ON s.member_key = d.member_key
                WHERE (s.member_key IS NULL OR s.source_hash <> d.source_hash)
                  AND NOT EXISTS (SELECT 1 FROM given_up g
                                  WHERE g.member_key = d.member_key AND g.source_hash = d.source_hash)
                UNION ALL
                SELECT 'remove', s.member_key, {empty}, s.ids_hash, s.source_hash, s.sent_ids
                FROM state s
                WHERE NOT EXISTS (SELECT 1 FROM desired d WHERE d.member_key = s.member_key){keep}
            )
            SELECT {', '.join(plan_columns)} {phones}
            ORDER BY CASE WHEN op = 'remove' THEN 1 ELSE 0 END, {order}"""
        self.to_send = _Spill(self.plans / "send.arrow", PLAN_SCHEMA)
        self.to_remove = _Spill(self.plans / "remove.arrow", PLAN_SCHEMA)
        counts: dict[str, int] = {}
        params = {**self.params, "max_attempts": self.max_attempts,
                  **lookup_params(self.config.sync.phone_region)}
        for batch in self._batches(sql, params):
            for item in pc.value_counts(batch.column("op")).to_pylist():
                counts[item["values"]] = counts.get(item["values"], 0) + item["counts"]
            removal = pc.equal(batch.column("op"), "remove")
            self.to_remove.write(batch.filter(removal))
            self.to_send.write(batch.filter(pc.invert(removal)))
        # Whether accepted members may have earlier row errors to clear (most runs: none).
        self.pending_errors = bool(self._sql(
            "SELECT COUNT(*) FROM sync_row_errors WHERE audience = :audience AND destination = :destination",
            self.params).scalar())
        run.counts["planned_adds"] = counts.get("add", 0)
        run.counts["planned_updates"] = counts.get("update", 0) + counts.get("reidentify", 0)
        run.counts["planned_removes"] = counts.get("remove", 0) if run.mode == "mirror" else 0
        self.plan_counts = counts

    def _batches(self, sql: str, params: dict[str, Any]) -> Iterator[pa.Table]:
        """A query's rows as Arrow tables in the plan's schema, a page at a time."""
        size = self._page_rows()
        if self.warehouse.dialect == "duckdb":  # columnar all the way: no Python row objects
            statement, _ = self.warehouse._statement(sql, params)
            reader = self.conn.connection.driver_connection.execute(str(statement)).to_arrow_reader(size)
            for batch in reader:
                yield pa.Table.from_batches([batch])
            return
        result = self.conn.execute(sa.text(sql).execution_options(stream_results=True), params)
        for rows in result.partitions(size):
            values = list(zip(*rows))
            yield pa.table([pa.array(v, type=f.type) for v, f in zip(values, PLAN_SCHEMA)], schema=PLAN_SCHEMA)

    def _page_rows(self) -> int:
        """Rows read at a time: sync.read_rows, but never less than one unit (a Google
        job or a Yandex file holds more than a page)."""
        return max(self.config.sync.read_rows, self.cls.unit_rows(), self.cls.remove_batch_size or 0)

    # -- additions and updates -----------------------------------------------------------
    def _send_changes(self) -> None:
        """Units go out one at a time (so at most one is ever unconfirmed); while one is
        on the wire, the next one is normalized and hashed."""
        unit = self.cls.unit_rows()
        in_flight: tuple[Future, list[Member], pd.DataFrame] | None = None
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="winback-sync") as sender:
            for page in self.to_send.frames():
                if self.run_state.mode == "mirror":
                    # Old identifiers out before the new ones go in: a platform matching
                    # on any identifier would otherwise take the re-added person out again.
                    self._settle(in_flight)
                    in_flight = None
                    self._remove_old_ids(page)
                for start in range(0, len(page), unit):
                    members, invalid, frame = self._prepare(page.iloc[start:start + unit])
                    self._settle(in_flight, invalid, frame)
                    in_flight = (sender.submit(self.destination.add, members), members, frame) if members else None
            self._settle(in_flight)

    def _settle(self, in_flight: tuple[Future, list[Member], pd.DataFrame] | None,
                invalid: dict[str, str] | None = None, invalid_frame: pd.DataFrame | None = None) -> None:
        """Wait for the unit on the wire, then record it (and the invalid members of the
        next one) in one connection: none is open while the platform answers."""
        outcome = None
        if in_flight is not None:
            future, members, frame = in_flight
            outcome = future.result()
            self._count_added(members, outcome)
        if invalid:
            self._count_invalid(invalid)
        store_phones = self.phones is not None and self.phones.full()
        if self.run_state.dry_run or (outcome is None and not invalid and not store_phones):
            return
        now = _now()
        with self._connected():
            if store_phones:
                self.phones.flush(self.warehouse, self.conn)
            if outcome is not None:
                self._write_added(outcome, frame, now)
            if invalid:
                # Retrying cannot help until the customer's data changes (which changes
                # source_hash and plans them again), so they count as given up at once.
                self._write_errors("add", invalid, invalid_frame, now, attempts=self.max_attempts)

    def _prepare(self, page: pd.DataFrame) -> tuple[list[Member], dict[str, str], pd.DataFrame]:
        """Members in the platform's form; keys whose identifiers cannot be normalized
        map to the reason (no value in it)."""
        region, style, hashed = self.config.sync.phone_region, self.destination.phone_format, self.hashed
        ids: dict[str, list[str | None]] = {}
        problems: dict[str, list[str | None]] = {}
        for name in self.id_fields:
            cached = (page["phone_normal"].tolist(), page["phone_reason"].tolist()) if name == "phone" else None
            values, reasons = _normalize(page[name].tolist(), name, region, style, hashed,
                                         self.destination.email_rules, self.phones, cached)
            ids[name], problems[name] = values, reasons
        keys = page["member_key"].tolist()
        attrs = {a: page[a].tolist() for a in self.attr_fields}
        members, invalid, sent = [], {}, []
        for i, key in enumerate(keys):
            row_ids = {name: ids[name][i] for name in self.id_fields if ids[name][i] is not None}
            if not row_ids:
                reasons = [problems[n][i] for n in self.id_fields if problems[n][i]]
                invalid[key] = "; ".join(reasons) or f"no identifier {self.run_state.kind} accepts " \
                                                   f"({', '.join(self.id_fields)})"
                sent.append(None)
                continue
            members.append(Member(key, row_ids, {a: _plain(attrs[a][i], a in INTEGER_ATTRIBUTES)
                                                 for a in self.attr_fields}))
            sent.append(encode_json(row_ids).decode())
        frame = page[["member_key", "op", "ids_hash", "source_hash"]].assign(sent_ids=sent).set_index("member_key")
        return members, invalid, frame

    def _store_phones(self) -> None:
        """Write the phones this run parsed to identifier_cache; if it wrote any, drop the
        entries no audience holds any more (the cache stays the audiences' phones)."""
        if self.phones is None:
            return
        self.run_state.figures.update(phones_from_cache=self.phones.hits, phones_parsed=self.phones.parsed)
        if self.run_state.dry_run or not self.phones.written and not self.phones.pending:
            return
        with self._connected():
            self.phones.flush(self.warehouse, self.conn)
            self.phones.purge(self.warehouse, self.conn)

    def _count_added(self, chunk: list[Member], outcome: Outcome) -> None:
        run = self.run_state
        run.counts["sent"] += len(chunk)
        run.counts["accepted"] += len(outcome.accepted)
        run.counts["rejected"] += len(outcome.rejected)
        _add_figures(run.figures, outcome.figures)
        if outcome.rejected:
            log.warning("%s -> %s: %d members rejected by the platform (reasons in sync_row_errors)",
                        run.audience, run.destination, len(outcome.rejected))

    def _write_added(self, outcome: Outcome, frame: pd.DataFrame, now: datetime) -> None:
        if outcome.accepted:
            state = frame.loc[list(outcome.accepted)].reset_index()
            self._write_state(state, now, upsert=bool((state["op"] != "add").any()))
            if self.pending_errors:
                self._clear_errors("add")
        if outcome.rejected:
            self._write_errors("add", outcome.rejected, frame, now, attempts=None)

    def _count_invalid(self, invalid: dict[str, str]) -> None:
        self.run_state.counts["invalid"] += len(invalid)
        log.warning("%s -> %s: %d members have no identifier that can be normalized (see sync_row_errors)",
                    self.run_state.audience, self.run_state.destination, len(invalid))

    # -- removals ------------------------------------------------------------------------
    def _remove_old_ids(self, page: pd.DataFrame) -> None:
        """Members whose identifiers changed: take what was sent for them out (their new
        identifiers are added next)."""
        changed = page[page["op"] == "reidentify"]
        if len(changed):
            self._remove_rows(changed, delete_state=False)

    def _remove(self) -> None:
        for page in self.to_remove.frames():
            self._remove_rows(page, delete_state=True)

    def _remove_rows(self, page: pd.DataFrame, delete_state: bool) -> None:
        run = self.run_state
        unit = self.cls.remove_batch_size or self.cls.unit_rows()
        members = [Member(k, json.loads(ids)) for k, ids in zip(page["member_key"], page["old_ids"])
                   if isinstance(ids, str)]
        shared = self._held_by_others(members)
        frame = page.set_index("member_key")
        for start in range(0, len(members), unit):
            chunk = [Member(m.key, {n: v for n, v in m.ids.items() if v not in shared})
                     for m in members[start:start + unit]]
            kept = sum(len(m.ids) for m in members[start:start + unit]) - sum(len(m.ids) for m in chunk)
            # A member all of whose identifiers others still hold has nothing to take out.
            outcome = Outcome(accepted=[m.key for m in chunk if not m.ids])
            sending = [m for m in chunk if m.ids]
            if sending:
                try:
                    outcome.merge(self.destination.remove(sending))
                except (HttpError, RemovalUnsupported) as exc:
                    # Refused removals are recorded and retried next run; additions go on.
                    reason = f"{exc}" + (f": {exc.body[:300]}" if getattr(exc, "body", None) else "")
                    outcome.merge(Outcome(rejected={m.key: reason for m in sending}))
                    log.warning("%s -> %s: a removal of %d members failed (%s); retried next run",
                                run.audience, run.destination, len(sending), exc)
            run.counts["removed"] += len(outcome.accepted)
            run.counts["remove_failed"] += len(outcome.rejected)
            _add_figures(run.figures, {**outcome.figures, **({"identifiers_kept_shared": kept} if kept else {})})
            if run.dry_run:
                continue
            now = _now()
            with self._connected():
                if outcome.accepted:
                    self._scratch(pd.DataFrame({"member_key": outcome.accepted}))
                    if delete_state:
                        self._sql("DELETE FROM sync_state WHERE audience = :audience AND destination = :destination "
                                  "AND member_key IN (SELECT member_key FROM sync_scratch)", self.params)
                    self._clear_errors("remove")
                if outcome.rejected:
                    self._write_errors("remove", outcome.rejected, frame, now, attempts=None)

    def _held_by_others(self, members: list[Member]) -> set[str]:
        """Identifier values of these members that another member of the pair still holds
        (its sync_state row says they were sent for it). A platform removes whoever holds
        a value it is sent, so these stay. Members added or re-identified in this run hold
        theirs once confirmed: leavers are removed after the additions, and old
        identifiers go out before their page's additions (which may put them back)."""
        if not members or not self.cls.removes_by_identifier:
            return set()
        names = sorted({n for m in members for n in m.ids} & set(IDENTIFIERS))
        held = " UNION ALL ".join(
            f"SELECT member_key, CAST(sent_ids AS JSON) ->> '{name}' AS value FROM sync_state "
            "WHERE audience = :audience AND destination = :destination" for name in names)
        with self._connected():
            self._scratch(pd.DataFrame([(m.key, v) for m in members for v in m.ids.values()],
                                       columns=["member_key", "value"]))
            return {row[0] for row in self._sql(
                f"SELECT DISTINCT c.value FROM sync_scratch c JOIN ({held}) h ON h.value = c.value "
                "WHERE NOT EXISTS (SELECT 1 FROM sync_scratch o WHERE o.member_key = h.member_key)", self.params)}

    # -- full replace --------------------------------------------------------------------
    def _replace(self) -> None:
        run = self.run_state
        changed = sum(self.plan_counts.get(op, 0) for op in ("add", "update", "reidentify", "remove"))
        if not changed:
            return  # the platform already holds exactly this list
        run.counts["planned_removes"] = self.plan_counts.get("remove", 0)
        sent = _Spill(self.plans / "replaced.arrow", SENT_SCHEMA)
        invalid = _Spill(self.plans / "invalid.arrow", INVALID_SCHEMA)

        def pages() -> Iterator[list[Member]]:
            unit = self.cls.unit_rows()
            for page in self.to_send.frames():
                members, unusable, frame = self._prepare(page)
                if unusable:
                    self._count_invalid(unusable)
                    invalid.write(pa.table({"member_key": list(unusable),
                                            "source_hash": frame["source_hash"].reindex(list(unusable)).tolist(),
                                            "reason": list(unusable.values())}))
                sent.write(pa.Table.from_pandas(frame.reset_index().dropna(subset=["sent_ids"]), preserve_index=False))
                for start in range(0, len(members), unit):
                    run.counts["sent"] += len(members[start:start + unit])
                    yield members[start:start + unit]

        outcome = self.destination.replace(pages())
        run.counts["accepted"] += len(outcome.accepted)
        run.counts["rejected"] += len(outcome.rejected)
        run.counts["removed"] += self.plan_counts.get("remove", 0)
        _add_figures(run.figures, outcome.figures)
        if run.dry_run:
            return
        now, accepted = _now(), set(outcome.accepted)
        with self._connected():  # one transaction: the platform's new list, all of it
            self._sql("DELETE FROM sync_state WHERE audience = :audience AND destination = :destination",
                      self.params)
            for frame in sent.frames():
                taken = frame[frame["member_key"].isin(accepted)]
                if len(taken):
                    self._write_state(taken, now, upsert=False)
                refused = {k: outcome.rejected[k] for k in frame["member_key"] if k in outcome.rejected}
                if refused:
                    self._write_errors("add", refused, frame.set_index("member_key"), now, attempts=None)
            for frame in invalid.frames():
                self._write_errors("add", dict(zip(frame["member_key"], frame["reason"])),
                                   frame.set_index("member_key"), now, attempts=self.max_attempts)

    # -- warehouse writes ------------------------------------------------------------------
    def _sql(self, sql: str, params: dict[str, Any] | None = None):
        statement, values = self.warehouse._statement(sql, params)
        return self.conn.execute(statement, values)

    def _scratch(self, frame: pd.DataFrame) -> None:
        """Load rows into the session's scratch table `sync_scratch` (replacing it)."""
        if self.warehouse.dialect == "duckdb":  # a view over the Arrow data: nothing copied
            self.conn.connection.driver_connection.register(
                "sync_scratch", pa.Table.from_pandas(frame, preserve_index=False))
            return
        self.conn.execute(sa.text("DROP TABLE IF EXISTS sync_scratch"))
        columns = ", ".join(f"{c} {self.warehouse.column_type('timestamp' if c == 'synced_at' else 'text')}"
                            for c in frame.columns)
        self.conn.execute(sa.text(f"CREATE TEMPORARY TABLE sync_scratch ({columns})"))
        self.warehouse.write_arrow(self.conn, "sync_scratch", pa.Table.from_pandas(frame, preserve_index=False))

    def _clear_errors(self, operation: str) -> None:
        """Forget the row errors of the members in sync_scratch: the platform took them."""
        self._sql("DELETE FROM sync_row_errors WHERE audience = :audience AND destination = :destination "
                  "AND operation = :operation AND member_key IN (SELECT member_key FROM sync_scratch)",
                  {**self.params, "operation": operation})

    def _write_state(self, state: pd.DataFrame, now: datetime, upsert: bool = True) -> None:
        rows = state[["member_key", "ids_hash", "source_hash", "sent_ids"]].assign(
            run_id=self.run_state.run_id, synced_at=now)
        self._scratch(rows)
        if upsert:
            self._sql("DELETE FROM sync_state WHERE audience = :audience AND destination = :destination "
                      "AND member_key IN (SELECT member_key FROM sync_scratch)", self.params)
        self._sql("INSERT INTO sync_state (audience, destination, member_key, ids_hash, source_hash, sent_ids, "
                  "run_id, synced_at) SELECT :audience, :destination, member_key, ids_hash, source_hash, sent_ids, "
                  "run_id, synced_at FROM sync_scratch", self.params)

    def _write_errors(self, operation: str, reasons: dict[str, str], frame: pd.DataFrame, now: datetime,
                      attempts: int | None) -> None:
        self.pending_errors = True
        keys = list(reasons)
        hashes = frame["source_hash"].reindex(keys).tolist() if "source_hash" in frame else [None] * len(keys)
        self._scratch(pd.DataFrame({"member_key": keys, "source_hash": hashes,
                                    "reason": [reasons[k][:1000] for k in keys]}))
        # Same data as last time: one more attempt; changed data starts counting again.
        next_attempt = (f"CAST({int(attempts)} AS BIGINT)" if attempts is not None else
                        "CASE WHEN e.source_hash IS NOT DISTINCT FROM s.source_hash THEN COALESCE(e.attempts, 0) + 1 "
                        "ELSE 1 END")
        self._sql(f"""
            CREATE TEMPORARY TABLE sync_errors_next AS
            SELECT s.member_key, s.source_hash, s.reason, {next_attempt} AS attempts,
                   COALESCE(e.first_failed_at, :now) AS first_failed_at
            FROM sync_scratch s
            LEFT JOIN sync_row_errors e ON e.audience = :audience AND e.destination = :destination
                 AND e.operation = :operation AND e.member_key = s.member_key""",
                  {**self.params, "operation": operation, "now": now})
        self._sql("DELETE FROM sync_row_errors WHERE audience = :audience AND destination = :destination "
                  "AND operation = :operation AND member_key IN (SELECT member_key FROM sync_scratch)",
                  {**self.params, "operation": operation})
        self._sql("""
            INSERT INTO sync_row_errors (audience, destination, member_key, operation, source_hash, reason,
                                         attempts, first_failed_at, last_failed_at, run_id)
            SELECT :audience, :destination, member_key, :operation, source_hash, reason, attempts,
                   first_failed_at, :now, :run_id
            FROM sync_errors_next""", {**self.params, "operation": operation, "now": now,
                                      "run_id": self.run_state.run_id})
        self.conn.execute(sa.text("DROP TABLE sync_errors_next"))

    def _record_run(self, started_at: datetime | None = None, finished_at: datetime | None = None) -> None:
        run = self.run_state
        values = {"run_id": run.run_id, **run.counts, "status": run.status, "seconds": run.seconds,
                  "figures": json.dumps(run.figures, default=str), "error": run.error}
        with self.warehouse.begin() as conn:
            if started_at is not None:
                self.warehouse.execute(
                    "INSERT INTO sync_runs (run_id, audience, destination, kind, mode, status, started_at) "
                    "VALUES (:run_id, :audience, :destination, :kind, :mode, :status, :started_at)",
                    {**values, "audience": run.audience, "destination": run.destination, "kind": run.kind,
                     "mode": run.mode, "started_at": started_at}, conn=conn)
            else:
                assignments = ", ".join(f"{c} = :{c}" for c in (*RUN_COUNTERS, "status", "seconds", "figures", "error"))
                self.warehouse.execute(f"UPDATE sync_runs SET {assignments}, finished_at = :finished_at "
                                       "WHERE run_id = :run_id", {**values, "finished_at": finished_at}, conn=conn)


def _normalize(values: list, name: str, region: str, style: str, hashed: bool, email_rules: frozenset = frozenset(),
               phones: PhoneCache | None = None, cached: tuple[list, list] | None = None,
               ) -> tuple[list[str | None], list[str | None]]:
    """Values in the platform's form (None where missing or invalid) and the reasons.
    Phones come from `phones` when given: `cached` holds what identifier_cache knew of
    each value (E.164s and reasons, None for a miss)."""
    out: list[str | None] = []
    reasons: list[str | None] = []
    for i, value in enumerate(values):
        if _missing(value) or str(value).strip() == "":
            out.append(None)
            reasons.append(None)
            continue
        try:
            if name == "email":
                normal = normalize_email(str(value), email_rules)
            elif name == "phone" and phones is not None:
                known, reason = (None, None) if cached is None else (cached[0][i], cached[1][i])
                normal = phone_in_format(phones.e164(str(value), None if _missing(known) else known,
                                                     None if _missing(reason) else reason), style)  # type: ignore[arg-type]
            elif name == "phone":
                normal = normalize_phone(str(value), region, style)  # type: ignore[arg-type]
            else:
                out.append(str(value).strip())
                reasons.append(None)
                continue
        except InvalidIdentifier as exc:
            out.append(None)
            reasons.append(str(exc))
            continue
        out.append(sha256_hex(normal) if hashed else normal)
        reasons.append(None)
    return out, reasons


def _plain(value: Any, integer: bool = False) -> Any:
    """Attribute values as JSON-friendly Python (NaN/NA -> None, Decimal -> float; a
    whole-number attribute that pandas read as a float -> int)."""
    if _missing(value):
        return None
    if integer:
        return int(value)
    if hasattr(value, "is_nan") or type(value).__name__ == "Decimal":
        return float(value)
    return value


def _missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _add_figures(into: dict[str, Any], figures: dict[str, Any]) -> None:
    for name, value in figures.items():
        if isinstance(value, (int, float)) and isinstance(into.get(name), (int, float)):
            into[name] += value
        else:
            into[name] = value


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def format_runs(runs: list[dict[str, Any]]) -> str:
    """One line per pair for people: what was (or would be) added and removed."""
    lines = []
    for r in runs:
        head = f"{r['audience']} -> {r['destination']}"
        if r["status"] != "succeeded":
            lines.append(f"{head}: FAILED {r.get('error')}")
            continue
        verb = "would send" if r["dry_run"] else "sent"
        lines.append(
            f"{head} ({r['mode']}{', dry run' if r['dry_run'] else ''}): {r['planned_adds']} to add, "
            f"{r['planned_updates']} to update, {r['planned_removes']} to remove; {verb} {r['sent']} in "
            f"{r['requests']} requests, {r['accepted']} accepted, {r['rejected']} rejected, {r['invalid']} invalid, "
            f"{r['removed']} removed ({r['seconds']:.1f}s)")
        if r.get("requests_dir"):
            lines.append(f"    requests written to {r['requests_dir']}")
    return "\n".join(lines)
