"""Sources: where shop records come from. Each kind is one module behind one protocol.

An extractor lists the origins a run must read (files, a table window, an API window)
and reads each one as Arrow batches of the shop's own columns. Mapping to canonical
columns happens after, the same way for every kind (`winback.ingest.canonical`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

import pyarrow as pa

from winback.config import Config
from winback.ingest.canonical import Mapping
from winback.schema import ENTITIES

# NUL and the other control characters but tab and line breaks: raw bytes of a broken
# file must not reach a log or a warehouse text column (PostgreSQL rejects NUL).
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """`text` without NUL and control characters (tab and line breaks kept)."""
    return _CONTROL.sub("", text)


class SourceError(RuntimeError):
    """A source cannot be read: the message names the file, line or key and the problem
    (never a record's content), and holds no control characters."""

    def __init__(self, message: str):
        super().__init__(printable(message))


class SourceUnavailable(SourceError):
    """The source did not answer (network, 5xx, throttling beyond our retries): worth
    retrying later, unlike a broken file or a wrong mapping."""


@dataclass(frozen=True)
class Window:
    """Half-open [start, end) of updated-at times to extract; None = unbounded."""

    start: datetime | None = None
    end: datetime | None = None

    def __str__(self) -> str:
        start = self.start.isoformat() if self.start else "the beginning"
        end = self.end.isoformat() if self.end else "now"
        return f"[{start}, {end})"


@dataclass(frozen=True)
class Origin:
    """One thing a run reads: a file, a table window, an API window."""

    name: str
    fingerprint: dict = field(default_factory=dict)  # files: size, mtime, sha256


@dataclass(frozen=True)
class Batch:
    table: pa.Table  # the shop's own columns
    origin: str
    first_row: int  # 1-based number of the batch's first record within its origin
    mapping: Mapping  # which of the table's columns feed which canonical column


@dataclass(frozen=True)
class RejectedLine:
    """A line the reader could not split into a record (kept for quarantine)."""

    origin: str
    line: int | None
    text: str
    problem: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "text", printable(self.text))


class Extractor:
    """What every source kind implements: `origins` lists what a run reads, `read`
    yields each origin's records as Arrow batches of at most chunk_rows rows."""

    kind: str

    def __init__(self, config: Config, entity: str):
        self.config = config
        self.entity = ENTITIES[entity]
        self.source = config.source(entity)
        self.chunk_rows = config.chunk_rows(entity)
        # Lines that could not be parsed at all, when the source quarantines them.
        self.rejected: list[RejectedLine] = []

    def readable(self, window: Window) -> Window:
        """The part of `window` this source can serve: what the run reads and the
        watermark moves to (an API of whole days has no data for today)."""
        return window

    def origins(self, window: Window, loaded: dict[str, dict]) -> list[Origin]:
        """What this run reads; `loaded` is the file registry (path -> fingerprint)."""
        raise NotImplementedError

    def read(self, origin: Origin, window: Window) -> Iterator[Batch]:
        raise NotImplementedError


def make_extractor(config: Config, entity: str) -> Extractor:
    source = config.source(entity)
    if source.kind == "file":
        from winback.ingest.sources.files import FileExtractor

        return FileExtractor(config, entity)
    if source.kind == "ga4_export":
        from winback.ingest.sources.ga4 import Ga4ExportExtractor

        return Ga4ExportExtractor(config, entity)
    if source.kind == "sql":
        from winback.ingest.sources.sql import SqlExtractor

        return SqlExtractor(config, entity)
    if source.kind == "yandex_metrica":
        from winback.ingest.sources.yandex_metrica import YandexMetricaExtractor

        return YandexMetricaExtractor(config, entity)
    from winback.ingest.sources.http import HttpExtractor

    return HttpExtractor(config, entity)
