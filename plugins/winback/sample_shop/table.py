"""The column table every drawing module fills: numpy columns of equal length."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class _Table:
    """Columns of equal length; n is their length."""

    cols: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(next(iter(self.cols.values()))) if self.cols else 0

    def __getitem__(self, key: str) -> np.ndarray:
        return self.cols[key]

    def take(self, index: np.ndarray) -> _Table:
        return _Table({k: v[index] for k, v in self.cols.items()})
