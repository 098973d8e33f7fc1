"""What the DAG tasks do: read the run's window from the Airflow context, call the same
functions as the CLI, and turn a data failure into a failure that is not retried."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from winback.config import load_config


def run_window(params: dict | None, interval_start: datetime | None,
               interval_end: datetime | None) -> tuple[datetime | None, datetime | None, bool]:
    """(start, end, fill_gaps) for a run. Explicit `start`/`end` params win; a scheduled
    run's data interval comes next (and may reach back to fill a gap); a manual or
    asset-triggered run has an empty interval and reads everything new."""
    params = params or {}
    if params.get("start") or params.get("end"):
        parse = lambda v: datetime.fromisoformat(v) if v else None
        return parse(params.get("start")), parse(params.get("end")), False
    if interval_start is not None and interval_end is not None and interval_start < interval_end:
        return interval_start, interval_end, True
    return None, None, False


def _data_failure(exc: Exception):
    """Bad data does not get better by retrying: fail the task for good."""
    from airflow.sdk.exceptions import AirflowFailException

    return AirflowFailException(str(exc))


def extract(entity: str, context: dict[str, Any]) -> dict:
    from winback.ingest import SourceError, SourceUnavailable
    from winback.ingest import extract as extract_entity

    start, end, fill_gaps = run_window(
        context.get("params"), context.get("data_interval_start"), context.get("data_interval_end")
    )
    try:
        return extract_entity(load_config(), entity, start, end, fill_gaps=fill_gaps)
    except SourceUnavailable:
        raise  # the task's retries with backoff may outlast the outage
    except SourceError as exc:
        raise _data_failure(exc) from exc


def validate(entity: str, extracted: dict) -> dict:
    from winback.ingest import ValidationThresholdError
    from winback.ingest import validate as validate_load

    try:
        return validate_load(load_config(), entity, extracted["load_id"])
    except ValidationThresholdError as exc:
        raise _data_failure(exc) from exc


def load(entity: str, validated: dict) -> dict:
    from winback.ingest import load as load_valid

    return load_valid(load_config(), entity, validated["load_id"])


def _skip(reason: str):
    # A skipped task emits no Asset event: that is how a DAG announces only real news.
    from airflow.sdk.exceptions import AirflowSkipException

    return AirflowSkipException(reason)


def announce(entity: str, loaded: dict) -> dict:
    """Let the load's Asset event go out only when the staging table changed: a run that
    loaded nothing must not rebuild the marts and re-sync every audience."""
    changed = loaded.get("inserted", 0) + loaded.get("updated", 0)
    if not changed:
        raise _skip(f"{entity}: nothing new was loaded; the build is not triggered")
    return {"entity": entity, "changed_rows": changed}


def publish(built: dict) -> dict:
    """Let the `audiences` Asset event go out for a live build only: a back-filled past
    as-of must never reach a platform."""
    if built.get("backfill"):
        raise _skip(f"build {built['build_id']} is a back-fill as of {built['as_of']}: its marts are "
                    "aside and the audiences are not published")
    return {"build_id": built["build_id"], "as_of": built["as_of"]}


def build(context: dict[str, Any]) -> dict:
    """Rebuild the marts as of the `as_of` param, else today (asset-triggered and manual
    runs have no logical date to go by)."""
    from datetime import date

    from winback.build import build as build_marts

    as_of = (context.get("params") or {}).get("as_of")
    return build_marts(load_config(), date.fromisoformat(as_of) if as_of else None)


def report() -> dict:
    """Rewrite the report page from the warehouse (after a live build or a back-fill:
    both add history the page draws)."""
    from winback.report import write_report

    return write_report(load_config())


def sync(pair: dict[str, str]) -> dict:
    """Sync one (audience, destination) pair. A platform that stays unreachable or
    throttling fails the task, whose retries resume from the last confirmed batch; a
    configuration problem fails it for good."""
    from winback.config import ConfigError
    from winback.credentials import SecretError
    from winback.sync import SyncError, sync_pair

    try:
        return sync_pair(load_config(), pair["audience"], pair["destination"])
    except (ConfigError, SecretError, SyncError) as exc:
        raise _data_failure(exc) from exc
