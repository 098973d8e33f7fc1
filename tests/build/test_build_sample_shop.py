"""The sample shop, ingested into DuckDB and into PostgreSQL and built as of its last
day: both warehouses hold identical marts, every lifecycle stage has members, and the
fitted models are the same."""

from __future__ import annotations

import math
from datetime import date

import pytest
from conftest import REPO
from winback.build.builder import MARTS, build
from winback.build.settings import LIFECYCLE_STAGES
from winback.config import load_config
from winback.ingest.pipeline import ingest
from winback.sample_shop import ShopSpec, generate_shop

pytestmark = [pytest.mark.postgres, pytest.mark.slow]
AS_OF = date(2026, 10, 31)


def _rows(wh, table: str) -> list[tuple]:
    return sorted((tuple(r) for r in wh.rows(f"SELECT * FROM {table}")),
                  key=lambda row: tuple((v is None, str(v)) for v in row))


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def test_duckdb_and_postgresql_build_identical_marts_from_the_sample_shop(
        tmp_path, pg_schema_url, open_warehouse, monkeypatch, today_is):
    today_is(AS_OF)
    spec = ShopSpec(customers=3000, months=12, end=AS_OF, seed=5, events_per_customer=20, bad_share=0.002)
    generate_shop(tmp_path / "data" / "shop", spec)
    monkeypatch.setenv("WINBACK_HOME", str(tmp_path))
    built = {}
    for name, url in {"duckdb": f"duckdb:///{tmp_path / 'w.duckdb'}", "postgres": pg_schema_url}.items():
        monkeypatch.setenv("WINBACK_WAREHOUSE_URL", url)
        config = load_config(REPO / "include/config/winback.yaml")
        wh = open_warehouse(config)
        ingest(config, warehouse=wh)
        summary = build(config, AS_OF, warehouse=wh)
        built[name] = {mart: _rows(wh, mart) for mart in MARTS}
        built[name]["fits"] = [tuple(r) for r in wh.rows(
            "SELECT model, params, converged FROM model_fits ORDER BY model")]
        assert set(summary["stage_counts"]) == set(LIFECYCLE_STAGES), (name, summary["stage_counts"])

    duck, pg = built["duckdb"], built["postgres"]
    assert [fit[2] for fit in duck["fits"]] == [True, True]
    assert duck["fits"] == pg["fits"]
    for mart in MARTS:
        assert duck[mart], f"{mart} is empty"
        assert len(duck[mart]) == len(pg[mart]), mart
        for left, right in zip(duck[mart], pg[mart]):
            differing = [(i, a, b) for i, (a, b) in enumerate(zip(left, right)) if not _same(a, b)]
            assert len(left) == len(right) and not differing, (mart, left[0], differing)
