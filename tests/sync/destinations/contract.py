"""The contract every destination must keep, checked against its platform emulator
(a local HTTP server that enforces the platform's documented limits, checks the
normalization and hashing, throttles with 429 + Retry-After, fails calls with 500,
answers per-row errors and keeps its own membership).

A platform's test module describes the platform in a `Platform` and calls
`check_contract`; its own tests add what only that platform does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from sync_support import (
    person,
    table,
    write_members,
)
from winback.config import Config, load_config
from winback.emulators.base import Emulator, Faults
from winback.sync.engine import sync
from winback.warehouse import Warehouse

AUDIENCE = "lapsed_winback"


@dataclass
class Platform:
    kind: str
    emulator: Callable[..., Emulator]  # Emulator subclass (token=, faults=, **state)
    channel: str  # audience channel it takes: email, ads, call ...
    identifiers: list[str]  # audience identifiers used in the contract
    held: Callable[[Emulator], set[str]]  # what the platform holds, as identifier values in its form
    expected: Callable[[int], str]  # person n -> the value the platform must hold for them
    target: dict[str, Any] = field(default_factory=dict)  # destinations.<x>.audiences.<a>
    options: dict[str, Any] = field(default_factory=dict)  # destinations.<x>.options
    secrets: dict[str, str] = field(default_factory=lambda: {"token": "test-token"})
    members: int = 1_200  # enough for several batches
    api_prefix: str = ""  # appended to the emulator's address to make base_url
    mode: str | None = None
    reject: Callable[[Emulator, set[str]], None] | None = None  # make the platform refuse these values


def write_config(tmp_path: Path, platform: Platform, base_url: str, warehouse: str, **sync_settings) -> Config:
    target = dict(platform.target)
    if platform.mode:
        target["mode"] = platform.mode
    document = {
        "warehouse": warehouse,
        "sources": {"orders": {"kind": "file", "path": "orders/*.csv"}},
        "audiences": {AUDIENCE: {"where": {"lifecycle_stage": ["lapsed"]}, "channel": platform.channel,
                                 "identifiers": platform.identifiers}},
        "sync": {"out_dir": str(tmp_path / "sync"), **sync_settings},
        "destinations": {"dest": {"kind": platform.kind, "base_url": base_url + platform.api_prefix,
                                  "env_prefix": "WINBACK_TEST_DEST", "options": platform.options,
                                  "http": {"backoff_initial": 0.01, "backoff_max": 0.05},
                                  "audiences": {AUDIENCE: target}}},
    }
    path = tmp_path / "winback.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return load_config(path)


def check_contract(platform: Platform, tmp_path: Path, monkeypatch) -> None:
    """Add, change and remove members through faults; the platform ends up holding
    exactly the audience, invalid identifiers never leave, rejected rows are recorded."""
    for name, value in platform.secrets.items():
        monkeypatch.setenv(f"WINBACK_TEST_DEST_{name.upper()}", value)
    emulator = platform.emulator(token=platform.secrets.get("token", "test-token"),
                                 faults=Faults(throttle_every=3, fail_every=4, retry_after="0"))
    with emulator:
        config = write_config(tmp_path, platform, emulator.base_url, f"duckdb:///{tmp_path / 'w.duckdb'}")
        warehouse = Warehouse(config.warehouse_url)
        try:
            n = platform.members
            everyone = [person(i) for i in range(n)]
            unusable = person(n + 1, member_key="unusable", email="not an address", phone="12-34")
            holdout = person(n + 2, in_holdout=True)
            write_members(warehouse, AUDIENCE, platform.channel, everyone + [unusable, holdout])
            [first] = sync(config, warehouse=warehouse)

            assert first["status"] == "succeeded"
            assert platform.held(emulator) == {platform.expected(i) for i in range(n)}
            assert first["invalid"] == 1 and first["accepted"] == n
            errors = table(warehouse, "sync_row_errors")
            assert [(e["member_key"], e["operation"]) for e in errors] == [("unusable", "add")]
            assert "not an address" in errors[0]["reason"] or "not a valid number" in errors[0]["reason"]
            statuses = {r["status"] for r in emulator.log}
            assert {429, 500} <= statuses, "the faults must have been hit and survived"
            assert first["retries"] >= 2

            # 10 % leave, 5 % join: only the change is sent, the platform follows.
            staying = [person(i) for i in range(n // 10, n)] + [person(i) for i in range(n, n + n // 20)]
            write_members(warehouse, AUDIENCE, platform.channel, staying)
            [second] = sync(config, warehouse=warehouse)
            assert second["status"] == "succeeded"
            assert second["planned_adds"] == n // 20
            assert second["sent"] == (n // 20 if platform.mode != "replace" else len(staying))
            assert platform.held(emulator) == {platform.expected(i) for i in range(n // 10, n + n // 20)}

            if platform.reject:
                refused = {platform.expected(i) for i in range(2 * n, 2 * n + 3)}
                platform.reject(emulator, refused)
                write_members(warehouse, AUDIENCE, platform.channel,
                              staying + [person(i) for i in range(2 * n, 2 * n + 3)])
                [third] = sync(config, warehouse=warehouse)
                assert third["rejected"] == 3
                errors = {e["member_key"]: e for e in table(warehouse, "sync_row_errors", "WHERE member_key <> 'unusable'")}
                assert set(errors) == {f"c{i:07d}" for i in range(2 * n, 2 * n + 3)}
                assert all(e["reason"] and e["attempts"] == 1 for e in errors.values())
        finally:
            warehouse.dispose()


def sync_rounds(tmp_path: Path, monkeypatch, platform: Platform, base_url: str, rounds, key: str,
                options: dict | None = None, **sync_args) -> tuple[list[dict], list[dict]]:
    """Sync each round's people in turn (token `key`, the platform's `options`); returns
    the run summaries and the warehouse's row errors."""
    monkeypatch.setenv("WINBACK_TEST_DEST_TOKEN", key)
    platform = Platform(**{**platform.__dict__, "options": options or {}})
    config = write_config(tmp_path, platform, base_url, f"duckdb:///{tmp_path / 'w.duckdb'}")
    warehouse = Warehouse(config.warehouse_url)
    try:
        summaries = []
        for people in rounds:
            write_members(warehouse, AUDIENCE, platform.channel, people)
            summaries += sync(config, warehouse=warehouse, **sync_args)
        return summaries, table(warehouse, "sync_row_errors")
    finally:
        warehouse.dispose()


def sync_once(tmp_path: Path, platform: Platform, base_url: str, rows: list[dict], **sync_settings
              ) -> tuple[dict, dict[str, list[dict]]]:
    """One sync of `rows`: its summary and the sync tables afterwards (those that exist)."""
    config = write_config(tmp_path, platform, base_url, f"duckdb:///{tmp_path / 'w.duckdb'}", **sync_settings)
    warehouse = Warehouse(config.warehouse_url)
    try:
        write_members(warehouse, AUDIENCE, platform.channel, rows)
        [summary] = sync(config, warehouse=warehouse)
        return summary, {t: table(warehouse, t) for t in ("sync_state", "sync_row_errors", "sync_runs")
                         if warehouse.table_exists(t)}
    finally:
        warehouse.dispose()
