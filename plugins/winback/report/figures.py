"""The report's charts, one Plotly figure per function, from the rows of `data`.

Each function returns None when there is nothing to draw, so the page can say why
instead. Titles and axis labels are written for a marketer, not for SQL readers.
"""

from __future__ import annotations

from collections import defaultdict

import plotly.graph_objects as go

from winback.build.settings import LIFECYCLE_STAGES
from winback.report.data import CALIBRATION_ORDER

# One colour per stage on every chart; healthy stages green/blue, leaving ones red/grey.
STAGE_COLOURS = {
    "newcomer": "#4c9be8", "regular": "#2a9d8f", "loyal": "#1b7340", "at_risk": "#e9c46a",
    "lapsed": "#e76f51", "archived": "#8d8d8d", "negative": "#9b2226", "one_off": "#b5a8d6",
    "new_customer": "#cfd8dc",
}
TREATMENT, CONTROL = "#2a6fdb", "#9aa5b1"
DAY = "%Y-%m-%d"  # day axes: a single day would otherwise read "00:00:00 Nov 30"


def _layout(fig: go.Figure, title: str, x: str, y: str, **extra) -> go.Figure:
    layout = {"height": 380, "margin": {"l": 60, "r": 20, "t": 60, "b": 50},
              "legend": {"orientation": "h", "y": -0.2}, **extra}
    fig.update_layout(title={"text": title, "x": 0}, xaxis_title=x, yaxis_title=y, template="plotly_white",
                      **layout)
    return fig


def _stage_order(stages) -> list[str]:
    known = [s for s in ("new_customer", *LIFECYCLE_STAGES) if s in stages]
    return known + sorted(set(stages) - set(known))


def stage_sizes(rows: list[dict] | None) -> go.Figure | None:
    if not rows:
        return None
    by_stage: dict[str, dict] = defaultdict(dict)
    for row in rows:
        by_stage[row["lifecycle_stage"]][row["as_of"]] = int(row["customers"])
    days = sorted({row["as_of"] for row in rows})
    fig = go.Figure([go.Scatter(x=days, y=[by_stage[stage].get(day, 0) for day in days], name=stage,
                                mode="lines+markers", stackgroup="stages",
                                line={"color": STAGE_COLOURS.get(stage)})
                     for stage in _stage_order(by_stage)])
    return _layout(fig, "Customers per lifecycle stage, build by build", "as-of day", "customers",
                   xaxis_tickformat=DAY)


def flows(rows: list[dict] | None) -> go.Figure | None:
    if not rows:
        return None
    sources = _stage_order({row["from_stage"] for row in rows})
    targets = _stage_order({row["to_stage"] for row in rows})
    labels = [f"{s} (before)" for s in sources] + [f"{t} (now)" for t in targets]
    colours = [STAGE_COLOURS.get(s, "#999") for s in sources] + [STAGE_COLOURS.get(t, "#999") for t in targets]
    fig = go.Figure(go.Sankey(
        node={"label": labels, "color": colours, "pad": 12},
        link={"source": [sources.index(row["from_stage"]) for row in rows],
              "target": [len(sources) + targets.index(row["to_stage"]) for row in rows],
              "value": [int(row["customers"]) for row in rows]},
    ))
    previous = rows[0]["previous_as_of"]
    fig.update_layout(title={"text": f"Where customers moved since the build of {previous}", "x": 0},
                      height=460, margin={"l": 20, "r": 20, "t": 60, "b": 20})
    return fig


def lapsed_share(rows: list[dict] | None, alerts: list[dict]) -> go.Figure | None:
    if not rows:
        return None
    fig = go.Figure(go.Scatter(x=[r["as_of"] for r in rows], y=[float(r["lapsed_share"]) for r in rows],
                               mode="lines+markers", name="lapsed share", line={"color": STAGE_COLOURS["lapsed"]}))
    if alerts:
        fig.add_trace(go.Scatter(
            x=[a["as_of"] for a in alerts], y=[float(a["value"]) for a in alerts], mode="markers", name="alert",
            marker={"symbol": "x", "size": 14, "color": "#9b2226"}, text=[a["message"] for a in alerts],
            hovertemplate="%{text}<extra></extra>"))
    return _layout(fig, "Share of customers lapsed, with alerts (sudden swings) marked", "as-of day",
                   "lapsed share", yaxis_tickformat=".1%", xaxis_tickformat=DAY)


def category_cycles(rows: list[dict] | None) -> go.Figure | None:
    if not rows:
        return None
    names = [f"{r['category']} ({r['basis']})" if r["category"] != "*" else f"whole shop ({r['basis']})"
             for r in rows]
    fig = go.Figure([
        go.Bar(y=names, x=[float(r["at_risk_days"]) for r in rows], name="at risk after (days)",
               orientation="h", marker_color=STAGE_COLOURS["at_risk"]),
        go.Bar(y=names, x=[float(r["churn_days"]) for r in rows], name="lapsed after (days)",
               orientation="h", marker_color=STAGE_COLOURS["lapsed"]),
    ])
    return _layout(fig, "Days without a purchase before a customer counts as at risk / lapsed, per category",
                   "days since the last purchase", "", barmode="group",
                   height=max(300, 60 + 40 * len(rows)), yaxis_autorange="reversed")


def campaign_lift(rows: list[dict] | None) -> go.Figure | None:
    """Treatment vs control conversion per audience, the lift's interval as error bars."""
    if not rows:
        return None
    audiences = [r["audience"] for r in rows]
    rate = lambda r, key: float(r[key]) if r[key] is not None else None
    fig = go.Figure([
        go.Bar(x=audiences, y=[rate(r, "treatment_rate") for r in rows], name="contacted (treatment)",
               marker_color=TREATMENT),
        go.Bar(x=audiences, y=[rate(r, "control_rate") for r in rows], name="held out (control)",
               marker_color=CONTROL),
    ])
    return _layout(fig, "Conversion within the window: contacted vs held-out members", "audience",
                   "conversion rate", barmode="group", yaxis_tickformat=".1%")


def lift_intervals(rows: list[dict] | None) -> go.Figure | None:
    measured = [r for r in rows or [] if r["lift"] is not None]
    if not measured:
        return None
    fig = go.Figure(go.Scatter(
        y=[r["audience"] for r in measured], x=[float(r["lift"]) for r in measured], mode="markers",
        marker={"size": 11, "color": TREATMENT}, name="lift",
        error_x={"type": "data", "symmetric": False,
                 "array": [float(r["lift_ci_high"]) - float(r["lift"]) for r in measured],
                 "arrayminus": [float(r["lift"]) - float(r["lift_ci_low"]) for r in measured]}))
    fig.add_vline(x=0, line_dash="dot", line_color="#555")
    return _layout(fig, "Lift (treatment − control conversion) with its interval; crossing 0 = not proven",
                   "lift in conversion rate", "", xaxis_tickformat=".1%",
                   height=max(260, 80 + 45 * len(measured)))


def cohorts(rows: list[dict] | None) -> go.Figure | None:
    if not rows:
        return None
    fig = go.Figure()
    series: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        series[(row["audience"], row["group"])].append(row)
    for (audience, group), points in sorted(series.items()):
        fig.add_trace(go.Scatter(
            x=[p["cohort_date"] for p in points], y=[float(p["conversion_rate"] or 0) for p in points],
            name=f"{audience} · {group}", mode="lines+markers",
            line={"dash": "solid" if group == "treatment" else "dot"}))
    return _layout(fig, "Conversion per cohort (members who entered the audience that day)",
                   "day the members entered", "conversion rate", yaxis_tickformat=".0%", xaxis_tickformat=DAY)


FUNNEL_STEPS = (("listed", "on the call list"), ("called", "called"), ("reached", "reached"),
                ("agreed_to_return", "agreed to return"), ("bought", "bought"))


def call_funnel(rows: list[dict] | None) -> go.Figure | None:
    if not rows:
        return None
    totals = {key: sum(int(r[key] or 0) for r in rows) for key, _ in FUNNEL_STEPS}
    fig = go.Figure(go.Funnel(y=[label for _, label in FUNNEL_STEPS], x=[totals[key] for key, _ in FUNNEL_STEPS],
                              textinfo="value+percent previous", marker={"color": TREATMENT}))
    return _layout(fig, "Call lists: from listed to bought (all audiences and months)", "customers", "")


def churn_reasons(rows: list[dict] | None) -> go.Figure | None:
    if not rows:
        return None
    per_category: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for row in rows:
        category = row["main_category"] or "no category"  # orders without categorised items
        per_category[category][row["reason"] or "none given"] += int(row["customers"] or 0)
    reasons = sorted({reason for counts in per_category.values() for reason in counts})
    categories = sorted(per_category)
    fig = go.Figure([go.Bar(x=categories, y=[per_category[c].get(reason, 0) for c in categories], name=reason)
                     for reason in reasons])
    return _layout(fig, "Why customers say they left, per main category", "main category", "customers",
                   barmode="stack")


def loads(rows: list[dict] | None) -> go.Figure | None:
    if not rows:
        return None
    fig = go.Figure()
    for entity in sorted({r["entity"] for r in rows}):
        mine = [r for r in rows if r["entity"] == entity]
        fig.add_trace(go.Bar(x=[r["day"] for r in mine], y=[int(r["rows_loaded"]) for r in mine], name=entity))
    return _layout(fig, "Rows loaded into the warehouse per day and entity", "day of the load", "rows",
                   barmode="stack", xaxis_tickformat=DAY)


def quarantine(rows: list[dict] | None) -> go.Figure | None:
    if not rows:
        return None
    totals: dict[str, dict] = defaultdict(lambda: defaultdict(int))
    for row in rows:
        label = f"{row['entity']}.{row['rule']}" + (" (value nulled)" if row["level"] == "field" else "")
        totals[label][row["day"]] += int(row["rows"])
    fig = go.Figure([go.Bar(x=sorted(days), y=[days[d] for d in sorted(days)], name=label)
                     for label, days in sorted(totals.items())])
    return _layout(fig, "Rows quarantined (or values set to null) per day, entity and broken rule",
                   "day quarantined", "rows", barmode="stack", height=420, xaxis_tickformat=DAY)


def calibration(rows: list[dict] | None) -> go.Figure | None:
    table = [r for r in rows or [] if str(r["repeat_purchases"]) in CALIBRATION_ORDER]
    if not table:
        return None
    table = [r for r in table if r["predicted"] is not None and r["customers"]]
    if not table:
        return None
    groups = [str(r["repeat_purchases"]) for r in table]
    # model_checks holds each bucket's totals; the BTYD calibration chart compares the
    # means per customer, so buckets of different sizes read on one scale.
    fig = go.Figure([
        go.Bar(x=groups, y=[float(r["predicted"]) / r["customers"] for r in table], name="predicted by the model",
               marker_color=CONTROL),
        go.Bar(x=groups, y=[float(r["actual"]) / r["customers"] for r in table], name="actually bought",
               marker_color=TREATMENT),
    ])
    days = table[0]["check_days"]
    return _layout(fig, f"Model check: repeat purchases in the {days} days after fitting, predicted vs actual",
                   "repeat purchases before the check period", "repeat purchases per customer (mean)",
                   barmode="group")
