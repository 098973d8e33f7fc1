"""The window of history: naive Moscow local time as int64 seconds since 1970-01-01
00:00 "local", season-warped operational time, and the days and hours customers arrive
and buy at."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime

import numpy as np

from winback.sample_shop.spec import DAY, HOUR, ShopSpec

# Acquisition grows over the window (last month ~2.5x the first) with the seasons.
ACQUISITION_GROWTH = 2.5
MONTH_SEASON = {1: 0.78, 2: 0.88, 3: 1.0, 4: 1.0, 5: 0.95, 6: 0.9,
                7: 0.9, 8: 0.95, 9: 1.0, 10: 1.05, 11: 1.35, 12: 1.55}
# Local hour-of-day weights: evenings and lunch breaks, quiet nights.
HOUR_WEIGHTS = np.array([1, 0.5, 0.3, 0.2, 0.2, 0.3, 0.8, 1.5, 2.5, 3.5, 4, 4.5,
                         5, 5, 4.5, 4.5, 4.5, 5, 5.5, 6.5, 7, 6.5, 4.5, 2.5])


@dataclass(frozen=True)
class _Timeline:
    start: date
    end: date
    months: tuple[str, ...]
    month_starts: np.ndarray  # local seconds of each month's first day
    start_ts: int
    end_ts: int  # end day 23:59:59
    days: int
    op_grid: np.ndarray  # operational (season-weighted) time at each day boundary
    acquisition_cdf: np.ndarray  # per day

    def to_op(self, t: np.ndarray) -> np.ndarray:
        """Calendar seconds -> operational days (busy months pass faster)."""
        return np.interp((t - self.start_ts) / DAY, np.arange(self.days + 1), self.op_grid)

    def from_op(self, op: np.ndarray) -> np.ndarray:
        return self.start_ts + np.interp(op, self.op_grid, np.arange(self.days + 1)) * DAY

    def month_of(self, t: np.ndarray) -> np.ndarray:
        idx = np.searchsorted(self.month_starts, t, side="right") - 1
        return np.clip(idx, 0, len(self.months) - 1)


def _timeline(spec: ShopSpec) -> _Timeline:
    end = spec.end or datetime.now(UTC).date()
    month0 = end.year * 12 + end.month - 1 - (spec.months - 1)
    start = date(month0 // 12, month0 % 12 + 1, 1)
    month_dates = [date((month0 + i) // 12, (month0 + i) % 12 + 1, 1) for i in range(spec.months)]
    epoch = date(1970, 1, 1)
    days = (end - start).days + 1
    day_dates = np.arange(np.datetime64(start), np.datetime64(end) + 1, dtype="datetime64[D]")
    month_number = day_dates.astype("datetime64[M]").astype(np.int64) % 12 + 1
    season = np.array([MONTH_SEASON[m] for m in range(1, 13)])[month_number - 1]
    op_grid = np.concatenate([[0.0], np.cumsum(season)])
    growth = ACQUISITION_GROWTH ** (np.arange(days) / max(days - 1, 1))
    acquisition = growth * season
    return _Timeline(
        start=start,
        end=end,
        months=tuple(f"{d.year:04d}-{d.month:02d}" for d in month_dates),
        month_starts=np.array([(d - epoch).days * DAY for d in month_dates], dtype=np.int64),
        start_ts=(start - epoch).days * DAY,
        end_ts=(end - epoch).days * DAY + DAY - 1,
        days=days,
        op_grid=op_grid,
        acquisition_cdf=np.cumsum(acquisition) / acquisition.sum(),
    )


def _time_of_day(rng: np.random.Generator, n: int) -> np.ndarray:
    hours = rng.choice(24, size=n, p=HOUR_WEIGHTS / HOUR_WEIGHTS.sum())
    return hours * HOUR + rng.integers(0, HOUR, n)


def _acquisition_times(rng: np.random.Generator, n: int, tl: _Timeline) -> np.ndarray:
    day = np.minimum(np.searchsorted(tl.acquisition_cdf, rng.random(n)), tl.days - 1)
    return tl.start_ts + day * DAY + _time_of_day(rng, n)
