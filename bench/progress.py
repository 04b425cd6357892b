"""A progress bar: tqdm when installed, else one rewritten stderr line."""

from __future__ import annotations

import sys
import time
from typing import Any


class Progress:
    """`step(label)` advances by one; `close()` ends the line."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.start = total, 0, time.monotonic()
        self._bar: Any = None
        try:
            from tqdm import tqdm

            self._bar = tqdm(total=total, unit="step", file=sys.stderr, dynamic_ncols=True)
        except ImportError:
            pass

    def describe(self, label: str) -> None:
        """Show what is running now (before it starts, so a slow phase is named)."""
        if self._bar is not None:
            self._bar.set_description_str(label)
        else:
            elapsed = time.monotonic() - self.start
            sys.stderr.write(f"\r[{self.done}/{self.total}] {elapsed:5.0f}s {label:<48}")
            sys.stderr.flush()

    def step(self) -> None:
        self.done += 1
        if self._bar is not None:
            self._bar.update(1)

    def write(self, message: str) -> None:
        """A message that must not be overwritten by the bar."""
        if self._bar is not None:
            self._bar.write(message, file=sys.stderr)
        else:
            sys.stderr.write("\r" + message + "\n")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        else:
            sys.stderr.write("\n")
