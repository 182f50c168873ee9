"""The sane window a row's timestamp must fall in, relative to now.

A timestamp outside it is a careless or hostile row (a producer's clock in the wrong century, a
local time labelled UTC, a test row dated 2099): it is rejected with its reason and counted, never
let through to the features, where dates before 1970 or near pandas' limit (2262) raise, and a
future row would pose as the newest period of its series.

- `too_early:<column>`: before `earliest` (an absolute floor, default 2000-01-01 UTC);
- `too_old:<column>`: more than `max_past` before now (the live feed only: training data is old);
- `in_future:<column>`: more than `max_future` after now (clock skew allowance).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

EARLIEST = pd.Timestamp("2000-01-01", tz="UTC")
MAX_FUTURE = pd.Timedelta(minutes=15)


def _now() -> pd.Timestamp:
    return pd.Timestamp.now(tz="UTC")


@dataclass(frozen=True)
class TimeWindow:
    """[max(earliest, now - max_past), now + max_future]; `now` is read at each check."""

    earliest: pd.Timestamp = EARLIEST
    max_future: pd.Timedelta = MAX_FUTURE
    max_past: pd.Timedelta | None = None
    clock: Callable[[], pd.Timestamp] = field(default=_now, compare=False, repr=False)

    def bounds(self) -> tuple[pd.Timestamp, pd.Timestamp]:
        now = self.clock()
        low = now - self.max_past if self.max_past is not None else self.earliest
        return low, now + self.max_future

    def checks(self, stamps: pd.Series, column: str) -> list[tuple[str, np.ndarray]]:
        """(reason, failing rows) per bound; null timestamps fail none (a null check does)."""
        values = stamps.to_numpy(dtype="datetime64[ns]")
        known = ~np.isnat(values)
        now_low, high = self.bounds()
        too_early = known & (values < self.earliest.as_unit("ns").asm8)
        out = [(f"too_early:{column}", too_early)]
        if self.max_past is not None:
            out.append((f"too_old:{column}", known & (values < now_low.as_unit("ns").asm8)))
        out.append((f"in_future:{column}", known & (values > high.as_unit("ns").asm8)))
        return out

    def describe(self) -> str:
        past = f", not more than {self.max_past} before now" if self.max_past is not None else ""
        return (f"timestamps from {self.earliest.date()}{past}, at most {self.max_future} after "
                "now")

