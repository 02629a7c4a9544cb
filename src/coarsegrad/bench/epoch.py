"""``coarsegrad bench``: one epoch of quantized training against its baselines, side by side.

Workload: MLP in → H → classes, b-bit staircase with the clipped-ReLU STE, SGD momentum,
batch B, one epoch over N rows (MNIST when found, else random data of that shape: speed
does not depend on values). Every variant runs in this process, round-robin over
``repeats`` after a warm-up epoch (each round in a shuffled order); a time is the median
of the repeats (the training loop only, as :attr:`coarsegrad.training.loop.History.seconds`), a
ratio the median over rounds of the two variants' times in that round. Variants:

* ``ours``: :func:`coarsegrad.training.loop` (its fast path); ``ours_autograd``: the same with
  ``fast=False``;
* ``float_relu``: plain PyTorch, ``Linear → ReLU → Linear``, autograd, ``torch.optim.SGD``;
* ``autograd_ste``: the same loop with a textbook ``autograd.Function`` STE;
* ``detach_ste``: the same loop with clip(x) + (σ(x) − clip(x)).detach();
* ``brevitas``: ``brevitas.nn.QuantReLU(bit_width=b)`` (skipped when not installed),
  timed after the 300 steps in which its default quantizer collects statistics; its
  epochs inside that phase are reported too (the median of the warm-up epochs wholly
  inside it, the first excluded: it also pays one-time set-up).

Also: the sgemm rate (an n×n float32 matmul, 2n³ FLOP); the epoch's rate, 3196·H FLOP
per row for 784 → H → 10 (2·(784 + 3·10)·H: forward, ∇W₁, and three products with W₂);
one full-batch step (all N rows, chunked) against the batch-B epoch; and the data path
(a permutation and the ``index_select`` gathers of one epoch) as a share of the epoch.

With ``weights`` (a :class:`~coarsegrad.quant.weight_spec.WeightQuant`) the workload is the
fully quantized MLP instead, against float and Brevitas: :mod:`coarsegrad.bench.full_quant`.
"""

from __future__ import annotations

import math
import random
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch
from torch import nn

from coarsegrad.bench.baselines import PlainEpoch, brevitas_relu, float_model, ste_model
from coarsegrad.errors import ConfigError
from coarsegrad.models.networks import MLP
from coarsegrad.quant.qlayers import quantize_weights
from coarsegrad.quant.spec import ActQuant
from coarsegrad.quant.weight_spec import WeightQuant
from coarsegrad.training.loop import TrainConfig, train
from coarsegrad.validate import integer


@dataclass
class BenchConfig:
    """What to measure. ``data``: ``auto`` (MNIST if found, else random), ``mnist``, ``random``.
    ``weights``: None (quantized activations, float weights) or the weight spec of the fully
    quantized workload (:mod:`coarsegrad.bench.full_quant`)."""

    hidden: tuple[int, ...] = (128, 512, 2048)
    samples: int = 60000
    features: int = 784
    classes: int = 10
    batch_size: int = 1024
    bits: int = 2
    lr: float = 0.01
    repeats: int = 5
    sgemm_size: int = 4096
    data: str = "auto"
    brevitas: bool = True
    seed: int = 0
    weights: WeightQuant | None = None
    conv: bool = False

    def __post_init__(self) -> None:
        self.hidden = tuple(self.hidden)
        for name in ("samples", "features", "classes", "batch_size", "repeats", "sgemm_size"):
            integer(name, getattr(self, name), lo=1)
        if not self.hidden:
            raise ConfigError("hidden", f"must be positive integers, got {self.hidden!r}")
        for h in self.hidden:
            integer("hidden", h, lo=1)
        if self.data not in ("auto", "mnist", "random"):
            raise ConfigError("data", f"must be auto, mnist or random, got {self.data!r}")
        if self.weights is not None and not isinstance(self.weights, WeightQuant):
            raise ConfigError("weights", f"must be a WeightQuant or None, got {type(self.weights).__name__}")
        if self.conv and self.weights is None:
            raise ConfigError("conv", "the convolutional case is part of the fully quantized workload: give --weights")


BREVITAS_STATS_STEPS = 300  # brevitas.quant.base: collect_stats_steps

QUICK = BenchConfig(hidden=(64, 256), samples=8192, repeats=2, sgemm_size=1024)
"""``--quick``: small sizes, two repeats; seconds, not minutes."""


def flops_per_row(features: int, hidden: int, classes: int) -> int:
    """FLOP per training row: 2·features·H (forward) + 2·features·H (∇W₁) + 3·2·H·classes."""
    return 2 * features * hidden * 2 + 3 * 2 * hidden * classes


def load_data(config: BenchConfig) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(X [N, features], y [N], source): MNIST's training split (first N rows) or random."""
    if config.data != "random" and (config.features, config.classes) == (784, 10):
        try:
            from coarsegrad.data.splits import prepare_dataset

            splits = prepare_dataset("mnist")
            if splits.x_train.shape[0] >= config.samples:
                return (splits.x_train[:config.samples].contiguous(),
                        splits.y_train[:config.samples].contiguous(), "mnist")
        except (ImportError, ValueError, OSError):
            if config.data == "mnist":
                raise
    elif config.data == "mnist":
        raise ConfigError("data", "mnist needs features=784 and classes=10")
    gen = torch.Generator().manual_seed(config.seed)
    X = torch.randn(config.samples, config.features, generator=gen)
    y = torch.randint(0, config.classes, (config.samples,), generator=gen)
    return X, y, "random"


def sgemm_gflops(n: int, repeats: int) -> float:
    """Median rate of C = A·B for n×n float32 matrices, in GFLOP/s (2n³ FLOP)."""
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=gen), torch.randn(n, n, generator=gen)
    out = torch.empty(n, n)
    times = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        if i:  # the first call is the warm-up
            times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times) / 1e9


def dataset_copy_seconds(X: torch.Tensor, repeats: int) -> float:
    """Median time of one plain copy of all of X into a preallocated tensor: the floor
    for any data path that moves every row once per epoch (a reshuffle does)."""
    out = torch.empty_like(X)
    times = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        out.copy_(X)
        if i:  # the first call is the warm-up (and faults the pages of ``out`` in)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def data_path_seconds(X: torch.Tensor, y: torch.Tensor, batch: int, steps: int, seed: int) -> float:
    """One epoch's data path as :func:`~coarsegrad.training.loop.train`'s fast path runs it:
    a permutation, then per step an ``index_select`` of the rows of X and y into buffers."""
    gen = torch.Generator().manual_seed(seed)
    xbuf, ybuf = torch.empty(batch, X.shape[1], dtype=X.dtype), torch.empty(batch, dtype=y.dtype)
    start = time.perf_counter()
    order, position = torch.randperm(X.shape[0], generator=gen), 0
    for _ in range(steps):
        if position + batch > X.shape[0]:
            order, position = torch.randperm(X.shape[0], generator=gen), 0
        idx = order[position:position + batch]
        position += batch
        torch.index_select(X, 0, idx, out=xbuf[:idx.shape[0]])
        torch.index_select(y, 0, idx, out=ybuf[:idx.shape[0]])
    return time.perf_counter() - start


def ours_model(config: BenchConfig, features: int, hidden: int, weights: WeightQuant | None = None) -> nn.Module:
    """The MLP features → H → classes that ``ours`` trains: the b-bit ⌈x/α⌉ staircase (the
    baselines' rounding), clipped-ReLU STE; with ``weights`` its Linear layers are QuantLinear."""
    gen = torch.Generator().manual_seed(config.seed)
    quant = ActQuant(config.bits, ste="clipped_relu", rounding="ceil")
    model: nn.Module = MLP(features, hidden, config.classes, generator=gen, quant=quant)
    return model if weights is None else quantize_weights(model, weights)


def ours_epoch(config: BenchConfig, X: torch.Tensor, y: torch.Tensor, hidden: int, *, fast: bool = True,
          full_batch: bool = False, weights: WeightQuant | None = None) -> Callable[[], float]:
    """A closure running one epoch (or one full-batch step) of coarsegrad.training.loop; returns
    seconds. ``weights``: the MLP's Linear layers become QuantLinear with that spec."""
    model = ours_model(config, X.shape[1], hidden, weights)
    if full_batch:
        cfg = TrainConfig(optimizer="momentum", lr=config.lr, steps=1, stop_at_perfect=False, fast=fast)
    else:
        cfg = TrainConfig(optimizer="momentum", lr=config.lr, batch_size=config.batch_size, epochs=1,
                          stop_at_perfect=False, log_every=10**9, fast=fast)
    return lambda: train(model, X, y, cfg).seconds


def median_rounds(variants: dict[str, Callable[[], float]], repeats: int, seed: int,
                   warmups: dict[str, int]) -> dict[str, dict]:
    """Warm up every variant (``warmups[name]`` epochs, default 1), then ``repeats``
    rounds, each running every variant once in a freshly shuffled order (drift of the
    machine spreads over all variants)."""
    warm = {name: [run() for _ in range(warmups.get(name, 1))] for name, run in variants.items()}
    times: dict[str, list[float]] = {name: [] for name in variants}
    order, rng = list(variants), random.Random(seed)
    for _ in range(repeats):
        rng.shuffle(order)
        for name in order:
            times[name].append(variants[name]())
    return {name: {"median_s": statistics.median(ts), "times_s": ts, "warmup_s": warm[name]}
            for name, ts in times.items()}


def statistics_phase_epochs(warmup_s: list[float], steps: int) -> list[float]:
    """Brevitas' warm-up epochs (``steps`` steps each) that lie wholly inside its first
    BREVITAS_STATS_STEPS steps, without the first epoch (which also pays one-time
    set-up); the first alone when no other does."""
    inside = BREVITAS_STATS_STEPS // steps  # epochs 0 … inside − 1 end by that step
    return warmup_s[1:inside] or warmup_s[:1]


def paired_ratio(a: list[float], b: list[float]) -> float:
    """median over rounds i of a_i / b_i: a ratio measured side by side, robust to drift."""
    return statistics.median(x / y for x, y in zip(a, b, strict=False))


def measure_hidden(config: BenchConfig, X: torch.Tensor, y: torch.Tensor, hidden: int) -> dict:
    """Every variant at one H: medians, ratios and rates."""
    alpha = ActQuant(config.bits).alpha  # the baselines get the spec's α
    gen_seed = config.seed
    plain = lambda model: PlainEpoch(model, X, y, config.batch_size, config.lr, gen_seed)  # noqa: E731
    variants: dict[str, Callable[[], float]] = {
        "ours": ours_epoch(config, X, y, hidden),
        "ours_autograd": ours_epoch(config, X, y, hidden, fast=False),
        "float_relu": plain(float_model(X.shape[1], hidden, config.classes, gen_seed)),
        "autograd_ste": plain(ste_model(X.shape[1], hidden, config.classes, config.bits, alpha, "function", gen_seed)),
        "detach_ste": plain(ste_model(X.shape[1], hidden, config.classes, config.bits, alpha, "detach", gen_seed)),
        "full_batch_step": ours_epoch(config, X, y, hidden, full_batch=True),
    }
    skipped = {}
    if config.brevitas:
        act = brevitas_relu(config.bits)
        if act is None:
            skipped["brevitas"] = BREVITAS_MISSING
        else:
            variants["brevitas"] = plain(float_model(X.shape[1], hidden, config.classes, gen_seed, act))
    return time_variants(config, X, y, hidden, variants, skipped)


BREVITAS_MISSING = "brevitas is not installed (pip install 'coarsegrad[bench]')"


def time_variants(config: BenchConfig, X: torch.Tensor, y: torch.Tensor, hidden: int,
                  variants: dict[str, Callable[[], float]], skipped: dict[str, str]) -> dict:
    """Time ``variants`` (one must be ``ours``) by :func:`_median_rounds`, each Brevitas one
    (name ``brevitas…``) after its statistics phase; medians, paired ratios to ours, the
    epoch's rate and the data path at one H."""
    steps = math.ceil(X.shape[0] / config.batch_size)
    # Brevitas' default activation quantizer collects statistics (a percentile per step)
    # for its first 300 training steps, then learns the scale: time it after that phase
    brevitas = [name for name in variants if name.startswith("brevitas")]
    warmups = {name: math.ceil(BREVITAS_STATS_STEPS / steps) + 1 for name in brevitas}
    result = median_rounds(variants, config.repeats, config.seed + hidden, warmups)
    data_s = statistics.median(data_path_seconds(X, y, config.batch_size, steps, config.seed + i)
                               for i in range(config.repeats + 1))
    ours = result["ours"]["median_s"]
    rows = steps * config.batch_size  # train() runs ⌈N/B⌉ full batches
    gflops = flops_per_row(X.shape[1], hidden, config.classes) * rows / ours / 1e9
    t = {name: r["times_s"] for name, r in result.items()}
    for name, r in result.items():
        r["ratio_to_ours"] = paired_ratio(t[name], t["ours"])
    ratios = {f"ours/{name}": paired_ratio(t["ours"], t[name]) for name in t if name != "ours"}
    if "full_batch_step" in result:
        ratios["full_batch_step/ours"] = result["full_batch_step"]["ratio_to_ours"]
    for name in brevitas:
        ratios[f"{name}/ours"] = result[name]["ratio_to_ours"]
        phase = statistics.median(statistics_phase_epochs(result[name]["warmup_s"], steps))
        result[name]["statistics_phase_s"] = phase
        ratios[f"{name}_statistics_phase/ours"] = phase / ours
    return {"hidden": hidden, "variants": result, "skipped": skipped, "ratios": ratios,
            "ours_gflops": gflops, "data_path_s": data_s, "data_path_share": data_s / ours}


def run_bench(config: BenchConfig, log: Callable[[str], None] | None = None) -> dict:
    """Run every measurement of the module docstring; return the record (without environment)."""
    log = log or (lambda message: None)
    X, y, source = load_data(config)
    log(f"data: {source}, {tuple(X.shape)}; threads: {torch.get_num_threads()}")
    sgemm = sgemm_gflops(config.sgemm_size, max(3, config.repeats))
    log(f"sgemm {config.sgemm_size}³: {sgemm:.1f} GFLOP/s")
    measure, workload_goals = measure_hidden, goals
    if config.weights is not None:  # imported here: full_quant builds on this module
        from coarsegrad.bench.full_quant import full_quant_goals, measure_full_quant

        measure, workload_goals = measure_full_quant, full_quant_goals
    results = []
    for hidden in config.hidden:
        log(f"H = {hidden} ...")
        result = measure(config, X, y, hidden)
        result["sgemm_fraction"] = result["ours_gflops"] / sgemm
        results.append(result)
    sgemm_after = sgemm_gflops(config.sgemm_size, max(3, config.repeats))
    copy_s = dataset_copy_seconds(X, max(3, config.repeats))
    log(f"one copy of X: {copy_s * 1e3:.2f} ms")
    for result in results:
        result["data_path_over_copy"] = result["data_path_s"] / copy_s
    record = {"config": asdict(config), "data": source, "threads": torch.get_num_threads(),
              "sgemm_gflops": sgemm, "sgemm_gflops_after": sgemm_after, "dataset_copy_s": copy_s,
              "results": results,
              "goals": workload_goals(results)}
    if config.conv:
        from coarsegrad.bench.full_quant import measure_conv

        log("LeNet-5 (conv) ...")
        record["conv"] = measure_conv(config, X, y)
    return record


def goal_adder(table: list[dict]) -> Callable[[str, str, dict[int, float], Callable[[float], bool]], None]:
    """``add(name, target, values, ok)`` appending a goal row to ``table``: its values per H and
    met when ``ok`` holds for all (no row when there are no values)."""

    def add(name: str, target: str, values: dict[int, float], ok: Callable[[float], bool]) -> None:
        if values:
            table.append({"goal": name, "target": target, "values": values,
                          "met": all(ok(v) for v in values.values())})

    return add


def goals(results: list[dict]) -> list[dict]:
    """Each goal with its measured value per H and met / not met."""
    table: list[dict] = []
    add = goal_adder(table)
    by_h = {r["hidden"]: r for r in results}
    add("quantized epoch / float-ReLU epoch", "<= 1.0",
        {h: r["ratios"]["ours/float_relu"] for h, r in by_h.items()}, lambda v: v <= 1.0)
    add("Brevitas epoch (after its 300 statistics steps) / quantized epoch", ">= 1.6",
        {h: r["ratios"]["brevitas/ours"] for h, r in by_h.items() if "brevitas/ours" in r["ratios"]},
        lambda v: v >= 1.6)
    add("Brevitas epoch (inside its statistics phase) / quantized epoch", ">= 1.6",
        {h: r["ratios"]["brevitas_statistics_phase/ours"] for h, r in by_h.items()
         if "brevitas_statistics_phase/ours" in r["ratios"]}, lambda v: v >= 1.6)
    add("epoch rate / sgemm rate (H >= 512)", ">= 0.70",
        {h: r["sgemm_fraction"] for h, r in by_h.items() if h >= 512}, lambda v: v >= 0.70)
    add("full-batch step / batch epoch", "<= 1.05",
        {h: r["ratios"]["full_batch_step/ours"] for h, r in by_h.items()}, lambda v: v <= 1.05)
    add("data path / epoch", "<= 0.03", {h: r["data_path_share"] for h, r in by_h.items()},
        lambda v: v <= 0.03)
    return table
