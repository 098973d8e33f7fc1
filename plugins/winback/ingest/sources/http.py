"""The shop's HTTP API: paginated JSON (page number or cursor), incremental by an
updated-since parameter, authenticated from an Airflow Connection or the environment."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from winback.config import Config
from winback.credentials import env_value, token_from_connection
from winback.httpclient import HttpClient, HttpError
from winback.ingest.canonical import Mapping, MappingError
from winback.ingest.settings import HttpSource
from winback.ingest.sources import (
    Batch,
    Extractor,
    Origin,
    SourceError,
    SourceUnavailable,
    Window,
)

log = logging.getLogger(__name__)


def dig(document: Any, path: str | None) -> Any:
    """Follow a dotted path ("meta.next") into nested JSON; None when absent."""
    if not path:
        return document
    for part in path.split("."):
        if not isinstance(document, dict):
            return None
        document = document.get(part)
    return document


def flatten(record: dict, prefix: str = "") -> dict[str, Any]:
    """Nested objects become dotted keys ({"customer": {"id": 1}} -> customer.id)."""
    flat: dict[str, Any] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def as_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def iso_utc(moment: datetime) -> str:
    # Whole seconds: many APIs reject fractions. Rounding down only widens the window,
    # and loads are idempotent.
    return moment.replace(tzinfo=UTC, microsecond=0).isoformat().replace("+00:00", "Z")


class HttpExtractor(Extractor):
    kind = "http"
    source: HttpSource

    def __init__(self, config: Config, entity: str):
        super().__init__(config, entity)
        self.pages_read = 0

    def origins(self, window: Window, loaded: dict[str, dict]) -> list[Origin]:
        return [Origin(self.source.url)]

    def _client(self) -> HttpClient:
        headers = {"Accept": "application/json"}
        auth = self.source.auth
        if auth is not None:
            token = token_from_connection(auth.conn_id) if auth.conn_id else env_value(auth.token_env)
            headers[auth.header] = f"{auth.scheme} {token}" if auth.scheme else token
        return HttpClient(
            timeout=self.source.timeout,
            max_retries=self.source.max_retries,
            backoff_initial=self.source.retry_backoff,
            headers=headers,
        )

    def _params(self, window: Window) -> dict[str, str]:
        params = dict(self.source.params)
        if self.source.updated_since_param and window.start is not None:
            params[self.source.updated_since_param] = iso_utc(window.start)
        if self.source.updated_until_param and window.end is not None:
            params[self.source.updated_until_param] = iso_utc(window.end)
        return params

    def pages(self, window: Window) -> Iterator[list[dict]]:
        """The record lists of every page, following the configured pagination."""
        pagination = self.source.pagination
        params = self._params(window)
        if pagination.type == "page" and pagination.page_size_param:
            params[pagination.page_size_param] = str(pagination.page_size)
        client = self._client()
        try:
            page, cursor = pagination.start_page, None
            previous: list | None = None
            largest = 0  # the longest page so far: what this API really serves per page
            for number in range(1, pagination.max_pages + 1):
                if pagination.type == "page":
                    params[pagination.page_param] = str(page)
                elif pagination.type == "cursor" and cursor is not None:
                    params[pagination.cursor_param] = str(cursor)
                try:
                    body = client.get(self.source.url, params=params).json()
                except HttpError as exc:
                    transient = exc.status is None or exc.status == 429 or exc.status >= 500
                    error = SourceUnavailable if transient else SourceError
                    raise error(f"{self.source.url} page {number}: {exc}") from None
                except ValueError:
                    raise SourceError(f"{self.source.url} page {number}: the response is not JSON") from None
                records = dig(body, self.source.records_path)
                if not isinstance(records, list):
                    raise SourceError(
                        f"{self.source.url} page {number}: expected a list of records at "
                        f"{self.source.records_path or 'the top level'!r}, got {type(records).__name__}"
                    )
                self.pages_read = number
                if pagination.type == "page" and records and records == previous:
                    return  # past the end, some APIs answer with the last page again
                if records:
                    yield records
                if pagination.type == "none" or not records:
                    return
                if pagination.type == "page":
                    # A page shorter than page_size is the last one only if the API
                    # serves that many: many cap per_page (at 100, 250, ...) whatever
                    # was asked. Short of both page_size and an earlier page, it is the
                    # end; otherwise the next page (empty, or more) tells.
                    if pagination.page_size_param and len(records) < min(pagination.page_size, largest):
                        return
                    largest = max(largest, len(records))
                    previous = records
                    page += 1
                else:
                    cursor = dig(body, pagination.next_cursor_path)
                    if not cursor:
                        return
            raise SourceError(
                f"{self.source.url}: more than {pagination.max_pages} pages; raise "
                f"pagination.max_pages if that is expected"
            )
        finally:
            client.close()

    def read(self, origin: Origin, window: Window) -> Iterator[Batch]:
        mapping: Mapping | None = None
        buffered: list[dict[str, Any]] = []
        rows = 0
        for records in self.pages(window):
            flat = [flatten(r) if isinstance(r, dict) else {} for r in records]
            if mapping is None:
                available = sorted({key for record in flat for key in record})
                try:
                    mapping = Mapping.resolve(self.entity, self.source, available, origin.name)
                except MappingError as exc:
                    raise SourceError(str(exc)) from None
            buffered.extend(flat)
            if len(buffered) >= self.chunk_rows:
                yield Batch(self._table(buffered, mapping), origin.name, rows + 1, mapping)
                rows += len(buffered)
                buffered = []
        if buffered and mapping is not None:
            yield Batch(self._table(buffered, mapping), origin.name, rows + 1, mapping)
            rows += len(buffered)
        log.info("%s: read %d records in %d pages from %s", self.entity.name, rows, self.pages_read, origin.name)

    @staticmethod
    def _table(records: list[dict[str, Any]], mapping: Mapping) -> pa.Table:
        wanted = mapping.read_columns
        return pa.table(
            {c: pa.array([as_text(r.get(c)) for r in records], type=pa.string()) for c in wanted}
        )
