"""What happened to every input row: kept, rejected (by reason, written aside) or out of scope."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from pulsar_core.data.validation import NAIVE_TIME, NAIVE_TIME_FIX, REASON

log = logging.getLogger(__name__)
SOURCE = "source"
REJECTED_FILE = "rejected.parquet"


@dataclass
class RejectionReport:
    """Counts by reason; rows_read == rows_kept + sum(counts) + out_of_scope always holds.

    Rows are input rows: snapshot rows for snapshot files, raw records for kandoo exports.
    `out_of_scope` counts rows read and then left out by the city / service / lookback filters.
    """

    counts: dict[str, int]
    rows_read: int
    rows_kept: int
    out_of_scope: int = 0
    path: Path | None = None
    rows: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False)

    @property
    def rejected(self) -> int:
        """How many rows were rejected, all reasons together."""
        return sum(self.counts.values())

    def hints(self) -> list[str]:
        """How to fix the reasons that have one fix."""
        if any(reason.startswith(NAIVE_TIME) for reason in self.counts):
            return [f"{NAIVE_TIME}: {NAIVE_TIME_FIX}"]
        return []

    def one_line(self) -> str:
        """The counts and the fixes in one line, for an error message or a termination log."""
        top = sorted(self.counts.items(), key=lambda item: -item[1])[:5]
        reasons = ", ".join(f"{reason} {n:,}" for reason, n in top)
        return "; ".join([self._head() + (f" ({reasons})" if reasons else ""), *self.hints()])

    def _head(self) -> str:
        scope = (f", out of scope {self.out_of_scope:,} ({self.rows_read - self.out_of_scope:,} "
                 f"rows in scope of {self.rows_read:,})" if self.out_of_scope else "")
        return (f"read {self.rows_read:,} rows: kept {self.rows_kept:,}, "
                f"rejected {self.rejected:,}{scope}")

    def summary(self) -> str:
        """One human line plus one line per reason."""
        lines = [self._head()] + [f"  {reason}: {n:,}"
                                  for reason, n in sorted(self.counts.items())]
        lines += [f"  {hint}" for hint in self.hints()]
        if self.path is not None:
            lines.append(f"  rejected rows written to {self.path}")
        return "\n".join(lines)


def writable(frame: pd.DataFrame) -> pd.DataFrame:
    """Rejected rows from different inputs, with mixed-type columns turned into text."""
    out = frame.copy()
    for col in out.columns:
        if out[col].dtype == object:
            out[col] = out[col].astype("string")
    return out


def write_rejected(frame: pd.DataFrame, directory: Path | str) -> Path:
    """Write rejected rows (with `reason` and `source`) to `<directory>/rejected.parquet`."""
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    path = target / REJECTED_FILE
    writable(frame).to_parquet(path, index=False)
    log.info("wrote %d rejected rows to %s", len(frame), path)
    return path


def build_report(
    rejected: list[pd.DataFrame], rows_read: int, rows_kept: int, out_of_scope: int,
    rejected_dir: Path | str | None,
) -> RejectionReport:
    """Assemble the report; rejected frames carry a `_weight` (raw records per rejected row)."""
    frames = [f for f in rejected if len(f)]
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        {REASON: pd.Series(dtype="string"), SOURCE: pd.Series(dtype="string")}
    )
    weights = rows.pop("_weight") if "_weight" in rows else pd.Series(1, index=rows.index)
    counts = {str(k): int(v) for k, v in weights.groupby(rows[REASON]).sum().items()}
    path = write_rejected(rows, rejected_dir) if rejected_dir is not None and len(rows) else None
    report = RejectionReport(counts, rows_read, rows_kept, out_of_scope, path, rows)
    if report.rejected:
        log.warning("rejected %d of %d rows: %s", report.rejected, rows_read, counts)
    return report
