"""The measurement stage ("did it pay?"): who was in each audience and when
(`spells`: audience_history), what they bought afterwards against the holdout
(`outcomes`: campaign_outcomes, campaign_lift), what came of the calls
(`call_funnel`), the statistics (`stats`) and the settings (`settings`). Every live build runs it; see docs/measurement.md."""

from winback import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "record_spells": "winback.measure.spells",
    "refresh_outcomes": "winback.measure.outcomes",
    "MeasurementSettings": "winback.measure.settings",
})
