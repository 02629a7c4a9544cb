"""A test helper: ``mnist_trial`` on the real data with the test split cut short.

The reproduce smoke tests train on a tiny ``train_subset``; evaluating each trial on the full
10,000-image test split would take most of their time. :func:`small_test_split` patches the
loader that :mod:`coarsegrad.experiments.mnist` uses so each dataset is loaded once and its test
split keeps its first ``n`` images (``workers=1`` runs the trials in this process).
"""

import dataclasses

from coarsegrad.data.splits import prepare_dataset
from coarsegrad.experiments import mnist


def small_test_split(monkeypatch, n: int = 100) -> None:
    cache: dict = {}

    def load(name, data_dir=None, device="cpu", dtype=None):
        if name not in cache:
            s = prepare_dataset(name, data_dir, device=device)
            cache[name] = dataclasses.replace(s, x_test=s.x_test[:n], y_test=s.y_test[:n])
        return cache[name]

    monkeypatch.setattr(mnist, "prepare_dataset", load)
