"""A tiny progress bar (no dependency): ``bar = ProgressBar(total); bar.update(logs); bar.close()``.

On a terminal it redraws one line in place; elsewhere (a log file, a test's captured output)
it prints a line at every tenth of the way, so logs stay short.
"""

from __future__ import annotations

import sys
import time


def _format(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


class ProgressBar:
    """``[#####.....] 50/100 12.3 it/s loss 0.1234 accuracy 0.9000``"""

    def __init__(self, total: int, desc: str = "", width: int = 24, file=None, enabled: bool = True):
        self.total, self.desc, self.width = max(int(total), 1), desc, width
        self.file = sys.stderr if file is None else file
        self.enabled = enabled
        self.interactive = enabled and hasattr(self.file, "isatty") and self.file.isatty()
        self.count = 0
        self.start = time.perf_counter()
        self._last_draw = 0.0
        self._last_tenth = -1
        self._drawn = 0  # length of the line on screen, so a shorter redraw can blank the rest
        self.logs: dict = {}

    def line(self) -> str:
        done = int(self.width * self.count / self.total)
        elapsed = time.perf_counter() - self.start
        rate = self.count / elapsed if elapsed > 0 else 0.0
        metrics = " ".join(f"{k} {_format(v)}" for k, v in self.logs.items())
        head = f"{self.desc} " if self.desc else ""
        return (f"{head}[{'#' * done}{'.' * (self.width - done)}] {self.count}/{self.total} "
                f"{elapsed:5.1f}s {rate:6.1f} it/s {metrics}").rstrip()

    def update(self, logs: dict | None = None, n: int = 1) -> None:
        self.count += n
        if logs:
            self.logs = dict(logs)
        if not self.enabled:
            return
        if self.interactive:
            now = time.perf_counter()
            if now - self._last_draw > 0.1 or self.count >= self.total:
                self._last_draw = now
                text = self.line()
                print("\r" + text.ljust(self._drawn), end="", file=self.file, flush=True)
                self._drawn = len(text)
        else:
            tenth = 10 * self.count // self.total
            if tenth != self._last_tenth:
                self._last_tenth = tenth
                print(self.line(), file=self.file, flush=True)

    def close(self) -> None:
        if self.enabled and self.interactive:
            print(file=self.file, flush=True)
