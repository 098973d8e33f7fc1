"""Shared fixtures: a warehouse on DuckDB and on the real PostgreSQL, and configs.

PostgreSQL comes from WINBACK_TEST_PG_URL (default: the local server's `test`
database). Each test gets its own schema, dropped afterwards. Under CI=true an
unreachable server fails the test instead of skipping it.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from datetime import date, datetime, time, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml
from winback.config import load_config
from winback.warehouse import Warehouse

REPO = Path(__file__).resolve().parents[1]

# Tests never touch a developer's own Airflow: a private home with this repo's DAGs
# and plugins, SQLite metadata (set before anything imports airflow).
AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="winback-test-airflow-"))
os.environ.update({
    "AIRFLOW_HOME": str(AIRFLOW_HOME),
    "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
    "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{AIRFLOW_HOME / 'airflow.db'}",
    "WINBACK_CONFIG": str(REPO / "include/config/winback.yaml"),
    "GX_ANALYTICS_ENABLED": "False",
})

PG_URL = os.environ.get("WINBACK_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def postgres_or_fail() -> str:
    try:
        engine = sa.create_engine(PG_URL, connect_args={"connect_timeout": 5})
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        engine.dispose()
    except Exception as exc:  # noqa: BLE001 - any failure to connect decides skip/fail
        message = f"PostgreSQL not reachable at {PG_URL}: {type(exc).__name__}: {exc}"
        if IN_CI:
            pytest.fail(message + " (CI=true: PostgreSQL tests must run)")
        pytest.skip(message)
    return PG_URL


@pytest.fixture
def pg_schema_url():
    """A PostgreSQL URL whose search_path is a fresh schema (dropped afterwards)."""
    base = postgres_or_fail()
    schema = f"t_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(base)
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    url = sa.engine.make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
    yield url.render_as_string(hide_password=False)
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
    engine.dispose()


@pytest.fixture(params=["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def warehouse_url(request, tmp_path):
    """Each warehouse test runs on DuckDB and on PostgreSQL."""
    if request.param == "duckdb":
        return f"duckdb:///{tmp_path / 'warehouse.duckdb'}"
    return request.getfixturevalue("pg_schema_url")


@pytest.fixture
def write_config(tmp_path, monkeypatch):
    """write_config(sources, **top_level) -> Config, with relative paths under tmp_path."""
    monkeypatch.setenv("WINBACK_HOME", str(tmp_path))
    monkeypatch.delenv("WINBACK_WAREHOUSE_URL", raising=False)

    def write(sources: dict, name: str = "winback.yaml", **top) -> Config:  # noqa: F821
        document = {"timezone": "UTC", **top, "sources": sources}
        path = tmp_path / name
        path.write_text(yaml.safe_dump(document, allow_unicode=True, sort_keys=False), encoding="utf-8")
        return load_config(path)

    return write


@pytest.fixture
def open_warehouse():
    """open_warehouse(config) -> Warehouse, disposed after the test."""
    opened: list[Warehouse] = []

    def open_(config) -> Warehouse:
        warehouse = Warehouse(config.warehouse_url)
        opened.append(warehouse)
        return warehouse

    yield open_
    for warehouse in opened:
        warehouse.dispose()


@pytest.fixture
def today_is(monkeypatch):
    """today_is(day): the build's clock stands at the end of `day` (the midnight after
    it), so a build as of `day` is a live one and an earlier day a back-fill."""

    def set_today(day: date) -> datetime:
        import winback.build.builder

        present = datetime.combine(day + timedelta(days=1), time())
        monkeypatch.setattr(winback.build.builder, "utcnow", lambda: present)
        return present

    return set_today
