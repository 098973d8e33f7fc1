"""File drops: CSV (any encoding, delimiter, decimal comma), Parquet and JSON lines.

A file is the unit of incrementality: a file already loaded is skipped unless its
content changed (size and mtime first, then SHA-256). Files modified at or after the
run's window end are left for a later run, so re-running an interval reads the same
files. A broken file raises `SourceError` naming the file, the line and the problem.
"""

from __future__ import annotations

import codecs
import csv
import glob
import hashlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from winback.canonical import Mapping, MappingError, engine, literal
from winback.config import FileSource
from winback.sources import Batch, Extractor, Origin, RejectedLine, SourceError, Window

log = logging.getLogger(__name__)

CSV_BLOCK_BYTES = 16 << 20  # bytes per CSV read block: big enough to be fast, small enough to bound memory
HASH_BLOCK_BYTES = 8 << 20
JSON_BATCH_ROWS = 100_000  # small batches keep DuckDB's JSON buffers small; parts gather them
JSON_SAMPLE_ROWS = 1_000  # records read to find a JSON-lines file's keys (all, if a mapped key is missing)


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
        cutoff = window.end.timestamp() if window.end else None
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
        reader = {"csv": self._read_csv, "parquet": self._read_parquet, "jsonl": self._read_jsonl}
        return reader[self.source.format](path, origin.name)

    # -- CSV -------------------------------------------------------------------------------
    def _header(self, path: Path, name: str) -> list[str]:
        if not self.source.header:
            return list(self.source.column_names or [])
        with path.open("rb") as handle:
            first = handle.readline()
        encoding = "utf-8-sig" if self.source.encoding.lower().replace("_", "-") in ("utf-8", "utf8") else self.source.encoding
        try:
            line = first.decode(encoding)
        except UnicodeDecodeError as exc:
            raise SourceError(_encoding_message(name, 1, exc, self.source.encoding)) from None
        if not line.strip():
            raise SourceError(f"{name}: line 1: empty header (the file is empty or header: false is missing)")
        return next(csv.reader([line], delimiter=self.source.delimiter, quotechar=self.source.quote))

    def _read_csv(self, path: Path, name: str) -> Iterator[Batch]:
        source = self.source
        names = [n.strip() for n in self._header(path, name)]
        mapping = self._mapping(names, name)
        wanted = sorted(set(mapping.columns.values()))
        invalid: list[tuple[int | None, str]] = []

        def on_invalid(row) -> str:
            invalid.append((row.number, row.text))
            return "skip" if source.bad_lines == "quarantine" else "error"

        # The header (if any) was read above; pyarrow gets our stripped names.
        read_options = pacsv.ReadOptions(
            encoding=source.encoding,
            block_size=CSV_BLOCK_BYTES,
            skip_rows=1 if source.header else 0,
            column_names=names,
        )
        parse_options = pacsv.ParseOptions(
            delimiter=source.delimiter,
            quote_char=source.quote,
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
            reader = pacsv.open_csv(path, read_options, parse_options, convert_options)
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
        except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
            raise SourceError(self._csv_problem(path, name, names, str(exc), invalid)) from None
        if invalid:
            located = _locate_bad_records(path, source, len(names))
            for index, (_, text) in enumerate(invalid):
                line = located[index] if index < len(located) else None
                self.rejected.append(
                    RejectedLine(name, line, text, f"expected {len(names)} fields")
                )

    def _csv_problem(self, path: Path, name: str, names: list[str], message: str, invalid) -> str:
        source = self.source
        if "UTF8" in message or "UTF-8" in message or "decode" in message:
            line, exc = _first_undecodable_line(path, source.encoding)
            if line is not None:
                return _encoding_message(name, line, exc, source.encoding)
        if invalid:
            located = _locate_bad_records(path, source, len(names))
            line = located[0] if located else None
            where = f"line {line}" if line else "a line"
            return (
                f"{name}: {where}: expected {len(names)} fields separated by {source.delimiter!r}, "
                f"got a different number ({invalid[0][1][:80]!r}); fix the file, or set "
                f"bad_lines: quarantine for sources.{self.entity.name}"
            )
        return f"{name}: cannot be read as CSV: {message}"

    # -- Parquet -----------------------------------------------------------------------------
    def _read_parquet(self, path: Path, name: str) -> Iterator[Batch]:
        try:
            parquet = pq.ParquetFile(path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise SourceError(f"{name}: not a readable Parquet file: {exc}") from None
        mapping = self._mapping(parquet.schema_arrow.names, name)
        rows = 0
        try:
            for record_batch in parquet.iter_batches(
                batch_size=self.chunk_rows, columns=sorted(set(mapping.columns.values()))
            ):
                yield Batch(pa.Table.from_batches([record_batch]), name, rows + 1, mapping)
                rows += record_batch.num_rows
        except (pa.ArrowInvalid, OSError) as exc:
            raise SourceError(f"{name}: Parquet data after row {rows} cannot be read: {exc}") from None

    # -- JSON lines ----------------------------------------------------------------------------
    def _read_jsonl(self, path: Path, name: str) -> Iterator[Batch]:
        con = engine().cursor()
        location = literal(str(path))
        try:
            keys = self._json_keys(con, location, JSON_SAMPLE_ROWS)
            if not set(self.source.columns.values()) <= set(keys):
                keys = self._json_keys(con, location, -1)  # a rare key: look at every record
            mapping = self._mapping(keys, name)
            columns = ", ".join(f"{literal(c)}: 'VARCHAR'" for c in sorted(set(mapping.columns.values())))
            reader = con.sql(
                f"SELECT * FROM read_json({location}, format='newline_delimited', columns={{{columns}}})"
            ).to_arrow_reader(JSON_BATCH_ROWS)
            rows = 0
            for record_batch in reader:
                yield Batch(pa.Table.from_batches([record_batch]), name, rows + 1, mapping)
                rows += record_batch.num_rows
        except SourceError:
            raise
        except Exception as exc:  # noqa: BLE001 - duckdb raises several error classes for bad JSON
            raise SourceError(_jsonl_problem(path, name, exc)) from None
        finally:
            con.close()

    @staticmethod
    def _json_keys(con, location: str, sample_rows: int) -> list[str]:
        describe = f"DESCRIBE SELECT * FROM read_json({location}, format='newline_delimited', sample_size={sample_rows})"
        return [row[0] for row in con.sql(describe).fetchall()]

    def _mapping(self, available: list[str], name: str) -> Mapping:
        try:
            return Mapping.resolve(self.entity, self.source, available, name)
        except MappingError as exc:
            raise SourceError(str(exc)) from None


def _encoding_message(name: str, line: int, exc: UnicodeDecodeError, encoding: str) -> str:
    bad = exc.object[exc.start : exc.start + 1].hex() if exc.object else "?"
    return (
        f"{name}: line {line}: not valid {encoding} (byte 0x{bad} at column {exc.start + 1}); "
        f"set `encoding:` for this source (Russian exports are often cp1251)"
    )


def _first_undecodable_line(path: Path, encoding: str) -> tuple[int | None, UnicodeDecodeError | None]:
    decoder = codecs.getincrementaldecoder(encoding)()
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                decoder.decode(raw)
            except UnicodeDecodeError as exc:
                return number, exc
    return None, None


def _locate_bad_records(path: Path, source: FileSource, expected: int) -> list[int]:
    """Physical line numbers of records with the wrong number of fields (slow path: only
    when a file has such records, to name them)."""
    lines = []
    with path.open(encoding=source.encoding, errors="replace", newline="") as handle:
        reader = csv.reader(handle, delimiter=source.delimiter, quotechar=source.quote)
        if source.header:
            next(reader, None)
        start = reader.line_num + 1
        for record in reader:
            if record and len(record) != expected:
                lines.append(start)
            start = reader.line_num + 1
    return lines


def _jsonl_problem(path: Path, name: str, exc: Exception) -> str:
    with path.open("rb") as handle:
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
    return f"{name}: cannot be read as JSON lines: {str(exc).splitlines()[0]}"

