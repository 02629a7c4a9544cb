"""Run one ``coarsegrad theory`` study into a folder, and remake its report from the records.

A study folder holds results.json (a list of flat records), config.json (the resolved
config, the command, the wall time), env.json (:func:`coarsegrad.io.records.environment`),
a markdown report and PNG plots made only from results.json. Used by the CLI
(:mod:`coarsegrad.cli.theory`) and by ``coarsegrad reproduce --full``.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Callable

from coarsegrad.errors import ConfigError
from coarsegrad.io.records import atomic_write_json, atomic_write_text, environment

STUDIES = ("angles", "geometry", "landscape", "repelled")
REPORTS = {"angles": "angles.md", "geometry": "geometry.md", "landscape": "landscape.md",
           "repelled": "repelled.md"}


def _config_class(study: str) -> type:
    from coarsegrad.theory import repelled, studies

    classes = {"angles": studies.AnglesConfig, "geometry": studies.GeometryConfig,
               "landscape": studies.LandscapeConfig, "repelled": repelled.RepelledConfig}
    if study not in classes:
        raise ConfigError("study", f"must be one of {', '.join(STUDIES)}, got {study!r}")
    return classes[study]


def make_config(study: str, quick: bool = False, **overrides: object) -> object:
    """The study's config: its ``quick()`` preset or its defaults, with ``overrides`` (validated)."""
    cls: Any = _config_class(study)
    return cls.quick(**overrides) if quick else cls(**overrides)


def run_config(study: str, cfg: object, progress: bool = False) -> list[dict]:
    """The records of ``study`` under ``cfg`` (no files written)."""
    from coarsegrad.theory import repelled, studies

    _config_class(study)
    if study == "angles":
        return studies.run_angles(cfg)  # type: ignore[arg-type]
    if study == "geometry":
        return studies.run_geometry(cfg)  # type: ignore[arg-type]
    if study == "landscape":
        return studies.run_landscape(cfg)  # type: ignore[arg-type]
    return repelled.run_repelled(cfg, progress=progress)  # type: ignore[arg-type]


def clean(value: object) -> object:
    """NaN/inf → None so results.json is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    return value


def run_study(study: str, cfg: object, out: str | Path, command: str, quick: bool = False,
              progress: bool = False) -> list[dict]:
    """Run ``study`` under ``cfg``; write the folder ``out`` (module docstring); return the records."""
    from dataclasses import asdict

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError("out", f"{out} exists and is not a folder")
    started = time.perf_counter()
    records = clean(run_config(study, cfg, progress))
    seconds = time.perf_counter() - started
    atomic_write_json(out / "results.json", records)
    atomic_write_json(out / "config.json", clean({"study": study, "quick": quick, "command": command,
                                                  "seconds": seconds, "config": asdict(cfg)}))  # type: ignore[call-overload]
    atomic_write_json(out / "env.json", environment())
    records = json.loads((out / "results.json").read_text())  # reports use only the records
    render(study, out, records)
    return records


def load_records(out: str | Path) -> list[dict]:
    """OUT/results.json (:class:`ConfigError` naming ``out`` if missing)."""
    path = Path(out) / "results.json"
    if not path.is_file():
        raise ConfigError("out", f"{path} not found")
    return json.loads(path.read_text())


def render(study: str, out: Path, records: list[dict]) -> None:
    """Markdown tables and PNG plots from the records alone."""
    from coarsegrad.theory import repelled_report, report

    renderers: dict[str, tuple[Callable[..., str], list[tuple[Callable[..., Any], str]]]] = {  # (markdown, [(plot, file)])
        "angles": (report.angles_markdown, [(report.plot_angles, "cosine_vs_theta.png")]),
        "geometry": (report.geometry_markdown, [(report.plot_geometry, "loss_and_condition.png")]),
        "landscape": (report.landscape_markdown, [(report.plot_landscape, "success_rate.png")]),
        "repelled": (repelled_report.repelled_markdown, [(repelled_report.plot_repelled, "curves.png"),
                                                         (repelled_report.plot_grad_norms, "grad_norm_start.png")]),
    }
    if study not in renderers:
        raise ConfigError("study", f"must be one of {', '.join(STUDIES)}, got {study!r}")
    out = Path(out)
    markdown, plots = renderers[study]
    atomic_write_text(out / REPORTS[study], markdown(records))
    for plot, name in plots:
        plot(records, out / name)
