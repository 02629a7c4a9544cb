"""Matplotlib for the PNG plots next to run records: the headless Agg backend, imported
lazily (matplotlib is an optional extra), and PNGs written atomically like every record."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from coarsegrad.io.records import atomic_write_bytes


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig: Any, path: Path, *, bbox_inches: str | None = None) -> None:
    """Write ``fig`` to ``path`` as a 110-dpi PNG atomically (see
    :func:`~coarsegrad.io.records.atomic_write_bytes`), then close it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches=bbox_inches)
    pyplot().close(fig)
    atomic_write_bytes(path, buf.getvalue())
