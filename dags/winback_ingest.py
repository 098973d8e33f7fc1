"""
### Winback ingest

For every entity configured under `sources:` (orders are required; customers,
order_items, events, feedback, mailing_events and contact_outcomes are optional) one
task group runs **extract -> validate -> load**:

- **extract** reads what is new in the source (file drops not loaded yet, or rows
  updated since the watermark / inside the data interval) into `raw_<entity>`;
- **validate** checks every row with a Great Expectations suite; bad rows go to the
  `quarantine` table with the rules they broke, and too many bad rows fail the task
  (not retried: fix the data or the mapping, then clear the task);
- **load** upserts the good rows into the staging table `<entity>` in one transaction;
- **announce** updates the entity's Asset, which triggers the segment build, only when
  the staging table changed (skipped otherwise: a run that loaded nothing triggers
  nothing downstream).

Trigger with `{"start": "...", "end": "..."}` (ISO 8601) to re-read an interval;
re-running an interval leaves the warehouse as one run would.
Configuration: `WINBACK_CONFIG` (docs/configuration.md).
"""

from __future__ import annotations

from airflow.sdk import Param, dag, task, task_group
from winback.assets import staging_asset
from winback.config import load_config
from winback.dag_args import common_dag_args
from winback.schema import ENTITY_ORDER

CONFIG = load_config()
ENTITIES = [e for e in ENTITY_ORDER if e in CONFIG.sources]


@task
def extract(entity: str, **context) -> dict:
    from winback import tasks

    return tasks.extract(entity, context)


@task
def validate(entity: str, extracted: dict) -> dict:
    from winback import tasks

    return tasks.validate(entity, extracted)


@task
def load(entity: str, validated: dict) -> dict:
    from winback import tasks

    return tasks.load(entity, validated)


@task
def announce(entity: str, loaded: dict) -> dict:
    from winback import tasks

    return tasks.announce(entity, loaded)


@dag(
    dag_id="winback_ingest",
    schedule=CONFIG.ingest.schedule,
    **common_dag_args(CONFIG),
    params={
        "start": Param(None, type=["null", "string"], description="re-read from (ISO 8601)"),
        "end": Param(None, type=["null", "string"], description="re-read until (ISO 8601)"),
    },
    tags=["winback", "ingest"],
    doc_md=__doc__,
)
def winback_ingest():
    for entity in ENTITIES:

        @task_group(group_id=entity)
        def ingest_entity(entity: str = entity):
            extracted = extract(entity)
            validated = validate(entity, extracted)
            loaded = load(entity, validated)
            announce.override(outlets=[staging_asset(entity)])(entity, loaded)

        ingest_entity()


winback_ingest()
