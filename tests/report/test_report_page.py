"""The report page in a real browser: a small sample shop ingested and built (a back-fill
a week earlier, then the live build) on DuckDB, the page opened from file:// in
Debian's headless Chromium with every network request blocked. Every chart renders,
the console stays clean, and the headline figures equal what SQL on the warehouse says.

A full-page screenshot goes to $WINBACK_TEST_ARTIFACTS (default: a temporary folder;
its path is printed). Without Chromium the test is skipped locally and fails under CI=true.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from datetime import date, datetime, time, timedelta
from pathlib import Path

import pytest
from conftest import IN_CI, REPO
from report_support import write_measured_tables
from winback.build.builder import build
from winback.cli import main
from winback.config import load_config
from winback.ingest.pipeline import ingest
from winback.report import data, figures, page
from winback.sample_shop import ShopSpec, generate_shop
from winback.warehouse import Warehouse

pytestmark = pytest.mark.slow
AS_OF = date(2026, 10, 31)
WEEK_BEFORE = AS_OF - timedelta(days=7)
ALL_CHARTS = 12  # every section with data: see report/page.py
MEASURED_CHARTS = 6  # drawn from the tables other parts of issue 12 build


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """(config, warehouse) of a built sample shop with the measured tables written."""
    home = tmp_path_factory.mktemp("report-shop")
    with pytest.MonkeyPatch.context() as mp:
        import winback.build.builder

        mp.setattr(winback.build.builder, "utcnow", lambda: datetime.combine(AS_OF + timedelta(days=1), time()))
        mp.setenv("WINBACK_HOME", str(home))
        mp.setenv("WINBACK_WAREHOUSE_URL", f"duckdb:///{home / 'warehouse.duckdb'}")
        generate_shop(home / "data" / "shop", ShopSpec(customers=600, months=12, end=AS_OF, seed=7,
                                                       events_per_customer=15, bad_share=0.01))
        config = load_config(REPO / "include/config/winback.yaml")
        wh = Warehouse(config.warehouse_url)
        ingest(config, warehouse=wh)
        build(config, WEEK_BEFORE, warehouse=wh)  # a back-fill: history to compare with
        build(config, AS_OF, warehouse=wh)
        write_measured_tables(wh)
        yield config, wh
        wh.dispose()


def _artifacts(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("WINBACK_TEST_ARTIFACTS") or tmp_path_factory.mktemp("artifacts"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def open_in_chromium(path: Path, screenshot: Path | None = None) -> dict:
    """Open the page offline; what rendered, what the console said, what was requested."""
    executable = shutil.which("chromium")
    if not executable:
        message = "Debian's chromium is not installed (make chromium)"
        if IN_CI:
            pytest.fail(message + "; CI=true: the browser test must run")
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    requested, problems = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            tab = browser.new_page(viewport={"width": 1280, "height": 900})
            tab.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file:")
                      else (requested.append(route.request.url), route.abort()))
            tab.on("console", lambda msg: problems.append(f"console {msg.type}: {msg.text}")
                   if msg.type in ("error", "warning") else None)
            tab.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
            tab.goto(path.as_uri(), wait_until="load")
            tab.wait_for_function("() => document.querySelectorAll('.js-plotly-plot').length === "
                                  "document.querySelectorAll('.plotly-graph-div').length", timeout=20_000)
            result = {
                "charts": tab.locator(".plotly-graph-div").count(),
                "drawn": tab.evaluate("() => [...document.querySelectorAll('.plotly-graph-div')]"
                                      ".filter(d => d.querySelector('svg.main-svg')).length"),
                "declared": int(tab.get_attribute("body", "data-figures")),
                "figures": {el.get_attribute("data-figure"): el.get_attribute("data-value")
                            for el in tab.locator("[data-figure]").all()},
                "not_measured": tab.locator("p.empty").count(),
                "scripts_with_src": tab.locator("script[src], link[href]").count(),
            }
            if screenshot:
                tab.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    return {**result, "requested": requested, "problems": problems}


def warehouse_headline(wh: Warehouse, config) -> dict:
    """The headline figures straight from the marts and the history, by SQL."""
    stages = dict(wh.rows("SELECT lifecycle_stage, COUNT(*) FROM customer_segments GROUP BY 1"))
    customers = sum(stages.values())
    before = dict(wh.rows(f"SELECT lifecycle_stage, COUNT(*) FROM segment_history "
                          f"WHERE as_of = DATE '{WEEK_BEFORE}' GROUP BY 1"))
    statuses = ", ".join(f"'{s}'" for s in config.segments.purchase_statuses)
    revenue = wh.scalar(f"SELECT SUM(total_amount) FROM orders WHERE status IN ({statuses}) "
                        f"AND created_at >= TIMESTAMP '{AS_OF - timedelta(days=29)} 00:00:00' "
                        f"AND created_at < TIMESTAMP '{AS_OF + timedelta(days=1)} 00:00:00'")
    lapsed = stages.get("lapsed", 0) / customers
    # the live build's carts: abandoned carts over carts started in the lookback
    started = wh.scalar("SELECT COUNT(DISTINCT cart_key) FROM cart_items WHERE added_at IS NOT NULL")
    abandoned = wh.scalar("SELECT COUNT(*) FROM abandoned_carts")
    return {
        "customers": customers,
        "active": sum(stages.get(s, 0) for s in ("newcomer", "regular", "loyal", "at_risk")),
        "lapsed_share": lapsed,
        "lapsed_share_change": lapsed - before.get("lapsed", 0) / sum(before.values()),
        "revenue_30d": float(revenue),
        "cart_abandonment_rate": abandoned / started,
    }


def test_the_page_renders_every_chart_offline_with_the_warehouse_figures(shop, tmp_path, tmp_path_factory):
    config, wh = shop
    written = page.write_report(config, tmp_path / "report", warehouse=wh)
    assert written["path"] == str(tmp_path / "report" / "index.html") and written["as_of"] == str(AS_OF)
    screenshot = _artifacts(tmp_path_factory) / "report-page.png"
    seen = open_in_chromium(Path(written["path"]), screenshot)
    print(f"report page screenshot: {screenshot}")

    assert seen["requested"] == [], "the page must open with no network"
    assert seen["scripts_with_src"] == 0
    assert seen["problems"] == []
    assert seen["charts"] == seen["drawn"] == seen["declared"] == written["figures"] == ALL_CHARTS
    assert seen["not_measured"] == 0
    expected = warehouse_headline(wh, config)
    shown = {name: float(value) for name, value in seen["figures"].items()}
    assert shown.keys() == expected.keys()
    for name, value in expected.items():
        assert shown[name] == pytest.approx(value, rel=1e-9), name
    assert expected["customers"] > expected["active"] > 0 and expected["revenue_30d"] > 0
    assert screenshot.stat().st_size > 50_000


def test_sections_with_nothing_measured_say_so_and_the_rest_still_renders(shop, tmp_path):
    config, wh = shop
    read = dataclasses.replace(data.read(wh, config), campaign_lift=None, campaign_outcomes=None,
                               call_funnel=None, churn_reasons=None, model_checks=None)
    document, charts = page.render(read, config)
    path = tmp_path / "index.html"
    path.write_text(document, encoding="utf-8")
    seen = open_in_chromium(path)
    assert seen["problems"] == [] and seen["requested"] == []
    assert seen["charts"] == seen["drawn"] == charts == ALL_CHARTS - MEASURED_CHARTS
    # campaigns, calls, reasons, model check
    assert seen["not_measured"] == 4
    assert "Not measured yet: no audience has a measured campaign yet" in document


def test_a_failed_render_leaves_the_previous_page_intact(shop, tmp_path, monkeypatch):
    config, wh = shop
    folder = tmp_path / "report"
    page.write_report(config, folder, warehouse=wh)
    before = (folder / "index.html").read_bytes()

    def broken(rows):
        raise RuntimeError("chart failed")

    monkeypatch.setattr(figures, "flows", broken)
    with pytest.raises(RuntimeError, match="chart failed"):
        page.write_report(config, folder, warehouse=wh)
    assert (folder / "index.html").read_bytes() == before
    assert [p.name for p in folder.iterdir()] == ["index.html"]


def test_a_failed_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    target = tmp_path / "index.html"
    target.write_text("old page")
    monkeypatch.setattr(page.os, "replace", lambda *_: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        page.write_atomic(target, "new page")
    assert target.read_text() == "old page" and [p.name for p in tmp_path.iterdir()] == ["index.html"]


def test_the_command_writes_the_page_where_out_says(shop, tmp_path, capsys):
    config, wh = shop
    wh.dispose()  # DuckDB: the command opens the file itself
    out = tmp_path / "elsewhere"
    assert main(["--config", str(config.path), "report", "--out", str(out)]) == 0
    assert (out / "index.html").exists()
    assert str(out / "index.html") in capsys.readouterr().out


def test_a_model_check_that_could_not_run_says_why(shop):
    """A build whose check could not run writes only an 'all' row with its reason and no
    figures (a young shop, the model off); the page says so instead of failing."""
    config, wh = shop
    unchecked = [{"build_id": "b", "as_of": AS_OF, "calibration_end": AS_OF - timedelta(days=90), "check_days": 90,
                  "repeat_purchases": "all", "customers": 12, "predicted": None, "actual": 3.0,
                  "mean_absolute_error": None, "params": None,
                  "message": "not fitted: 3 repeat buyers, fewer than models.min_repeat_customers=50"}]
    document, charts = page.render(dataclasses.replace(data.read(wh, config), model_checks=unchecked), config)
    assert "No model check as of" in document and "fewer than models.min_repeat_customers=50" in document
    assert charts == ALL_CHARTS - 1  # no calibration chart
