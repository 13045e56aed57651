"""Progress of a long command step: a tqdm bar on a terminal, otherwise one line per stage.

Redirected to a file or a CI log, a bar's carriage-return updates are noise; there each stage
gets one line (its start, with what it does, and its end, with its time) and nothing else.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

__all__ = ["StageProgress"]


class StageProgress:
    """Report one stage of work measured in ``unit`` (e.g. test images).

    Call :meth:`update` with ``(done, total)`` as the work goes on (``total`` may be ``None``)
    and :meth:`close` at the end. On a terminal (``stream.isatty()``) with tqdm installed this is
    a tqdm bar; otherwise it writes ``"<name>: <what> …"`` once at the first update and
    ``"<name>: done: <n> <unit> in <s> s"`` at the close.
    """

    def __init__(
        self,
        name: str,
        what: str,
        *,
        unit: str = "it",
        stream: TextIO | None = None,
        bar: bool | None = None,
    ) -> None:
        self.name, self.what, self.unit = name, what, unit
        self.stream = stream if stream is not None else sys.stderr
        if bar is None:
            isatty = getattr(self.stream, "isatty", None)
            bar = bool(isatty is not None and isatty())
        self._use_bar = bar
        self._bar: Any = None
        self._started = False
        self._done = 0
        self._t0 = time.perf_counter()

    def update(self, done: int, total: int | None = None) -> None:
        """``done`` units of ``total`` finished so far."""
        if not self._started:
            self._started = True
            self._t0 = time.perf_counter()
            if self._use_bar:
                try:
                    from tqdm import tqdm
                except ImportError:
                    self._use_bar = False
                else:
                    self._bar = tqdm(
                        total=total, desc=self.name, unit=self.unit, file=self.stream, leave=False
                    )
            if self._bar is None:
                count = f" {total} {self.unit}" if total is not None else ""
                print(f"{self.name}: {self.what}{count} …", file=self.stream, flush=True)
        if self._bar is not None:
            self._bar.update(done - self._done)
        self._done = done

    def close(self) -> None:
        """End the stage: close the bar, or write the closing line."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self._started:
            seconds = time.perf_counter() - self._t0
            print(
                f"{self.name}: done: {self._done} {self.unit} in {seconds:.1f} s",
                file=self.stream,
                flush=True,
            )
        self._started = False

    def __enter__(self) -> StageProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
