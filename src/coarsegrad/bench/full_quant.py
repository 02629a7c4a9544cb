"""``coarsegrad bench --weights SPEC``: one epoch of fully quantized training (quantized
weights and activations) against plain float and Brevitas at the same bit widths.

Workload: MLP in → H → classes whose two Linear layers are
:class:`~coarsegrad.quant.qlayers.QuantLinear` with the weight spec (method ``ste``:
forward Q(w), gradient straight through, w clipped to [−clip, clip] after each step) and the
b-bit staircase with the clipped-ReLU STE between them; the rest as
:mod:`coarsegrad.bench.epoch` (same data, batch, optimizer, rounds, paired ratios). Variants:

* ``ours``: :func:`coarsegrad.training.loop.train` on that model (autograd: the fast step has
  no quantized weights);
* ``ours_float_weights``: the same with float weights (:mod:`~coarsegrad.bench.epoch`'s
  ``ours``, the fast path): what quantizing the weights costs on top;
* ``float_relu``: plain PyTorch ``Linear → ReLU → Linear``, autograd, ``torch.optim.SGD``;
* ``brevitas_full``: the same plain loop on ``brevitas.nn.QuantLinear(weight_bit_width=b_w)``
  → ``QuantReLU(bit_width=b)`` → ``QuantLinear``, per tensor or per channel as the spec,
  timed after its 300 statistics steps (skipped when Brevitas is not installed, and for
  binary weights: its integer quantizer has no 1-bit sign rule). Brevitas quantizes with its
  own rule, s = max|w|/(2^{b_w−1} − 1): the same as ``uniform``; for ``ternary`` (b_w = 2) its
  levels are also {−s, 0, s}, with s = max|w| and threshold s/2 instead of TWN's.

Goals (issue 14): ours ≤ 1.3 × float at H ≥ 512 and ≤ Brevitas.

``--conv`` adds the convolutional case (:func:`measure_conv`): LeNet-5 (20-50-500, affine-free
batch-norm) with ``QuantConv2d``/``QuantLinear`` weights and the staircase, trained by
``train``, against the float LeNet-5 (plain ReLU) and Brevitas' ``QuantConv2d``/``QuantLinear``
+ ``QuantReLU`` LeNet-5 (:func:`~coarsegrad.bench.baselines.brevitas_quant_lenet`) in the plain
loop, one epoch over the first :data:`CONV_ROWS` rows at batch :data:`CONV_BATCH`, the same
rounds and paired ratios.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from coarsegrad.bench.baselines import PlainEpoch, brevitas_quant_lenet, brevitas_quant_mlp, float_model
from coarsegrad.bench.epoch import (
    BREVITAS_MISSING,
    BREVITAS_STATS_STEPS,
    BenchConfig,
    goal_adder,
    median_rounds,
    ours_epoch,
    paired_ratio,
    time_variants,
)
from coarsegrad.errors import ConfigError
from coarsegrad.models.networks import LeNet5
from coarsegrad.quant.qlayers import quantize_weights
from coarsegrad.quant.weight_spec import GRANULARITIES, KINDS, WeightQuant
from coarsegrad.training.loop import TrainConfig, train

FLOAT_GOAL = 1.3
"""ours / float at H ≥ 512 (issue 14)."""
CONV_ROWS = 8192
CONV_BATCH = 128


def parse_weights(text: str) -> WeightQuant:
    """``KIND[:BITS][:GRANULARITY]`` (``uniform:4``, ``ternary``, ``binary:channel``,
    ``uniform:2:channel``) as a WeightQuant with method ``ste``; ``ConfigError('weights')``
    on anything else."""
    kind, *rest = text.split(":")
    if kind not in KINDS or len(rest) > 2:
        raise ConfigError("weights", f"expected KIND[:BITS][:GRANULARITY] with KIND in {', '.join(KINDS)}, got {text!r}")
    fields: dict[str, object] = {"kind": kind}
    for part in rest:
        if part.isdigit() and "bits" not in fields and "granularity" not in fields:
            fields["bits"] = int(part)
        elif part in GRANULARITIES and "granularity" not in fields:
            fields["granularity"] = part
        else:
            raise ConfigError("weights", f"expected KIND[:BITS][:GRANULARITY], got {text!r}")
    try:
        return WeightQuant(**fields)  # type: ignore[arg-type]
    except ConfigError as exc:
        raise ConfigError("weights", f"{text!r}: {exc}") from None


def _add_brevitas(config: BenchConfig, spec: WeightQuant, variants: dict[str, Callable[[], float]],
                  plain: Callable[[nn.Module], Callable[[], float]],
                  build: Callable[[int, bool], nn.Module | None]) -> dict[str, str]:
    """Add Brevitas' fully quantized baseline ``brevitas_full`` (``build(weight_bits, per_channel)``)
    to ``variants`` in the plain loop; return the reasons it was skipped (binary weights: no
    1-bit sign rule in Brevitas' integer quantizer; Brevitas not installed)."""
    if not config.brevitas:
        return {}
    if spec.kind == "binary":
        return {"brevitas_full": "Brevitas' integer weight quantizer has no 1-bit sign rule"}
    model = build(int(spec.bits or 0), spec.granularity == "channel")
    if model is None:
        return {"brevitas_full": BREVITAS_MISSING}
    variants["brevitas_full"] = plain(model)
    return {}


def measure_full_quant(config: BenchConfig, X: torch.Tensor, y: torch.Tensor, hidden: int) -> dict:
    """Every variant of the module docstring at one H (``config.weights`` set)."""
    spec = config.weights
    if spec is None:
        raise ConfigError("weights", "the fully quantized workload needs a weight spec")
    plain = lambda model: PlainEpoch(model, X, y, config.batch_size, config.lr, config.seed)  # noqa: E731
    variants: dict[str, Callable[[], float]] = {
        "ours": ours_epoch(config, X, y, hidden, weights=spec),
        "ours_float_weights": ours_epoch(config, X, y, hidden),
        "float_relu": plain(float_model(X.shape[1], hidden, config.classes, config.seed)),
    }
    skipped = _add_brevitas(config, spec, variants, plain, lambda b, c: brevitas_quant_mlp(
        X.shape[1], hidden, config.classes, config.seed, b, config.bits, c))
    return time_variants(config, X, y, hidden, variants, skipped)


def full_quant_goals(results: list[dict]) -> list[dict]:
    """Each goal of the fully quantized workload with its value per H and met / not met."""
    table: list[dict] = []
    add = goal_adder(table)
    by_h = {r["hidden"]: r for r in results}
    add("fully quantized epoch / float-ReLU epoch (H >= 512)", f"<= {FLOAT_GOAL}",
        {h: r["ratios"]["ours/float_relu"] for h, r in by_h.items() if h >= 512}, lambda v: v <= FLOAT_GOAL)
    add("fully quantized epoch / Brevitas epoch (after its 300 statistics steps)", "<= 1.0",
        {h: r["ratios"]["ours/brevitas_full"] for h, r in by_h.items() if "ours/brevitas_full" in r["ratios"]},
        lambda v: v <= 1.0)
    add("fully quantized epoch / Brevitas epoch (inside its statistics phase)", "<= 1.0",
        {h: 1.0 / r["ratios"]["brevitas_full_statistics_phase/ours"] for h, r in by_h.items()
         if "brevitas_full_statistics_phase/ours" in r["ratios"]}, lambda v: v <= 1.0)
    return table


def measure_conv(config: BenchConfig, X: torch.Tensor, y: torch.Tensor) -> dict:
    """The convolutional case (module docstring): medians, paired ratios to ours, skipped."""
    spec = config.weights
    if spec is None:
        raise ConfigError("weights", "the fully quantized workload needs a weight spec")
    X, y = X[:CONV_ROWS], y[:CONV_ROWS]
    gen = torch.Generator().manual_seed(config.seed)
    ours = quantize_weights(LeNet5(config.classes, config.bits, generator=gen), spec)
    cfg = TrainConfig(optimizer="momentum", lr=config.lr, batch_size=CONV_BATCH, epochs=1, stop_at_perfect=False,
                      log_every=10**9)
    plain = lambda model: PlainEpoch(model, X, y, CONV_BATCH, config.lr, config.seed)  # noqa: E731
    variants: dict[str, Callable[[], float]] = {
        "ours": lambda: train(ours, X, y, cfg).seconds,
        "float_relu": plain(LeNet5(config.classes, None, generator=torch.Generator().manual_seed(config.seed))),
    }
    skipped = _add_brevitas(config, spec, variants, plain,
                            lambda b, c: brevitas_quant_lenet(config.classes, b, config.bits, c))
    steps = math.ceil(X.shape[0] / CONV_BATCH)
    warmups = {"brevitas_full": math.ceil(BREVITAS_STATS_STEPS / steps) + 1}
    result = median_rounds(variants, config.repeats, config.seed, warmups)
    t = {name: r["times_s"] for name, r in result.items()}
    return {"model": "lenet5", "rows": int(X.shape[0]), "batch": CONV_BATCH,
            "medians_s": {name: r["median_s"] for name, r in result.items()},
            "ratios": {f"ours/{name}": paired_ratio(t["ours"], t[name]) for name in t if name != "ours"},
            "skipped": skipped}


def format_conv(conv: dict) -> str:
    """The convolutional case as a Markdown table."""
    lines = [f"LeNet-5 (conv), one epoch over {conv['rows']} rows, batch {conv['batch']}:", "",
             "| variant | median s | ours ÷ variant |", "| --- | --- | --- |"]
    for name, seconds in conv["medians_s"].items():
        ratio = "1" if name == "ours" else f"{conv['ratios'][f'ours/{name}']:.3g}"
        lines.append(f"| {CONV_LABELS.get(name, name)} | {seconds:.3g} | {ratio} |")
    lines += [f"| {CONV_LABELS.get(name, name)} | skipped: {why} | — |" for name, why in conv["skipped"].items()]
    return "\n".join(lines)


CONV_LABELS = {"ours": "coarsegrad train, LeNet-5 QuantConv2d/QuantLinear + QuantReLU",
               "float_relu": "plain PyTorch LeNet-5, float ReLU",
               "brevitas_full": "Brevitas LeNet-5 QuantConv2d/QuantLinear + QuantReLU (after its statistics phase)"}
