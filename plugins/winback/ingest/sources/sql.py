"""The shop's database (or a replica): a table or a query, incremental by an
updated-at column, streamed in chunks through any SQLAlchemy driver."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pyarrow as pa
import sqlalchemy as sa

from winback.config import Config
from winback.credentials import env_value, sqlalchemy_url_from_connection
from winback.ingest.canonical import Mapping, MappingError
from winback.ingest.settings import SqlSource
from winback.ingest.sources import (
    Batch,
    Extractor,
    Origin,
    SourceError,
    SourceUnavailable,
    Window,
)

log = logging.getLogger(__name__)

PG_TIMESTAMPTZ_OID = 1184  # the type code psycopg, psycopg2 and pg8000 all report


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _holds_instants(dialect: str, type_code) -> bool:
    """Whether a column (by its DB-API type code) holds instants, not wall-clock times:
    PostgreSQL's timestamptz compares with aware bounds, whatever the session zone.
    Other columns (timestamp, SQLite's text, MySQL's DATETIME) take naive local times."""
    return dialect == "postgresql" and type_code == PG_TIMESTAMPTZ_OID


def driver_problem(exc: Exception) -> str:
    """The driver's message, first line, without a value it quotes at the end:
    PostgreSQL ends `invalid input syntax for type integer: "<the value>"` with the
    record's content (an email, a phone)."""
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return re.sub(r":\s*([\"']).*\1\s*$", ": (the value is not shown)", first)


def column_array(values: list) -> pa.Array:
    """Arrow array of one column of Python values; mixed types fall back to text."""
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([None if v is None else str(v) for v in values], type=pa.string())


class SqlExtractor(Extractor):
    kind = "sql"
    source: SqlSource

    def __init__(self, config: Config, entity: str):
        super().__init__(config, entity)
        self.zone = ZoneInfo(config.source_timezone(entity))

    def _url(self) -> str:
        if self.source.url:
            return self.source.url
        if self.source.url_env:
            return env_value(self.source.url_env)
        return sqlalchemy_url_from_connection(self.source.conn_id)

    @property
    def incremental_column(self) -> str | None:
        if self.source.incremental_column:
            return self.source.incremental_column
        return self.source.columns.get("updated_at")

    @property
    def fallback_column(self) -> str | None:
        """Where a row whose incremental column is NULL is windowed instead: the column
        mapped to the entity's next version column (orders: updated_at -> created_at),
        so a never-updated order is read once, when it is created, not never."""
        column = self.incremental_column
        version_by = self.entity.version_by
        if column is None or len(version_by) < 2 or self.source.columns.get(version_by[0]) != column:
            return None
        for canonical in version_by[1:]:
            fallback = self.source.columns.get(canonical)
            if fallback and fallback != column:
                return fallback
        return None

    def origins(self, window: Window, loaded: dict[str, dict]) -> list[Origin]:
        return [Origin(f"sql:{self.source.table or 'query'}")]

    def _bound(self, moment: datetime, aware: bool) -> datetime:
        """A window bound (naive UTC) as its column stores time: an instant for a column
        of instants, else the source's naive local time (how most shops store it)."""
        instant = moment.replace(tzinfo=UTC)
        return instant if aware else instant.astimezone(self.zone).replace(tzinfo=None)

    def base_statement(self) -> str:
        return (
            f"SELECT * FROM {self.source.table}"
            if self.source.table
            else f"SELECT * FROM ({self.source.query}) AS winback_source"
        )

    def statement(self, window: Window, aware: frozenset[str] = frozenset()) -> tuple[str, dict]:
        """The windowed query and its bounds; `aware` names the columns holding instants."""
        base = self.base_statement()
        column = self.incremental_column
        if column is None:
            return base, {}
        params = {}

        def within(name: str, prefix: str) -> list[str]:
            bounds = []
            for edge, moment, operator in (("start", window.start, ">="), ("end", window.end, "<")):
                if moment is not None:
                    params[f"{prefix}_{edge}"] = self._bound(moment, name in aware)
                    bounds.append(f"{_quote(name)} {operator} :{prefix}_{edge}")
            return bounds

        conditions = within(column, "window")
        where = ""
        if conditions:
            where = f" WHERE {' AND '.join(conditions)}"
            fallback = self.fallback_column
            if fallback is not None:
                # NULL compares as neither inside nor outside a window: without this,
                # rows never updated since their creation would never be read.
                instead = " AND ".join([f"{_quote(column)} IS NULL", *within(fallback, "fallback")])
                where = f" WHERE ({' AND '.join(conditions)}) OR ({instead})"
        return f"SELECT * FROM ({base}) AS winback_window{where} ORDER BY {_quote(column)}", params

    def read(self, origin: Origin, window: Window) -> Iterator[Batch]:
        url = self._url()
        engine = sa.create_engine(url)
        shown = sa.engine.make_url(url).render_as_string(hide_password=True)
        rows = 0
        try:
            with engine.connect() as conn:
                # The columns first, from a query that returns no rows: the window's
                # WHERE and ORDER BY name the incremental column, and a missing one would
                # fail there with the driver's message (or, in SQLite, be read as a
                # string literal and silently match nothing).
                probe = f"SELECT * FROM ({self.base_statement()}) AS winback_probe WHERE 1 = 0"
                described = conn.execute(sa.text(probe))
                names = list(described.keys())
                type_codes = [d[1] for d in described.cursor.description]
                try:
                    mapping = Mapping.resolve(self.entity, self.source, names, origin.name)
                except MappingError as exc:
                    raise SourceError(str(exc)) from None
                if self.incremental_column and self.incremental_column not in names:
                    raise SourceError(
                        f"{origin.name}: incremental column {self.incremental_column!r} not found; "
                        f"columns there: {', '.join(names)}"
                    )
                aware = frozenset(
                    n for n, code in zip(names, type_codes) if _holds_instants(engine.dialect.name, code)
                )
                sql, params = self.statement(window, aware)
                result = conn.execution_options(
                    stream_results=True, max_row_buffer=self.chunk_rows
                ).execute(sa.text(sql), params)
                names = list(result.keys())
                wanted = mapping.read_columns
                positions = [names.index(c) for c in wanted]
                for partition in result.partitions(self.chunk_rows):
                    columns = list(zip(*partition))
                    table = pa.table({c: column_array(list(columns[i])) for c, i in zip(wanted, positions)})
                    yield Batch(table, origin.name, rows + 1, mapping)
                    rows += table.num_rows
        except sa.exc.OperationalError as exc:
            raise SourceUnavailable(f"{origin.name} at {shown}: {driver_problem(exc)}") from None
        except sa.exc.SQLAlchemyError as exc:
            raise SourceError(f"{origin.name} at {shown}: {driver_problem(exc)}") from None
        finally:
            engine.dispose()
        log.info("%s: read %d rows from %s", self.entity.name, rows, origin.name)
