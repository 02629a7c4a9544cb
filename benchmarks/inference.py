"""Inference throughput on the MNIST test set: PyTorch fp32 vs ONNX fp32 vs ONNX int8.

    python benchmarks/inference.py [--hidden 128 512 2048] [--epochs 1] [--repeats 7] [--threads 2]

For each hidden size H: train (or reuse) an MLP 784-H-10 run (batch-norm, 2-bit codes)
in runs/, then time all variants of :func:`coarsegrad.bench.inference.inference_benchmark`
on the 10,000 test images in one call each (median of ``--repeats`` round-robin timings
after a warm-up). Writes results/export/inference.json and inference.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

from coarsegrad.bench.inference import inference_benchmark
from coarsegrad.data.splits import prepare_dataset
from coarsegrad.io.checkpoint import load_checkpoint
from coarsegrad.io.records import atomic_write_json, atomic_write_text, environment

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _mnist_runs import mnist_mlp_run  # noqa: E402

GOAL = 1.4  # int8 ≥ 1.4× fp32 at H ≥ 512


def cpu_info() -> dict[str, object]:
    """CPU model name and the SIMD features the int8 kernels use (Linux /proc/cpuinfo)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = set(fields.get("flags", "").split())
    return {"model_name": fields.get("model name"), "family": fields.get("cpu family"), "model": fields.get("model"),
            "simd": sorted(flags & {"avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8"})}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--hidden", type=int, nargs="+", default=[128, 512, 2048])
    p.add_argument("--bits", type=int, default=2)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-torch-dynamic", action="store_true", help="skip torch's dynamic int8 variant")
    p.add_argument("--runs", default="runs/export")
    p.add_argument("--out", default="results/export")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    splits = prepare_dataset("mnist")
    x, y = splits.x_test.numpy(), splits.y_test.numpy()
    lo_hi = ((0.0 - splits.mean) / splits.std, (1.0 - splits.mean) / splits.std)
    results = []
    for hidden in args.hidden:
        run_dir = mnist_mlp_run(Path(args.runs) / f"mnist-mlp{hidden}-b{args.bits}-e{args.epochs}-s{args.seed}",
                                hidden, args.bits, args.epochs, args.seed)
        model, _ = load_checkpoint(run_dir / "model.safetensors")
        started = time.time()
        r = inference_benchmark(model, x, y, input_range=lo_hi, repeats=args.repeats,
                                threads=args.threads, torch_dynamic=not args.no_torch_dynamic)
        r["run"], r["bench_seconds"] = str(run_dir), time.time() - started
        results.append(r)
        print(f"H={hidden}: " + ", ".join(f"{k} {r[k]['samples_per_s']:,.0f}/s" for k in VARIANTS if k in r), flush=True)
    record = {"command": " ".join(["python"] + sys.argv), "env": environment(), "cpu": cpu_info(),
              "load_average_1m": os.getloadavg()[0], "data": splits.record(),
              "goal": f"onnx_int8 >= {GOAL} x torch_fp32 at H >= 512", "results": results}
    out = Path(args.out)
    atomic_write_json(out / "inference.json", record)
    atomic_write_text(out / "inference.md", render(record))
    print(render(record))


VARIANTS = ("torch_fp32", "onnx_fp32", "onnx_int8", "torch_int8_dynamic")


def render(record: dict) -> str:
    env, cpu = record["env"], record.get("cpu", {})
    lines = [
        "# Inference throughput, MNIST test set (10,000 images, one call per pass)",
        "",
        f"Command: `{record['command']}`. Machine: {env['platform']}, {env['cpu_count']} CPUs "
        f"({cpu.get('model_name')}, family {cpu.get('family')} model {cpu.get('model')}, {' '.join(cpu.get('simd', []))}), "
        f"torch {env['torch']}, {record['results'][0]['threads']} threads for both runtimes; the CPUs were shared "
        f"with other processes (1-minute load average {record['load_average_1m']:.1f} at the end). "
        "Samples/s = 10,000 / median seconds of the timed passes (round-robin over variants, after a warm-up).",
        "",
        "torch_fp32 is the trained module's own forward (Linear, eval batch-norm, the staircase with its "
        "boundary correction); onnx_fp32 is the folded integer form with float32 weights in onnxruntime "
        "(exact codes); onnx_int8 quantizes the input to uint8 (QuantizeLinear) and the first layer to int8 "
        "(MatMulInteger), then thresholds at integers; torch_int8_dynamic is torch.ao dynamic quantization "
        "of both Linear layers.",
        "",
        "| H | variant | samples/s | × torch fp32 | × onnx fp32 | test accuracy | predictions = torch fp32 |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in record["results"]:
        for name in VARIANTS:
            if name not in r:
                continue
            v = r[name]
            lines.append(f"| {r['hidden']} | {name} | {v['samples_per_s']:,.0f} | "
                         f"{v['samples_per_s'] / r['torch_fp32']['samples_per_s']:.2f} | "
                         f"{v['samples_per_s'] / r['onnx_fp32']['samples_per_s']:.2f} | {v['accuracy']:.2%} | "
                         f"{v['pred_agree_with_torch_fp32']}/{r['samples']} |")
    lines += ["", "Goal: " + record["goal"] + "."]
    for r in record["results"]:
        if r["hidden"] >= 512:
            met = r["speedup_onnx_int8_vs_torch_fp32"] >= GOAL
            gap = (r["onnx_int8"]["accuracy"] - r["torch_fp32"]["accuracy"]) * 100
            lines.append(f"- H={r['hidden']}: onnx_int8 = {r['speedup_onnx_int8_vs_torch_fp32']:.2f}× torch fp32, "
                         f"{r['speedup_onnx_int8_vs_onnx_fp32']:.2f}× onnx fp32 — {'met' if met else 'NOT met'}; "
                         f"accuracy {gap:+.2f} points vs the float-weight model "
                         f"({'within' if abs(gap) <= 0.1 else 'outside'} 0.1).")
    lines += ["", "Hidden activations of the 10,000 images (bytes):", "",
              "| H | float32 | uint8 codes | packed codes |", "| --- | --- | --- | --- |"]
    for r in record["results"]:
        m = r["activation_bytes"]
        lines.append(f"| {r['hidden']} | {m['float32']:,} | {m['uint8_codes']:,} | {m['packed_codes']:,} "
                     f"({m['float32'] / m['packed_codes']:.0f}× smaller) |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
