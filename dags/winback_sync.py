"""
### Winback sync

Pushes every configured audience to its destinations when the build has refreshed
`audience_members` (the `audiences` Asset): one mapped task per (audience,
destination) pair, grouped per destination, each in its platform's Airflow pool
(`winback_<kind>`, see `python -m winback pools`) so that one platform's rate limits
are shared by all tasks sending to it. Each task sends only what changed since the
last confirmed sync (`sync_state`), records per-row errors (`sync_row_errors`) and the
run (`sync_runs`). With `sync.dry_run: true` the requests are written to files instead.
Configuration: `WINBACK_CONFIG` (see the README, "Audience sync").
"""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, get_current_context, task
from winback.assets import audiences_asset
from winback.config import load_config
from winback.sync_config import pool_name

CONFIG = load_config()


@task(map_index_template="{{ pair_name }}")
def sync_audience(pair: dict) -> dict:
    from winback import tasks

    get_current_context()["pair_name"] = f"{pair['audience']} -> {pair['destination']}"
    return tasks.sync(pair)


@dag(
    dag_id="winback_sync",
    schedule=[audiences_asset()],
    start_date=pendulum.datetime(
        CONFIG.ingest.start_date.year, CONFIG.ingest.start_date.month, CONFIG.ingest.start_date.day, tz="UTC"
    ),
    catchup=False,
    max_active_runs=1,
    default_args={
        "retries": CONFIG.ingest.retries,
        "retry_delay": CONFIG.ingest.retry_delay,
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": CONFIG.ingest.max_retry_delay,
    },
    tags=["winback", "sync"],
    doc_md=__doc__,
)
def winback_sync():
    for name, destination in CONFIG.destinations.items():
        sync_audience.override(task_id=f"sync_{name}", pool=pool_name(destination.kind)).expand(
            pair=[{"audience": audience, "destination": name} for audience in destination.audiences]
        )


winback_sync()
