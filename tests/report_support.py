"""Hand-written rows for the tables other parts of issue 12 build (campaign_outcomes,
campaign_lift, model_checks, call_funnel, churn_reasons), so the report's sections
can be tested before and apart from the code that fills them. Column types are
spelled so DuckDB and PostgreSQL both accept them."""

from __future__ import annotations

from datetime import date

from winback.warehouse import Warehouse, sql_literal

T, N, D, I, B = "VARCHAR", "DOUBLE PRECISION", "DATE", "BIGINT", "BOOLEAN"

COLUMNS = {
    "campaign_outcomes": [("audience", T), ("cohort_date", D), ("group", T), ("members", I), ("converted", I),
                          ("conversion_rate", N), ("orders", I), ("revenue", N), ("revenue_per_member", N),
                          ("window_days", I), ("complete", B)],
    "campaign_lift": [("audience", T), ("treatment_members", I), ("control_members", I), ("treatment_rate", N),
                      ("control_rate", N), ("lift", N), ("lift_ci_low", N), ("lift_ci_high", N), ("p_value", N),
                      ("incremental_customers", N), ("revenue_per_member_lift", N),
                      ("revenue_per_member_lift_ci_low", N), ("revenue_per_member_lift_ci_high", N),
                      ("incremental_revenue", N), ("contact_cost", N), ("cost_per_incremental_customer", N),
                      ("acquisition_cost", N), ("verdict", T), ("min_detectable_lift", N)],
    "model_checks": [("build_id", T), ("as_of", D), ("calibration_end", D), ("check_days", I),
                     ("repeat_purchases", T), ("customers", I), ("predicted", N), ("actual", N),
                     ("mean_absolute_error", N)],
    "call_funnel": [("audience", T), ("month", D), ("listed", I), ("called", I), ("reached", I),
                    ("agreed_to_return", I), ("bought", I), ("reach_rate", N), ("agree_rate", N),
                    ("conversion_rate", N), ("reference_agree_rate", N), ("reference_conversion_rate", N)],
    "churn_reasons": [("main_category", T), ("lifecycle_stage", T), ("reason", T), ("customers", I), ("share", N)],
}

ROWS = {
    "campaign_outcomes": [
        ("lapsed_winback", date(2026, 9, 1), "treatment", 900, 90, 0.10, 95, 95000.0, 105.6, 30, True),
        ("lapsed_winback", date(2026, 9, 1), "control", 100, 5, 0.05, 5, 5000.0, 50.0, 30, True),
        ("lapsed_winback", date(2026, 9, 8), "treatment", 450, 54, 0.12, 60, 61000.0, 135.6, 30, True),
        ("lapsed_winback", date(2026, 9, 8), "control", 50, 3, 0.06, 3, 3200.0, 64.0, 30, True),
    ],
    "campaign_lift": [
        ("lapsed_winback", 1350, 150, 0.1067, 0.0533, 0.0533, 0.0120, 0.0870, 0.04, 72.0, 55.0, 10.0, 100.0,
         74250.0, 405.0, 5.6, 1500.0, "pays", 0.045),
        ("at_risk_reminder", 0, 0, None, None, None, None, None, None, None, None, None, None, None, None, None,
         1500.0, "too_early", None),
    ],
    "model_checks": [
        *(("build-old", date(2026, 10, 24), date(2026, 7, 26), 90, group, 10, 10.0, 9.0, 0.5)
          for group in ("0", "1", "all")),
        *(("build-new", date(2026, 10, 31), date(2026, 8, 2), 90, group, customers, predicted, actual, 0.4)
          for group, customers, predicted, actual in (
              ("all", 600, 312.0, 300.0), ("7+", 20, 62.0, 58.0), ("0", 300, 33.0, 36.0), ("1", 150, 72.0, 75.0),
              ("2", 80, 72.0, 68.0))),
    ],
    "call_funnel": [
        ("lapsed_high_value_calls", date(2026, 9, 1), 200, 180, 120, 70, 18, 0.667, 0.583, 0.1, 0.6, 0.15),
        ("lapsed_high_value_calls", date(2026, 10, 1), 150, 140, 100, 62, 20, 0.714, 0.62, 0.143, 0.6, 0.15),
    ],
    "churn_reasons": [
        ("pet_food", "lapsed", "price", 30, 0.6), ("pet_food", "lapsed", "delivery", 20, 0.4),
        ("cosmetics", "at_risk", "quality", 5, 1.0),
    ],
}


def write_measured_tables(wh: Warehouse, tables=tuple(COLUMNS), empty: tuple[str, ...] = ()) -> None:
    """Create `tables` with their hand-written rows (`empty`: created without rows)."""
    with wh.begin() as conn:
        for name in tables:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")
            columns = ", ".join(f'"{column}" {kind}' for column, kind in COLUMNS[name])
            conn.exec_driver_sql(f"CREATE TABLE {name} ({columns})")
            for row in [] if name in empty else ROWS[name]:
                conn.exec_driver_sql(f"INSERT INTO {name} VALUES ({', '.join(sql_literal(v) for v in row)})")
