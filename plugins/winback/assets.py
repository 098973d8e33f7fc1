"""The Airflow Assets that chain the DAGs: fresh staging data -> build -> sync."""

from __future__ import annotations

from airflow.sdk import Asset


def staging_asset(entity: str) -> Asset:
    """Updated when new rows of `entity` landed in its staging table."""
    return Asset(name=f"winback_staging_{entity}", uri=f"winback://staging/{entity}", group="winback")


def audiences_asset() -> Asset:
    """Updated when the marts and audience_members were rebuilt; triggers the sync."""
    return Asset(name="winback_audiences", uri="winback://marts/audiences", group="winback")
