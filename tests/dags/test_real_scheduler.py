"""The pipeline as a deployment runs it: a real `airflow scheduler` (LocalExecutor),
`dag-processor`, `triggerer` and `api-server` (the tasks' execution API) on a fresh
PostgreSQL metadata database, a PostgreSQL warehouse, and the sample shop. One manual
ingest run must carry through the Asset-triggered build to the Asset-triggered sync,
every run and task succeeding on its first try. `airflow dags test` (the end-to-end
test) runs tasks in one process with no scheduler, no executor and no Assets between
DAGs, so it cannot see what only the real chain does: parallel tasks on one warehouse,
task processes talking to the API server, Assets handing over from DAG to DAG, pools.

Also here: what the docker-compose stack needs from requirements.txt is installed."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml
from airflow_stack import AirflowStack, metadata_database, stack_env
from conftest import PG_URL, REPO, postgres_or_fail
from winback.config import load_config
from winback.demo import airflow, airflow_env, ensure_pools
from winback.emulators.meta import MetaEmulator
from winback.sample_shop import ShopSpec, generate_shop
from winback.warehouse import Warehouse

CHAIN = ("winback_ingest", "winback_build", "winback_sync")
FINISHED = {"success", "failed"}
# From the components' start to the last sync: about 2.5 minutes on two cores.
DEADLINE_S = 300


def test_the_compose_stack_has_its_celery_worker(tmp_path):
    """docker-compose.yaml starts `airflow celery worker`; before requirements.txt pinned
    the Celery provider the CLI answered `invalid choice: 'celery'`."""
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path), "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor"}
    done = subprocess.run([sys.executable, "-m", "airflow", "celery", "worker", "--help"], env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Start a Celery worker node" in done.stdout


@pytest.mark.postgres
def test_the_compose_database_urls_work():
    """Compose gives Airflow a `postgresql+psycopg2://` metadata URL, which Airflow also
    opens as `postgresql+asyncpg://`, and Celery a `db+postgresql://` result backend
    (psycopg2, the default driver). Before requirements.txt pinned psycopg2-binary and
    asyncpg, each failed with ModuleNotFoundError."""
    import asyncio

    from celery import Celery
    from sqlalchemy.ext.asyncio import create_async_engine

    postgres_or_fail()
    with metadata_database(PG_URL) as url:
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT 1")).scalar() == 1
        engine.dispose()

        async def select_one() -> int:
            engine = create_async_engine(url.replace("+psycopg2", "+asyncpg"))
            async with engine.connect() as conn:
                one = (await conn.execute(sa.text("SELECT 1"))).scalar()
            await engine.dispose()
            return one

        assert asyncio.run(select_one()) == 1
        backend = Celery(backend="db+" + url.replace("+psycopg2", "")).backend
        backend.store_result("winback-probe", {"rows": 3}, "SUCCESS")
        assert backend.get_task_meta("winback-probe")["result"] == {"rows": 3}


@pytest.fixture
def shop_home(tmp_path, pg_schema_url, monkeypatch):
    """WINBACK_HOME with a small sample shop in data/shop, a PostgreSQL warehouse."""
    generate_shop(tmp_path / "data" / "shop", ShopSpec(customers=600, months=6, seed=5, events_per_customer=20,
                                                       bad_share=0.004))
    monkeypatch.setenv("WINBACK_HOME", str(tmp_path))
    monkeypatch.setenv("WINBACK_WAREHOUSE_URL", pg_schema_url)
    return tmp_path


def live_config(home: Path, meta_url: str) -> Path:
    """The shipped configuration, run by hand only (the test triggers the ingest), syncing
    for real to the Meta emulator: a live sync records sync_runs, a dry run does not."""
    document = yaml.safe_load((REPO / "include/config/winback.yaml").read_text(encoding="utf-8"))
    document.pop("home", None)  # WINBACK_HOME decides
    document["ingest"]["schedule"] = None
    document["sync"]["dry_run"] = False
    document["destinations"] = {"meta": {**document["destinations"]["meta"], "base_url": meta_url}}
    path = home / "winback.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


class Metadata:
    """What the UI shows, read from the metadata database."""

    def __init__(self, url: str):
        self.engine = sa.create_engine(url)

    def rows(self, sql: str, **params) -> list:
        with self.engine.connect() as conn:
            return list(conn.execute(sa.text(sql), params))

    def parsed_dags(self) -> set[str]:
        return {r.dag_id for r in self.rows("SELECT dag_id FROM dag WHERE NOT is_stale")}

    def import_errors(self) -> list[str]:
        return [f"{r.filename}: {r.stacktrace}" for r in self.rows("SELECT filename, stacktrace FROM import_error")]

    def dag_runs(self) -> list:
        return self.rows("SELECT dag_id, run_id, run_type, state FROM dag_run ORDER BY id")

    def task_instances(self) -> list:
        return self.rows("SELECT dag_id, run_id, task_id, map_index, state, try_number FROM task_instance "
                         "ORDER BY dag_id, run_id, task_id, map_index")

    def pending_asset_triggers(self) -> int:
        return self.rows("SELECT count(*) AS n FROM asset_dag_run_queue")[0].n


def task_log(home: Path, ti) -> str:
    """The tail of a task instance's log, for the failure message."""
    folder = home / "logs" / f"dag_id={ti.dag_id}" / f"run_id={ti.run_id}" / f"task_id={ti.task_id}"
    if ti.map_index >= 0:
        folder /= f"map_index={ti.map_index}"
    files = sorted(folder.glob("attempt=*.log"))
    if not files:
        return f"(no log in {folder})"
    return "\n".join(files[-1].read_text(errors="replace").splitlines()[-25:])


def wait_for(condition, what: str, stack: AirflowStack, deadline: float):
    """Poll `condition` until it returns something truthy; fail when a component died
    or the deadline passed."""
    while True:
        result = condition()
        if result:
            return result
        if dead := stack.exited():
            name = next(iter(dead))
            pytest.fail(f"`airflow {name}` exited ({dead[name]}) while waiting for {what}:\n{stack.tail(name)}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(1)


def chain_settled(metadata: Metadata, home: Path):
    """The runs once all three DAGs ran and nothing is running, queued or pending an
    Asset; fails at the first failed task or retry, with its log."""
    for ti in metadata.task_instances():
        if ti.state in ("failed", "up_for_retry", "upstream_failed") or (ti.try_number or 0) > 1:
            pytest.fail(f"{ti.dag_id}.{ti.task_id}[{ti.map_index}] in {ti.run_id}: {ti.state}, "
                        f"try {ti.try_number}\n{task_log(home, ti)}")
    runs = metadata.dag_runs()
    if any(r.state == "failed" for r in runs):
        pytest.fail(f"a DAG run failed: {[tuple(r) for r in runs]}")
    if {r.dag_id for r in runs} >= set(CHAIN) and all(r.state in FINISHED for r in runs) \
            and metadata.pending_asset_triggers() == 0:
        return runs
    return None


@pytest.mark.airflow
@pytest.mark.slow
@pytest.mark.postgres
def test_ingest_build_and_sync_chain_under_a_real_scheduler(shop_home, tmp_path_factory):
    airflow_home = tmp_path_factory.mktemp("airflow-home")
    logs = airflow_home / "logs"
    with MetaEmulator(token="token-from-connection") as meta, metadata_database(PG_URL) as metadata_url:
        config = load_config(live_config(shop_home, meta.base_url))
        env = stack_env(airflow_env(config, airflow_home), metadata_url)
        env["AIRFLOW_CONN_WINBACK_META"] = '{"conn_type": "generic", "password": "token-from-connection"}'
        airflow(["db", "migrate"], env, logs / "db-migrate.log")
        metadata = Metadata(metadata_url)
        try:
            with AirflowStack(env, airflow_home) as stack:
                deadline = time.monotonic() + DEADLINE_S
                ensure_pools(config, env, airflow_home)  # while the components start

                def all_parsed():
                    if errors := metadata.import_errors():
                        pytest.fail("DAG import errors:\n" + "\n".join(errors))
                    return metadata.parsed_dags() >= set(CHAIN)

                wait_for(all_parsed, "the dag-processor to parse the DAGs", stack, deadline)
                airflow(["dags", "trigger", "winback_ingest"], env, logs / "trigger.log")
                runs = wait_for(lambda: chain_settled(metadata, airflow_home),
                                "ingest -> build -> sync to finish", stack, deadline)
                tis = metadata.task_instances()
        finally:
            metadata.engine.dispose()

    # Every run of the chain succeeded; the build and sync ran because of Assets.
    assert all(r.state == "success" for r in runs), [tuple(r) for r in runs]
    kinds = {(r.dag_id, r.run_type) for r in runs}
    assert kinds == {("winback_ingest", "manual"), ("winback_build", "asset_triggered"),
                     ("winback_sync", "asset_triggered")}, kinds
    # Every task succeeded (or was skipped by design) on its first try.
    assert {ti.dag_id for ti in tis} == set(CHAIN)
    assert all(ti.state in ("success", "skipped") and ti.try_number == 1 for ti in tis), \
        [tuple(ti) for ti in tis if ti.state != "success" or ti.try_number != 1]

    # The warehouse holds what the chain is for: staging data, marts, audiences, syncs.
    warehouse = Warehouse(config.warehouse_url)
    try:
        assert warehouse.scalar("SELECT count(*) FROM orders") > 0
        buyers = warehouse.scalar("SELECT count(DISTINCT customer_id) FROM orders")
        assert warehouse.scalar("SELECT count(*) FROM customer_segments") == buyers
        assert warehouse.scalar("SELECT count(*) FROM audience_members") > 0
        synced = warehouse.rows("SELECT audience, status FROM sync_runs ORDER BY audience")
    finally:
        warehouse.dispose()
    audiences = sorted(config.destinations["meta"].audiences)
    assert sorted({(r.audience, r.status) for r in synced}) == [(a, "succeeded") for a in audiences]
    for audience in audiences:
        target = config.destinations["meta"].audiences[audience]
        assert meta.members(str(target["audience_id"])), f"the emulator received no member of {audience}"
