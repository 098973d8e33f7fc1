"""A deterministic, realistic sample online shop (customers, orders, items, site events,
feedback, mailings) written chunk by chunk in the formats include/config/winback.yaml
reads: `python -m winback generate`, `make demo`, the tests and the benchmarks."""

from winback import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "generate_shop": "winback.sample_shop.generator",
    "ShopSpec": "winback.sample_shop.spec",
    "spec_for": "winback.sample_shop.spec",
    "SCALES": "winback.sample_shop.spec",
})
