"""The report page: one self-contained HTML file (plotly.js and every style inlined, so
it opens from a file with no network), written aside and renamed into place so a reader
never sees half a page and a failed render leaves the previous page as it was."""

from __future__ import annotations

import html
import logging
import os
import tempfile
from collections.abc import Callable, Iterable
from datetime import date, datetime
from pathlib import Path

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from winback.clock import utcnow
from winback.config import Config
from winback.report import figures
from winback.report.data import ACTIVE_STAGES, REVENUE_DAYS, ReportData, read
from winback.warehouse import Warehouse

log = logging.getLogger(__name__)

PAGE_NAME = "index.html"

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1f2933;background:#f5f7fa}
main{max-width:1100px;margin:0 auto;padding:24px}
h1{margin:0 0 4px}h2{margin:36px 0 6px;border-bottom:2px solid #d9e2ec;padding-bottom:4px}
p.lead,p.note{color:#52606d;margin:4px 0 12px}
section{background:#fff;border-radius:8px;padding:4px 20px 16px;margin-bottom:20px;box-shadow:0 1px 3px #0001}
.cards{display:flex;flex-wrap:wrap;gap:12px}
.card{flex:1 1 170px;background:#fff;border-radius:8px;padding:14px 18px;box-shadow:0 1px 3px #0001}
.card .label{color:#52606d;font-size:14px}.card .value{font-size:26px;font-weight:600;display:block}
.card .sub{color:#52606d;font-size:13px}
.empty{background:#fffbea;border-left:4px solid #f0b429;padding:10px 14px;color:#513c06}
table{border-collapse:collapse;width:100%;font-size:14px;margin:8px 0}
th,td{border-bottom:1px solid #e4e7eb;padding:5px 8px;text-align:right}th{background:#f0f4f8}
th:first-child,td:first-child{text-align:left}
.pays{color:#1b7340;font-weight:600}.does_not_pay{color:#9b2226;font-weight:600}
"""


class Page:
    """The page's HTML, built section by section; counts the figures it holds."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.figures = 0
        self.in_section = False

    def add(self, markup: str) -> None:
        self.parts.append(markup)

    def figure(self, fig: go.Figure | None, missing: str) -> None:
        if fig is None:
            self.empty(missing)
            return
        self.figures += 1
        self.add(fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"figure-{self.figures}",
                             config={"displaylogo": False, "responsive": True}))

    def empty(self, why: str) -> None:
        self.add(f'<p class="empty">Not measured yet: {html.escape(why)}</p>')

    def section(self, title: str, lead: str) -> None:
        if self.in_section:
            self.add("</section>")
        self.in_section = True
        self.add(f"<section><h2>{html.escape(title)}</h2><p class=\"lead\">{html.escape(lead)}</p>")


def _cell(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, datetime):
        return f"{value:%Y-%m-%d %H:%M}"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return html.escape(str(value))


def table(rows: Iterable[dict], columns: list[tuple[str, str]],
          formats: dict[str, Callable] | None = None) -> str:
    formats = formats or {}
    head = "".join(f"<th>{html.escape(label)}</th>" for _, label in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{formats[key](row.get(key)) if key in formats else _cell(row.get(key))}</td>"
                         for key, _ in columns) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _percent(value) -> str:
    return "–" if value is None else f"{float(value):.1%}"


def _money(value) -> str:
    return "–" if value is None else f"{float(value):,.0f}"


def _verdict(value) -> str:
    text = html.escape(str(value or "–"))
    return f'<span class="{text}">{text.replace("_", " ")}</span>'


# Carts abandoned per cart started across online shops (Baymard Institute's collected
# studies): a rate far outside it says more about the tracking than about the shop.
ABANDONMENT_REFERENCE = "65–85 %"


def headline_cards(data: ReportData, currency: str) -> str:
    top = data.headline
    if top is None:
        return '<p class="empty">Not measured yet: no live build has run (python -m winback build).</p>'
    change = top.lapsed_share_change

    def card(name: str, label: str, raw, shown: str, sub: str = "") -> str:
        return (f'<div class="card"><span class="label">{html.escape(label)}</span>'
                f'<span class="value" data-figure="{name}" data-value="{raw}">{shown}</span>'
                f'<span class="sub">{html.escape(sub)}</span></div>')

    rate = top.cart_abandonment_rate
    change_text = (f"{change * 100:+.2f} points since the build of {top.previous_as_of}" if change is not None
                   else "no earlier build to compare with")
    return '<div class="cards">' + "".join([
        card("customers", "customers", top.customers, f"{top.customers:,}", "who ever placed an order"),
        card("active", "active customers", top.active, f"{top.active:,}",
             "buying on their rhythm: " + ", ".join(ACTIVE_STAGES)),
        card("lapsed_share", "lapsed share", repr(top.lapsed_share), f"{top.lapsed_share:.1%}", change_text),
        card("lapsed_share_change", "lapsed share change", "" if change is None else repr(change),
             "–" if change is None else f"{change * 100:+.2f} pt", "against the previous build"),
        card("revenue_30d", f"revenue, last {REVENUE_DAYS} days", repr(top.revenue_30d),
             f"{top.revenue_30d:,.0f} {currency}", f"purchases up to {top.as_of}"),
        card("cart_abandonment_rate", "cart abandonment", "" if rate is None else repr(rate),
             "–" if rate is None else f"{rate:.1%}",
             f"of {top.carts_started or 0:,} carts started; {ABANDONMENT_REFERENCE} is typical of online shops"),
    ]) + "</div>"


def render(data: ReportData, config: Config, generated: date | None = None) -> tuple[str, int]:
    """The whole page's HTML and the number of charts on it."""
    page = Page()
    page.add("<main>")
    as_of = data.headline.as_of if data.headline else None
    page.add(f"<h1>Winback report</h1><p class=\"lead\">Retention as of {as_of or '–'}; page written "
             f"{generated or utcnow():%Y-%m-%d %H:%M} UTC. Counts and shares only: no customer is named here.</p>")
    page.add(headline_cards(data, config.default_currency))

    page.section("Lifecycle stages", "How many customers are in each stage at every build, and where they "
                 "moved since the previous one: a wide band from a healthy stage into 'lapsed' is a warning.")
    page.figure(figures.stage_sizes(data.stage_sizes), "no build has recorded segment history.")
    page.figure(figures.flows(data.flows), "flows need two builds on different days (segment_transitions).")

    page.section("Lapsed share and churn thresholds", "The share of customers past their churn threshold at "
                 "every build; a cross marks an alert (a swing larger than segments.lapsed_share_alert). "
                 "Below: how long each category may go without a purchase before it counts as at risk or "
                 "lapsed (learned from its repeat-purchase gaps; the basis is in brackets).")
    page.figure(figures.lapsed_share(data.lapsed_share, data.alerts), "no build has run yet (build_runs).")
    page.figure(figures.category_cycles(data.category_cycles), "no category cycles yet (category_cycles).")

    _campaigns(page, data)
    _calls(page, data)
    _health(page, data)
    _model(page, data)
    page.add("</section></main>")
    body = "\n".join(page.parts)
    # plotly.js once, inline; every figure div calls it after it has loaded.
    document = (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Winback report"
                f"{' as of ' + str(as_of) if as_of else ''}</title><style>{STYLE}</style>"
                f"<script>{get_plotlyjs()}</script></head><body data-figures=\"{page.figures}\">{body}</body></html>")
    return document, page.figures


def _campaigns(page: Page, data: ReportData) -> None:
    page.section("Campaigns: did it pay?", "Each audience keeps a random control group that is never contacted. "
                 "The lift is how much more often contacted members bought than held-out ones; it counts as proven "
                 "only when its interval excludes zero. A campaign pays when each extra customer it won cost less "
                 "than acquiring a new one.")
    if not data.campaign_lift:
        page.empty("no audience has a measured campaign yet (campaign_lift is built once audiences "
                   "were synced live and their window has passed).")
        return
    page.figure(figures.campaign_lift(data.campaign_lift), "")
    page.figure(figures.lift_intervals(data.campaign_lift), "no audience has a complete cohort yet.")
    page.add(table(data.campaign_lift, [
        ("audience", "audience"), ("treatment_members", "contacted"), ("control_members", "held out"),
        ("lift", "lift"), ("lift_ci_low", "lift from"), ("lift_ci_high", "lift to"),
        ("incremental_customers", "extra customers"), ("incremental_revenue", "extra revenue"),
        ("contact_cost", "contact cost"), ("cost_per_incremental_customer", "cost per extra customer"),
        ("acquisition_cost", "cost to acquire one"), ("min_detectable_lift", "smallest detectable lift"),
        ("verdict", "verdict")],
        {"lift": _percent, "lift_ci_low": _percent, "lift_ci_high": _percent, "min_detectable_lift": _percent,
         "incremental_revenue": _money, "contact_cost": _money, "cost_per_incremental_customer": _money,
         "acquisition_cost": _money, "verdict": _verdict}))
    page.figure(figures.cohorts(data.campaign_outcomes), "no cohort outcomes yet (campaign_outcomes).")


def _calls(page: Page, data: ReportData) -> None:
    page.section("Calls and reasons for leaving", "How far call lists get, beside the reference figures "
                 "(about 60 % of reached lapsed customers agree to return, 15 % of calls end in a sale), and the "
                 "reasons customers gave.")
    if data.call_funnel:
        page.figure(figures.call_funnel(data.call_funnel), "")
        page.add(table(data.call_funnel, [
            ("audience", "audience"), ("month", "month"), ("listed", "listed"), ("called", "called"),
            ("reached", "reached"), ("agreed_to_return", "agreed"), ("bought", "bought"),
            ("reach_rate", "reached / called"), ("agree_rate", "agreed / reached"),
            ("reference_agree_rate", "reference"), ("conversion_rate", "bought / called"),
            ("reference_conversion_rate", "reference")],
            {key: _percent for key in ("reach_rate", "agree_rate", "reference_agree_rate", "conversion_rate",
                                       "reference_conversion_rate")}))
    else:
        page.empty("no call outcomes recorded (load the contact_outcomes entity to fill call_funnel).")
    page.figure(figures.churn_reasons(data.churn_reasons),
                "no reasons recorded (churn_reasons comes from the reasons in contact_outcomes).")


def _health(page: Page, data: ReportData) -> None:
    page.section("Data health", "What each load brought in and what validation kept out, per entity and rule. "
                 "A sudden rise in quarantined rows usually means the shop's export changed.")
    page.figure(figures.loads(data.loads), "nothing has been loaded yet (load_runs).")
    page.figure(figures.quarantine(data.quarantine), "no row has been quarantined.")
    if data.last_loads:
        page.add("<p class=\"note\">The last load of each entity:</p>" + table(data.last_loads, [
            ("entity", "entity"), ("status", "status"), ("source_kind", "source"), ("finished_at", "finished (UTC)"),
            ("rows_extracted", "rows read"), ("rows_valid", "valid"), ("rows_quarantined", "quarantined"),
            ("rows_loaded", "loaded"), ("rows_updated", "of them updates")]))


def _model(page: Page, data: ReportData) -> None:
    page.section("Model", "BG/NBD estimates each customer's probability of still being a customer and their "
                 "purchases to come; Gamma-Gamma their spend. The check fits the model on older data and compares "
                 "its prediction with what customers then really bought: bars of equal height mean it can be "
                 "trusted for this shop.")
    if data.model_fits:
        page.add(table(data.model_fits, [
            ("model", "model"), ("params", "fitted parameters"), ("customers", "customers"),
            ("log_likelihood", "log-likelihood"), ("converged", "converged"), ("message", "note")],
            {"params": lambda p: html.escape(", ".join(f"{k} = {v:.4g}" if isinstance(v, float) else f"{k} = {v}"
                                                       for k, v in (p or {}).items()))}))
    else:
        page.empty("no model was fitted in the latest build (model_fits).")
    page.figure(figures.calibration(data.model_checks), "no out-of-sample check yet (model_checks).")
    checked = [r for r in data.model_checks or [] if str(r["repeat_purchases"]) == "all"]
    if checked and checked[0]["predicted"] is not None:
        page.add(f"<p class=\"note\">All customers: predicted {_cell(float(checked[0]['predicted']))}, actual "
                 f"{_cell(float(checked[0]['actual']))}; mean absolute error per customer "
                 f"{_cell(float(checked[0]['mean_absolute_error']))} (check of {checked[0]['as_of']}).</p>")
    elif checked:  # a check that could not run says why (too little history, the model off)
        page.add(f"<p class=\"note\">No model check as of {checked[0]['as_of']}: "
                 f"{html.escape(str(checked[0]['message'] or 'not run'))}.</p>")


def write_atomic(path: Path, text: str) -> None:
    """Write aside in the same folder and rename over `path`: readers see the old page or
    the new one, never part of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(temp, 0o644)  # aggregates only: readable like any report
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def write_report(config: Config, out: str | Path | None = None, *, warehouse: Warehouse | None = None) -> dict:
    """Read the warehouse, render the page and put it at <out>/index.html (default
    build.report_dir). Returns where it went and how many charts it holds."""
    folder = config.resolve(out if out is not None else config.build.report_dir)
    wh = warehouse or Warehouse(config.warehouse_url)
    try:
        data = read(wh, config)
    finally:
        if warehouse is None:
            wh.dispose()
    document, count = render(data, config)
    path = folder / PAGE_NAME
    write_atomic(path, document)
    log.info("report written to %s (%d charts, as of %s)", path, count,
             data.headline.as_of if data.headline else "no build yet")
    return {"path": str(path), "figures": count, "as_of": str(data.headline.as_of) if data.headline else None}
