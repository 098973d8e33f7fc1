"""The sample shop through the real `winback_ingest`, `winback_build` and `winback_sync`
DAGs (`airflow dags test`), on DuckDB and on PostgreSQL: every row the generator wrote
is either loaded or quarantined for the rule its bad kind breaks, a second run leaves
the warehouse as it was, the build fills the marts, and the sync writes dry-run
requests for every configured pair, then sends for real to the Meta emulator with the
token from an Airflow Connection."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from conftest import AIRFLOW_HOME, REPO
from support import table_rows
from winback.config import load_config
from winback.demo import airflow, airflow_env, ensure_airflow_db
from winback.emulators.meta import MetaEmulator
from winback.ingest.settings import ValidationSettings
from winback.ingest.validation import row_rules
from winback.sample_shop import ShopSpec, generate_shop
from winback.schema import ENTITIES

# Which rule each kind of deliberately bad row must break.
EXPECTED_RULE = {
    ("orders", "negative_amount"): "total_amount_non_negative",
    ("orders", "missing_customer"): "customer_id_present",
    ("orders", "unknown_currency"): "currency_valid",
    ("orders", "future_date"): "created_at_in_range",
    ("orders", "unparseable_date"): "created_at_parses",
    ("orders", "unknown_status"): "status_allowed",
    ("customers", "malformed_email"): "email_plausible",
    ("customers", "implausible_phone"): "phone_plausible",
    ("events", "unknown_event_type"): "event_type_allowed",
    ("events", "missing_ids"): "visitor_id_or_customer_id_present",
    ("feedback", "score_zero"): "score_in_range",
    ("feedback", "score_eleven"): "score_in_range",
    ("mailing_events", "unknown_event"): "event_type_allowed",
    ("contact_outcomes", "unknown_outcome"): "outcome_allowed",
}

pytestmark = [pytest.mark.airflow, pytest.mark.slow]
TODAY = datetime.now(UTC).date()


@pytest.fixture(scope="module")
def shop(tmp_path_factory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("shop")
    # It ends today: the build DAG builds as of today (a past as-of is a back-fill).
    spec = ShopSpec(customers=1500, months=6, end=TODAY, seed=11, events_per_customer=30, bad_share=0.004)
    return folder, generate_shop(folder, spec)


def run_dag(home: Path, warehouse_url: str, dag_id: str = "winback_ingest", conf: dict | None = None,
            config_path: Path = REPO / "include/config/winback.yaml", **env_vars: str) -> None:
    """Run a DAG on the shipped example configuration (or `config_path`) with `home` as
    WINBACK_HOME."""
    config = load_config(config_path)
    env = {**airflow_env(config, AIRFLOW_HOME), "WINBACK_HOME": str(home), "WINBACK_WAREHOUSE_URL": warehouse_url,
           **env_vars}
    ensure_airflow_db(env, AIRFLOW_HOME)
    args = ["dags", "test", dag_id] + (["--conf", json.dumps(conf)] if conf else [])
    airflow(args, env, home / f"{dag_id}-test.log")


def task_states(dag_id: str) -> dict[str, str]:
    """The states of the tasks of the DAG's latest run, from the tests' Airflow metadata."""
    with sqlite3.connect(AIRFLOW_HOME / "airflow.db") as db:
        rows = db.execute("SELECT task_id, state FROM task_instance WHERE run_id = (SELECT run_id FROM dag_run "
                          "WHERE dag_id = ? ORDER BY id DESC LIMIT 1) AND dag_id = ?", (dag_id, dag_id)).fetchall()
    return dict(rows)


def latest_validation(wh, entity: str):
    return wh.rows(
        "SELECT * FROM validation_runs WHERE entity = :e ORDER BY started_at DESC LIMIT 1", {"e": entity}
    )[0]


def test_the_sample_shop_lands_validated_through_the_dag(shop, warehouse_url, tmp_path, open_warehouse, monkeypatch):
    shop_dir, manifest = shop
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "shop").symlink_to(shop_dir, target_is_directory=True)
    run_dag(tmp_path, warehouse_url)
    monkeypatch.setenv("WINBACK_HOME", str(tmp_path))
    monkeypatch.setenv("WINBACK_WAREHOUSE_URL", warehouse_url)
    wh = open_warehouse(load_config(REPO / "include/config/winback.yaml"))

    for entity, facts in manifest["entities"].items():
        run = latest_validation(wh, entity)
        bad = sum(facts["bad"].values())
        # A bad email or phone is a field-level issue: the customer loads without it.
        field_level = {rule.name for rule in row_rules(ENTITIES[entity], ValidationSettings()) if rule.field}
        nulled = sum(n for kind, n in facts["bad"].items() if EXPECTED_RULE[(entity, kind)] in field_level)
        assert run.rows_checked == facts["rows"], entity
        assert (run.rows_failed, run.values_nulled) == (bad - nulled, nulled), entity
        assert run.success, entity
        loaded = wh.scalar(f"SELECT count(*) FROM {entity}")
        assert loaded == run.rows_checked - run.rows_failed - run.duplicates_dropped - run.superseded, entity
        per_rule = json.loads(run.failed_per_rule)
        expected: dict[str, int] = {}
        for kind, count in facts["bad"].items():
            if count:
                rule = EXPECTED_RULE[(entity, kind)]
                expected[rule] = expected.get(rule, 0) + count
        for rule, count in expected.items():
            assert per_rule.get(rule, 0) >= count, (entity, rule, per_rule)
        assert wh.scalar("SELECT count(*) FROM quarantine WHERE entity = :e", {"e": entity}) == bad, entity

    # Orders re-appearing in later drops with a new status were applied by key.
    assert latest_validation(wh, "orders").superseded > 0
    statuses = {r[0] for r in wh.rows("SELECT DISTINCT status FROM orders")}
    assert {"completed", "cancelled", "returned"} <= statuses
    assert wh.scalar("SELECT count(*) FROM load_runs WHERE status <> 'loaded'") == 0
    assert not any((tmp_path / "data/landing").rglob("*.parquet"))
    # Cyrillic from the cp1251 export survived.
    assert wh.scalar("SELECT count(*) FROM customers WHERE first_name LIKE '%а%'") > 0

    # A second run of the DAG finds nothing new and leaves every table as it was.
    before = {e: table_rows(wh, e, ", ".join(ENTITIES[e].key)) for e in manifest["entities"]}
    quarantine = table_rows(wh, "quarantine", "entity, record_hash")
    wh.dispose()  # DuckDB takes one writer process at a time: let the DAG's tasks in
    assert {t: s for t, s in task_states("winback_ingest").items() if t.endswith(".announce")} == {
        f"{e}.announce": "success" for e in manifest["entities"]}
    run_dag(tmp_path, warehouse_url)
    assert {e: table_rows(wh, e, ", ".join(ENTITIES[e].key)) for e in manifest["entities"]} == before
    assert table_rows(wh, "quarantine", "entity, record_hash") == quarantine
    # ... and updates no Asset: nothing triggers the build again.
    assert {t: s for t, s in task_states("winback_ingest").items() if t.endswith(".announce")} == {
        f"{e}.announce": "skipped" for e in manifest["entities"]}

    # The build DAG turns the staging tables into marts, as of today.
    wh.dispose()
    run_dag(tmp_path, warehouse_url, "winback_build")
    assert task_states("winback_build") == {"build_marts": "success", "publish": "success", "report": "success"}
    page = tmp_path / "data/report/index.html"
    drawn = page.stat().st_mtime_ns
    buyers = wh.scalar("SELECT count(DISTINCT customer_id) FROM orders")
    assert wh.scalar("SELECT count(*) FROM customer_segments") == buyers
    stages = {r[0] for r in wh.rows("SELECT DISTINCT lifecycle_stage FROM customer_segments")}
    assert {"newcomer", "regular", "lapsed", "one_off", "negative"} <= stages
    [run] = wh.rows("SELECT as_of, customers FROM build_runs")
    assert (run.as_of, run.customers) == (TODAY, buyers)

    # A back-test a month back: its marts go aside, the audiences are not published.
    audiences = table_rows(wh, "audience_members", "audience, member_key")
    wh.dispose()
    run_dag(tmp_path, warehouse_url, "winback_build", {"as_of": str(TODAY - timedelta(days=30))})
    # ... and the report page is drawn again: the back-fill added a point to its history.
    assert task_states("winback_build") == {"build_marts": "success", "publish": "skipped", "report": "success"}
    assert page.stat().st_mtime_ns > drawn
    assert table_rows(wh, "audience_members", "audience, member_key") == audiences
    assert 0 < wh.scalar("SELECT count(*) FROM backfill_customer_segments") < buyers
    assert wh.scalar("SELECT count(*) FROM build_runs WHERE backfill") == 1
    fits = {r.model: r.converged for r in wh.rows("SELECT model, converged FROM model_fits")}
    assert fits == {"bgnbd": True, "gamma_gamma": True}
    assert wh.scalar("SELECT count(*) FROM customer_segments WHERE p_alive IS NULL AND purchase_days > 0") == 0
    assert wh.scalar("SELECT count(DISTINCT audience) FROM audience_members") >= 5

    # The sync DAG as shipped: every destination in dry run, request files, no state.
    wh.dispose()
    run_dag(tmp_path, warehouse_url, "winback_sync")
    shipped = load_config(REPO / "include/config/winback.yaml")
    pairs = {(a, d) for d, dest in shipped.destinations.items() for a in dest.audiences}
    summaries = [json.loads(p.read_text()) for p in (tmp_path / "data/sync/dry-run").glob("*/summary.json")]
    assert {(s["audience"], s["destination"]) for s in summaries} == pairs
    assert all(s["status"] == "succeeded" and s["dry_run"] for s in summaries)
    assert not wh.table_exists("sync_runs")

    # For real: the ads audiences to the Meta emulator, the token from an Airflow Connection.
    document = yaml.safe_load((REPO / "include/config/winback.yaml").read_text(encoding="utf-8"))
    document["sync"]["dry_run"] = False
    meta = document["destinations"]["meta"]
    with MetaEmulator(token="token-from-connection") as emu:
        document["destinations"] = {"meta": {**meta, "base_url": emu.base_url}}
        live = tmp_path / "live.yaml"
        live.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
        connection = json.dumps({"conn_type": "generic", "password": "token-from-connection"})
        wh.dispose()
        run_dag(tmp_path, warehouse_url, "winback_sync", config_path=live, AIRFLOW_CONN_WINBACK_META=connection)
    for audience, target in meta["audiences"].items():
        sent = {hashlib.sha256(r.email.strip().lower().encode()).hexdigest() for r in wh.rows(
            "SELECT email FROM audience_members WHERE audience = :a AND NOT in_holdout AND email IS NOT NULL",
            {"a": audience})}
        assert sent and emu.hashes(target["audience_id"]) == sent, audience
    runs = wh.rows("SELECT audience, status, accepted FROM sync_runs ORDER BY audience")
    assert [(r.audience, r.status) for r in runs] == [(a, "succeeded") for a in sorted(meta["audiences"])]
