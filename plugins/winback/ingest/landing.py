"""The landing area: one load's raw and valid rows as Parquet files, handed from the
extract task to validate and from validate to load.

Why files and not warehouse tables: a write into a DuckDB file costs ~1-2.5 s per
million rows (column compression, checkpoints); three writes per load (raw, valid,
staging) capped ingest near 80k rows/s. Parquet parts written by the in-process DuckDB
cost a fraction of that, and the warehouse takes one bulk write per load. Every worker
must see the folder (docker-compose mounts ./data into all of them).

Raw parts are sorted by key-hash bucket, so reading a bucket range touches only the
row groups that hold it, and every version of a key is read in the same chunk.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa

from winback.ingest.canonical import engine, literal
from winback.private_files import private_dir, restrict

ROW_GROUP_ROWS = 8192  # small groups: a bucket range skips most of a part
PARQUET = "FORMAT parquet, COMPRESSION snappy"  # transient files: write speed over size


class Landing:
    """The files of one load: <root>/<entity>/<load_id>/{raw,valid}/part-NNNNN.parquet."""

    def __init__(self, root: Path, entity: str, load_id: str):
        self.path = root / entity / load_id
        self.raw_dir = self.path / "raw"
        self.valid_dir = self.path / "valid"

    @staticmethod
    def _next_part(folder: Path) -> Path:
        private_dir(folder)  # raw shop records: personal data
        return folder / f"part-{len(list(folder.glob('part-*.parquet'))):05d}.parquet"

    def raw_writer(self, part_rows: int) -> RawWriter:
        return RawWriter(self, part_rows)

    def _raw_parts(self) -> str:
        return f"read_parquet({literal(str(self.raw_dir / 'part-*.parquet'))})"

    def has_raw(self) -> bool:
        return any(self.raw_dir.glob("part-*.parquet")) if self.raw_dir.exists() else False

    def bucket_counts(self) -> list[tuple[int, int]]:
        if not self.has_raw():
            return []
        return [tuple(r) for r in engine().sql(
            f"SELECT _bucket, count(*) FROM {self._raw_parts()} GROUP BY _bucket ORDER BY _bucket"
        ).fetchall()]

    def raw_relation(self, low: int, high: int) -> str:
        """A FROM-able relation of the raw rows whose bucket is in [low, high]."""
        return f"(SELECT * FROM {self._raw_parts()} WHERE _bucket BETWEEN {int(low)} AND {int(high)}) AS raw"

    def clear_valid(self) -> None:
        shutil.rmtree(self.valid_dir, ignore_errors=True)

    def write_valid(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        con = engine()
        con.register("valid", table)
        try:
            part = self._next_part(self.valid_dir)
            con.execute(f"COPY valid TO {literal(str(part))} ({PARQUET})")
            restrict(part)
        finally:
            con.unregister("valid")

    def valid_parts(self) -> list[Path]:
        """Valid rows, one part per validated chunk: parts never share a key."""
        return sorted(self.valid_dir.glob("part-*.parquet")) if self.valid_dir.exists() else []

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


class RawWriter:
    """Writes batches of shop records as raw parts of about `part_rows` rows, shaped by
    their SELECT: batches are gathered (many small drop files make a few parts, and a
    Parquet write has a fixed cost) and shaped, sorted and written in one DuckDB COPY."""

    def __init__(self, landing: Landing, part_rows: int):
        self.landing = landing
        self.part_rows = part_rows
        self.rows = 0
        self._select: str | None = None
        self._pending: list[pa.Table] = []
        self._pending_rows = 0

    def add(self, batch: pa.Table, select: str) -> None:
        """Keep `batch`, to be shaped by `select` (over relation `batch`)."""
        if batch.num_rows == 0:
            return
        if select != self._select or (self._pending and batch.schema != self._pending[0].schema):
            self.flush()  # another file layout: a part has one shape
            self._select = select
        self._pending.append(batch)
        self._pending_rows += batch.num_rows
        self.rows += batch.num_rows
        if self._pending_rows >= self.part_rows:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        con = engine()
        con.register("batch", pa.concat_tables(self._pending))
        try:
            part = self.landing._next_part(self.landing.raw_dir)
            con.execute(
                f"COPY ({self._select} ORDER BY _bucket) TO {literal(str(part))} "
                f"({PARQUET}, ROW_GROUP_SIZE {ROW_GROUP_ROWS})"
            )
            restrict(part)
        finally:
            con.unregister("batch")
        self._pending, self._pending_rows = [], 0


def leftover_loads(root: Path, entity: str) -> list[str]:
    folder = root / entity
    return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.exists() else []
