"""A real Airflow deployment for tests: a fresh PostgreSQL metadata database and the
api-server, scheduler (LocalExecutor), dag-processor and triggerer as subprocesses,
each in its own process group so that stopping it ends its task processes too."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Self

import sqlalchemy as sa

COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def metadata_database(admin_url: str) -> Iterator[str]:
    """A new database on the server of `admin_url`, dropped afterwards; yields its URL
    with the psycopg2 driver, as docker-compose.yaml writes it."""
    name = f"winback_af_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    try:
        url = sa.engine.make_url(admin_url).set(drivername="postgresql+psycopg2", database=name, query={})
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


def stack_env(base: dict[str, str], metadata_url: str) -> dict[str, str]:
    """Settings for a LocalExecutor deployment on `metadata_url`: free ports (other
    test runs may hold the defaults), one secret per run shared by every component,
    and short intervals so that a test does not wait on the scheduler's defaults."""
    api_port = free_port()
    return {
        **base,
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_url,
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        # Two cores: a few task processes at a time, still in parallel.
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(api_port),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
        "AIRFLOW__API__SECRET_KEY": secrets.token_hex(32),
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        # Parsed once at start; re-parsing the unchanged files only costs CPU.
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "600",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
        # Runs start when a test triggers them, not when an operator unpauses.
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
    }


class AirflowStack:
    """The long-running components, each logging to `<home>/logs/<component>.log`."""

    def __init__(self, env: dict[str, str], home: Path):
        self.env, self.home = env, home
        self.processes: dict[str, subprocess.Popen] = {}

    def log_file(self, component: str) -> Path:
        return self.home / "logs" / f"{component}.log"

    def start(self) -> Self:
        for component in COMPONENTS:
            self.log_file(component).parent.mkdir(parents=True, exist_ok=True)
            with self.log_file(component).open("w") as log:
                self.processes[component] = subprocess.Popen(
                    [sys.executable, "-m", "airflow", component], env=self.env, stdout=log,
                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        return self

    def exited(self) -> dict[str, int]:
        """Components that stopped by themselves, with their exit codes."""
        return {name: p.returncode for name, p in self.processes.items() if p.poll() is not None}

    def tail(self, component: str, lines: int = 30) -> str:
        return "\n".join(self.log_file(component).read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM to every process group, then SIGKILL to what is left of it."""
        for process in self.processes.values():
            _signal_group(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for process in self.processes.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            # Task processes and the log servers live in the group after their parent.
            _signal_group(process.pid, signal.SIGKILL)
            process.wait()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass
