"""`make demo`: generate the sample shop and run it through the real Airflow DAGs (ingest,
build, then sync with every destination in dry run) on the embedded defaults (DuckDB
warehouse, SQLite Airflow metadata), then print a summary: rows loaded and
quarantined, segment sizes, audiences, and what each destination would receive."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from winback.config import CONFIG_ENV, HOME_ENV, Config
from winback.warehouse import Warehouse

REPO = Path(__file__).resolve().parents[2]
DEMO_DAGS = ("winback_ingest", "winback_build", "winback_sync")
SHOP_DIR = Path("data/shop")


def airflow_env(config: Config, airflow_home: Path) -> dict[str, str]:
    """Environment for a self-contained Airflow: this repo's DAGs and plugins, SQLite."""
    env = dict(os.environ)
    env.update({
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{airflow_home / 'airflow.db'}",
        CONFIG_ENV: str(Path(config.path).resolve()) if config.path else "",
        HOME_ENV: str(config.home_dir),
        "GX_ANALYTICS_ENABLED": "False",
    })
    return env


def airflow(args: list[str], env: dict[str, str], log_file: Path) -> None:
    """Run an `airflow` CLI command, its (long) output into log_file; fail loudly."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("w") as handle:
        done = subprocess.run(
            [sys.executable, "-m", "airflow", *args], env=env, stdout=handle, stderr=subprocess.STDOUT, check=False
        )
    if done.returncode != 0:
        tail = log_file.read_text(errors="replace").splitlines()[-40:]
        raise RuntimeError(
            f"`airflow {' '.join(args)}` failed (exit {done.returncode}); last lines of {log_file}:\n"
            + "\n".join(tail)
        )


def ensure_airflow_db(env: dict[str, str], airflow_home: Path) -> None:
    if (airflow_home / "airflow.db").exists():
        return
    print("initialising the Airflow metadata database (SQLite, once) ...", flush=True)
    airflow(["db", "migrate"], env, airflow_home / "logs" / "demo-db-migrate.log")


def ensure_pools(config: Config, env: dict[str, str], airflow_home: Path) -> None:
    """The sync's pools, one per platform, as an operator creates them."""
    from winback.sync import pools

    if not config.destinations:
        return
    path = airflow_home / "winback-pools.json"
    path.write_text(json.dumps(pools(config.destinations), indent=2))
    airflow(["pools", "import", str(path)], env, airflow_home / "logs" / "demo-pools.log")


def dry_run_summaries(config: Config) -> list[dict]:
    folder = config.resolve(config.sync.out_dir) / "dry-run"
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*/summary.json"))]


def format_sync(runs: list[dict]) -> str:
    if not runs:
        return ""
    lines = ["Audience sync (dry run: nothing was sent; the exact requests are in the files):"]
    for r in runs:
        if r["status"] != "succeeded":
            lines.append(f"  {r['audience'] + ' -> ' + r['destination']:<45}FAILED: {r['error']}")
            continue
        lines.append(f"  {r['audience'] + ' -> ' + r['destination']:<45}{r['planned_adds']:>7,} to add "
                     f"{r['planned_removes']:>6,} to remove {r['requests']:>5,} requests {r['invalid']:>5,} invalid")
        lines.append(f"      {r['requests_dir']}")
    return "\n".join(lines)


def run_dag(dag_id: str, env: dict[str, str], airflow_home: Path) -> Path:
    log_file = airflow_home / "logs" / f"demo-{dag_id}.log"
    print(f"running DAG {dag_id} through Airflow (airflow dags test) ...", flush=True)
    began = time.perf_counter()
    airflow(["dags", "test", dag_id], env, log_file)
    print(f"  done in {time.perf_counter() - began:.0f}s; log: {log_file}", flush=True)
    return log_file


def summary(warehouse: Warehouse, entities: list[str]) -> dict:
    """Rows in each staging table, quarantined rows and values set to null per entity
    and rule."""
    loaded = {e: int(warehouse.scalar(f"SELECT count(*) FROM {e}")) for e in entities if warehouse.table_exists(e)}
    bad_rows: dict[str, int] = {}
    nulled: dict[str, int] = {}
    by_rule: dict[str, dict[str, int]] = {}
    if warehouse.table_exists("quarantine"):
        for row in warehouse.rows("SELECT entity, rules, COALESCE(level, 'row') AS level, count(*) AS n "
                                  "FROM quarantine GROUP BY 1, 2, 3"):
            counts = bad_rows if row.level == "row" else nulled
            counts[row.entity] = counts.get(row.entity, 0) + int(row.n)
            for rule in row.rules.split(", "):  # a row breaking two rules counts under both
                per_entity = by_rule.setdefault(row.entity, {})
                per_entity[rule] = per_entity.get(rule, 0) + int(row.n)
    facts = {"warehouse": warehouse.location, "loaded": loaded, "quarantined_rows": bad_rows,
             "nulled_values": nulled, "quarantined_by_rule": by_rule}
    if warehouse.table_exists("customer_segments"):
        facts["as_of"] = warehouse.scalar("SELECT MAX(as_of) FROM build_runs WHERE NOT COALESCE(backfill, FALSE)")
        facts["stages"] = [tuple(r) for r in warehouse.rows(
            "SELECT lifecycle_stage, COUNT(*) FROM customer_segments GROUP BY 1 ORDER BY 2 DESC, 1")]
        facts["audiences"] = [tuple(r) for r in warehouse.rows(
            "SELECT audience, channel, COUNT(*), SUM(CASE WHEN in_holdout THEN 1 ELSE 0 END) "
            "FROM audience_members GROUP BY 1, 2 ORDER BY 1")]
        facts["playbook"] = playbook(warehouse)
    return facts


def playbook(warehouse: Warehouse) -> list[tuple[str, str]]:
    """The retention playbook's signals in this build (docs/build.md): triggers due by
    kind, loyalty tiers, discount dependence, late deliveries, referrals and carts."""
    def counts(sql: str) -> str:
        return ", ".join(f"{name} {count:,}" for name, count in warehouse.rows(sql)) or "none"

    def count(sql: str) -> str:
        return f"{warehouse.scalar(sql):,}"

    [carts] = warehouse.rows("SELECT carts_started, carts_abandoned, cart_abandonment_rate FROM build_runs "
                             "WHERE NOT COALESCE(backfill, FALSE) ORDER BY finished_at DESC LIMIT 1") or [None]
    driven = count("SELECT COUNT(*) FROM customer_segments WHERE is_discount_driven")
    late = count("SELECT COUNT(*) FROM customer_facts WHERE late_deliveries > 0")
    referred, referrers = count("SELECT COUNT(*) FROM referrals"), count("SELECT COUNT(DISTINCT referrer_id) FROM referrals")
    if carts and carts.carts_started:
        cart_line = (f"{carts.carts_abandoned:,} of {carts.carts_started:,} started abandoned "
                     f"({carts.cart_abandonment_rate:.0%}; the articles' reference: 65-85 %)")
    else:
        cart_line = "no carts in the look-back"
    return [
        ("triggers due", counts('SELECT "trigger", COUNT(*) FROM triggers_due GROUP BY 1 ORDER BY 1')),
        ("loyalty tiers", counts("SELECT loyalty_tier, COUNT(*) FROM customer_segments GROUP BY 1 ORDER BY 2 DESC")),
        ("discount-driven", f"{driven} customers (kept out of discount win-back offers)"),
        ("late deliveries", f"{late} customers had a purchase delivered later than promised"),
        ("referrals", f"{referred} customers brought by {referrers} referrers"),
        ("carts", cart_line),
    ]


def format_summary(facts: dict) -> str:
    lines = ["", "Rows loaded per entity (staging tables):"]
    for entity, count in facts["loaded"].items():
        bad, nulled = facts["quarantined_rows"].get(entity, 0), facts["nulled_values"].get(entity, 0)
        lines.append(f"  {entity:<16}{count:>10,} loaded  {bad:>7,} quarantined"
                     + (f"  {nulled:>5,} values set to null" if nulled else ""))
    lines.append("Rows quarantined and values set to null per rule (a row breaking two rules counts under both):")
    for entity, rules in sorted(facts["quarantined_by_rule"].items()):
        for rule, count in sorted(rules.items(), key=lambda kv: (-kv[1], kv[0])):
            lines.append(f"  {entity + '.' + rule:<45}{count:>7,}")
    if not facts["quarantined_by_rule"]:
        lines.append("  (none)")
    if facts.get("stages"):
        lines.append(f"Lifecycle stages as of {facts['as_of']} (customer_segments):")
        lines += [f"  {stage:<16}{count:>10,}" for stage, count in facts["stages"]]
        lines.append("Retention playbook:")
        lines += [f"  {name:<16}{text}" for name, text in facts["playbook"]]
        lines.append("Audiences (audience_members; members / of them in the holdout group):")
        lines += [f"  {name:<26}{channel:<7}{members:>8,} / {holdout:>6,}"
                  for name, channel, members, holdout in facts["audiences"]]
    lines.append(f"Warehouse: {facts['warehouse']}")
    return "\n".join(lines)


def run_demo(config: Config, regenerate: bool = False) -> int:
    from winback.sample_shop import SCALES, generate_shop

    shop = config.resolve(SHOP_DIR)
    if regenerate or not (shop / "manifest.json").exists():
        print(f"generating the sample shop in {shop} ...", flush=True)
        generate_shop(shop, SCALES["demo"])
    else:
        manifest = json.loads((shop / "manifest.json").read_text())
        print(f"sample shop in {shop} (ends {manifest['end']}; --regenerate to write it again)")
    airflow_home = config.home_dir / ".airflow"
    env = airflow_env(config, airflow_home)
    ensure_airflow_db(env, airflow_home)
    ensure_pools(config, env, airflow_home)
    for dag_id in DEMO_DAGS:
        run_dag(dag_id, env, airflow_home)
    warehouse = Warehouse(config.warehouse_url)
    try:
        print(format_summary(summary(warehouse, list(config.sources))))
        if config.sync.dry_run:
            print(format_sync(dry_run_summaries(config)))
        # The demo sends nothing, so no audience is measured yet (`demo --campaign` is).
        print(format_lift(lift_rows(warehouse)))
        print(f"Report page (the build DAG's report task): {config.resolve(config.build.report_dir) / 'index.html'}")
    finally:
        warehouse.dispose()
    return 0


def _percent(value) -> str:
    return "-" if value is None else f"{value:.1%}"


def format_lift(rows: list[dict], truth: dict[str, float] | None = None, simulated: tuple[str, ...] = ()) -> str:
    """The lift table as the demos print it (treatment vs control, the interval, the
    cost of an extra customer, the verdict), with the simulated truth beside the
    `simulated` audiences."""
    lines = ["Campaign lift (campaign_lift: complete cohorts, treated vs held-out members; docs/measurement.md):"]
    if not rows:
        return lines[0] + "\n  (no audience measured yet)"
    idle = [r["audience"] for r in rows if r["verdict"] == "not_synced"]
    if len(idle) < len(rows):
        lines.append(f"  {'audience':<26}{'treated':>8}{'held out':>9}{'rate':>7}{'control':>8}{'lift':>7}"
                     f"{'interval':>18}{'cost/new':>9}  verdict" + ("  (true lift)" if simulated else ""))
    for r in rows:
        if r["verdict"] == "not_synced":
            continue
        interval = "" if r["lift_ci_low"] is None else f"[{r['lift_ci_low']:+.1%}, {r['lift_ci_high']:+.1%}]"
        cost = r["cost_per_incremental_customer"]
        true = (f"  ({truth['treatment'] - truth['control']:+.1%})"
                if truth and r["audience"] in simulated else "")
        lines.append(f"  {r['audience']:<26}{r['treatment_members'] or 0:>8,}{r['control_members'] or 0:>9,}"
                     f"{_percent(r['treatment_rate']):>7}{_percent(r['control_rate']):>8}{_percent(r['lift']):>7}"
                     f"{interval:>18}{'-' if cost is None else f'{cost:,.0f}':>9}  {r['verdict']}{true}")
    if idle:
        lines.append(f"  not synced live, so not measured (not_synced): {', '.join(idle)}")
    if len(idle) == len(rows):
        lines.append("  (a dry run sends nothing: `python -m winback demo --campaign` lives through a campaign)")
    return "\n".join(lines)


def lift_rows(warehouse: Warehouse) -> list[dict]:
    if not warehouse.table_exists("campaign_lift"):
        return []
    return [dict(r._mapping) for r in warehouse.rows("SELECT * FROM campaign_lift ORDER BY audience")]
