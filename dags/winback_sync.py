"""
### Winback sync

Pushes every configured audience to its destinations when the build has refreshed
`audience_members` (the `audiences` Asset): one mapped task per (audience,
destination) pair, grouped per destination, each in its platform's Airflow pool
(`winback_<kind>`, see `python -m winback pools`) so that one platform's rate limits
are shared by all tasks sending to it. Each task sends only what changed since the
last confirmed sync (`sync_state`), records per-row errors (`sync_row_errors`) and the
run (`sync_runs`). With `sync.dry_run: true` the requests are written to files instead.
Configuration: `WINBACK_CONFIG` (docs/sync.md, docs/destinations.md).
"""

from __future__ import annotations

from airflow.sdk import dag, get_current_context, task
from winback.assets import audiences_asset
from winback.config import load_config
from winback.dag_args import common_dag_args
from winback.sync import pool_name

CONFIG = load_config()


@task(map_index_template="{{ pair_name }}")
def sync_audience(pair: dict) -> dict:
    from winback import tasks

    get_current_context()["pair_name"] = f"{pair['audience']} -> {pair['destination']}"
    return tasks.sync(pair)


@dag(
    dag_id="winback_sync",
    schedule=[audiences_asset()],
    **common_dag_args(CONFIG),
    tags=["winback", "sync"],
    doc_md=__doc__,
)
def winback_sync():
    for name, destination in CONFIG.destinations.items():
        sync_audience.override(task_id=f"sync_{name}", pool=pool_name(destination.kind)).expand(
            pair=[{"audience": audience, "destination": name} for audience in destination.audiences]
        )


winback_sync()
