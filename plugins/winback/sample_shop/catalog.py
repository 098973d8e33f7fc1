"""The product catalogue shared by all chunks: skus per category with shop-like prices
(drawn once from its own stream, so every chunk sells the same products)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from winback.sample_shop.spec import _CATALOG_STREAM, CATEGORIES


@dataclass(frozen=True)
class _Catalog:
    offset: np.ndarray  # first global sku index per category
    size: np.ndarray  # skus per category
    sku_names: list[str]
    sku_category: np.ndarray
    price: np.ndarray


def _catalog(seed: int) -> _Catalog:
    rng = np.random.default_rng([seed, *_CATALOG_STREAM])
    names, cats, prices = [], [], []
    for c, cat in enumerate(CATEGORIES):
        raw = np.exp(rng.uniform(np.log(cat.price_min), np.log(cat.price_max), cat.skus))
        # Shop prices end in 9: 1299, 45990.
        step = np.where(raw >= 10_000, 100, 10)
        nice = np.maximum(np.round(raw / step) * step - np.where(step == 100, 10, 1), cat.price_min)
        names += [f"{cat.prefix}-{i + 1:04d}" for i in range(cat.skus)]
        cats.append(np.full(cat.skus, c, np.int8))
        prices.append(nice)
    size = np.array([cat.skus for cat in CATEGORIES])
    return _Catalog(
        offset=np.concatenate([[0], np.cumsum(size)[:-1]]),
        size=size,
        sku_names=names,
        sku_category=np.concatenate(cats),
        price=np.concatenate(prices).astype(np.float64),
    )
