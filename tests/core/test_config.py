"""Configuration: validated on load, errors that name the key and the problem; env
overrides; the shipped example loads; the CLI reports errors without a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO
from winback.config import ConfigError, load_config

ORDERS = {"kind": "file", "path": "shop/orders/*.csv"}


def write(tmp_path, document) -> Path:
    path = tmp_path / "winback.yaml"
    path.write_text(yaml.safe_dump(document) if not isinstance(document, str) else document, encoding="utf-8")
    return path


def error_for(tmp_path, document) -> str:
    with pytest.raises(ConfigError) as failure:
        load_config(write(tmp_path, document))
    return str(failure.value)


def test_the_shipped_example_loads():
    config = load_config(REPO / "include/config/winback.yaml")
    assert set(config.sources) == {"customers", "orders", "order_items", "events", "feedback", "mailing_events",
                                   "contact_outcomes"}
    assert config.source("customers").encoding == "cp1251"


def test_chunk_rows_cap_wide_events_unless_the_source_says_otherwise(tmp_path):
    events = {"kind": "file", "path": "e/*.jsonl", "format": "jsonl"}
    config = load_config(write(tmp_path, {"ingest": {"chunk_rows": 500000},
                                          "sources": {"orders": ORDERS, "events": events}}))
    assert (config.chunk_rows("orders"), config.chunk_rows("events")) == (500000, 250000)
    config = load_config(write(tmp_path, {"ingest": {"chunk_rows": 100000},
                                          "sources": {"orders": ORDERS, "events": {**events, "chunk_rows": 400000}}}))
    assert (config.chunk_rows("orders"), config.chunk_rows("events")) == (100000, 400000)


@pytest.mark.parametrize("document,expected", [
    ({"sources": {"orders": ORDERS}, "warehous": "x"}, "warehous: unknown key"),
    ({"sources": {"customers": {"kind": "file", "path": "c.csv"}}}, "orders is required"),
    ({"sources": {"orders": ORDERS, "visits": ORDERS}}, "unknown entity visits"),
    ({"sources": {"orders": {**ORDERS, "columns": {"totl_amount": "sum"}}}},
     "sources.orders.columns.totl_amount: not a column of orders"),
    ({"sources": {"orders": {"kind": "ftp", "path": "x"}}}, "sources.orders: Input tag 'ftp'"),
    ({"sources": {"orders": {"kind": "file"}}}, "sources.orders.path: required key is missing"),
    ({"sources": {"orders": {**ORDERS, "format": "xlsx"}}}, "sources.orders.format"),
    ({"sources": {"orders": {**ORDERS, "encoding": "cp9999"}}}, "sources.orders.encoding: unknown encoding 'cp9999'"),
    ({"sources": {"orders": {**ORDERS, "header": False}}}, "a CSV without header needs column_names"),
    ({"sources": {"orders": {"kind": "sql", "url": "postgresql://shop:secret@db/shop", "table": "orders"}}},
     "url must not contain a password; use url_env or conn_id"),
    ({"sources": {"orders": {"kind": "sql", "url_env": "SHOP_DB", "table": "orders", "query": "select 1"}}},
     "give exactly one of table, query"),
    ({"sources": {"orders": {"kind": "sql", "url_env": "SHOP_DB", "table": "orders; drop table x"}}},
     "is not a plain [schema.]table name"),
    ({"sources": {"orders": {"kind": "http", "url": "ftp://shop/api"}}}, "url must start with http:// or https://"),
    ({"sources": {"orders": {"kind": "http", "url": "https://shop/api", "auth": {"conn_id": "a", "token_env": "B"}}}},
     "give exactly one of conn_id, token_env"),
    ({"timezone": "Moscow", "sources": {"orders": ORDERS}}, "timezone: unknown time zone 'Moscow'"),
    ({"default_currency": "RUR1", "sources": {"orders": ORDERS}}, "default_currency: 'RUR1' is not an ISO 4217"),
    ({"validation": {"max_bad_share": 1.5}, "sources": {"orders": ORDERS}}, "validation.max_bad_share"),
    ({"validation": {"currencies": ["RUB", "XYZ1"]}, "sources": {"orders": ORDERS}}, "not ISO 4217 currency codes: XYZ1"),
    ({"ingest": {"chunk_rows": 10}, "sources": {"orders": ORDERS}}, "ingest.chunk_rows"),
])
def test_invalid_configuration_names_the_key_and_the_problem(tmp_path, document, expected):
    message = error_for(tmp_path, document)
    assert expected in message
    assert str(tmp_path / "winback.yaml") in message


def test_several_problems_are_reported_together(tmp_path):
    message = error_for(tmp_path, {"timezone": "Nowhere", "sources": {"orders": {**ORDERS, "delimiter": ";;"}}})
    assert "timezone" in message and "sources.orders.delimiter" in message


def test_not_yaml_and_missing_file(tmp_path):
    assert "not valid YAML" in error_for(tmp_path, "sources: [unclosed")
    with pytest.raises(ConfigError, match="configuration file not found"):
        load_config(tmp_path / "nope.yaml")


def test_environment_selects_the_file_and_overrides_the_warehouse(tmp_path, monkeypatch):
    path = write(tmp_path, {"warehouse": "duckdb:///data/w.duckdb", "sources": {"orders": ORDERS}})
    monkeypatch.setenv("WINBACK_CONFIG", str(path))
    monkeypatch.setenv("WINBACK_HOME", str(tmp_path))
    monkeypatch.delenv("WINBACK_WAREHOUSE_URL", raising=False)
    config = load_config()
    assert config.warehouse_url == f"duckdb:///{tmp_path}/data/w.duckdb"
    assert config.resolve("shop/x.csv") == tmp_path / "shop/x.csv"
    monkeypatch.setenv("WINBACK_WAREHOUSE_URL", "postgresql+psycopg://wh@db/warehouse")
    assert load_config().warehouse_url == "postgresql+psycopg://wh@db/warehouse"


def test_the_cli_reports_configuration_errors_without_a_traceback(tmp_path):
    path = write(tmp_path, {"sources": {"orders": {**ORDERS, "columns": {"totl_amount": "sum"}}}})
    done = subprocess.run([sys.executable, "-m", "winback", "--config", str(path), "ingest"],
                          capture_output=True, text=True, env={**os.environ, "WINBACK_HOME": str(tmp_path)}, check=False)
    assert done.returncode == 2
    assert "error:" in done.stderr and "sources.orders.columns.totl_amount" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_cli_ingests_and_reports_counts(tmp_path):
    (tmp_path / "shop/orders").mkdir(parents=True)
    (tmp_path / "shop/orders/a.csv").write_text("order_id,customer_id,created_at,total_amount\n1,C1,2025-01-05,10\n2,C2,2025-01-06,-1\n")
    path = write(tmp_path, {"warehouse": "duckdb:///wh.duckdb", "validation": {"max_bad_share": 0.9}, "sources": {"orders": ORDERS}})
    done = subprocess.run([sys.executable, "-m", "winback", "--config", str(path), "ingest", "--end", "2100-01-01"],
                          capture_output=True, text=True, env={**os.environ, "WINBACK_HOME": str(tmp_path)}, check=False)
    assert done.returncode == 0, done.stderr
    assert "orders:         2 read,         1 valid,       1 quarantined,         1 new" in done.stdout


def test_relative_paths_resolve_against_home_never_the_working_directory(tmp_path, monkeypatch):
    """A scheduler started in another folder used to resolve the drop globs against its
    own working directory, match nothing and show green runs."""
    project = tmp_path / "project"
    monkeypatch.delenv("WINBACK_HOME", raising=False)
    monkeypatch.chdir(tmp_path)  # elsewhere
    (project / "conf").mkdir(parents=True)
    (project / "include/config").mkdir(parents=True)
    plain = write(project / "conf", {"sources": {"orders": ORDERS}})
    assert load_config(plain).resolve("data/x.csv") == project / "conf/data/x.csv"  # the file's folder
    homed = write(project / "include/config", {"home": "../..", "sources": {"orders": ORDERS}})
    assert load_config(homed).resolve("data/x.csv") == project / "data/x.csv"
    assert load_config(homed).warehouse_url == f"duckdb:///{project}/data/warehouse.duckdb"
    monkeypatch.setenv("WINBACK_HOME", str(tmp_path / "elsewhere"))
    assert load_config(homed).resolve("data/x.csv") == tmp_path / "elsewhere/data/x.csv"
