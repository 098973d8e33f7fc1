"""A deterministic, realistic sample online shop (customers, orders, items, site events,
feedback, mailings, call outcomes) written chunk by chunk in the formats include/config/winback.yaml reads.

Each module draws one thing; this one runs them: the shared timeline, catalogue and
campaigns, then per chunk the draws (chunk.py) handed to the writer (writer.py)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from winback.sample_shop.catalog import _catalog
from winback.sample_shop.chunk import _generate_chunk, _IdCounters
from winback.sample_shop.mail import _campaign_schedule
from winback.sample_shop.spec import ShopSpec, _check_spec
from winback.sample_shop.timeline import _timeline
from winback.sample_shop.writer import _empty_manifest, _prepare_dirs, _Writer


def generate_shop(
    out_dir: Path, spec: ShopSpec, progress: Callable[[str], None] | None = None
) -> dict:
    """Writes the shop under out_dir (customers/, orders/, order_items/, events/, feedback/, mailing/,
    contacts/)
    and out_dir/manifest.json; returns the manifest dict."""
    _check_spec(spec)
    say = progress or (lambda message: None)
    out_dir = Path(out_dir)
    tl = _timeline(spec)
    catalog = _catalog(spec.seed)
    campaigns = _campaign_schedule(spec.seed, tl)
    _prepare_dirs(out_dir)
    manifest = _empty_manifest(spec, tl)
    ids = _IdCounters()
    writer = _Writer(out_dir, tl, spec.events_format)
    n_chunks = math.ceil(spec.customers / spec.chunk_customers)
    try:
        for part in range(n_chunks):
            first = part * spec.chunk_customers
            n = min(spec.chunk_customers, spec.customers - first)
            rng = np.random.default_rng([spec.seed, part])
            # The previous part is still being written while this one is generated.
            chunk = _generate_chunk(rng, part, first, n, spec, tl, catalog, campaigns, ids)
            writer.write_chunk(part, chunk, catalog, campaigns, manifest)
            say(f"part {part + 1}/{n_chunks}: {n} customers, {chunk.orders.n} orders, "
                f"{chunk.events.n} events")
            del chunk
    finally:
        writer.close()
    manifest["order_updates"] = manifest["entities"]["orders"]["rows"] - manifest["entities"]["orders"]["distinct"]
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n",
                                           encoding="utf-8")
    say(f"done: {manifest['entities']['orders']['distinct']} orders, {manifest['entities']['events']['rows']} events")
    return manifest
