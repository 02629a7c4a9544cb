"""Load a ``coarsegrad train`` run directory back into Python.

    model, config = cg.load_run("runs/mnist-lenet5")   # eval mode, resolved run config

A run directory holds ``model.safetensors`` (weights, with the resolved config in its
metadata) and ``config.json`` (the same config). The model is rebuilt by
:func:`~coarsegrad.io.checkpoint.load_checkpoint` (every check of a checkpoint applies:
sizes validated against the tensors before building, names/shapes/dtypes exact), for
any of ``two_layer``, ``mlp`` and ``lenet5``; the two configs must agree. A run written
before the ``rounding`` field existed is ceil: the returned config says so.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from coarsegrad.config import saved_model_fields
from coarsegrad.errors import DataError
from coarsegrad.io.checkpoint import load_checkpoint


def load_run(run_dir: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """(model in eval mode, resolved run config) of a run directory; DataError if
    either file is missing or unusable, or they disagree."""
    run_dir = Path(run_dir)
    model_file, config_file = run_dir / "model.safetensors", run_dir / "config.json"
    for f in (model_file, config_file):
        if not f.is_file():
            raise DataError(str(run_dir), f"is not a finished run directory: {f.name} is missing")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeError, ValueError, RecursionError) as exc:
        raise DataError(str(config_file), f"unreadable run config ({exc})") from None
    model, header = load_checkpoint(model_file)
    if header.get("run_config") != config:
        raise DataError(str(run_dir), "config.json differs from the config saved with model.safetensors")
    return model, {**config, "model": saved_model_fields(config["model"])}
