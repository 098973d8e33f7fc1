"""The shop's database (or a replica): a table or a query, incremental by an
updated-at column, streamed in chunks through any SQLAlchemy driver."""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Iterator
from zoneinfo import ZoneInfo

import pyarrow as pa
import sqlalchemy as sa

from winback.canonical import Mapping, MappingError
from winback.config import Config, SqlSource
from winback.schema import ENTITIES
from winback.credentials import env_value, sqlalchemy_url_from_connection
from winback.sources import Batch, Origin, RejectedLine, SourceError, SourceUnavailable, Window

log = logging.getLogger(__name__)


def column_array(values: list) -> pa.Array:
    """Arrow array of one column of Python values; mixed types fall back to text."""
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([None if v is None else str(v) for v in values], type=pa.string())


class SqlExtractor:
    kind = "sql"

    def __init__(self, config: Config, entity: str):
        self.config = config
        self.entity = ENTITIES[entity]
        self.source: SqlSource = config.source(entity)
        self.chunk_rows = config.chunk_rows(entity)
        self.zone = ZoneInfo(config.source_timezone(entity))
        self.rejected: list[RejectedLine] = []

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

    def origins(self, window: Window, loaded: dict[str, dict]) -> list[Origin]:
        return [Origin(f"sql:{self.source.table or 'query'}")]

    def _local(self, moment: datetime) -> datetime:
        """A window bound as the source's naive local time (how the shop stores it)."""
        return moment.replace(tzinfo=timezone.utc).astimezone(self.zone).replace(tzinfo=None)

    def statement(self, window: Window) -> tuple[str, dict]:
        base = (
            f"SELECT * FROM {self.source.table}"
            if self.source.table
            else f"SELECT * FROM ({self.source.query}) AS winback_source"
        )
        column = self.incremental_column
        if column is None:
            return base, {}
        quoted = '"' + column.replace('"', '""') + '"'
        conditions, params = [], {}
        if window.start is not None:
            conditions.append(f"{quoted} >= :window_start")
            params["window_start"] = self._local(window.start)
        if window.end is not None:
            conditions.append(f"{quoted} < :window_end")
            params["window_end"] = self._local(window.end)
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        return f"SELECT * FROM ({base}) AS winback_window{where} ORDER BY {quoted}", params

    def read(self, origin: Origin, window: Window) -> Iterator[Batch]:
        url = self._url()
        engine = sa.create_engine(url)
        shown = sa.engine.make_url(url).render_as_string(hide_password=True)
        sql, params = self.statement(window)
        rows = 0
        try:
            with engine.connect().execution_options(
                stream_results=True, max_row_buffer=self.chunk_rows
            ) as conn:
                result = conn.execute(sa.text(sql), params)
                names = list(result.keys())
                try:
                    mapping = Mapping.resolve(self.entity, self.source, names, origin.name)
                except MappingError as exc:
                    raise SourceError(str(exc)) from None
                if self.incremental_column and self.incremental_column not in names:
                    raise SourceError(
                        f"{origin.name}: incremental column {self.incremental_column!r} not found; "
                        f"columns there: {', '.join(names)}"
                    )
                wanted = sorted(set(mapping.columns.values()))
                positions = [names.index(c) for c in wanted]
                for partition in result.partitions(self.chunk_rows):
                    columns = list(zip(*partition))
                    table = pa.table({c: column_array(list(columns[i])) for c, i in zip(wanted, positions)})
                    yield Batch(table, origin.name, rows + 1, mapping)
                    rows += table.num_rows
        except sa.exc.OperationalError as exc:
            raise SourceUnavailable(f"{origin.name} at {shown}: {str(exc).splitlines()[0]}") from None
        except sa.exc.SQLAlchemyError as exc:
            raise SourceError(f"{origin.name} at {shown}: {str(exc).splitlines()[0]}") from None
        finally:
            engine.dispose()
        log.info("%s: read %d rows from %s", self.entity.name, rows, origin.name)
