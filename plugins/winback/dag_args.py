"""What every Winback DAG shares, from the configuration: start date, no catch-up, one
run at a time, retries with exponential backoff (`ingest:` settings)."""

from __future__ import annotations

from typing import Any

import pendulum

from winback.config import Config


def common_dag_args(config: Config) -> dict[str, Any]:
    start = config.ingest.start_date
    return {
        "start_date": pendulum.datetime(start.year, start.month, start.day, tz="UTC"),
        "catchup": False,
        "max_active_runs": 1,
        # An embedded DuckDB file takes one writer at a time.
        "max_active_tasks": 1 if config.warehouse_url.startswith("duckdb") else 16,
        "default_args": {
            "retries": config.ingest.retries,
            "retry_delay": config.ingest.retry_delay,
            "retry_exponential_backoff": 2.0,
            "max_retry_delay": config.ingest.max_retry_delay,
        },
    }
