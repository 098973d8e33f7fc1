"""Pick, among a validated chunk's good rows, the one version of each key to load.

Orders re-appear in later drops (a status change re-exports the order), so a third of a
chunk can be repeated keys; this runs vectorized on dictionary codes of the key.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from winback.schema import Entity


def latest_versions(typed: pa.Table, good: np.ndarray, entity: Entity) -> tuple[np.ndarray, int, int]:
    """Positions of the good rows to keep: of rows repeating a key exactly, the last;
    of several versions of a key, the newest (a row without a version is never older).
    Rows left sharing a key conflict (the key rule catches them). Vectorized on
    dictionary codes of the key: orders re-appear in later drops, so a third of a
    chunk can be repeated keys."""
    positions = np.flatnonzero(good)
    codes = key_codes(typed, entity.key, positions)
    counts = np.bincount(codes) if codes.size else np.zeros(0, dtype=np.int64)
    repeated = counts[codes] > 1
    if not repeated.any():
        return positions, 0, 0
    rows, row_codes = positions[repeated], codes[repeated]
    hashes = typed.column("_row_hash").to_numpy()[rows]
    order = np.lexsort((rows, hashes, row_codes))  # by key, content, then position
    same_as_next = (row_codes[order][1:] == row_codes[order][:-1]) & (hashes[order][1:] == hashes[order][:-1])
    repeat = np.zeros(rows.size, dtype=bool)
    repeat[order[:-1][same_as_next]] = True  # all but the last of identical rows
    version = pc.coalesce(*[typed.column(c) for c in entity.version_by]).combine_chunks().take(pa.array(rows))
    has_version = version.is_valid().to_numpy(zero_copy_only=False)
    stamps = version.cast(pa.int64()).fill_null(0).to_numpy()
    newest = np.full(counts.size, np.iinfo(np.int64).min)
    np.maximum.at(newest, row_codes[has_version], stamps[has_version])
    older = has_version & (stamps < newest[row_codes]) & ~repeat
    keep = good.copy()
    keep[rows[repeat | older]] = False
    return np.flatnonzero(keep), int(repeat.sum()), int(older.sum())


def key_codes(typed: pa.Table, key: tuple[str, ...], positions: np.ndarray) -> np.ndarray:
    """Dense integer codes of the key values at `positions` (equal keys, equal codes)."""
    picked = pa.array(positions, type=pa.int64())
    codes = None
    for column in key:
        encoded = typed.column(column).combine_chunks().take(picked).dictionary_encode()
        part = encoded.indices.fill_null(-1).to_numpy().astype(np.int64) + 1
        codes = part if codes is None else codes * (len(encoded.dictionary) + 1) + part
    if len(key) > 1:
        codes = np.unique(codes, return_inverse=True)[1]
    return codes
