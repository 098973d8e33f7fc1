"""The floor of a rebuild: one aggregate pass over each large input, the least any build
of the product's marts must read (issue 15). Run in its own process on the same
warehouse as the build, so `bench.build` prints build / floor side by side.

    python -m bench.floor CONFIG        # prints {"seconds": ..., "passes": {...}} as JSON

Each pass is materialized (CREATE TEMPORARY TABLE ... AS) so the engine does the whole
aggregate, not just the first rows.
"""

from __future__ import annotations

import json
import sys
import time

from winback.config import load_config
from winback.warehouse import Warehouse

PASSES = {
    "orders by customer": """
        SELECT customer_id, COUNT(*) AS orders, SUM(total_amount) AS revenue,
               MIN(created_at) AS first_at, MAX(created_at) AS last_at
        FROM orders GROUP BY customer_id""",
    "items by customer and category": """
        SELECT o.customer_id, i.category, COUNT(*) AS lines, SUM(i.price * i.quantity) AS spend,
               MAX(o.created_at) AS last_at
        FROM order_items i JOIN orders o ON o.order_id = i.order_id
        GROUP BY o.customer_id, i.category""",
    "events by visitor": """
        SELECT visitor_id, COUNT(*) AS events, MAX(occurred_at) AS last_at,
               COUNT(DISTINCT session_id) AS sessions
        FROM events GROUP BY visitor_id""",
    "mailing events by customer": """
        SELECT customer_id, COUNT(*) AS events, MAX(occurred_at) AS last_at
        FROM mailing_events GROUP BY customer_id""",
}


def floor(warehouse: Warehouse) -> dict:
    passes = {}
    present = {name: sql for name, sql in PASSES.items() if warehouse.table_exists(sql.split("FROM ")[1].split()[0])}
    began = time.perf_counter()
    with warehouse.engine.begin() as conn:
        for n, (name, sql) in enumerate(present.items()):
            started = time.perf_counter()
            conn.exec_driver_sql(f"CREATE TEMPORARY TABLE floor_{n} AS {sql}")
            passes[name] = round(time.perf_counter() - started, 3)
    return {"seconds": round(time.perf_counter() - began, 3), "passes": passes}


def main(argv: list[str]) -> None:
    warehouse = Warehouse(load_config(argv[0]).warehouse_url)
    try:
        print(json.dumps(floor(warehouse)))
    finally:
        warehouse.dispose()


if __name__ == "__main__":
    main(sys.argv[1:])
