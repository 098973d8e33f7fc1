"""Helpers shared by the tests (fixtures live in conftest.py)."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from winback.warehouse import Warehouse


def write_csv(path: Path, header: str, *lines: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(("\n".join((header, *lines)) + "\n").encode(encoding))
    return path


ORDERS_COLUMNS = {"order_id": "id", "customer_id": "client_id", "created_at": "date", "total_amount": "sum"}


def orders_source(path: str = "shop/orders/*.csv", **extra) -> dict:
    return {"kind": "file", "path": path, "columns": dict(ORDERS_COLUMNS), **extra}


def table_rows(warehouse: Warehouse, table: str, order_by: str, exclude: tuple[str, ...] = ()) -> list[tuple]:
    """All rows of a table as tuples (without `exclude` columns), in a stable order."""
    columns = [c["name"] for c in sa.inspect(warehouse.engine).get_columns(table) if c["name"] not in exclude]
    quoted = ", ".join(f'"{c}"' for c in columns)
    return [tuple(r) for r in warehouse.rows(f"SELECT {quoted} FROM {table} ORDER BY {order_by}")]
