"""Time to 98% MNIST test accuracy on this CPU: a 2-bit MLP trained from scratch.

    python benchmarks/time_to_accuracy.py [--hidden 1024] [--epochs 4] [--batch 256]
        [--optimizer momentum] [--lr 0.1] [--schedule cosine] [--seeds 3] [--out FILE]

A fixed recipe (airbench style): ``coarsegrad.training.loop`` (its fast path) for ``--epochs``
epochs with the given optimizer and schedule, then one evaluation on the 10,000 test
images. Time = the training loop (History.seconds) of each seed; the recipe meets the
target when the mean test accuracy over the seeds is >= 98.0%. ``--curve`` also
evaluates after every epoch (a separate run per epoch count is not needed: the cosine
schedule is fixed by ``--epochs``, so the curve shows where 98% is first crossed).
Needs MNIST (``coarsegrad data``; ``$COARSEGRAD_DATA``). ``--report A.json B.json …`` prints
a Markdown table of earlier records instead of training.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from coarsegrad.bench.report import load_average, machine
from coarsegrad.data.splits import prepare_dataset
from coarsegrad.io.records import atomic_write_json
from coarsegrad.models.networks import MLP
from coarsegrad.training.loop import TrainConfig, evaluate, train


def run_seed(splits, args, seed: int) -> dict:
    """Train one seed; return seconds, final test accuracy and (with --curve) the curve."""
    X, y = splits.x_train, splits.y_train
    model = MLP(784, args.hidden, 10, bits=args.bits, ste=args.ste, generator=torch.Generator().manual_seed(seed))
    steps_per_epoch = -(-X.shape[0] // args.batch)
    config = TrainConfig(optimizer=args.optimizer, lr=args.lr, schedule=args.schedule, momentum=args.momentum,
                         batch_size=args.batch, epochs=args.epochs, seed=seed, stop_at_perfect=False,
                         log_every=steps_per_epoch)
    curve = []

    def on_log(record: dict) -> None:  # called before the step's update: weights after step updates
        if args.curve:
            curve.append(round(evaluate(model, splits.x_test, splits.y_test)[1], 4))

    started = time.perf_counter()
    history = train(model, X, y, config, on_log=on_log)
    wall = time.perf_counter() - started
    test_loss, test_acc = evaluate(model, splits.x_test, splits.y_test)
    return {"seed": seed, "train_seconds": history.seconds, "wall_seconds": wall, "test_acc": test_acc,
            "test_loss": test_loss, "train_acc_last_epoch": history.train_acc[-1], "curve": curve}


def report(paths: list[str]) -> str:
    """A Markdown table of time-to-accuracy records (one row per record)."""
    lines = ["| recipe | seeds | test acc mean ± std (min) | seeds ≥ target | train s mean ± std | load before |",
             "| --- | --- | --- | --- | --- | --- |"]
    for path in paths:
        rec = json.loads(Path(path).read_text())
        r, s = rec["recipe"], rec["summary"]
        hits = sum(run["test_acc"] >= s["target"] for run in rec["runs"])
        recipe = (f"H={r['hidden']}, {r['bits']}-bit {r['ste']}, {r['optimizer']} lr {r['lr']} {r['schedule']}, "
                  f"batch {r['batch']}, {r['epochs']} epochs")
        lines.append(f"| {recipe} | {s['n_seeds']} | {100 * s['test_acc_mean']:.2f} ± {100 * s['test_acc_std']:.2f} "
                     f"({100 * s['test_acc_min']:.2f}) | {hits}/{s['n_seeds']} | {s['train_seconds_mean']:.2f} ± "
                     f"{s['train_seconds_std']:.2f} | {rec['loadavg_before'][0]:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--bits", type=int, default=2)
    p.add_argument("--ste", default="clipped_relu")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--optimizer", default="momentum", choices=("sgd", "momentum", "adam"))
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--schedule", default="cosine", choices=("constant", "cosine"))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--target", type=float, default=0.98)
    p.add_argument("--curve", action="store_true", help="also evaluate after every epoch (slower)")
    p.add_argument("--out", default=None, help="write the record as JSON")
    p.add_argument("--report", nargs="+", default=None, metavar="JSON", help="print a table of records")
    args = p.parse_args(argv)
    if args.report:
        print(report(args.report))
        return 0
    load_before = load_average()
    splits = prepare_dataset("mnist")
    runs = []
    for seed in range(args.seeds):
        runs.append(run_seed(splits, args, seed))
        print(json.dumps(runs[-1]), flush=True)
    accs = [r["test_acc"] for r in runs]
    secs = [r["train_seconds"] for r in runs]
    summary = {"test_acc_mean": statistics.mean(accs), "test_acc_std": statistics.pstdev(accs),
               "test_acc_min": min(accs), "train_seconds_mean": statistics.mean(secs),
               "train_seconds_std": statistics.pstdev(secs), "n_seeds": len(runs),
               "target": args.target, "met": statistics.mean(accs) >= args.target}
    print(json.dumps(summary, indent=1))
    if args.out:
        atomic_write_json(Path(args.out), {"recipe": vars(args), "runs": runs, "summary": summary,
                                           "machine": machine(), "loadavg_before": load_before,
                                           "loadavg_after": load_average(), "data": splits.record()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
