"""The build stage: the marts rebuilt from the staging tables as of a day (`builder`,
SQL in include/sql/intermediate and include/sql/marts), the BG/NBD and Gamma-Gamma
models (`models/`), the read-only snapshot (`snapshot`) and the segment, churn, RFM,
cart and audience settings (`settings`)."""

from winback import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "build": "winback.build.builder",
    "BuildError": "winback.build.builder",
    "MARTS": "winback.build.builder",
})
