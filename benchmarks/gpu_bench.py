"""GPU speed of 2-bit quantized training: whole-step CUDA graphs, data resident on the device.

    python benchmarks/gpu_bench.py [--out results/bench/gpu.json]       # one GPU, < 5 min
    python benchmarks/gpu_bench.py --dry-run                            # tiny sizes, CPU ok

Measures the library's own training step — :class:`coarsegrad.MLP` 784 → H → 10 with the
2-bit staircase and the clipped-ReLU STE, its :class:`coarsegrad.training.fast.FastStep`
(exact codes, :class:`coarsegrad.quant.kernels.EagerQuantizer`) and the library optimizer,
SGD momentum 0.9:

1. one batch-1024 epoch at H = 512 (⌊N/1024⌋ steps captured as ONE CUDA graph: gather,
   forward, backward, momentum update), fp32 / tf32 matmuls and a pure-bfloat16 model,
   median of repeats;
2. the full-batch epoch (one step over all N rows, one graph) at H = 512;
3. the quantized activation's forward + backward against ReLU's on 10⁷ elements
   (eager exact kernels, the torch.compile-fused ones, and the autograd function);
4. time to 98% MNIST test accuracy from scratch (the recipe of ``--tta-*``), each
   precision, evaluating after every epoch.

Writes a JSON record with the card name. NOT YET RUN ON A GPU: written and checked in
``--dry-run`` on CPU only (CUDA graphs and bf16 paths are exercised only on CUDA);
``tests/bench/test_gpu_bench_script.py`` checks on the CPU that its fp32 step equals
autograd through :class:`coarsegrad.MLP` with ``torch.optim.SGD`` (momentum 0.9) to 1e-4.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import torch

from coarsegrad import MLP, ActQuant, TrainConfig, quantized_relu
from coarsegrad.quant.kernels import EagerQuantizer
from coarsegrad.training.fast import fast_step
from coarsegrad.training.loop import make_optimizer


class Trainer:
    """The library's training step on device-resident data: :class:`coarsegrad.MLP`
    784 → H → 10 (2-bit, clipped ReLU, α from its ActQuant), its
    :class:`~coarsegrad.training.fast.FastStep` and the library optimizer
    (:func:`~coarsegrad.training.loop.make_optimizer`, SGD momentum 0.9, fused) with the
    learning rate held as a device tensor so that a captured graph reads the schedule.
    Every op in :meth:`step` is capturable (no host sync, no Python-side data
    dependence). ``precision="bf16"`` runs the same step with weights and data in bfloat16."""

    def __init__(self, X, y, hidden, rows, lr, precision, seed=0):
        dev = X.device
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        gen = torch.Generator().manual_seed(seed)
        self.model = MLP(X.shape[1], hidden, 10, generator=gen, quant=ActQuant(2, None, "clipped_relu"))
        self.model.to(device=dev, dtype=dtype)
        self.X, self.y = X.to(dtype), y
        self.fast = fast_step(self.model, self.X, y, chunk_size=rows)
        if self.fast is None:
            raise RuntimeError("the library's fast step does not cover this model/dtype/device")
        self.params = list(self.model.parameters())  # fc1.weight, fc1.bias, fc2.weight, fc2.bias
        self.optimizer = make_optimizer(self.params, TrainConfig(optimizer="momentum", lr=lr, momentum=0.9))
        self.lr = torch.tensor(lr, device=dev)
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr
        self.alpha = self.model.act.alpha
        self.loss = torch.zeros((), dtype=torch.float64, device=dev)
        self.correct = torch.zeros((), dtype=torch.int64, device=dev)

    def step(self, idx):
        """One SGD-momentum step on the rows ``idx`` (a static device tensor)."""
        loss, correct = self.fast.accumulate(self.X, self.y, idx, 1.0 / idx.shape[0])
        self.loss += loss
        self.correct += correct
        self.optimizer.step()

    @torch.no_grad()
    def accuracy(self, X, y):
        return float((self.model(X.to(self.X.dtype)).argmax(1) == y).float().mean())


class Epoch:
    """⌊N/B⌋ steps (the last N mod B rows of each permutation are dropped) over a fresh
    device permutation, or one full-batch step; on CUDA captured once as one graph."""

    def __init__(self, trainer, batch, graph):
        n = trainer.X.shape[0]
        self.trainer, self.steps, self.batch = trainer, (n // batch if batch < n else 1), min(batch, n)
        self.order = torch.arange(self.steps * self.batch, device=trainer.X.device).view(self.steps, self.batch)
        self.graph = None
        if graph:  # warm up on a side stream (lazy cuBLAS init), then undo the warm-up's updates
            state = [t.clone() for t in trainer.params + trainer.bufs]
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(3):
                    trainer.step(self.order[0])
            torch.cuda.current_stream().wait_stream(stream)
            torch._foreach_copy_(trainer.params + trainer.bufs, state)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self._steps()

    def _steps(self):
        for s in range(self.steps):
            self.trainer.step(self.order[s])

    def __call__(self):
        n = self.trainer.X.shape[0]
        if self.steps > 1:
            self.order.copy_(torch.randperm(n, device=self.order.device)[:self.order.numel()].view_as(self.order))
        self.trainer.loss.zero_()
        self.trainer.correct.zero_()
        if self.graph is not None:
            self.graph.replay()
        else:
            self._steps()


def seconds(fn, cuda):
    """Seconds of one ``fn()`` call, the device synchronised before and after."""
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start


def timed(fn, repeats, cuda):
    """Median seconds of ``fn()`` over ``repeats`` calls after one warm-up (synchronised)."""
    fn()
    return statistics.median(seconds(fn, cuda) for _ in range(repeats))


def compiled_forward(eager):
    """A candidate kernel measured against the library's (never used for training): one
    fused torch.compile kernel with the codes of EagerQuantizer's ``correct`` path (ceil
    rounding, exact for every L) and the clipped-ReLU indicator as uint8."""
    top, alpha, q = eager.top, eager.alpha, eager.quant.q_max

    def fused(h, codes, mask):
        u = torch.clamp(h, 0.0, top)
        c = torch.ceil(u / alpha)
        c = c - ((c - 1.0) * alpha >= u).to(c.dtype)
        codes.copy_(c + (c * alpha < u).to(c.dtype))
        mask.copy_(((h > 0) & (h <= q)).to(h.dtype).to(torch.uint8))

    return torch.compile(fused)


def activation_bench(n, repeats, device, cuda):
    """Forward + backward of σ (exact codes, clipped-ReLU STE) vs ReLU on ``n`` elements."""
    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(n, generator=gen, device=device)
    grad = torch.randn(n, generator=gen, device=device)
    quant = ActQuant(2, None, "clipped_relu", "ceil")  # the compiled candidate computes ceil codes
    h, codes, scratch = torch.empty_like(x), torch.empty_like(x), torch.empty_like(x)
    flags = torch.empty(n, dtype=torch.uint8, device=device)
    eager = EagerQuantizer(quant, torch.float32, device)

    def relu():
        y = torch.relu(x)
        return torch.ops.aten.threshold_backward(grad, y, 0)

    def copy_only():
        h.copy_(x)

    def ours_eager():
        h.copy_(x)  # the kernel overwrites its input
        mask = eager.forward(h, codes, scratch)
        return eager.backward(scratch.copy_(grad), h, mask)

    def autograd():
        xr = x.detach().requires_grad_()
        quantized_relu(xr, quant).backward(grad)

    out = {"elements": n, "relu_s": timed(relu, repeats, cuda), "copy_s": timed(copy_only, repeats, cuda),
           "ours_eager_incl_2_copies_s": timed(ours_eager, repeats, cuda),
           "autograd_function_s": timed(autograd, repeats, cuda)}
    try:
        fused = compiled_forward(eager)

        def ours_compiled():
            fused(x, codes, flags)
            return h.copy_(grad).mul_(flags)

        out["ours_compiled_incl_1_copy_s"] = timed(ours_compiled, repeats, cuda)
    except Exception as exc:  # torch.compile unavailable (no triton / compiler)
        out["ours_compiled_error"] = repr(exc)[:300]
    return out


def load_data(device, samples):
    try:
        from coarsegrad.data.splits import prepare_dataset

        s = prepare_dataset("mnist", device=device)
        return s.x_train[:samples].contiguous(), s.y_train[:samples].contiguous(), s.x_test, s.y_test, "mnist"
    except (ImportError, ValueError, OSError):
        gen = torch.Generator().manual_seed(0)
        X, y = torch.randn(samples, 784, generator=gen), torch.randint(0, 10, (samples,), generator=gen)
        return X.to(device), y.to(device), None, None, "random"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="results/bench/gpu.json")
    p.add_argument("--dry-run", action="store_true", help="tiny sizes; runs on CPU")
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--tta-hidden", type=int, default=2048)
    p.add_argument("--tta-lr", type=float, default=0.05)
    p.add_argument("--tta-batch", type=int, default=512)
    p.add_argument("--tta-epochs", type=int, default=20)
    args = p.parse_args(argv)
    cuda = torch.cuda.is_available() and not args.dry_run
    device = torch.device("cuda" if cuda else "cpu")
    torch.set_float32_matmul_precision("highest")  # fp32: no TF32 unless asked for
    samples, repeats = (2048, 2) if args.dry_run else (60000, args.repeats)
    hidden, tta_hidden = (64, 64) if args.dry_run else (args.hidden, args.tta_hidden)
    X, y, Xt, yt, source = load_data(device, samples)
    record = {"card": torch.cuda.get_device_name() if cuda else "cpu (dry run)", "device": str(device),
              "torch": torch.__version__, "cuda": torch.version.cuda, "dry_run": args.dry_run, "data": source,
              "not_run_on_gpu_before": "this script was written and checked only with --dry-run on CPU"}
    started = time.perf_counter()
    for precision in ("fp32", "tf32", "bf16"):
        if precision == "tf32" and not cuda:
            continue
        torch.set_float32_matmul_precision("high" if precision == "tf32" else "highest")
        t0 = time.perf_counter()
        batch_epoch = Epoch(Trainer(X, y, hidden, 1024 if not args.dry_run else 256, 0.01, precision), 1024
                            if not args.dry_run else 256, graph=cuda)
        full_epoch = Epoch(Trainer(X, y, hidden, samples, 0.01, precision), samples, graph=cuda)
        record[f"{precision}_capture_s"] = time.perf_counter() - t0
        record[f"{precision}_batch1024_epoch_s"] = timed(batch_epoch, repeats, cuda)
        record[f"{precision}_full_batch_epoch_s"] = timed(full_epoch, repeats, cuda)
        print(precision, {k: v for k, v in record.items() if k.startswith(precision)}, flush=True)
        if Xt is not None:
            record[f"{precision}_time_to_98"] = time_to_accuracy(X, y, Xt, yt, tta_hidden, args, precision, cuda)
            print(precision, record[f"{precision}_time_to_98"], flush=True)
    torch.set_float32_matmul_precision("highest")
    record["activation"] = activation_bench(10**5 if args.dry_run else 10**7, repeats, device, cuda)
    record["total_s"] = time.perf_counter() - started
    print(json.dumps(record["activation"], indent=1))
    out = Path(args.out if not args.dry_run or args.out != p.get_default("out") else "/tmp/gpu_bench_dry.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    print(f"wrote {out} in {record['total_s']:.1f} s")


def time_to_accuracy(X, y, Xt, yt, hidden, args, precision, cuda, target=0.98):
    """Epochs of the recipe until the test accuracy reaches ``target``; seconds of
    training (synchronised, excluding evaluation) and of the whole loop."""
    t0 = time.perf_counter()
    trainer = Trainer(X, y, hidden, args.tta_batch, args.tta_lr, precision, seed=1)
    epoch = Epoch(trainer, args.tta_batch, graph=cuda)
    setup, train_s, history = time.perf_counter() - t0, 0.0, []
    epochs = 1 if args.dry_run else args.tta_epochs
    for e in range(epochs):
        trainer.lr.fill_(args.tta_lr * 0.5 * (1 + math.cos(math.pi * e / epochs)))  # cosine per epoch
        train_s += seconds(epoch, cuda)
        history.append(trainer.accuracy(Xt, yt))
        if history[-1] >= target:
            break
    reached = bool(history and history[-1] >= target)
    return {"reached": reached, "epochs": len(history), "train_s": train_s, "setup_capture_s": setup,
            "wall_s": time.perf_counter() - t0, "test_acc": history, "hidden": hidden,
            "batch": args.tta_batch, "lr": args.tta_lr, "schedule": f"cosine over {epochs} epochs"}


if __name__ == "__main__":
    main()
