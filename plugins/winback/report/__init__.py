"""The report page: the warehouse's aggregates (`data`) drawn as Plotly charts
(`figures`) on one self-contained HTML page, written atomically (`page`)."""

from winback import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "write_report": "winback.report.page",
    "render": "winback.report.page",
    "read": "winback.report.data",
})
