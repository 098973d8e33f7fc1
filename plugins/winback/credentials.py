"""Credentials: from Airflow Connections (inside or outside a task) or environment
variables; never from the YAML file, never logged."""

from __future__ import annotations

import os

import sqlalchemy as sa

# Airflow connection types -> SQLAlchemy drivers we ship.
_SQLALCHEMY_DRIVERS = {"postgres": "postgresql+psycopg", "postgresql": "postgresql+psycopg"}


class SecretError(LookupError):
    """A named Connection or environment variable is missing."""


def airflow_connection(conn_id: str):
    from airflow.sdk import BaseHook  # heavy import; only when a Connection is named

    try:
        return BaseHook.get_connection(conn_id)
    except Exception as exc:  # noqa: BLE001 - AirflowNotFoundException and backend errors alike
        raise SecretError(
            f"Airflow Connection {conn_id!r} not found ({type(exc).__name__}); create it in "
            f"Airflow or set AIRFLOW_CONN_{conn_id.upper()}"
        ) from None


def env_value(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise SecretError(f"environment variable {name} is not set")
    return value


def sqlalchemy_url_from_connection(conn_id: str) -> str:
    conn = airflow_connection(conn_id)
    extra = conn.extra_dejson or {}
    if extra.get("sqlalchemy_url"):
        return extra["sqlalchemy_url"]
    driver = _SQLALCHEMY_DRIVERS.get(conn.conn_type or "")
    if driver is None:
        return conn.get_uri()
    return sa.engine.URL.create(
        driver,
        username=conn.login or None,
        password=conn.password or None,
        host=conn.host or None,
        port=conn.port or None,
        database=conn.schema or None,
    ).render_as_string(hide_password=False)


def token_from_connection(conn_id: str) -> str:
    conn = airflow_connection(conn_id)
    token = conn.password or (conn.extra_dejson or {}).get("token")
    if not token:
        raise SecretError(f"Airflow Connection {conn_id!r} has no password or extra.token")
    return token
