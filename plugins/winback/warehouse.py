"""The warehouse: one SQL runner for DuckDB and PostgreSQL, bulk I/O and the ingest tables.

Dialect differences live here, in a few named helpers (column types, bulk write,
bulk text read); everything else is plain SQL that both engines run as written.
"""

from __future__ import annotations

import csv
import io
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.csv as pacsv
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from winback.schema import ENTITIES, Entity

BUCKETS = 1024  # key-hash buckets of raw rows; validation reads whole buckets so
# every version of a key is checked together (uniqueness within the batch).

# DuckDB keeps at most this much in memory and spills the rest to disk, which keeps
# the whole ingest under its RSS goal whatever the input size.
DUCKDB_MEMORY_LIMIT = "1GB"

_TYPES = {
    "duckdb": {
        "text": "VARCHAR",
        "timestamp": "TIMESTAMP",
        "money": "DECIMAL(18,2)",
        "number": "DOUBLE",
        "integer": "BIGINT",
        "boolean": "BOOLEAN",
        "json": "VARCHAR",
    },
    "postgresql": {
        "text": "TEXT",
        "timestamp": "TIMESTAMP",
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
            ("rows_valid", "integer"),
            ("rows_quarantined", "integer"),
            ("rows_inserted", "integer"),
            ("rows_updated", "integer"),
            ("origins", "json"),
            ("message", "text"),
            ("started_at", "timestamp"),
            ("finished_at", "timestamp"),
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


def raw_table(entity: str) -> str:
    return f"raw_{entity}"


def valid_table(entity: str) -> str:
    return f"valid_{entity}"


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

    def execute(self, sql: str, params: dict[str, Any] | None = None, conn: Connection | None = None):
        if conn is not None:
            return conn.execute(sa.text(sql), params or {})
        with self.begin() as own:
            return own.execute(sa.text(sql), params or {})

    def rows(self, sql: str, params: dict[str, Any] | None = None) -> list[sa.Row]:
        with self.engine.connect() as conn:
            return list(conn.execute(sa.text(sql), params or {}))

    def scalar(self, sql: str, params: dict[str, Any] | None = None) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(sa.text(sql), params or {}).scalar()

    def table_exists(self, name: str) -> bool:
        return sa.inspect(self.engine).has_table(name)

    def column_type(self, kind: str) -> str:
        return _TYPES[self.dialect][kind]

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
        with driver.cursor() as cursor:
            with cursor.copy(f"COPY {table} ({columns}) FROM STDIN WITH (FORMAT csv)") as copy:
                copy.write(buffer.getbuffer())

    def insert_new(self, conn: Connection, table: str, data: pa.Table, key: tuple[str, ...]) -> None:
        """Append rows whose `key` is not in `table` yet (others are left as they are)."""
        if data.num_rows == 0:
            return
        columns = ", ".join(_quote(c) for c in data.column_names)
        scratch = f"_incoming_{table}"
        conn.execute(sa.text(f"CREATE TEMP TABLE IF NOT EXISTS {scratch} AS SELECT {columns} FROM {table} WHERE 1 = 0"))
        conn.execute(sa.text(f"DELETE FROM {scratch}"))
        self.write_arrow(conn, scratch, data)
        conn.execute(
            sa.text(
                f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {scratch} "
                f"ON CONFLICT ({', '.join(key)}) DO NOTHING"
            )
        )
        conn.execute(sa.text(f"DELETE FROM {scratch}"))

    def read_text(self, conn: Connection, select: str, params: dict[str, Any] | None = None) -> pa.Table:
        """Run a SELECT of text columns and return it as Arrow, in bulk (no row objects)."""
        driver = conn.connection.driver_connection
        params = params or {}
        if self.dialect == "duckdb":
            sql = re.sub(r"(?<![:\w]):(\w+)", r"$\1", select)
            return driver.sql(sql, params=params).to_arrow_table()
        import psycopg

        sql = re.sub(r"(?<![:\w]):(\w+)", r"%(\1)s", select)
        inlined = psycopg.ClientCursor(driver).mogrify(sql, params)
        buffer = io.BytesIO()
        with driver.cursor() as cursor:
            with cursor.copy(f"COPY ({inlined}) TO STDOUT WITH (FORMAT csv, HEADER true)") as copy:
                for block in copy:
                    buffer.write(block)
        buffer.seek(0)
        names = next(csv.reader([buffer.readline().decode("utf-8")]))
        buffer.seek(0)
        return pacsv.read_csv(
            buffer,
            convert_options=pacsv.ConvertOptions(
                # COPY writes NULL unquoted and an empty string quoted: keep them apart.
                strings_can_be_null=True,
                quoted_strings_can_be_null=False,
                column_types={name: pa.string() for name in names},
            ),
        )

    # -- schema ------------------------------------------------------------------------
    def ensure_meta_tables(self) -> None:
        with self.begin() as conn:
            for name, (columns, key) in META_TABLES.items():
                self._create(conn, name, columns, key)

    def ensure_entity_tables(self, entity: Entity) -> None:
        raw_columns = [("_load_id", "text"), ("_origin", "text"), ("_row", "integer"), ("_bucket", "integer")]
        raw_columns += [(c, "text") for c in entity.column_names]
        typed = [(c.name, c.type) for c in entity.columns]
        with self.begin() as conn:
            self._create(conn, raw_table(entity.name), raw_columns, ())
            self._create(conn, valid_table(entity.name), [("_load_id", "text")] + typed + [("_row_hash", "text")], ())
            # DuckDB gets no key constraint: its index slows bulk upserts of millions of
            # rows, and the load step keeps keys unique by itself. PostgreSQL needs the
            # index for the key joins, and the constraint is a cheap second guard.
            key = entity.key if self.dialect == "postgresql" else ()
            self._create(
                conn,
                entity.name,
                typed + [("_load_id", "text"), ("_row_hash", "text"), ("_loaded_at", "timestamp")],
                key,
            )
            if self.dialect == "postgresql":
                conn.execute(
                    sa.text(
                        f"CREATE INDEX IF NOT EXISTS {raw_table(entity.name)}_load "
                        f"ON {raw_table(entity.name)} (_load_id, _bucket)"
                    )
                )
                conn.execute(
                    sa.text(
                        f"CREATE INDEX IF NOT EXISTS {valid_table(entity.name)}_load "
                        f"ON {valid_table(entity.name)} (_load_id)"
                    )
                )

    def _create(self, conn: Connection, name: str, columns, key) -> None:
        body = ", ".join(f"{_quote(c)} {self.column_type(t)}" for c, t in columns)
        if key:
            body += f", PRIMARY KEY ({', '.join(key)})"
        conn.execute(sa.text(f"CREATE TABLE IF NOT EXISTS {name} ({body})"))


def _create_engine(url: str) -> Engine:
    if url.startswith("duckdb:"):
        database = sa.engine.make_url(url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        # One connection per engine: DuckDB allows one writer process, and a pool of
        # several connections to one file buys nothing but lock contention.
        engine = sa.create_engine(
            url,
            poolclass=sa.pool.SingletonThreadPool,
            connect_args={"config": {"memory_limit": DUCKDB_MEMORY_LIMIT}},
        )
        # Timestamps are naive UTC; the session zone must not shift casts. (TimeZone can
        # only be set once the built-in ICU extension is loaded, i.e. after connecting.)
        sa.event.listen(engine, "connect", lambda dbapi, _: dbapi.execute("SET TimeZone = 'UTC'"))
        return engine
    return sa.create_engine(url, pool_pre_ping=True)


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

