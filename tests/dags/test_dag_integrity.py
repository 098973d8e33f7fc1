"""DAG integrity: every DAG file imports without errors, declares tags, retries and
docs, and keeps heavy imports out of parse time."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DAG_FILES = sorted((REPO / "dags").glob("*.py"))
HEAVY = ("pandas", "great_expectations", "duckdb", "pyarrow", "scipy", "requests")


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags"))


@pytest.mark.parametrize("dag_file", DAG_FILES, ids=[f.name for f in DAG_FILES])
def test_dag_file_imports_without_errors(dagbag, dag_file):
    assert str(dag_file) not in dagbag.import_errors, dagbag.import_errors.get(str(dag_file))


def test_every_dag_has_tags_retries_and_docs(dagbag):
    assert dagbag.dags, "no DAG found"
    for dag_id, dag in dagbag.dags.items():
        assert dag.tags, f"{dag_id} has no tags"
        assert dag.doc_md and dag.doc_md.strip(), f"{dag_id} has no doc_md"
        assert dag.max_active_runs == 1, f"{dag_id} may run concurrently with itself"
        for task in dag.tasks:
            assert task.retries >= 1, f"{dag_id}.{task.task_id} has no retries"
            assert task.retry_exponential_backoff, f"{dag_id}.{task.task_id} retries without backoff"


def test_ingest_has_one_group_per_configured_entity_with_an_asset_outlet(dagbag):
    from winback.config import load_config

    dag = dagbag.dags["winback_ingest"]
    configured = set(load_config().sources)
    assert set(dag.task_group.children) == configured
    for entity in configured:
        extract, validate, load, announce = (dag.get_task(f"{entity}.{step}")
                                             for step in ("extract", "validate", "load", "announce"))
        assert validate.upstream_task_ids == {extract.task_id}
        assert load.upstream_task_ids == {validate.task_id}
        assert announce.upstream_task_ids == {load.task_id}
        # Only announce updates the Asset, and it skips itself when nothing changed.
        assert load.outlets == []
        assert [a.uri for a in announce.outlets] == [f"winback://staging/{entity}"]
    assert dag.schedule == load_config().ingest.schedule


def test_the_schedule_comes_from_configuration(tmp_path, monkeypatch):
    source = (REPO / "include/config/winback.yaml").read_text(encoding="utf-8")
    (tmp_path / "w.yaml").write_text(source.replace('schedule: "@daily"', 'schedule: "15 3 * * *"'), encoding="utf-8")
    monkeypatch.setenv("WINBACK_CONFIG", str(tmp_path / "w.yaml"))
    from airflow.dag_processing.dagbag import DagBag

    assert DagBag(dag_folder=str(REPO / "dags")).dags["winback_ingest"].schedule == "15 3 * * *"


@pytest.mark.parametrize("dag_file", DAG_FILES, ids=[f.name for f in DAG_FILES])
def test_parsing_a_dag_file_does_not_import_heavy_libraries(dag_file):
    probe = (
        "import runpy, sys; runpy.run_path(sys.argv[1]); "
        f"print('HEAVY=' + ','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", probe, str(dag_file)], capture_output=True, text=True, check=True)
    [line] = [x for x in done.stdout.splitlines() if x.startswith("HEAVY=")]
    assert line == "HEAVY=", f"{dag_file.name} imports at parse time: {line.removeprefix('HEAVY=')}"


def test_build_runs_when_any_configured_entity_changed_and_publishes_audiences(dagbag):
    from winback.config import load_config

    dag = dagbag.dags["winback_build"]
    expected = {f"winback://staging/{entity}" for entity in load_config().sources}
    # Any, not all: entities announce only when they changed, so "all" would stall.
    assert type(dag.timetable.asset_condition).__name__ == "AssetAny"
    assert {asset.uri for asset in dag.timetable.asset_condition.objects} == expected
    assert dag.get_task("build_marts").outlets == []
    assert [a.uri for a in dag.get_task("publish").outlets] == ["winback://marts/audiences"]
    assert dag.get_task("publish").upstream_task_ids == {"build_marts"}
    assert "as_of" in dag.params
    # The report page comes last, and also after a back-fill (whose publish is skipped).
    assert dag.get_task("report").upstream_task_ids == {"publish"}
    assert dag.get_task("report").trigger_rule == "none_failed"


def test_build_schedule_from_configuration_adds_a_cron_to_the_assets(tmp_path, monkeypatch):
    source = (REPO / "include/config/winback.yaml").read_text(encoding="utf-8")
    (tmp_path / "w.yaml").write_text(source + '\nbuild:\n  schedule: "0 5 * * *"\n', encoding="utf-8")
    monkeypatch.setenv("WINBACK_CONFIG", str(tmp_path / "w.yaml"))
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(REPO / "dags")).dags["winback_build"]
    assert type(dag.timetable).__name__ == "AssetOrTimeSchedule"
    assert type(dag.timetable.asset_condition).__name__ == "AssetAny"
    assert dag.timetable.timetable.expression == "0 5 * * *"
    assert {a.uri for a in dag.timetable.asset_condition.objects} >= {"winback://staging/orders"}


def test_sync_maps_one_task_per_pair_in_its_platform_pool(dagbag):
    from winback.config import load_config

    config = load_config()
    dag = dagbag.dags["winback_sync"]
    assert {asset.uri for asset in dag.timetable.asset_condition.objects} == {"winback://marts/audiences"}
    assert config.destinations, "the example configuration should show destinations"
    for name, destination in config.destinations.items():
        task = dag.get_task(f"sync_{name}")
        assert task.pool == f"winback_{destination.kind}"
        pairs = task._get_specified_expand_input().value["pair"]
        assert pairs == [{"audience": audience, "destination": name} for audience in destination.audiences]
