"""Progress lines in a job's log: records done and records/s, every few
seconds while a pass runs and once when it ends. Plain lines, not a tqdm bar,
so a log file (or a cluster's job output) keeps every line readable; on
stdout, with the command's other news, so stderr stays for the one-line error."""

from __future__ import annotations

import sys
import time

PROGRESS_EVERY = 5.0  # seconds between progress lines


class Progress:
    """Call `add(n)` as records are done and `done()` at the end."""

    def __init__(self, label: str, every: float | None = None):
        self.label, self.count, self.check_at = label, 0, 0
        self.every = PROGRESS_EVERY if every is None else every
        self.start = self.last = time.monotonic()

    def add(self, records: int = 1) -> None:
        self.count += records
        if self.count < self.check_at:  # the clock is read every 1024 records
            return
        self.check_at = self.count + 1024
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self._log(now, "")

    def done(self) -> None:
        self._log(time.monotonic(), ", done")

    def _log(self, now: float, tail: str) -> None:
        took = now - self.start
        print(f"{self.label}: {self.count:,} records in {took:.1f} s "
              f"({self.count / max(took, 1e-9):,.0f} records/s){tail}", file=sys.stdout, flush=True)
