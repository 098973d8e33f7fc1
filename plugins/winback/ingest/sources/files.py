"""File drops: CSV (any encoding, delimiter, decimal comma), Parquet and JSON lines,
plain or compressed (gzip, zstd, bz2).

A file is the unit of incrementality: a file already loaded is skipped unless its
content changed (size and mtime first, then SHA-256). Files modified at or after the
run's window end are left for a later run, so re-running an interval reads the same
files. A broken file raises `SourceError` naming the file, the line and the problem,
never the record's content (that goes to the quarantine table only).
"""

from __future__ import annotations

import codecs
import csv
import glob
import hashlib
import io
import json
import logging
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from winback.ingest.canonical import Mapping, MappingError, engine, literal
from winback.ingest.settings import WHITESPACE, FileSource
from winback.ingest.sources import (
    Batch,
    Extractor,
    Origin,
    RejectedLine,
    SourceError,
    Window,
)
from winback.private_files import open_private

log = logging.getLogger(__name__)

HASH_BLOCK_BYTES = 8 << 20
JSON_BATCH_ROWS = 100_000  # small batches keep DuckDB's JSON buffers small; parts gather them
JSON_SAMPLE_ROWS = 1_000  # records read to find a JSON-lines file's keys (all, if a mapped key is missing)
ENDINGS = {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd", ".bz2": "bz2"}  # compression: auto
SNIFF_BYTES = 10
# The slow paths must read a record of any length to name it (pyarrow's block bounds
# the fast path); the csv module's default stops at 128 KiB fields.
csv.field_size_limit(sys.maxsize)


def sniff(head: bytes) -> str | None:
    """The compression a file's first bytes announce (their magic numbers), None if none."""
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        return "zstd"
    if re.match(rb"BZh[1-9](1AY&SY|\x17rE8P\x90)", head):
        return "bz2"
    return None


def open_bytes(path: Path, codec: str | None) -> BinaryIO:
    """The file's content as a buffered binary stream, decompressed by pyarrow's codecs."""
    return io.BufferedReader(pa.input_stream(str(path), compression=codec))


def fingerprint(path: Path, with_hash: bool = True) -> dict:
    stat = path.stat()
    result = {"size": stat.st_size, "mtime": stat.st_mtime}
    if with_hash:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            while block := handle.read(HASH_BLOCK_BYTES):
                digest.update(block)
        result["sha256"] = digest.hexdigest()
    return result


class FileExtractor(Extractor):
    kind = "file"
    source: FileSource

    def _name(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.config.home_dir))
        except ValueError:
            return str(path)

    def origins(self, window: Window, loaded: dict[str, dict]) -> list[Origin]:
        home = self.config.home_dir
        # root_dir, not home joined into the pattern: a home with [ or * in its name
        # would be read as a pattern itself.
        found = glob.glob(self.source.path, root_dir=home, recursive=True)
        paths = sorted(home / p for p in found if (home / p).is_file())
        if not paths and not loaded:
            # Never loaded anything: a wrong home or path, not a quiet day.
            raise SourceError(
                f"{self.entity.name}: no file matches {self.source.path!r} (sources.{self.entity.name}.path) "
                f"in {home}; relative paths resolve against the configuration's home "
                f"(`home:` in {self.config.path or 'the configuration'}, or the WINBACK_HOME variable)"
            )
        if not paths:
            log.warning("%s: no file matches %s in %s; nothing new to load", self.entity.name, self.source.path, home)
        # Window bounds are naive UTC; .timestamp() of a naive datetime would read it as
        # the server's local time.
        cutoff = window.end.replace(tzinfo=UTC).timestamp() if window.end else None
        result = []
        for path in paths:
            name = self._name(path)
            quick = fingerprint(path, with_hash=False)
            if cutoff is not None and quick["mtime"] >= cutoff:
                log.info("%s: %s arrived after the window end; left for a later run", self.entity.name, name)
                continue
            known = loaded.get(name)
            if known and known["size"] == quick["size"] and known["mtime"] == quick["mtime"]:
                continue
            full = fingerprint(path)
            # Touched but identical: register the new mtime, read nothing.
            unchanged = bool(known) and known.get("sha256") == full["sha256"]
            result.append(Origin(name, {**full, "unchanged": unchanged}))
        return result

    def read(self, origin: Origin, window: Window) -> Iterator[Batch]:
        if origin.fingerprint.get("unchanged"):
            return iter(())
        path = self.config.resolve(origin.name)
        codec = self._codec(path, origin.name)
        reader = {"csv": self._read_csv, "parquet": self._read_parquet, "jsonl": self._read_jsonl}
        return reader[self.source.format](path, origin.name, codec)

    def _codec(self, path: Path, name: str) -> str | None:
        """The file's compression by the setting, checked against its first bytes: a
        compressed file read as text failed as a wrong encoding, with NUL bytes in the
        message."""
        setting = self.source.compression
        codec = ENDINGS.get(path.suffix.lower()) if setting == "auto" else None if setting == "none" else setting
        with path.open("rb") as handle:
            found = sniff(handle.read(SNIFF_BYTES))
        key = f"sources.{self.entity.name}.compression"
        if found == codec:
            if codec and self.source.format == "parquet":
                raise SourceError(f"{name}: a Parquet file compresses its own data and cannot be read "
                                  f"{codec}-compressed; unpack it")
            return codec
        if codec is None:
            raise SourceError(f"{name}: the file is {found}-compressed but {key} is {setting} "
                              f"(auto goes by the name's ending); set {key}: {found}")
        actual = f"{found}-compressed" if found else "not compressed"
        how = f"by its ending {path.suffix}" if setting == "auto" else "by the setting"
        raise SourceError(f"{name}: the file is {actual}, but {how} it is read as {codec}; "
                          f"set {key}: {found or 'none'}")

    @property
    def _block_bytes(self) -> int:
        return self.source.block_size_mb << 20

    # -- CSV -------------------------------------------------------------------------------
    @property
    def _aligned(self) -> bool:
        return self.source.delimiter == WHITESPACE

    def _header(self, path: Path, name: str, codec: str | None) -> list[str]:
        if not self.source.header:
            return list(self.source.column_names or [])
        with open_bytes(path, codec) as handle:
            first = handle.readline()
            if self._aligned:
                first = aligned_as_tabs(first)
        encoding = "utf-8-sig" if self.source.encoding.lower().replace("_", "-") in ("utf-8", "utf8") else self.source.encoding
        try:
            line = first.decode(encoding)
        except UnicodeDecodeError as exc:
            raise SourceError(_encoding_message(name, 1, exc, self.source.encoding)) from None
        if not line.strip():
            raise SourceError(f"{name}: line 1: empty header (the file is empty or header: false is missing)")
        return next(csv.reader([line], delimiter=self._delimiter, quotechar=self.source.quote,
                               quoting=csv.QUOTE_NONE if self._aligned else csv.QUOTE_MINIMAL))

    @property
    def _delimiter(self) -> str:
        return "\t" if self._aligned else self.source.delimiter

    def _read_csv(self, path: Path, name: str, codec: str | None) -> Iterator[Batch]:
        source = self.source
        names = [n.strip() for n in self._header(path, name, codec)]
        mapping = self._mapping(names, name)
        wanted = mapping.read_columns
        invalid: list[tuple[int | None, str]] = []

        def on_invalid(row) -> str:
            invalid.append((row.number, row.text))
            return "skip" if source.bad_lines == "quarantine" else "error"

        # The header (if any) was read above; pyarrow gets our stripped names.
        read_options = pacsv.ReadOptions(
            encoding=source.encoding,
            block_size=self._block_bytes,
            skip_rows=1 if source.header else 0,
            column_names=names,
        )
        parse_options = pacsv.ParseOptions(
            delimiter=self._delimiter,
            quote_char=False if self._aligned else source.quote,
            newlines_in_values=True,
            invalid_row_handler=on_invalid,
        )
        convert_options = pacsv.ConvertOptions(
            include_columns=wanted,
            column_types={c: pa.string() for c in wanted},
            strings_can_be_null=False,
        )
        rows = 0
        try:
            # A stream, not the path: pyarrow would guess compression from the name.
            stream = pa.input_stream(str(path), compression=codec)
            if self._aligned:
                stream = AlignedColumns(stream, self._block_bytes)
            reader = pacsv.open_csv(stream, read_options, parse_options, convert_options)
            buffered: list[pa.RecordBatch] = []
            buffered_rows = 0
            for record_batch in reader:
                buffered.append(record_batch)
                buffered_rows += record_batch.num_rows
                if buffered_rows >= self.chunk_rows:
                    yield Batch(pa.Table.from_batches(buffered), name, rows + 1, mapping)
                    rows += buffered_rows
                    buffered, buffered_rows = [], 0
            if buffered:
                yield Batch(pa.Table.from_batches(buffered), name, rows + 1, mapping)
                rows += buffered_rows
        except (pa.ArrowInvalid, UnicodeDecodeError, OSError) as exc:
            raise SourceError(self._csv_problem(path, name, codec, len(names), str(exc), invalid)) from None
        if invalid:
            located = self._wrong_records(path, codec, len(names))
            for index, (_, text) in enumerate(invalid):
                line, count = located[index] if index < len(located) else (None, None)
                got = f", got {count}" if count is not None else ""
                self.rejected.append(RejectedLine(name, line, text, f"expected {len(names)} fields{got}"))

    def _records(self, path: Path, codec: str | None) -> Iterator[tuple[int, int, int]]:
        """(first line, number of fields, size in bytes) of every CSV record after the
        header: the slow path, only to name a record pyarrow could not read."""
        source = self.source
        consumed = 0
        with open_bytes(path, codec) as handle:
            decoder = codecs.getincrementaldecoder(source.encoding)(errors="replace")

            def lines() -> Iterator[str]:
                nonlocal consumed
                for raw in handle:
                    consumed += len(raw)
                    yield decoder.decode(aligned_as_tabs(raw) if self._aligned else raw)

            if self._aligned:
                reader = csv.reader(lines(), delimiter="\t", quoting=csv.QUOTE_NONE)
            else:
                reader = csv.reader(lines(), delimiter=source.delimiter, quotechar=source.quote)
            if source.header:
                next(reader, None)
            start, before = reader.line_num + 1, consumed
            for record in reader:
                yield start, len(record), consumed - before
                start, before = reader.line_num + 1, consumed

    def _wrong_records(self, path: Path, codec: str | None, expected: int) -> list[tuple[int, int]]:
        """(line, fields) of the records whose number of fields is not `expected`."""
        return [(line, count) for line, count, _ in self._records(path, codec) if count and count != expected]

    def _csv_problem(self, path: Path, name: str, codec: str | None, expected: int, message: str, invalid) -> str:
        """Where and what, never the record's text (it holds emails and phones)."""
        source = self.source
        if "straddl" in message:
            longest = max(((line, size) for line, _, size in self._records(path, codec)), key=lambda r: r[1])
            return self._too_long(name, *longest)
        if "UTF8" in message or "UTF-8" in message or "decode" in message:
            line, exc = _first_undecodable_line(path, codec, source.encoding)
            if line is not None:
                return _encoding_message(name, line, exc, source.encoding)
        if invalid:
            located = self._wrong_records(path, codec, expected)
            where, got = (f"line {located[0][0]}", f", got {located[0][1]}") if located else ("a line", "")
            return (
                f"{name}: {where}: expected {expected} fields separated by "
                f"{'spaces or tabs' if self._aligned else repr(source.delimiter)}{got}; "
                f"fix the file, or set bad_lines: quarantine for sources.{self.entity.name}"
            )
        # pyarrow's parse errors end with the row's text: cut it off.
        reason = re.sub(r"(columns, got \d+):.*", r"\1", message.splitlines()[0] if message else "")
        return f"{name}: cannot be read as CSV: {reason}"

    # -- Parquet -----------------------------------------------------------------------------
    def _read_parquet(self, path: Path, name: str, codec: str | None) -> Iterator[Batch]:
        try:
            parquet = pq.ParquetFile(path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise SourceError(f"{name}: not a readable Parquet file: {exc}") from None
        mapping = self._mapping(parquet.schema_arrow.names, name)
        rows = 0
        try:
            for record_batch in parquet.iter_batches(
                batch_size=self.chunk_rows, columns=mapping.read_columns
            ):
                yield Batch(pa.Table.from_batches([record_batch]), name, rows + 1, mapping)
                rows += record_batch.num_rows
        except (pa.ArrowInvalid, OSError) as exc:
            raise SourceError(f"{name}: Parquet data after row {rows} cannot be read: {exc}") from None

    # -- JSON lines ----------------------------------------------------------------------------
    def _read_jsonl(self, path: Path, name: str, codec: str | None) -> Iterator[Batch]:
        con = engine().cursor()
        try:
            with _json_readable(path, codec) as (readable, compression):

                def relation(option: str) -> str:
                    return (f"read_json({literal(str(readable))}, format='newline_delimited', "
                            f"compression={literal(compression)}, maximum_object_size={self._block_bytes}, {option})")

                keys = self._json_keys(con, relation(f"sample_size={JSON_SAMPLE_ROWS}"))
                if not set(self.source.columns.values()) | set(self.source.where) <= set(keys):
                    keys = self._json_keys(con, relation("sample_size=-1"))  # a rare key: look at every record
                mapping = self._mapping(keys, name)
                columns = ", ".join(f"{literal(c)}: 'VARCHAR'" for c in mapping.read_columns)
                reader = con.sql(f"SELECT * FROM {relation(f'columns={{{columns}}}')}").to_arrow_reader(JSON_BATCH_ROWS)
                rows = 0
                for record_batch in reader:
                    yield Batch(pa.Table.from_batches([record_batch]), name, rows + 1, mapping)
                    rows += record_batch.num_rows
        except SourceError:
            raise
        except Exception as exc:  # noqa: BLE001 - duckdb raises several error classes for bad JSON
            raise SourceError(self._jsonl_problem(path, name, codec, exc)) from None
        finally:
            con.close()

    @staticmethod
    def _json_keys(con, relation: str) -> list[str]:
        return [row[0] for row in con.sql(f"DESCRIBE SELECT * FROM {relation}").fetchall()]

    def _jsonl_problem(self, path: Path, name: str, codec: str | None, exc: Exception) -> str:
        """Where and what, never the record's text (it holds emails and phones)."""
        if "maximum_object_size" in str(exc):
            with open_bytes(path, codec) as handle:
                longest = max(((n, len(raw)) for n, raw in enumerate(handle, start=1)), key=lambda r: r[1])
            return self._too_long(name, *longest)
        with open_bytes(path, codec) as handle:
            for number, raw in enumerate(handle, start=1):
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as decode_error:
                    return _encoding_message(name, number, decode_error, "utf-8")
                if not text.strip():
                    continue
                try:
                    value = json.loads(text)
                except json.JSONDecodeError as error:
                    return f"{name}: line {number}: not valid JSON ({error.msg} at column {error.colno})"
                if not isinstance(value, dict):
                    return f"{name}: line {number}: expected a JSON object, got {type(value).__name__}"
        # DuckDB quotes values in single quotes (file names in double ones): keep them out.
        reason = re.sub(r"'[^']*'", "'…'", str(exc).splitlines()[0])
        return f"{name}: cannot be read as JSON lines: {reason}"

    def _too_long(self, name: str, line: int, size: int) -> str:
        """A record the reader could not take in one block: the longest one, so that a
        block above it reads the whole file."""
        return (f"{name}: line {line}: a record of {size / (1 << 20):.1f} MiB, the file's longest, does not fit "
                f"the read block of {self.source.block_size_mb} MiB; raise sources.{self.entity.name}.block_size_mb "
                f"above it")

    def _mapping(self, available: list[str], name: str) -> Mapping:
        try:
            return Mapping.resolve(self.entity, self.source, available, name)
        except MappingError as exc:
            raise SourceError(str(exc)) from None


_RUNS = re.compile(rb"[ \t]+")
_EDGE_TABS = re.compile(rb"^\t|\t(?=\r?$)", re.MULTILINE)


def aligned_as_tabs(text: bytes) -> bytes:
    """Columns aligned with runs of spaces or tabs as tab-separated: a run becomes one
    tab, and nothing is left at a line's ends. Bytes, so any ASCII-compatible encoding
    passes through."""
    return _EDGE_TABS.sub(b"", _RUNS.sub(b"\t", text))


class AlignedColumns(io.RawIOBase):
    """A byte stream of aligned columns read as tab-separated, block by block (bytes,
    so any ASCII-compatible encoding passes through); a block ends at a line break so
    no run of spaces is cut in two."""

    def __init__(self, stream, block_bytes: int):
        self._stream, self._block = stream, block_bytes
        self._out, self._at, self._rest, self._done = memoryview(b""), 0, b"", False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while self._at == len(self._out) and not self._done:
            chunk = self._stream.read(self._block)
            if not chunk:
                self._done, chunk = True, self._rest
                self._rest = b""
            else:
                chunk = self._rest + chunk
                cut = chunk.rfind(b"\n") + 1
                if cut == 0:
                    self._rest = chunk
                    continue
                chunk, self._rest = chunk[:cut], chunk[cut:]
            self._out, self._at = memoryview(aligned_as_tabs(chunk)), 0
        size = min(len(buffer), len(self._out) - self._at)
        buffer[:size] = self._out[self._at:self._at + size]
        self._at += size
        return size

    def close(self) -> None:
        self._stream.close()
        super().close()


@contextmanager
def _json_readable(path: Path, codec: str | None) -> Iterator[tuple[Path, str]]:
    """A file DuckDB's read_json can read, and its compression: DuckDB reads gzip and
    zstd itself; bz2 is unpacked first into an owner-only temporary folder."""
    if codec != "bz2":
        yield path, codec or "uncompressed"
        return
    with tempfile.TemporaryDirectory(prefix="winback-") as folder:
        plain = Path(folder) / path.with_suffix("").name
        with open_bytes(path, codec) as packed, open_private(plain, "wb") as unpacked:
            shutil.copyfileobj(packed, unpacked, HASH_BLOCK_BYTES)
        yield plain, "uncompressed"


def _encoding_message(name: str, line: int, exc: UnicodeDecodeError, encoding: str) -> str:
    bad = exc.object[exc.start : exc.start + 1].hex() if exc.object else "?"
    return (
        f"{name}: line {line}: not valid {encoding} (byte 0x{bad} at byte {exc.start + 1} of the line); "
        f"set `encoding:` for this source (Russian exports are often cp1251)"
    )


def _first_undecodable_line(path: Path, codec: str | None, encoding: str) -> tuple[int | None, UnicodeDecodeError | None]:
    decoder = codecs.getincrementaldecoder(encoding)()
    with open_bytes(path, codec) as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                decoder.decode(raw)
            except UnicodeDecodeError as exc:
                return number, exc
    return None, None
