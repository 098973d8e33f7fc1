"""
### Winback build

Rebuilds the segment marts from the staging tables whenever any configured entity's
staging table changed (the ingest DAG's Assets), and on `build.schedule` when one is
configured:
customer_facts, category_cycles, customer_rfm, the BG/NBD and Gamma-Gamma fits,
customer_segments, abandoned_carts, browse_abandoners, feedback_due,
registered_not_bought, triggers_due, referrals and audience_members. Every mart is built aside and swapped in
within one transaction; the build's history goes to segment_history,
segment_transitions, model_fits, build_runs and alerts. On DuckDB the marts and history
are then copied to the read-only snapshot (`build.snapshot`). **publish** updates the
`audiences` Asset, which triggers the sync. **report** then rewrites the report page
(`build.report_dir`/index.html), also after a back-fill, whose history it draws.

Trigger with `{"as_of": "YYYY-MM-DD"}` for a point-in-time rebuild that uses only data
dated on or before that day. A past day is a back-fill: its marts are written as
`backfill_<mart>` (`build.backfill_prefix`), the live marts stay as they are, and
**publish** is skipped, so no past audience reaches a platform.
Configuration: `WINBACK_CONFIG` (docs/configuration.md).
"""

from __future__ import annotations

from airflow.sdk import (
    AssetAny,
    AssetOrTimeSchedule,
    CronTriggerTimetable,
    Param,
    dag,
    task,
)
from winback.assets import audiences_asset, staging_asset
from winback.config import load_config
from winback.dag_args import common_dag_args
from winback.schema import ENTITY_ORDER

CONFIG = load_config()
# Any entity whose staging table changed: the ingest announces only real changes.
FRESH_DATA = AssetAny(*(staging_asset(e) for e in ENTITY_ORDER if e in CONFIG.sources))


@task
def build_marts(**context) -> dict:
    from winback import tasks

    return tasks.build(context)


@task(outlets=[audiences_asset()])
def publish(built: dict) -> dict:
    from winback import tasks

    return tasks.publish(built)


# publish is skipped for a back-fill; the page still has its history to draw, and a
# failed build fails this task's upstream so no page is written from half a build.
@task(trigger_rule="none_failed")
def report() -> dict:
    from winback import tasks

    return tasks.report()


@dag(
    dag_id="winback_build",
    schedule=AssetOrTimeSchedule(timetable=CronTriggerTimetable(CONFIG.build.schedule, timezone="UTC"),
                                 assets=FRESH_DATA)
    if CONFIG.build.schedule else FRESH_DATA,
    **common_dag_args(CONFIG),
    params={"as_of": Param(None, type=["null", "string"], format="date",
                           description="point-in-time rebuild as of this day (YYYY-MM-DD); default today")},
    tags=["winback", "build"],
    doc_md=__doc__,
)
def winback_build():
    publish(build_marts()) >> report()


winback_build()
