"""What the DAG tasks decide beyond calling the package: which Asset events go out.
A skipped task emits no Asset event, so these skips are what keep an empty ingest from
re-triggering the build and a back-fill from reaching the platforms."""

from __future__ import annotations

import pytest
from airflow.sdk.exceptions import AirflowSkipException
from winback import tasks


def test_a_load_that_changed_nothing_announces_nothing():
    with pytest.raises(AirflowSkipException, match="orders: nothing new was loaded"):
        tasks.announce("orders", {"inserted": 0, "updated": 0, "load_id": "orders-1"})


@pytest.mark.parametrize("inserted, updated", [(1, 0), (0, 3)])
def test_a_load_that_inserted_or_updated_rows_announces_them(inserted, updated):
    assert tasks.announce("orders", {"inserted": inserted, "updated": updated}) == {
        "entity": "orders", "changed_rows": inserted + updated}


def test_a_backfill_build_does_not_publish_audiences():
    with pytest.raises(AirflowSkipException, match="back-fill as of 2026-01-31"):
        tasks.publish({"build_id": "build-1", "as_of": "2026-01-31", "backfill": True})
    assert tasks.publish({"build_id": "build-2", "as_of": "2026-11-30", "backfill": False}) == {
        "build_id": "build-2", "as_of": "2026-11-30"}
