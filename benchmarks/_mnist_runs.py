"""Train (or reuse) a small MNIST MLP run for the export scripts: ``coarsegrad train``'s record."""

from __future__ import annotations

from pathlib import Path

from coarsegrad.config import DataConfig, ModelConfig
from coarsegrad.training.loop import TrainConfig
from coarsegrad.training.run import run_training


def mnist_mlp_run(run_dir: Path, hidden: int, bits: int, epochs: int, seed: int, **weights: object) -> Path:
    """``run_dir`` holding a trained 784-hidden-10 MLP (batch-norm, ``bits``-bit codes).

    Adam, lr 1e-3, batch 128, ``epochs`` epochs. An existing run with the same config
    is reused (its config.json is compared field by field). ``weights``: ModelConfig's
    ``weight_*`` fields (quantized weights).
    """
    data = DataConfig(data="mnist")
    model = ModelConfig(model="mlp", hidden=hidden, batchnorm=True, bits=bits, **weights)  # type: ignore[arg-type]
    train = TrainConfig(optimizer="adam", lr=1e-3, batch_size=128, epochs=epochs, seed=seed,
                        stop_at_perfect=False, log_every=100)
    if not (run_dir / "model.safetensors").is_file() or not (run_dir / "summary.json").is_file():
        run_training(data, model, train, run_dir, progress=False)
    return run_dir


def mnist_lenet_run(run_dir: Path, bits: int, epochs: int, seed: int, lr: float = 0.05, **weights: object) -> Path:
    """``run_dir`` holding a trained LeNet-5 (20-50-500, batch-norm, ``bits``-bit codes).

    SGD with momentum 0.9, lr ``lr``, batch 128, ``epochs`` epochs. An existing run is
    reused (the directory name carries the config). ``weights``: ModelConfig's ``weight_*``
    fields (quantized weights).
    """
    data = DataConfig(data="mnist")
    model = ModelConfig(model="lenet5", bits=bits, **weights)  # type: ignore[arg-type]
    train = TrainConfig(optimizer="momentum", lr=lr, batch_size=128, epochs=epochs, seed=seed,
                        stop_at_perfect=False, log_every=100)
    if not (run_dir / "model.safetensors").is_file() or not (run_dir / "summary.json").is_file():
        run_training(data, model, train, run_dir, progress=False)
    return run_dir
