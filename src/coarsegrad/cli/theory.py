"""``coarsegrad theory {angles,geometry,landscape}``: measure how good each STE's coarse gradient is.

Each study writes to ``--out`` (default ``results/theory/<study>``): results.json (a list
of flat records), config.json (the resolved study config and the command), env.json
(:func:`coarsegrad.records.environment`), a markdown report and PNG plots made only
from results.json.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

from coarsegrad.errors import ConfigError
from coarsegrad.records import atomic_write_json, atomic_write_text, environment

STUDIES = ("angles", "geometry", "landscape")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("theory", help="exact/Monte Carlo STE diagnostics, geometric condition, landscape maps")
    studies = p.add_subparsers(dest="study", required=True)
    for name, help_text in (("angles", "cos(E[g_μ], ∂f/∂w) over θ, spurious minimum, trajectories"),
                            ("geometry", "track the convex-hull condition during training"),
                            ("landscape", "success-rate maps over units × step size × bits × STE")):
        q = studies.add_parser(name, help=help_text)
        q.add_argument("--quick", action="store_true", help="tiny budgets (smoke test)")
        q.add_argument("--out", default=None, help=f"output folder (default results/theory/{name})")
        q.add_argument("--from-records", action="store_true",
                       help="only remake the tables and plots from OUT/results.json")
        if name in ("angles", "landscape"):
            q.add_argument("--bits", type=int, nargs="+", default=None, help="bit widths")
            q.add_argument("--stes", nargs="+", default=None, help="STE names")
        if name == "angles":
            q.add_argument("--samples", type=int, default=None, help="Monte Carlo samples per point")
        if name in ("geometry", "landscape"):
            q.add_argument("--seeds", type=int, default=None, help="number of seeds (0..N-1)")
            q.add_argument("--steps", type=int, default=None, help="step budget per run")
        if name == "landscape":
            q.add_argument("--workers", type=int, default=None, help="processes (default: cpu count)")
            q.add_argument("--units", type=int, nargs="+", default=None, help="units per class")
            q.add_argument("--lrs", type=float, nargs="+", default=None, help="step sizes")
        q.set_defaults(run=run)


def _overrides(args: argparse.Namespace, names: tuple[str, ...]) -> dict:
    out = {}
    for name in names:
        value = getattr(args, name, None)
        if value is not None:
            out[name] = tuple(value) if isinstance(value, list) else value
    return out


def _clean(value: object) -> object:
    """NaN/inf → None so results.json is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def _command(args: argparse.Namespace, overrides: dict) -> str:
    """The equivalent command line (for the record)."""
    parts = ["coarsegrad", "theory", args.study] + (["--quick"] if args.quick else [])
    if args.out:
        parts += ["--out", str(args.out)]
    for name, value in overrides.items():
        values = value if isinstance(value, tuple) else (value,)
        parts += [f"--{name}", *map(str, values)]
    return " ".join(parts)


def run(args: argparse.Namespace) -> int:
    from coarsegrad.theory import studies

    study = args.study
    if study not in STUDIES:
        raise ConfigError("study", f"must be one of {', '.join(STUDIES)}, got {study!r}")
    out = Path(args.out or f"results/theory/{study}")
    if out.exists() and not out.is_dir():
        raise ConfigError("out", f"{out} exists and is not a folder")
    if args.from_records:
        if not (out / "results.json").is_file():
            raise ConfigError("out", f"{out / 'results.json'} not found")
        _render(study, out, json.loads((out / "results.json").read_text()))
        print(f"{out}: tables and plots remade from results.json")
        return 0
    started = time.perf_counter()
    if study == "angles":
        kw = _overrides(args, ("bits", "stes", "samples"))
        cfg = studies.AnglesConfig.quick(**kw) if args.quick else studies.AnglesConfig(**kw)
        records = studies.run_angles(cfg)
    elif study == "geometry":
        kw = _overrides(args, ("seeds", "steps"))
        cfg = studies.GeometryConfig.quick(**kw) if args.quick else studies.GeometryConfig(**kw)
        records = studies.run_geometry(cfg)
    else:
        kw = _overrides(args, ("bits", "stes", "seeds", "steps", "workers", "units", "lrs"))
        cfg = studies.LandscapeConfig.quick(**kw) if args.quick else studies.LandscapeConfig(**kw)
        records = studies.run_landscape(cfg)
    seconds = time.perf_counter() - started
    records = _clean(records)
    atomic_write_json(out / "results.json", records)
    atomic_write_json(out / "config.json", _clean({"study": study, "quick": args.quick,
                                                    "command": _command(args, kw),
                                                    "seconds": seconds,
                                                    "config": studies.config_dict(cfg)}))
    atomic_write_json(out / "env.json", environment())
    records = json.loads((out / "results.json").read_text())  # reports use only the records
    _render(study, out, records)
    print(f"{out}: {len(records)} records in {seconds:.1f}s")
    return 0


def _render(study: str, out: Path, records: list[dict]) -> None:
    """Markdown tables and PNG plots from the records alone."""
    from coarsegrad.theory import report

    if study == "angles":
        atomic_write_text(out / "angles.md", report.angles_markdown(records))
        report.plot_angles(records, out / "cosine_vs_theta.png")
    elif study == "geometry":
        atomic_write_text(out / "geometry.md", report.geometry_markdown(records))
        report.plot_geometry(records, out / "loss_and_condition.png")
    else:
        atomic_write_text(out / "landscape.md", report.landscape_markdown(records))
        report.plot_landscape(records, out / "success_rate.png")
