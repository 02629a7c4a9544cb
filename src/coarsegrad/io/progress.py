"""A progress bar on stderr: a thin face over ``tqdm`` (rate and ETA, redrawn in place,
silent when the stream is not a terminal) with the small interface the callers use."""

from __future__ import annotations

from typing import TextIO

from tqdm import tqdm


class Progress:
    """``Progress(total, desc, enabled)``; ``update(n, **fields)`` adds ``n`` and shows
    ``fields`` after the bar; ``close()`` at the end; ``count`` is the number done (≤ total)."""

    def __init__(self, total: int, desc: str = "", stream: TextIO | None = None,
                 enabled: bool = True, interval: float = 0.1) -> None:
        self.total, self.desc, self.count = max(int(total), 1), desc, 0
        # disable=None: tqdm draws only on a terminal, so logs and pipes stay clean
        self.bar = tqdm(total=self.total, desc=desc or None, file=stream, mininterval=interval,
                        disable=None if enabled else True, dynamic_ncols=True)

    def update(self, n: int = 1, **fields: object) -> None:
        step = min(self.count + int(n), self.total) - self.count
        self.count += step
        if fields:
            self.bar.set_postfix({k: f"{v:.4g}" if isinstance(v, float) else v for k, v in fields.items()},
                                 refresh=step == 0)
        self.bar.update(step)

    def close(self) -> None:
        self.bar.close()
