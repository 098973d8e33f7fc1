"""The warehouse: one SQL runner for DuckDB and PostgreSQL, bulk I/O and the ingest tables.

Dialect differences live here, in a few named helpers (column types, bulk write,
bulk text read); everything else is plain SQL that both engines run as written.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from winback.private_files import private_dir, restrict
from winback.schema import Entity

log = logging.getLogger(__name__)

BUCKETS = 1024  # key-hash buckets of raw rows; validation reads whole buckets so
# every version of a key is checked together (uniqueness within the batch).

# DuckDB keeps at most this much in memory and spills the rest to disk, which keeps
# the whole ingest under its RSS goal whatever the input size.
DUCKDB_MEMORY_LIMIT = "1GB"
DUCKDB_LOCK_WAIT_SECONDS = 120  # how long a task waits for another process's write lock

_TYPES = {
    "duckdb": {
        "text": "VARCHAR",
        "timestamp": "TIMESTAMP",
        "date": "DATE",
        "money": "DECIMAL(18,2)",
        "number": "DOUBLE",
        "integer": "BIGINT",
        "boolean": "BOOLEAN",
        "json": "VARCHAR",
    },
    "postgresql": {
        "text": "TEXT",
        "timestamp": "TIMESTAMP",
        "date": "DATE",
        "money": "NUMERIC(18,2)",
        "number": "DOUBLE PRECISION",
        "integer": "BIGINT",
        "boolean": "BOOLEAN",
        "json": "TEXT",
    },
}

# Bookkeeping tables of the ingest: (name, columns, primary key).
META_TABLES: dict[str, tuple[tuple[tuple[str, str], ...], tuple[str, ...]]] = {
    "load_runs": (
        (
            ("load_id", "text"),
            ("entity", "text"),
            ("source_kind", "text"),
            ("interval_start", "timestamp"),
            ("interval_end", "timestamp"),
            ("status", "text"),
            ("rows_extracted", "integer"),
            ("rows_filtered", "integer"),  # left out on purpose: the source's where, values' _other: drop
            ("rows_valid", "integer"),
            ("rows_quarantined", "integer"),
            ("rows_inserted", "integer"),
            ("rows_updated", "integer"),
            ("origins", "json"),
            ("message", "text"),
            ("started_at", "timestamp"),
            ("finished_at", "timestamp"),
            ("mode", "text"),  # null: a regular run; 'reload' (ingest --reload) or 'recheck' (quarantine recheck)
        ),
        ("load_id",),
    ),
    "validation_runs": (
        (
            ("run_id", "text"),
            ("entity", "text"),
            ("load_id", "text"),
            ("rows_checked", "integer"),
            ("rows_failed", "integer"),
            ("failed_per_rule", "json"),
            ("duplicates_dropped", "integer"),
            ("superseded", "integer"),
            ("bad_share", "number"),
            ("max_bad_share", "number"),
            ("success", "boolean"),
            ("message", "text"),
            ("started_at", "timestamp"),
            ("finished_at", "timestamp"),
            ("values_nulled", "integer"),  # field-level issues: values set to null in loaded rows
        ),
        ("run_id",),
    ),
    "quarantine": (
        (
            ("entity", "text"),
            ("record_hash", "text"),
            ("source_kind", "text"),
            ("origin", "text"),
            ("row_number", "integer"),
            ("load_id", "text"),
            ("record_key", "text"),
            ("rules", "text"),
            ("details", "text"),
            ("raw_record", "json"),
            ("quarantined_at", "timestamp"),
            ("level", "text"),  # 'row': the record was not loaded; 'field': it was, without this value
            ("field", "text"),  # the canonical column set to null, for a field-level issue
        ),
        ("entity", "record_hash"),
    ),
    "watermarks": (
        (("entity", "text"), ("watermark", "timestamp"), ("updated_at", "timestamp")),
        ("entity",),
    ),
    "loaded_files": (
        (
            ("entity", "text"),
            ("path", "text"),
            ("size", "integer"),
            ("mtime", "number"),
            ("sha256", "text"),
            ("load_id", "text"),
            ("loaded_at", "timestamp"),
        ),
        ("entity", "path"),
    ),
}


class Warehouse:
    """A SQLAlchemy engine plus the few operations whose SQL differs by dialect."""

    def __init__(self, url: str):
        self.url = url
        self.engine: Engine = _create_engine(url)
        self.dialect: str = self.engine.dialect.name
        if self.dialect not in _TYPES:
            raise ValueError(
                f"warehouse {sa.engine.make_url(url).drivername!r} is not supported; "
                "use duckdb:///path or postgresql+psycopg://..."
            )

    def __repr__(self) -> str:
        return f"Warehouse({sa.engine.make_url(self.url).render_as_string(hide_password=True)})"

    @property
    def location(self) -> str:
        """Where the warehouse is, for people (password hidden)."""
        url = sa.engine.make_url(self.url)
        if self.dialect == "duckdb":
            return url.database or ":memory:"
        return url.render_as_string(hide_password=True)

    def dispose(self) -> None:
        self.engine.dispose()

    # -- running SQL -----------------------------------------------------------------
    @contextmanager
    def begin(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    def _statement(self, sql: str, params: dict[str, Any] | None) -> tuple[sa.TextClause, dict]:
        if self.dialect == "duckdb" and params:
            # DuckDB plans prepared statements without the values and loses filter
            # push-down: a bound load id made scans 7x slower than a literal one.
            return sa.text(_escape_literals(inline(sql, params))), {}
        return sa.text(_escape_literals(sql)), params or {}

    def execute(self, sql: str, params: dict[str, Any] | None = None, conn: Connection | None = None):
        statement, values = self._statement(sql, params)
        if conn is not None:
            return conn.execute(statement, values)
        with self.begin() as own:
            return own.execute(statement, values)

    def rows(self, sql: str, params: dict[str, Any] | None = None) -> list[sa.Row]:
        statement, values = self._statement(sql, params)
        with self.engine.connect() as conn:
            return list(conn.execute(statement, values))

    def scalar(self, sql: str, params: dict[str, Any] | None = None) -> Any:
        statement, values = self._statement(sql, params)
        with self.engine.connect() as conn:
            return conn.execute(statement, values).scalar()

    def table_exists(self, name: str) -> bool:
        return sa.inspect(self.engine).has_table(name)

    def column_type(self, kind: str) -> str:
        return _TYPES[self.dialect][kind]

    def empty_relation(self, columns) -> str:
        """A relation with these (name, kind) columns and no row, to read in place of a
        table that does not exist (yet)."""
        nulls = ", ".join(f"CAST(NULL AS {self.column_type(kind)}) AS {name}" for name, kind in columns)
        return f"(SELECT {nulls} WHERE 1 = 0)"

    # -- bulk I/O ----------------------------------------------------------------------
    def write_arrow(self, conn: Connection, table: str, data: pa.Table) -> None:
        """Append an Arrow table to `table` (columns by name) inside the caller's transaction."""
        if data.num_rows == 0:
            return
        columns = ", ".join(_quote(c) for c in data.column_names)
        driver = conn.connection.driver_connection
        if self.dialect == "duckdb":
            view = f"_arrow_{table}"
            driver.register(view, data)
            try:
                driver.sql(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {view}")
            finally:
                driver.unregister(view)
            return
        buffer = io.BytesIO()
        pacsv.write_csv(
            _arrow_for_copy(data), buffer, pacsv.WriteOptions(include_header=False)
        )
        with driver.cursor() as cursor, cursor.copy(f"COPY {table} ({columns}) FROM STDIN WITH (FORMAT csv)") as copy:
            copy.write(buffer.getbuffer())

    def insert_new(self, conn: Connection, table: str, data: pa.Table, key: tuple[str, ...],
                   update: tuple[str, ...] = ()) -> None:
        """Append rows whose `key` is not in `table` yet; rows whose key is there are left
        as they are, but for their `update` columns, which take the incoming values."""
        if data.num_rows == 0:
            return
        columns = ", ".join(_quote(c) for c in data.column_names)
        scratch = f"_incoming_{table}"
        conn.execute(sa.text(f"CREATE TEMP TABLE IF NOT EXISTS {scratch} AS SELECT {columns} FROM {table} WHERE 1 = 0"))
        conn.execute(sa.text(f"DELETE FROM {scratch}"))
        self.write_arrow(conn, scratch, data)
        on_conflict = ("DO UPDATE SET " + ", ".join(f"{_quote(c)} = EXCLUDED.{_quote(c)}" for c in update)
                       if update else "DO NOTHING")
        conn.execute(
            sa.text(
                f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {scratch} "
                f"ON CONFLICT ({', '.join(key)}) {on_conflict}"
            )
        )
        conn.execute(sa.text(f"DELETE FROM {scratch}"))

    def insert_missing(self, conn: Connection, table: str, data: pa.Table, key: tuple[str, ...]) -> None:
        """Append the rows (unique by `key`) whose key is not in `table` yet, inside the
        caller's transaction; another writer's rows of the same key are kept, never an
        error. PostgreSQL: ON CONFLICT DO NOTHING on the table's key (a concurrent writer
        waits for the other's commit). DuckDB: an anti-join, for tables without a key index
        (`ensure_tables(duckdb_keys=False)`; the index made a million inserts 2x slower):
        one process writes a DuckDB file at a time."""
        if data.num_rows == 0:
            return
        if self.dialect == "postgresql":
            self.insert_new(conn, table, data, key)
            return
        columns = ", ".join(_quote(c) for c in data.column_names)
        view = f"_arrow_{table}"
        driver = conn.connection.driver_connection
        driver.register(view, data)
        try:
            matches = " AND ".join(f"t.{_quote(c)} = i.{_quote(c)}" for c in key)
            driver.sql(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {view} i "
                       f"WHERE NOT EXISTS (SELECT 1 FROM {table} t WHERE {matches})")
        finally:
            driver.unregister(view)

    def temp_values(self, conn: Connection, name: str, column: str, values: list[str]) -> str:
        """A temporary one-column text table `name` holding `values` (for this transaction's
        joins: a long IN list of literals or parameters is slow or too long)."""
        conn.execute(sa.text(f"CREATE TEMP TABLE IF NOT EXISTS {name} ({_quote(column)} {self.column_type('text')})"))
        conn.execute(sa.text(f"DELETE FROM {name}"))
        self.write_arrow(conn, name, pa.table({column: pa.array(values, pa.string())}))
        return name

    def parquet_relation(self, conn: Connection, parts: list[Path], like: str) -> str:
        """A FROM-able relation over Parquet parts with `like`'s columns: DuckDB reads the
        files in place; PostgreSQL gets them COPYed into a temporary table."""
        if self.dialect == "duckdb":
            return f"read_parquet([{', '.join(sql_literal(str(p)) for p in parts)}])"
        import pyarrow.parquet as pq

        scratch = f"_parts_{like}"
        conn.execute(sa.text(f"DROP TABLE IF EXISTS {scratch}"))
        conn.execute(sa.text(f"CREATE TEMPORARY TABLE {scratch} AS SELECT * FROM {like} WHERE 1 = 0"))
        for part in parts:
            for batch in pq.ParquetFile(part).iter_batches(batch_size=100_000):
                self.write_arrow(conn, scratch, pa.Table.from_batches([batch]))
        conn.execute(sa.text(f"ANALYZE {scratch}"))
        return scratch

    def count_changed(self, conn: Connection, table: str, statement: str, params: dict | None = None) -> int:
        """Run an INSERT/DELETE and return how many rows it touched (DuckDB's driver
        reports no rowcount, but counting a DuckDB table reads only metadata)."""
        if self.dialect == "postgresql":
            return self.execute(statement, params, conn=conn).rowcount
        count = f"SELECT count(*) FROM {table}"
        before = self.execute(count, conn=conn).scalar()
        self.execute(statement, params, conn=conn)
        return abs(self.execute(count, conn=conn).scalar() - before)

    # -- schema ------------------------------------------------------------------------
    def ensure_meta_tables(self) -> None:
        self.ensure_tables(META_TABLES)

    def ensure_tables(self, tables: dict[str, tuple[tuple[tuple[str, str], ...], tuple[str, ...]]],
                      duckdb_keys: bool = True) -> None:
        """Create the tables (name -> ((column, kind), ...), key) that do not exist yet.
        `duckdb_keys=False`: no key index on DuckDB, for tables whose writer keeps keys
        unique itself and appends in many small commits (the index made each slow)."""
        self._create_missing({name: (columns, key if duckdb_keys or self.dialect != "duckdb" else ())
                              for name, (columns, key) in tables.items()})

    def ensure_entity_tables(self, entity: Entity) -> None:
        """The staging table of an entity: canonical typed columns plus bookkeeping."""
        typed = [(c.name, c.type) for c in entity.columns]
        # DuckDB gets no key constraint: its index slows bulk upserts of millions of
        # rows, and the load step keeps keys unique by itself. PostgreSQL needs the
        # index for the key joins, and the constraint is a cheap second guard.
        key = entity.key if self.dialect == "postgresql" else ()
        columns = typed + [("_load_id", "text"), ("_row_hash", "integer"), ("_loaded_at", "timestamp")]
        self._create_missing({entity.name: (columns, key)})

    def _create_missing(self, tables: dict[str, tuple]) -> None:
        """Create the missing tables, and add to existing ones the columns a newer
        version of the project gave them."""
        inspector = sa.inspect(self.engine)
        existing = set(inspector.get_table_names())
        missing = {name: spec for name, spec in tables.items() if name not in existing}
        new_columns = {}
        for name in set(tables) & existing:
            present = {c["name"] for c in inspector.get_columns(name)}
            new_columns[name] = [(c, kind) for c, kind in tables[name][0] if c not in present]
        if not missing and not any(new_columns.values()):
            return
        with self.begin() as conn:
            # Parallel first runs on PostgreSQL: two CREATE TABLE IF NOT EXISTS of one
            # name race on the catalog (UniqueViolation on pg_type); one at a time.
            self.lock(conn, "ddl")
            for name, (columns, key) in missing.items():
                self._create(conn, name, columns, key)
            for name, columns in new_columns.items():
                for column, kind in columns:
                    conn.execute(sa.text(f"ALTER TABLE {name} ADD COLUMN IF NOT EXISTS {_quote(column)} "
                                         f"{self.column_type(kind)}"))

    @contextmanager
    def exclusive(self, purpose: str, wait_seconds: float, clock=time.monotonic, sleep=time.sleep) -> Iterator[None]:
        """Hold this warehouse's advisory lock for `purpose` across transactions (a
        PostgreSQL session lock on a connection of its own), waiting up to
        `wait_seconds` for another process that holds it and logging who that is.
        DuckDB needs none: its file lock already admits one writing process."""
        if self.dialect != "postgresql":
            yield
            return
        key = "hashtext(current_schema()), hashtext(:purpose)"
        params = {"purpose": f"winback:{purpose}"}
        with self.engine.connect() as conn:
            deadline, logged_at = clock() + wait_seconds, None
            while not conn.execute(sa.text(f"SELECT pg_try_advisory_lock({key})"), params).scalar():
                conn.commit()
                holder = self._lock_holder(conn, params["purpose"])
                if clock() >= deadline:
                    raise WarehouseLocked(f"another {purpose} of this warehouse is running ({holder}); waited "
                                          f"{wait_seconds:.0f}s for it to finish: try again when it has")
                if logged_at is None or clock() - logged_at >= 30:
                    log.warning("another %s of this warehouse is running (%s); waiting for it (up to %.0fs)",
                                purpose, holder, wait_seconds)
                    logged_at = clock()
                sleep(min(2.0, max(0.0, deadline - clock())))
            conn.commit()
            try:
                yield
            finally:
                conn.execute(sa.text(f"SELECT pg_advisory_unlock({key})"), params)
                conn.commit()

    @staticmethod
    def _lock_holder(conn: Connection, purpose: str) -> str:
        row = conn.execute(sa.text("""
            SELECT a.pid, a.application_name, a.client_addr, a.backend_start
            FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
            WHERE l.locktype = 'advisory' AND l.granted AND l.database = (SELECT oid FROM pg_database
                                                                            WHERE datname = current_database())
              AND l.classid::int = hashtext(current_schema()) AND l.objid::int = hashtext(:purpose)
            LIMIT 1"""), {"purpose": purpose}).first()
        if row is None:
            return "it just finished"
        app = f", {row.application_name}" if row.application_name else ""
        since = f", connected since {row.backend_start:%Y-%m-%d %H:%M:%S %Z}" if row.backend_start else ""
        return f"PostgreSQL backend PID {row.pid}{app} from {row.client_addr or 'a local socket'}{since}"

    def lock(self, conn: Connection, purpose: str) -> None:
        """Wait for this warehouse's (its schema's) PostgreSQL advisory lock for `purpose`,
        held until `conn`'s transaction ends. DuckDB needs none: one process writes the
        file at a time."""
        if self.dialect == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(current_schema()), hashtext(:purpose))"),
                         {"purpose": f"winback:{purpose}"})

    def _create(self, conn: Connection, name: str, columns, key) -> None:
        body = ", ".join(f"{_quote(c)} {self.column_type(t)}" for c, t in columns)
        if key:
            body += f", PRIMARY KEY ({', '.join(key)})"
        conn.execute(sa.text(f"CREATE TABLE IF NOT EXISTS {name} ({body})"))


_LITERAL = r"'(?:[^']|'')*'"
# A :name placeholder, outside string literals: a path like /data/:shop/ is no name.
_LITERAL_OR_PLACEHOLDER = re.compile(rf"({_LITERAL})|(?<![:\w]):(\w+)")
# What sa.text() reads as a bind parameter (its own rule): escaped inside literals.
_TEXT_BIND = re.compile(r"(?<![:\w\\]):(\w+)(?![:\w])")


def sql_literal(value: Any) -> str:
    """A value as an SQL literal (for DuckDB statements; see Warehouse._statement)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, (int, float, Decimal)):
        return repr(value) if isinstance(value, float) else str(value)
    if isinstance(value, datetime):
        return f"TIMESTAMP '{value.replace(tzinfo=None).isoformat(sep=' ')}'"
    if isinstance(value, date):
        return f"DATE '{value.isoformat()}'"
    return "'" + str(value).replace("'", "''") + "'"


def inline(sql: str, params: dict[str, Any] | None) -> str:
    if not params:
        return sql
    return _LITERAL_OR_PLACEHOLDER.sub(lambda m: m.group(1) or sql_literal(params[m.group(2)]), sql)


def _escape_literals(sql: str) -> str:
    """`sql` for sa.text() with every colon of its string literals kept as written."""
    return re.sub(_LITERAL, lambda m: _TEXT_BIND.sub(r"\\:\1", m.group(0)), sql)


def _create_engine(url: str) -> Engine:
    if url.startswith("duckdb:"):
        database = sa.engine.make_url(url).database
        if database and database != ":memory:":
            private_dir(Path(database).parent)
        # One connection per engine: DuckDB allows one writer process, and a pool of
        # several connections to one file buys nothing but lock contention.
        engine = sa.create_engine(
            url,
            poolclass=sa.pool.SingletonThreadPool,
            connect_args={"config": {"memory_limit": DUCKDB_MEMORY_LIMIT}},
        )
        sa.event.listen(engine, "do_connect", _wait_for_duckdb_lock)
        sa.event.listen(engine, "connect", _duckdb_session)
        return engine
    return sa.create_engine(url, pool_pre_ping=True)


class WarehouseLocked(RuntimeError):
    """Another process holds the DuckDB file's write lock for too long."""


def _wait_for_duckdb_lock(dialect, _record, cargs, cparams):
    """DuckDB takes one writer process per file: wait a while for another DAG's task to
    finish, saying who holds the file while waiting, then fail with what to do
    (instead of DuckDB's bare lock error)."""
    import duckdb

    began = time.monotonic()
    deadline, logged_at = began + DUCKDB_LOCK_WAIT_SECONDS, None
    database = cargs[0] if cargs else cparams.get("database")
    while True:
        try:
            connection = dialect.connect(*cargs, **cparams)
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower():
                raise
            holder = _lock_holder(str(exc))
            now = time.monotonic()
            if now >= deadline:
                raise WarehouseLocked(
                    f"the DuckDB warehouse {database} is locked by {holder} "
                    f"for more than {DUCKDB_LOCK_WAIT_SECONDS}s; DuckDB allows one writer at a time: close other "
                    "connections to it (a notebook, a second demo; analysts and BI tools should read the "
                    "build's snapshot instead), or use PostgreSQL when several DAGs write at once"
                ) from None
            if logged_at is None or now - logged_at >= 15:
                log.warning("the DuckDB warehouse %s is locked by %s; waited %.0fs so far, waiting up to %ds",
                            database, holder, now - began, DUCKDB_LOCK_WAIT_SECONDS)
                logged_at = now
            time.sleep(1)
            continue
        if database and database != ":memory:":
            with contextlib.suppress(PermissionError):  # someone else's file keeps its mode
                restrict(Path(database))  # every customer's contacts are in it
        return connection


def _lock_holder(message: str) -> str:
    """`PID 123 (airflow)` from DuckDB's lock error, with the holder's program name."""
    found = re.search(r"\(PID (\d+)\)", message)
    if not found:
        return "another process"
    try:  # the program's name only: a command line may carry a URL with a password
        name = Path(f"/proc/{found[1]}/comm").read_text().strip()
    except OSError:
        name = None
    return f"PID {found[1]}" + (f" ({name})" if name else "")


def _duckdb_session(dbapi_connection, _record) -> None:
    # Timestamps are naive UTC: the session zone must not shift casts (TimeZone can
    # only be set once the built-in ICU extension is loaded, i.e. after connecting).
    dbapi_connection.execute("SET TimeZone = 'UTC'")
    # Rows carry their own order (_origin, _row); not keeping insertion order lets
    # DuckDB write in parallel.
    dbapi_connection.execute("SET preserve_insertion_order = false")
    dbapi_connection.execute("SET enable_progress_bar = false")


def _quote(name: str) -> str:
    return f'"{name}"'


def _arrow_for_copy(data: pa.Table) -> pa.Table:
    """Make timestamps microsecond-precise so PostgreSQL's COPY parses them."""
    columns = []
    for column in data.columns:
        if pa.types.is_timestamp(column.type):
            column = column.cast(pa.timestamp("us"))
        columns.append(column)
    return pa.table(columns, names=data.column_names)

