"""Files holding personal data are readable by their owner only (0600 in 0700 folders)
unless `permissions:` says otherwise: the DuckDB warehouse, the landing area's Parquet
parts, the read-only snapshot. (The sync's request files and call lists: tests/destinations.)"""

from __future__ import annotations

import os
import stat
from datetime import date

import pytest
from support import orders_source, write_csv
from winback.build.builder import build
from winback.ingest.pipeline import extract, load, validate


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture(autouse=True)
def open_umask():
    # A umask of 022 is what made these files world-readable: prove the modes hold anyway.
    previous = os.umask(0o022)
    yield
    os.umask(previous)


@pytest.mark.parametrize("permissions, file_mode, folder_mode", [
    (None, 0o600, 0o700),
    ({"file_mode": "0640", "folder_mode": "0750"}, 0o640, 0o750),
])
def test_warehouse_landing_and_snapshot_files_are_owner_only(write_config, tmp_path, today_is, permissions,
                                                             file_mode, folder_mode):
    write_csv(tmp_path / "shop/orders/o.csv", "id,client_id,date,sum", "o1,c1,2025-01-05 10:00:00,10")
    extra = {"permissions": permissions} if permissions else {}
    config = write_config({"orders": orders_source()}, warehouse="duckdb:///data/wh/warehouse.duckdb", **extra)
    extracted = extract(config, "orders")
    validate(config, "orders", extracted["load_id"])
    landing = tmp_path / "data/landing/orders" / extracted["load_id"]
    parts = list(landing.rglob("*.parquet"))
    assert {p.parent.name for p in parts} == {"raw", "valid"}
    assert {mode(p) for p in parts} == {file_mode}
    for folder in (tmp_path / "data/landing", tmp_path / "data/landing/orders", landing, landing / "raw"):
        assert mode(folder) == folder_mode, folder
    load(config, "orders", extracted["load_id"])

    today_is(date(2025, 1, 5))
    build(config, date(2025, 1, 5))
    assert mode(tmp_path / "data/wh/warehouse.duckdb") == file_mode
    assert mode(tmp_path / "data/wh") == folder_mode  # created by Winback
    assert mode(tmp_path / "data/snapshot.duckdb") == file_mode
    assert mode(tmp_path / "shop") == 0o755  # the operator's folder keeps its mode
