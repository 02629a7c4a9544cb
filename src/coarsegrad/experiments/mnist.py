"""MNIST experiments: the paper's two-linear-layer network and LeNet-5 (ICLR 2019 setup).

One trial = one seed of mini-batch training of one (model, STE, bits); the record
holds the final training and test accuracy and a per-epoch curve (running training
loss/accuracy over the epoch, test accuracy at its end). LeNet-5 trials can start
from a float model (plain ReLU) trained first, as in the 2019 setup.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch

from coarsegrad.config import ModelConfig
from coarsegrad.data.splits import prepare_dataset
from coarsegrad.errors import TrainingDiverged
from coarsegrad.io import tensorfile
from coarsegrad.io.checkpoint import save_checkpoint
from coarsegrad.io.results import MnistTrialRow
from coarsegrad.models.build import build_model
from coarsegrad.training.loop import TrainConfig, evaluate, train

# Test accuracy (%) of LeNet-5 on MNIST from Yin et al., ICLR 2019 (method.md).
ICLR2019_LENET5 = {("identity", 2): 98.49, ("relu", 2): 99.24, ("clipped_relu", 2): 99.23,
                   ("identity", 4): 98.98, ("relu", 4): 99.32, ("clipped_relu", 4): 99.24}


def _subset(x: torch.Tensor, y: torch.Tensor, n: int | None, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    if n is None or n >= x.shape[0]:
        return x, y
    idx = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[:n]
    return x[idx], y[idx]


def mnist_trial(experiment: str, model: dict, ste: str, bits: int | None, seed: int, train_cfg: dict,
                dataset: str = "mnist", data_dir: str | None = None, device: str = "cpu",
                train_subset: int | None = None, init_from: str | None = None,
                save_to: str | None = None) -> dict:
    """Train one seed; evaluate on the test split; return a flat record with the curve
    (a :class:`MnistTrialRow` as a dict).

    ``bits=None`` trains the float network (plain ReLU: the baseline, and LeNet-5's float init).
    ``model`` holds any other :class:`ModelConfig` fields: quantized weights (``weight_kind``,
    ``weight_bits``, ``weight_method`` …), a learned activation step (``act_step``).
    ``init_from`` loads starting weights (safetensors); ``save_to`` saves the final ones: a
    network with quantized activations as a checkpoint (:func:`coarsegrad.io.checkpoint.save_checkpoint`,
    tensors + the header that rebuilds it, with the input normalisation; ``load_checkpoint`` reads
    it), a float one as its plain state (the float init that ``init_from`` loads).
    """
    splits = prepare_dataset(dataset, data_dir, device=device)
    x_train, y_train = _subset(splits.x_train, splits.y_train, train_subset, seed)
    quant = {"ste": ste, "bits": bits, "act": "quant"} if bits is not None else {"act": "float"}
    model_cfg = ModelConfig(**{**model, **quant})
    net = build_model(model_cfg, x_train.shape[1], splits.num_classes, seed + 1)
    if init_from:
        tensors, _ = tensorfile.load(init_from)
        net.load_state_dict(tensors)
    net.to(device)
    tcfg = TrainConfig(**{**train_cfg, "seed": seed, "stop_at_perfect": False})
    assert tcfg.batch_size is not None, "MNIST trials are mini-batch runs"
    per_epoch = -(-x_train.shape[0] // tcfg.batch_size)
    tcfg = dataclasses.replace(tcfg, log_every=per_epoch)
    curve: dict[str, list] = {"epoch": [], "train_loss": [], "train_acc": [], "test_acc": []}

    total = tcfg.total_steps(x_train.shape[0])

    def on_log(record: dict) -> None:
        curve["epoch"].append((record["step"] + 1) // per_epoch)
        curve["train_loss"].append(record["loss"])
        curve["train_acc"].append(record["train_acc"])
        last = record["step"] + 1 >= total  # evaluated once below instead
        curve["test_acc"].append(None if last else evaluate(net, splits.x_test, splits.y_test)[1])

    started = time.perf_counter()
    diverged = None
    try:
        history = train(net, x_train, y_train, tcfg, on_log=on_log)
        steps = history.steps_run
    except TrainingDiverged as exc:
        diverged, steps = exc.step, exc.step
    seconds = time.perf_counter() - started
    train_loss, train_acc = evaluate(net, x_train, y_train)
    test_loss, test_acc = evaluate(net, splits.x_test, splits.y_test)
    if curve["test_acc"] and diverged is None:
        curve["test_acc"][-1] = test_acc  # the last epoch's point is the final evaluation
    if save_to and bits is not None:
        save_checkpoint(save_to, net, config=model_cfg, normalization=(splits.mean, splits.std))
    elif save_to:
        tensorfile.save(save_to, dict(net.state_dict()))
    return MnistTrialRow(
        experiment=experiment, dataset=dataset, model=model_cfg.model,
        ste=ste if bits else "float", bits=bits, seed=seed,
        alpha=model_cfg.act_quant().alpha if bits else None,
        train_acc=train_acc, test_acc=test_acc, final_loss=train_loss, test_loss=test_loss,
        epochs=steps / per_epoch, steps=steps, seconds=seconds, device=device,
        diverged_step=diverged, train_subset=train_subset, init_from=init_from,
        curve=curve, config={"data": {"data": dataset, "normalisation": [splits.mean, splits.std]},
                             "model": dataclasses.asdict(model_cfg), "train": dataclasses.asdict(tcfg)},
    ).to_dict()


def float_init_path(out: Path, seed: int, name: str = "lenet5") -> Path:
    """Where the float LeNet-5 of ``seed`` (of experiment ``name``) is saved for the quantized runs to start from."""
    return out / "float_init" / f"{name}_seed{seed}.safetensors"

