"""Fully quantized networks (issue 14, item 6): weights × activations × weight method × step.

A setting is (model, weights, method, step, act): ``weights`` 1 = binary α·sign(w),
2 = ternary (TWN, stored in 2 bits), 4 = uniform 4-bit s·clip(round(w/s), −7, 7), None =
float weights; per-``channel`` scales. ``act`` is the activation's bits (2 or 4; None: the
float network, plain ReLU and float weights). Activations: clipped_relu STE, nearest
rounding. ``method`` (:mod:`coarsegrad.training.weight_methods`): ``ste`` (BinaryConnect,
latent w clipped to [−1, 1]), ``bcgd`` (ρ = :data:`BCGD_RHO`), ``binaryrelax`` (λ₀ = 1,
growth 1.001 per step, hard from :data:`HARD_AFTER` of the run on). ``step``:

* ``fixed`` — the paper's α* for the activations, the weights' statistics for their scale;
* ``learned`` — LSQ for both: ``ActQuant(learn="lsq")`` and uniform weights with a learned
  step (``WeightQuant(kind="uniform", bits=b, step="lsq")``, method ste); "2" bits is then
  uniform 2-bit (codes −1/0/1 with a learned step), and 1 bit has no learned row (LSQ on
  binary weights is not defined here).

Choices for these short runs (hundreds to ~1,400 steps): the BCGD paper's ρ = 1e-5 is used
over ~10⁵ steps, a total blend ρ·T of order 1; here ρ = 1e-3 gives ρ·T ≈ 0.5 (LeNet-5, one
epoch) to 1.4 (MLP, three epochs), where 1e-5 would leave BCGD an unclipped straight-through
run. BinaryRelax with ``hard_after=None`` stays relaxed to the end, so the trained model's
forward would not use quantized weights; from half the run on it does.

:func:`settings` is the grid of a plan (:data:`PLANS`, per mode); :func:`trials` the
``(function, kwargs)`` pairs ``coarsegrad reproduce --only full-quant`` runs, one
:class:`~coarsegrad.io.results.FullQuantRow` each, the final model saved as a checkpoint
under ``OUT/models/`` (:func:`model_path`) for the deployment measurements;
:func:`grid_markdown` the table per (model, dataset).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from coarsegrad.config import ModelConfig, load_preset
from coarsegrad.errors import ConfigError
from coarsegrad.experiments.mnist import mnist_trial
from coarsegrad.experiments.report import mean_std
from coarsegrad.io import tensorfile
from coarsegrad.io.checkpoint import load_checkpoint
from coarsegrad.io.checkpoint_header import LENET_IN, SIZE_TENSORS
from coarsegrad.io.results import FullQuantRow
from coarsegrad.models.build import build_model

EXPERIMENT = "full_quant"
MODELS = ("mlp", "lenet5")
TITLES = {"mlp": "MLP 784-128-10", "lenet5": "LeNet-5"}
METHODS = ("ste", "bcgd", "binaryrelax")
ACT_BITS = (2, 4)
STE = "clipped_relu"
BCGD_RHO = 1e-3
HARD_AFTER = 0.5
WEIGHT_NAMES = {1: "1 bit (binary)", 2: "2 bits (ternary)", 4: "4 bits (uniform)", None: "float"}
LEARNED_WEIGHT_NAMES = {2: "2 bits (uniform)", 4: "4 bits (uniform)", None: "float"}

LENET_TRAIN = {"optimizer": "momentum", "lr": 0.05, "momentum": 0.9, "batch_size": 128, "epochs": 1,
               "schedule": "cosine", "weight_decay": 5e-4}


def mlp_train() -> dict[str, Any]:
    """The MLP's training: the ``images`` preset (momentum lr 0.1, cosine, batch 128, 3 epochs)."""
    train = load_preset("images")["train"]
    train.pop("log_every", None)  # mnist_trial logs once per epoch
    return train


# quick: one seed, the MLP on 6,000 training images for one epoch, act 2 bits, fixed rows and
# the learned activation on float weights (seconds per trial); full: the grid of the module docstring,
# LeNet-5 on a 20,000-image training subset (one epoch of the full set is ~40 s per trial on one
# core of the 2-core machine, ~2 h per dataset for the 51 trials; the subset is a third of that).
PLANS: dict[str, dict[str, Any]] = {
    "quick": {"seeds": 1, "subset": {"mlp": 6000}, "models": ("mlp",), "grid": "quick",
              "train": {"mlp": {**mlp_train(), "epochs": 1}}},
    "full": {"seeds": 3, "subset": {"mlp": None, "lenet5": 20000}, "models": MODELS, "grid": "full",
             "train": {"mlp": mlp_train(), "lenet5": LENET_TRAIN}},
}


@dataclass(frozen=True)
class Setting:
    """One cell of the grid (module docstring): ``weights`` bits or None (float weights),
    ``method`` None for float weights, ``act`` bits or None (the float network)."""

    model: str
    weights: int | None
    method: str | None
    step: str
    act: int | None

    @property
    def name(self) -> str:
        """A file-name-safe label, e.g. ``mlp-w2-bcgd-a4-fixed``, ``lenet5-float``."""
        if self.act is None:
            return f"{self.model}-float"
        w = "wf" if self.weights is None else f"w{self.weights}-{self.method}"
        return f"{self.model}-{w}-a{self.act}-{self.step}"

    def model_fields(self) -> dict[str, Any]:
        """The :class:`ModelConfig` fields besides ``ste`` and ``bits`` (which ``mnist_trial`` takes)."""
        fields: dict[str, Any] = {"model": self.model, "rounding": "nearest"}
        if self.act is not None and self.step == "learned":
            fields["act_step"] = "lsq"
        if self.weights is None:
            return fields
        fields["weight_granularity"] = "channel"
        if self.step == "learned":
            return {**fields, "weight_kind": "uniform", "weight_bits": self.weights, "weight_method": "ste",
                    "weight_step": "lsq"}
        kind = {1: "binary", 2: "ternary"}.get(self.weights, "uniform")
        fields.update(weight_kind=kind, weight_bits=self.weights, weight_method=self.method)
        if self.method == "bcgd":
            fields["weight_rho"] = BCGD_RHO
        if self.method == "binaryrelax":
            fields["weight_hard_after"] = HARD_AFTER
        return fields


def settings(model: str, grid: str = "full") -> list[Setting]:
    """The settings of ``model`` (module docstring). ``full``: MLP 27 = weights {1,2,4} × act
    {2,4} × 3 methods (fixed) + learned weights {2,4} × act {2,4} + float weights × act {2,4} ×
    {fixed, learned} + the float network; LeNet-5 17 = weights {1,2,4} × 3 methods at act 2 +
    act 4 ste {1,2,4} + learned act 2 weights {2,4} + float weights act {2,4} fixed + float.
    ``quick``: act 2, weights {1,2,4} × 3 methods fixed + float weights fixed and learned + float."""
    fixed = [Setting(model, w, m, "fixed", a) for a in ACT_BITS for w in (1, 2, 4) for m in METHODS]
    if grid == "quick":
        return ([s for s in fixed if s.act == 2]
                + [Setting(model, None, None, step, 2) for step in ("fixed", "learned")]
                + [Setting(model, None, None, "fixed", None)])
    if model == "lenet5":
        fixed = [s for s in fixed if s.act == 2 or s.method == "ste"]
    acts = ACT_BITS if model == "mlp" else (2,)
    learned = [Setting(model, w, "ste", "learned", a) for a in acts for w in (2, 4)]
    float_weights = [Setting(model, None, None, step, a) for a in ACT_BITS
                     for step in (("fixed", "learned") if model == "mlp" else ("fixed",))]
    return fixed + learned + float_weights + [Setting(model, None, None, "fixed", None)]


def model_path(out: Path, dataset: str, setting: Setting, seed: int) -> Path:
    """Where a trial's final model is saved: a checkpoint (``load_checkpoint``) for quantized
    activations, the plain state for the float network."""
    return out / "models" / f"{dataset}-{setting.name}-seed{seed}.safetensors"


def full_quant_trial(setting: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """One seed of one setting (``setting``: the :class:`Setting` fields): :func:`mnist_trial`'s
    record with the weight spec, the activation step and the saved model's path
    (a :class:`FullQuantRow` as a dict)."""
    s = Setting(**setting)
    row = mnist_trial(EXPERIMENT, s.model_fields(), STE, s.act, **kwargs)
    spec = ModelConfig(**row["config"]["model"]).weight_quant()
    return FullQuantRow(**{**row, "weight_quant": None if spec is None else spec.to_dict(),
                           "act_step": row["config"]["model"]["act_step"],
                           "method": s.method, "step": s.step, "model_file": kwargs.get("save_to")}).to_dict()


def trials(plan: dict[str, Any], out: Path, data_dir: str | None, device: str, seeds: int | None = None,
           dataset: str = "mnist") -> list[tuple[Callable[..., dict[str, Any]], dict[str, Any]]]:
    """Model × setting × seed of ``plan`` (:data:`PLANS`), the MLP first."""
    return [(full_quant_trial, {"setting": dataclasses.asdict(s), "seed": seed, "train_cfg": plan["train"][model],
                                "dataset": dataset, "data_dir": data_dir, "device": device,
                                "train_subset": plan["subset"][model], "save_to": str(model_path(out, dataset, s, seed))})
            for model in plan["models"] for s in settings(model, plan["grid"])
            for seed in range(seeds or plan["seeds"])]


def load_trial_model(record: Mapping[str, Any]) -> nn.Module:
    """The final model a trial saved (``record["model_file"]``), in eval mode: a checkpoint
    (:func:`~coarsegrad.io.checkpoint.load_checkpoint`) for quantized activations, the float
    network rebuilt from the record's model config with its saved state. What the deployed
    size and the integer engine's speed are measured on."""
    path = record["model_file"]
    if path is None:
        raise ConfigError("model_file", "this record saved no model")
    if record["bits"] is not None:
        return load_checkpoint(path)[0]
    tensors, _ = tensorfile.load(path)
    config = ModelConfig(**record["config"]["model"])
    first, last = SIZE_TENSORS[config.model]
    in_features = LENET_IN if config.model == "lenet5" else int(tensors[first].shape[1])
    model = build_model(config, in_features, int(tensors[last].shape[0]), seed=0)
    model.load_state_dict(tensors)
    return model.eval()


def row_label(record: Mapping[str, Any]) -> tuple[str, str, str]:
    """(weights, method, step) of a record, as the table's first three columns."""
    spec = record["weight_quant"]
    names = LEARNED_WEIGHT_NAMES if record["step"] == "learned" else WEIGHT_NAMES
    weights = names[None if spec is None else spec["bits"]]
    return weights, record["method"] or "–", record["step"]


Column = Callable[[list[dict[str, Any]]], str]


def grid_markdown(records: list[dict[str, Any]], model: str, dataset: str,
                  columns: Mapping[str, Column] | None = None) -> str:
    """Test accuracy % mean ± std over seeds (n) per weights × method × step (rows) and act
    bits (columns) of ``model`` on ``dataset``, the float network on a line below.

    ``columns`` adds one column per name, its cell computed from the row's records (all its
    act widths and seeds): the place for the deployed size and the integer engine's speed of
    the saved models (:func:`load_trial_model`), e.g.
    ``{"size (KiB)": lambda group: f"{deployed_size(load_trial_model(group[0])) / 1024:.1f}"}``.
    """
    mine = [r for r in records if r["experiment"] == EXPERIMENT and r["model"] == model and r["dataset"] == dataset]
    floats = [r for r in mine if r["bits"] is None]
    quantized = [r for r in mine if r["bits"] is not None]
    acts = sorted({r["bits"] for r in quantized})
    order = {s: i for i, s in enumerate((*WEIGHT_NAMES.values(), *LEARNED_WEIGHT_NAMES.values()))}
    labels = sorted(dict.fromkeys(row_label(r) for r in quantized),
                    key=lambda k: (k[2] == "learned", order[k[0]], METHODS.index(k[1]) if k[1] in METHODS else -1))
    extra = dict(columns or {})
    lines = ["| weights | method | step | " + " | ".join(f"act {a} bits" for a in acts)
             + "".join(f" | {name}" for name in extra) + " |",
             "| --- | --- | --- | " + " | ".join("---" for _ in acts) + "".join(" | ---" for _ in extra) + " |"]
    for label in labels:
        group = [r for r in quantized if row_label(r) == label]
        cells = []
        for a in acts:
            accs = [r["test_acc"] for r in group if r["bits"] == a]
            cells.append(f"{mean_std(accs)} (n={len(accs)})" if accs else "–")
        lines.append("| " + " | ".join(label) + " | " + " | ".join(cells)
                     + "".join(f" | {cell(group)}" for cell in extra.values()) + " |")
    if floats:
        lines.append(f"\nFloat network (float weights, plain ReLU, n={len(floats)}): "
                     f"{mean_std([r['test_acc'] for r in floats])}.")
    return "\n".join(lines) + "\n"


def setup_line(records: list[dict[str, Any]], model: str) -> str:
    """How ``model`` trained, read from a record's resolved config."""
    r = next((r for r in records if r["experiment"] == EXPERIMENT and r["model"] == model), None)
    if r is None:
        return ""
    t = r["config"]["train"]
    subset = f", {r['train_subset']} training images" if r.get("train_subset") else ""
    return (f"Setup — {t['optimizer']} lr {t['lr']}, {t['schedule']}, {t['epochs']} epoch(s), batch {t['batch_size']}, "
            f"weight decay {t['weight_decay']}{subset}; activations {STE} STE, nearest rounding; weight scales per "
            f"channel; BCGD ρ = {BCGD_RHO:g}; BinaryRelax hard from {HARD_AFTER:g} of the run.\n\n")


DEPLOY_IMAGES = 2000
"""Test images the integer engine and PyTorch are timed on (:func:`deployment`)."""
DEPLOY_FILE = "deploy.json"
_DEPLOY_FIELDS = {"model": str, "dataset": str, "weights": str, "method": str, "step": str, "act": int,
                  "packed_bytes": int, "float32_bytes": int, "engine_ips": float, "torch_ips": float}


def read_deployment(path: Path) -> list[dict[str, Any]]:
    """The :func:`deployment` rows saved in ``path`` ([] when there is no such file);
    DataError naming the file when it is not a list of such rows."""
    import json

    from coarsegrad.errors import DataError

    if not path.exists():
        return []
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise DataError(str(path), f"cannot read deployment rows ({type(exc).__name__})") from None
    ok = isinstance(rows, list) and all(
        isinstance(r, dict) and set(r) == set(_DEPLOY_FIELDS)
        and all(isinstance(r[k], t) and not isinstance(r[k], bool) or (t is float and type(r[k]) is int)
                for k, t in _DEPLOY_FIELDS.items()) for r in rows)
    if not ok:
        raise DataError(str(path), f"expected a list of rows with the fields {sorted(_DEPLOY_FIELDS)}")
    return rows


def deployment(records: list[dict[str, Any]], data_dir: str | None = None, repeats: int = 3,
               images: int = DEPLOY_IMAGES) -> list[dict[str, Any]]:
    """Deployed size and speed of each quantized-weight row's seed-0 model, per act width:
    ``{model, dataset, weights, method, step, act, packed_bytes, float32_bytes, engine_ips,
    torch_ips}``, from the saved model (:func:`load_trial_model`; learned activation steps
    frozen first): packed integer-only tensors against the float32 eval state
    (:func:`coarsegrad.export.qmodel.deployed_size`), and images/s of the NumPy integer engine
    on ``images`` uint8 test images against the PyTorch float32 forward of the same model
    (:func:`coarsegrad.export.qmodel.images_per_second`, median of ``repeats``, one process)."""
    import torch

    from coarsegrad.data.datasets import load_dataset
    from coarsegrad.export.qmodel import float32_bytes, images_per_second, to_quantized
    from coarsegrad.export.qmodel_io import packed_bytes
    from coarsegrad.quant.convert import freeze_learned

    rows: list[dict[str, Any]] = []
    pixels: dict[str, Any] = {}
    chosen = [r for r in records if r["experiment"] == EXPERIMENT and r["weight_quant"] is not None and r["seed"] == 0]
    for r in chosen:
        if r["dataset"] not in pixels:
            raw = load_dataset(r["dataset"], "test", data_dir)[0][:images]
            pixels[r["dataset"]] = raw.reshape(raw.shape[0], -1).numpy()
        p = pixels[r["dataset"]]
        model = freeze_learned(load_trial_model(r))
        mean, std = r["config"]["data"]["normalisation"]
        engine = to_quantized(model, (mean, std))
        x = torch.from_numpy(p).float().div_(255.0).sub_(mean).div_(std).numpy()
        with torch.no_grad():
            torch_ips = images_per_second(lambda a, m=model: m(torch.from_numpy(a)), x, repeats)
        packed, full = packed_bytes(engine), float32_bytes(model)  # deployed_size, without converting again
        weights, method, step = row_label(r)
        rows.append({"model": r["model"], "dataset": r["dataset"], "weights": weights, "method": method, "step": step,
                     "act": r["bits"], "packed_bytes": packed, "float32_bytes": full,
                     "engine_ips": images_per_second(engine.predict, p, repeats), "torch_ips": torch_ips})
    return rows


def deployment_columns(rows: list[dict[str, Any]]) -> dict[str, Column]:
    """The table's size and speed columns from :func:`deployment` rows (the act-2 model of a
    table row; "–" for float weights, which have no integer-only form)."""

    def find(group: list[dict[str, Any]]) -> dict[str, Any] | None:
        r = group[0]
        label = (r["model"], r["dataset"], *row_label(r))
        found = [d for d in rows if (d["model"], d["dataset"], d["weights"], d["method"], d["step"]) == label]
        return min(found, key=lambda d: d["act"]) if found else None

    def size(group: list[dict[str, Any]]) -> str:
        d = find(group)
        return "–" if d is None else f"{d['packed_bytes'] / 1024:.0f} / {d['float32_bytes'] / 1024:.0f}"

    def speed(group: list[dict[str, Any]]) -> str:
        d = find(group)
        return "–" if d is None else f"{d['engine_ips']:,.0f} / {d['torch_ips']:,.0f}"

    return {"packed / float32 KiB": size, "int engine / PyTorch img/s": speed}
