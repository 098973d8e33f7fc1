"""The sync stage: push each audience to its destinations, sending only what changed
(`engine`), through one protocol per platform (`destinations/`), live or as a dry run
(`transport`), with identifiers in each platform's form (`identifiers`); destinations
and engine settings in `settings`."""

from winback import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "sync": "winback.sync.engine",
    "sync_pair": "winback.sync.engine",
    "format_runs": "winback.sync.engine",
    "SyncError": "winback.sync.destinations.base",
    "pools": "winback.sync.settings",
    "pool_name": "winback.sync.settings",
})
