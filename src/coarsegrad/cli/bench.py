"""``coarsegrad bench``: time quantized training against its baselines in one process.

Prints a table of medians, ratios and the speed goals (met / not met), then the synthetic
full-batch step (the paper's problem) against a plain PyTorch loop on 1 and 2 threads
(:mod:`coarsegrad.bench.synthetic`; ``--synthetic-only`` runs just that). ``--weights SPEC``
times the fully quantized MLP (QuantLinear weights + staircase) against float and Brevitas
instead (:mod:`coarsegrad.bench.full_quant`; no synthetic step). Nothing is
written unless asked: ``--json FILE``
also writes the record with the machine description and the load average before and
after, ``--markdown FILE`` the table. Numbers are only comparable on an otherwise idle machine: check the load.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from coarsegrad.bench.epoch import QUICK, BenchConfig, run_bench
from coarsegrad.bench.report import format_machine, format_markdown, format_table, load_average, machine
from coarsegrad.io.records import atomic_write_text
from coarsegrad.io.results import EpochBenchRecord, InferenceBenchRecord, SyntheticBenchRecord, write_record


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("bench", help="time quantized training against float and other STE baselines")
    p.add_argument("--quick", action="store_true", help="small sizes and two repeats (seconds)")
    p.add_argument("--json", default=None, metavar="FILE", help="write the record as JSON")
    p.add_argument("--markdown", default=None, metavar="FILE", help="write the table as Markdown")
    p.add_argument("--hidden", type=int, nargs="+", default=None, metavar="H", help="hidden widths")
    p.add_argument("--samples", type=int, default=None, help="training rows (default 60000)")
    p.add_argument("--repeats", type=int, default=None, help="timed epochs per variant after a warm-up")
    p.add_argument("--data", choices=("auto", "mnist", "random"), default=None,
                   help="auto: MNIST when found, else random data of that shape")
    p.add_argument("--no-brevitas", action="store_true", help="skip the Brevitas baseline")
    p.add_argument("--weights", default=None, metavar="KIND[:BITS][:GRANULARITY]",
                   help="fully quantized workload: QuantLinear weights (e.g. uniform:4, ternary, binary:channel; "
                        "method ste) against float and Brevitas QuantLinear + QuantReLU")
    p.add_argument("--conv", action="store_true",
                   help="with --weights: also time LeNet-5 (QuantConv2d) against float and Brevitas")
    p.add_argument("--synthetic-only", action="store_true",
                   help="only the synthetic full-batch step against a plain PyTorch loop (1 and 2 threads)")
    p.add_argument("--inference", nargs="+", default=None, metavar="RUN_DIR",
                   help="instead: inference throughput of trained MNIST runs (fp32 PyTorch, fp32 ONNX, "
                        "int8 ONNX) on the test set; needs the export extra")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from coarsegrad.bench.synthetic import format_synthetic, synthetic_step_bench

    if args.inference:
        return run_inference(args)
    synthetic_kw: dict[str, Any] = ({"steps": 200, "repeats": args.repeats or 2} if args.quick
                                    else {"repeats": args.repeats or 5})
    command = " ".join(["coarsegrad"] + sys.argv[1:])
    if args.synthetic_only:
        synthetic = synthetic_step_bench(**synthetic_kw)
        load = load_average()
        record = SyntheticBenchRecord(command=command, machine=machine(), synthetic=synthetic,
                                      loadavg_after=None if load is None else list(load))
        text = format_synthetic(synthetic)
        print(text)
        _write(args, record, text)
        return 0
    base = QUICK if args.quick else BenchConfig()
    changes: dict[str, Any] = {"brevitas": not args.no_brevitas, "conv": args.conv}
    if args.weights is not None:
        from coarsegrad.bench.full_quant import parse_weights

        changes["weights"] = parse_weights(args.weights)
    for name in ("hidden", "samples", "repeats", "data"):
        value = getattr(args, name)
        if value is not None:
            changes[name] = tuple(value) if name == "hidden" else value
    config = dataclasses.replace(base, **changes)
    raw: dict[str, Any] = {"command": command, "machine": machine()}
    raw.update(run_bench(config, log=lambda message: print(message, file=sys.stderr, flush=True)))
    raw["synthetic"] = None if config.weights is not None else synthetic_step_bench(**synthetic_kw)
    load = load_average()
    raw["loadavg_after"] = None if load is None else list(load)
    # checked as a typed record (as JSON will hold it) before anything is printed or written
    epoch_record = EpochBenchRecord.from_dict(json.loads(json.dumps(raw)), "bench record")
    synthetic_text = "" if raw["synthetic"] is None else format_synthetic(raw["synthetic"])
    print(format_table(raw))
    if raw.get("conv"):
        from coarsegrad.bench.full_quant import format_conv

        print()
        print(format_conv(raw["conv"]))
    print()
    print(synthetic_text)
    print(format_machine(raw))
    _write(args, epoch_record, format_markdown(raw) + "\n" + synthetic_text)
    return 0


def _write(args: argparse.Namespace, record: EpochBenchRecord | SyntheticBenchRecord, markdown: str) -> None:
    if args.json:
        write_record(args.json, record)
        print(f"wrote {args.json}")
    if args.markdown:
        atomic_write_text(args.markdown, markdown)
        print(f"wrote {args.markdown}")


def run_inference(args: argparse.Namespace) -> int:
    """Samples/s of each inference variant for each run (``coarsegrad.bench.inference``)."""
    import torch

    from coarsegrad.bench.inference import inference_benchmark
    from coarsegrad.data.splits import prepare_dataset
    from coarsegrad.io.checkpoint import load_checkpoint

    splits = prepare_dataset("mnist")
    x, y = splits.x_test.numpy(), splits.y_test.numpy()
    lo_hi = ((0.0 - splits.mean) / splits.std, (1.0 - splits.mean) / splits.std)
    rows = []
    for run_dir in args.inference:
        path = Path(run_dir) / "model.safetensors" if Path(run_dir).is_dir() else Path(run_dir)
        model, _ = load_checkpoint(path)
        result: dict[str, Any] = inference_benchmark(model, x, y, input_range=lo_hi, repeats=args.repeats or 5)
        rows.append({"run": run_dir, **result})
        print(f"{run_dir}: H={result['hidden']} " + " ".join(
            f"{name}={result[name]['samples_per_s']:,.0f}/s" for name in ("torch_fp32", "onnx_fp32", "onnx_int8"))
            + f" int8/fp32={result['speedup_onnx_int8_vs_torch_fp32']:.2f}x")
    if args.json:
        write_record(args.json, InferenceBenchRecord(machine=machine(), threads=torch.get_num_threads(), runs=rows))
        print(f"wrote {args.json}")
    return 0
