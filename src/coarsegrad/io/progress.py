"""A minimal progress bar on stderr (no dependency): redraws in place on a terminal,
prints a line every few seconds otherwise (CI logs)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """``Progress(total, desc)``; call ``update(n, **fields)``; ``close()`` at the end."""

    def __init__(self, total: int, desc: str = "", stream: TextIO | None = None,
                 enabled: bool = True, interval: float = 5.0) -> None:
        self.total, self.desc, self.count = max(int(total), 1), desc, 0
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = 0.1 if self.tty else interval
        self.started = self.last = time.perf_counter()
        self.fields: dict[str, object] = {}
        self.drawn_at = -1

    def update(self, n: int = 1, **fields: object) -> None:
        self.count = min(self.count + n, self.total)
        self.fields.update(fields)
        now = time.perf_counter()
        if now - self.last >= self.interval or self.count == self.total:
            self.last = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        if not self.enabled or self.drawn_at == self.count:
            return
        self.drawn_at = self.count
        frac = self.count / self.total
        bar = "#" * int(24 * frac) + "-" * (24 - int(24 * frac))
        elapsed = now - self.started
        eta = elapsed / frac - elapsed if frac > 0 else 0.0
        extra = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                         for k, v in self.fields.items())
        line = f"{self.desc} [{bar}] {self.count}/{self.total} {elapsed:.0f}s<{eta:.0f}s {extra}"
        self.stream.write(("\r" + line + "\033[K") if self.tty else line + "\n")
        self.stream.flush()

    def close(self) -> None:
        self._draw(time.perf_counter())
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()
