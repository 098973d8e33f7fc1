"""The ingest stage: read the shop's records from files, its database or its API
(`sources/`), map them to canonical columns (`canonical`), check them with Great
Expectations (`validation`), quarantine the bad ones (`quarantine`) and load the good
ones into the staging tables (`pipeline`: extract -> validate -> load)."""

from winback import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "extract": "winback.ingest.pipeline",
    "validate": "winback.ingest.pipeline",
    "load": "winback.ingest.pipeline",
    "ingest": "winback.ingest.pipeline",
    "IngestError": "winback.ingest.pipeline",
    "ValidationThresholdError": "winback.ingest.pipeline",
    "MappingError": "winback.ingest.canonical",
    "SourceError": "winback.ingest.sources",
    "SourceUnavailable": "winback.ingest.sources",
})
