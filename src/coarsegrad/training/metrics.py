"""Where a run's logged metrics go: ``metrics.jsonl`` in batches, optionally TensorBoard.

:class:`MetricsFile` keeps lines in memory and appends them with one ``write`` of whole
lines followed by ``fsync``: at :meth:`~MetricsFile.flush` (checkpoints, the end of a
run, an interrupt) and at the first record after ``interval`` seconds. A crash loses
at most the last ``interval`` seconds of lines, never part of a line already flushed;
an OS-level cut inside the final write leaves at most one partial last line, which
:func:`coarsegrad.training.state.truncate_metrics` drops on resume.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from coarsegrad.errors import ConfigError


class MetricsFile:
    """Buffered JSON-lines appender (see the module docstring)."""

    def __init__(self, path: str | Path, interval: float = 5.0) -> None:
        self.path = Path(path)
        self.interval = interval
        self._lines: list[str] = []
        self._last = time.monotonic()

    def append(self, record: dict[str, Any]) -> None:
        self._lines.append(json.dumps(record, sort_keys=True) + "\n")
        if time.monotonic() - self._last >= self.interval:
            self.flush()

    def flush(self) -> None:
        """Append the buffered lines in one write and fsync."""
        self._last = time.monotonic()
        if not self._lines:
            return
        text, self._lines = "".join(self._lines), []
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())


class TensorBoardLog:
    """Scalars ``train/loss``, ``train/acc``, ``train/lr`` per logged step and the final
    ``final/*`` values, in ``folder`` (needs the ``tensorboard`` extra)."""

    def __init__(self, folder: str | Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError("tensorboard", "needs the tensorboard package: "
                              "pip install 'coarsegrad[tensorboard]'") from None
        self._writer = SummaryWriter(log_dir=str(folder))

    def log(self, record: dict[str, Any]) -> None:
        step = int(record["step"])
        self._writer.add_scalar("train/loss", record["loss"], step)
        self._writer.add_scalar("train/acc", record["train_acc"], step)
        if "lr" in record:
            self._writer.add_scalar("train/lr", record["lr"], step)

    def final(self, summary: dict[str, Any]) -> None:
        step = int(summary.get("steps") or 0)
        for key in ("final_loss", "train_acc", "test_loss", "test_acc"):
            if isinstance(summary.get(key), float):
                self._writer.add_scalar(f"final/{key}", summary[key], step)

    def close(self) -> None:
        self._writer.flush()
        self._writer.close()
