"""Typed result records, written and read through one place.

- :class:`RunSummary`: a run directory's ``summary.json`` (written by ``training/run.py``);
- :class:`TrialRecord` (with :class:`TrialMetrics`): one line of a sweep's ``trials.jsonl``;
- :class:`EpochBenchRecord`, :class:`InferenceBenchRecord`: ``coarsegrad bench --json`` records;
- :class:`SyntheticTrialRow`, :class:`MnistTrialRow` (:class:`FullQuantRow`), :class:`SyntheticTableRow`: the rows of
  ``coarsegrad reproduce``'s ``results.json`` (a JSON list; :func:`write_rows`, :func:`read_rows`).

Every record carries ``schema_version``. JSON keys are the field names, as in the records
written before the field existed; a record without ``schema_version`` is read as version 1
(the committed records), any other unknown version, a missing or unknown key or a wrong type is a
:class:`DataError` naming the file (or ``record``) and the field. The ``config.model`` table of
a :class:`TrialRecord` or a trial row written before the ``rounding`` field existed reads with
``rounding = "ceil"``, what those runs used (:func:`coarsegrad.config.saved_model_fields`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, TypeVar

from coarsegrad.config import saved_model_fields
from coarsegrad.errors import DataError
from coarsegrad.io.records import atomic_write_json

SCHEMA_VERSION = 1
R = TypeVar("R", bound="_Record")


def _fits(value: object, kind: Any) -> bool:
    """``value`` (parsed JSON) fits the annotation ``kind`` (int, float, str, bool, dict, list, X | None)."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, k) for k in typing.get_args(kind))
    if kind is type(None):
        return value is None
    if kind is float:
        return type(value) in (int, float)
    if kind is int:
        return type(value) is int
    if kind is bool:
        return type(value) is bool
    if kind is Any:
        return True
    base = origin or kind
    return isinstance(value, base) and not isinstance(value, bool)


@dataclass
class _Record:
    """Base: ``to_dict``/``from_dict`` with schema checks (subclasses are plain dataclasses)."""

    _model_config = False  # True: ``config`` is a run config whose ``model`` table may predate ``rounding``

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls: type[R], raw: object, source: str = "record") -> R:
        if not isinstance(raw, dict):
            raise DataError(source, f"{cls.__name__} must be a JSON object, got {type(raw).__name__}")
        hints = typing.get_type_hints(cls)
        if "schema_version" in hints:  # records from before the field are version 1
            raw = {"schema_version": 1, **raw}
        if raw.get("schema_version", SCHEMA_VERSION) != SCHEMA_VERSION:
            raise DataError(source, f"{cls.__name__} schema_version {raw['schema_version']!r} is not {SCHEMA_VERSION} "
                            "(written by another coarsegrad version)")
        unknown = sorted(set(raw) - set(hints))
        if unknown:
            raise DataError(source, f"{cls.__name__} has unknown fields {unknown}")
        values = {}
        for f in dataclasses.fields(cls):
            if f.name not in raw:
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    raise DataError(source, f"{cls.__name__} field {f.name!r} is missing")
                continue
            value = raw[f.name]
            nested = hints[f.name]
            record_type = next((k for k in (nested, *typing.get_args(nested))
                                if isinstance(k, type) and issubclass(k, _Record)), None)
            if record_type is not None and isinstance(value, dict):
                value = record_type.from_dict(value, source)
            elif not _fits(value, nested):
                raise DataError(source, f"{cls.__name__} field {f.name!r} has {value!r}, not {nested}")
            values[f.name] = value
        config = values.get("config")
        if cls._model_config and isinstance(config, dict) and isinstance(config.get("model"), dict):
            values["config"] = {**config, "model": saved_model_fields(config["model"])}  # no rounding: ceil
        return cls(**values)


@dataclass
class RunSummary(_Record):
    """``summary.json`` of a run: the final model's metrics (``test_*`` None without a test split)."""

    steps: int
    data: dict[str, Any]
    status: str = "completed"  # completed | interrupted | diverged
    final_loss: float | None = None  # None: diverged
    train_acc: float | None = None
    perfect_step: int | None = None
    seconds: float | None = None
    test_loss: float | None = None
    test_acc: float | None = None
    resumed_from_step: int | None = None
    diverged_step: int | None = None
    diverged_parameter: str | None = None
    schema_version: int = SCHEMA_VERSION


@dataclass
class TrialMetrics(_Record):
    """What a sweep keeps of a trial's run (None where the run diverged)."""

    steps: int | None = None
    final_loss: float | None = None
    train_acc: float | None = None
    perfect: bool = False
    perfect_step: int | None = None
    test_loss: float | None = None
    test_acc: float | None = None
    train_seconds: float | None = None
    diverged_step: int | None = None

    def to_dict(self) -> dict[str, Any]:  # non-finite floats are not JSON: stored as None
        return {k: None if isinstance(v, float) and not math.isfinite(v) else v
                for k, v in dataclasses.asdict(self).items()}


@dataclass
class TrialRecord(_Record):
    """One line of ``trials.jsonl`` (see :mod:`coarsegrad.sweep.trial`)."""

    _model_config = True

    id: str
    params: dict[str, Any]
    seed: int
    config: dict[str, Any]
    run: str
    status: str = "failed"  # ok | failed
    error: str | None = None
    metrics: TrialMetrics | None = None
    seconds: float = 0.0
    host: str | None = None
    pid: int | None = None
    attempts: int = 1
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["metrics"] = None if self.metrics is None else self.metrics.to_dict()
        return out


@dataclass
class EpochBenchRecord(_Record):
    """``coarsegrad bench --json``: epoch timings per hidden width, goals, machine and load."""

    command: str
    machine: dict[str, Any]
    config: dict[str, Any]
    data: str
    threads: int
    results: list[Any]
    goals: list[Any]
    sgemm_gflops: float
    sgemm_gflops_after: float
    loadavg_after: list[float] | None
    dataset_copy_s: float | None = None
    synthetic: dict[str, Any] | None = None  # the synthetic full-batch step against a plain loop
    conv: dict[str, Any] | None = None  # bench --weights --conv: LeNet-5 against float and Brevitas
    schema_version: int = SCHEMA_VERSION


@dataclass
class SyntheticBenchRecord(_Record):
    """``coarsegrad bench --synthetic-only --json``: the synthetic full-batch step against a plain loop."""

    command: str
    machine: dict[str, Any]
    synthetic: dict[str, Any]
    loadavg_after: list[float] | None
    schema_version: int = SCHEMA_VERSION


@dataclass
class InferenceBenchRecord(_Record):
    """``coarsegrad bench --inference RUN_DIR… --json``: samples/s per variant for each run."""

    machine: dict[str, Any]
    threads: int
    runs: list[Any]
    schema_version: int = SCHEMA_VERSION


def write_record(path: str | Path, record: _Record) -> None:
    """Atomically write ``record`` as indented JSON."""
    atomic_write_json(Path(path), record.to_dict())


def read_record(path: str | Path, cls: type[R]) -> R:
    """The ``cls`` record in the JSON file ``path``; DataError naming the file if it is not one."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise DataError(str(path), f"cannot read a {cls.__name__} ({type(exc).__name__})") from None
    return cls.from_dict(raw, str(path))


@dataclass
class _TrialRow(_Record):
    """The fields every reproduce row starts with: which experiment, data, network and seed."""

    _model_config = True

    experiment: str
    dataset: str
    model: str
    ste: str
    bits: int | None
    seed: int
    alpha: float | None


@dataclass
class SyntheticTrialRow(_TrialRow):
    """One seed of the ``synthetic`` experiment (:func:`coarsegrad.experiments.synthetic.synthetic_trial`);
    ``bits`` None: the float baseline; a diverged run has ``final_loss`` NaN and ``curve`` None."""

    units_per_class: int
    lr: float
    train_acc: float | None  # None: training was interrupted
    test_acc: float | None
    final_loss: float | None
    perfect: bool
    perfect_step: int | None
    diverged_step: int | None
    epochs: int
    steps: int
    seconds: float
    device: str
    curve: dict[str, Any] | None
    config: dict[str, Any]
    schema_version: int = SCHEMA_VERSION


@dataclass
class MnistTrialRow(_TrialRow):
    """One seed of ``mnist_two_layer``, ``lenet5`` or ``lenet5_float`` (``fashion_mnist_*`` on
    Fashion-MNIST) or of the ``lenet5_ordering_*`` study
    (:func:`coarsegrad.experiments.mnist.mnist_trial`); ``bits`` None: a float network."""

    train_acc: float
    test_acc: float
    final_loss: float
    test_loss: float
    epochs: float
    steps: int
    seconds: float
    device: str
    diverged_step: int | None
    train_subset: int | None
    init_from: str | None
    curve: dict[str, Any]
    config: dict[str, Any]
    schema_version: int = SCHEMA_VERSION


@dataclass
class FullQuantRow(MnistTrialRow):
    """One seed of ``full_quant`` (:mod:`coarsegrad.experiments.full_quant`): an
    :class:`MnistTrialRow` with the weights' spec (``WeightQuant.to_dict()``, None: float
    weights), the activation's ``act_step`` (fixed, lsq), the grid's weight ``method`` (None:
    float weights) and ``step`` (fixed, learned), and the saved final model (``model_file``)."""

    weight_quant: dict[str, Any] | None = None
    act_step: str = "fixed"
    method: str | None = None
    step: str = "fixed"
    model_file: str | None = None


@dataclass
class SyntheticTableRow(_Record):
    """One run of ``synthetic_table`` or ``synthetic_units`` (:mod:`coarsegrad.experiments.synthetic_table`)."""

    experiment: str
    dataset: str
    data: str
    model: str
    rounding: str
    ste: str
    bits: int
    seed: int
    alpha: float
    alpha_rule: str
    units_per_class: int
    lr: float
    max_steps: int
    perfect: bool
    perfect_step: int | None
    train_acc: float
    final_loss: float
    steps: int
    diverged_step: int | None
    batch_seconds: float
    batch_runs: int
    device: str
    schema_version: int = SCHEMA_VERSION


ROW_TYPES: dict[str, type[_Record]] = {
    "synthetic": SyntheticTrialRow, "mnist_two_layer": MnistTrialRow, "lenet5": MnistTrialRow,
    "lenet5_float": MnistTrialRow, "synthetic_table": SyntheticTableRow, "synthetic_units": SyntheticTableRow,
    "fashion_mnist_two_layer": MnistTrialRow, "fashion_mnist_lenet5": MnistTrialRow,
    "fashion_mnist_lenet5_float": MnistTrialRow, "lenet5_ordering_scratch": MnistTrialRow,
    "lenet5_ordering_from_float": MnistTrialRow, "lenet5_ordering_float": MnistTrialRow, "full_quant": FullQuantRow}


def row_from_dict(raw: object, source: str = "row", cls: type[_Record] | None = None) -> _Record:
    """A ``results.json`` row as ``cls`` (default: the row type of its ``experiment``, :data:`ROW_TYPES`)."""
    if cls is None:
        experiment = raw.get("experiment") if isinstance(raw, dict) else None
        if experiment not in ROW_TYPES:
            raise DataError(source, f"row has unknown experiment {experiment!r}; known: {', '.join(ROW_TYPES)}")
        cls = ROW_TYPES[experiment]
    return cls.from_dict(raw, source)


def write_rows(path: str | Path, rows: Iterable[_Record | dict[str, Any]]) -> None:
    """Atomically write ``rows`` as a JSON list; a dict row is checked as its :data:`ROW_TYPES` record first."""
    out = [(row if isinstance(row, _Record) else row_from_dict(row, f"{path} row {i}")).to_dict()
           for i, row in enumerate(rows)]
    atomic_write_json(Path(path), out)


def read_rows(path: str | Path, cls: type[_Record] | None = None) -> list[Any]:
    """The rows of the ``results.json`` list ``path``, each as ``cls`` (default: by its ``experiment``);
    DataError naming the file (and row) if it is not one."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise DataError(str(path), f"cannot read result rows ({type(exc).__name__})") from None
    if not isinstance(raw, list):
        raise DataError(str(path), f"result rows must be a JSON list, got {type(raw).__name__}")
    return [row_from_dict(row, f"{path} row {i}", cls) for i, row in enumerate(raw)]


__all__ = ["ROW_TYPES", "SCHEMA_VERSION", "EpochBenchRecord", "FullQuantRow", "InferenceBenchRecord", "MnistTrialRow",
           "RunSummary", "SyntheticBenchRecord", "SyntheticTableRow", "SyntheticTrialRow", "TrialMetrics", "TrialRecord",
           "read_record", "read_rows", "row_from_dict", "write_record", "write_rows"]
