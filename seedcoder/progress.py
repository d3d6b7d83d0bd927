"""Progress of a long phase on stderr: a tqdm bar on a terminal, and in a log one line now and then.

    with progress(len(texts), "scorer", unit="file") as bar:
        for batch in batches:
            ...
            bar.update(len(batch))

On a terminal this is tqdm (as everywhere in the project), in the main process only: the bars of several pool
workers would overwrite each other's line. Elsewhere (`make demo | tee demo.log`, CI, a job
log) a bar's carriage returns make an unreadable log, so `LogProgress` prints whole lines instead, at most one
every `interval_s` seconds (default LOG_INTERVAL_S, read at each call): done / total, percent, elapsed and
estimated remaining seconds. A phase that ends within the interval prints nothing. `enabled=False` shows nothing.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

LOG_INTERVAL_S = 10.0


class LogProgress:
    """tqdm's update / write / close / context manager, printing a line at most every `interval_s` seconds."""

    def __init__(self, total: int | None, description: str, *, unit: str = "item", interval_s: float | None = None,
                 file: TextIO | None = None, clock=time.monotonic):
        self.total, self.description, self.unit = total, description, unit
        self.interval_s = LOG_INTERVAL_S if interval_s is None else interval_s
        self.file = file if file is not None else sys.stderr
        self.clock = clock
        self.n = 0
        self.started = self.last_line = clock()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = self.clock()
        if now - self.last_line >= self.interval_s:
            self.last_line = now
            self.write(self.line(now))

    def line(self, now: float) -> str:
        elapsed = now - self.started
        if not self.total:
            return f"{self.description}: {self.n:,} {self.unit}s in {elapsed:.0f} s"
        text = f"{self.description}: {self.n:,}/{self.total:,} {self.unit}s ({100 * self.n / self.total:.0f}%) " \
               f"in {elapsed:.0f} s"
        if 0 < self.n < self.total:
            text += f", about {elapsed * (self.total - self.n) / self.n:.0f} s left"
        return text

    def write(self, message: str) -> None:
        print(message, file=self.file, flush=True)

    def close(self) -> None:
        pass

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def progress(total: int | None, description: str, *, unit: str = "item", enabled: bool = True,
             interval_s: float | None = None):
    """A tqdm bar on a terminal (stderr) in the main process, a LogProgress elsewhere, a silent tqdm when not
    `enabled`."""
    import multiprocessing

    from tqdm import tqdm

    if not enabled:
        return tqdm(total=total, disable=True)
    if sys.stderr.isatty() and multiprocessing.parent_process() is None:
        return tqdm(total=total, desc=description, unit=unit, leave=False, dynamic_ncols=True)
    return LogProgress(total, description, unit=unit, interval_s=interval_s)


__all__ = ["LOG_INTERVAL_S", "LogProgress", "progress"]
