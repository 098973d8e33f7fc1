"""Winback: a retention pipeline for online shops on Apache Airflow.

Three stages, one sub-package each: `ingest` (sources -> validated staging tables),
`build` (staging -> marts and audiences) and `sync` (audiences -> platforms); the
modules beside them are the core they share (configuration, warehouse, schema) and
the ways in (CLI, DAG tasks). See the README and docs/.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

__version__ = "0.1.0"


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], Any], list[str]]:
    """A stage's public names (name -> module), imported on first use (PEP 562): the DAG
    files read a stage's settings at parse time without importing its heavy modules."""

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(exports[name]), name)

    return __getattr__, sorted(exports)
