"""Agreement of PyTorch, onnxruntime and the NumPy integer engine on the MNIST test set.

    python benchmarks/export_agreement.py [--hidden 512] [--bits 2] [--epochs 2]

Trains (or reuses) an MLP 784-H-10 run in runs/, exports it (float32 and int8 first
layer), runs all three implementations on the 10,000 test images and writes
results/export/agreement.json and agreement.md. Counts are defined in
:mod:`coarsegrad.export.agreement`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from coarsegrad.data.datasets import load_dataset
from coarsegrad.data.splits import prepare_dataset
from coarsegrad.export import build_onnx, onnx_session, pack_codes, to_integer
from coarsegrad.export.agreement import agreement, engine_outputs, onnx_outputs
from coarsegrad.io.checkpoint import load_checkpoint, save_checkpoint
from coarsegrad.io.records import atomic_write_json, atomic_write_text, environment

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _mnist_runs import mnist_mlp_run  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--bits", type=int, default=2)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", default="runs/export")
    p.add_argument("--out", default="results/export")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    started = time.time()
    run_dir = mnist_mlp_run(Path(args.runs) / f"mnist-mlp{args.hidden}-b{args.bits}-e{args.epochs}-s{args.seed}",
                            args.hidden, args.bits, args.epochs, args.seed)
    model, header = load_checkpoint(run_dir / "model.safetensors")
    splits = prepare_dataset("mnist")
    x, y = splits.x_test.numpy(), splits.y_test.numpy()
    save_checkpoint(run_dir / "checkpoint.safetensors", model, config=header["run_config"],
                    normalization=(splits.mean, splits.std), run=str(run_dir))
    lo_hi = ((0.0 - splits.mean) / splits.std, (1.0 - splits.mean) / splits.std)
    float_form = to_integer(model)
    int8_form = to_integer(model, weights="int8", input_range=lo_hi)
    report = {"float32": agreement(model, float_form, x, y, onnx_session(build_onnx(float_form, with_codes=True))),
              "int8": agreement(model, int8_form, x, y, onnx_session(build_onnx(int8_form, with_codes=True)))}
    # The same float graph without the boundary correction (plain Clip(Ceil(z/α))): how many codes move?
    plain = onnx_outputs(onnx_session(build_onnx(float_form, with_codes=True, exact=False)), x)
    exact = engine_outputs(float_form, x)
    report["float32_plain_ceil"] = {"code_disagree_vs_engine": int((plain.codes != exact.codes).sum()),
                                    "pred_disagree_vs_engine": int((plain.pred != exact.pred).sum()),
                                    "codes_total": int(exact.codes.size)}
    p8 = int8_form.quantize_input(x)
    pixels = load_dataset("mnist", "test")[0].reshape(len(x), -1).numpy()
    report["int8_input_quantization"] = {"inputs_equal_to_raw_pixels": int((p8 == pixels).sum()),
                                         "inputs_total": int(p8.size)}
    packed = pack_codes(exact.codes, args.bits)
    report["activation_memory_bytes"] = {"float32": int(exact.codes.size * 4), "uint8": int(exact.codes.size),
                                         "packed": int(packed.size)}
    summary = json.loads((run_dir / "summary.json").read_text())
    record = {"command": " ".join(["python"] + sys.argv), "run": str(run_dir), "run_summary": summary,
              "run_config": header["run_config"], "data": splits.record(), "env": environment(),
              "seconds": time.time() - started, **report}
    out = Path(args.out)
    atomic_write_json(out / "agreement.json", record)
    atomic_write_text(out / "agreement.md", render(record))
    print(render(record))


def render(r: dict) -> str:
    f, q = r["float32"], r["int8"]
    n, units = f["samples"], f["codes_total"]
    lines = [
        "# Export agreement on the MNIST test set",
        "",
        f"Model: MLP 784-{f['hidden']}-10, batch-norm folded, {f['bits']}-bit codes (α = {f['alpha']:.6g}), "
        f"trained {r['run_config']['train']['epochs']} epochs (run `{r['run']}`, seed {r['run_config']['train']['seed']}). "
        f"Command: `{r['command']}`; machine: {r['env']['platform']}, {r['env']['cpu_count']} CPUs, "
        f"torch {r['env']['torch']}. Counts out of {n} images and {units} codes; definitions in "
        "`coarsegrad.export.agreement`.",
        "",
        "| first layer | pair | codes differ | of which near a threshold | unexplained | predictions differ | unexplained |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, rep in (("float32", f), ("int8", q)):
        for pair in ("torch_vs_engine", "onnx_vs_engine", "torch_vs_onnx"):
            c = rep[pair]
            lines.append(f"| {name} | {pair.replace('_vs_', ' vs ')} | {c['code_disagree']} | "
                         f"{c.get('code_disagree_near_threshold', '—')} | {c.get('code_disagree_unexplained', '— (quantization)')} | "
                         f"{c['pred_disagree']} | {c.get('pred_disagree_unexplained', '—')} |")
    acc_f, acc_q = f["accuracy"], q["accuracy"]
    plain = r["float32_plain_ceil"]
    mem = r["activation_memory_bytes"]
    lines += [
        "",
        f"Units whose pre-activation lies within float32 rounding of a step edge: float32 {f['units_near_threshold']}, "
        f"int8 {q['units_near_threshold']} (of {units}).",
        f"Test accuracy: PyTorch {acc_f['torch']:.4%}, NumPy engine {acc_f['engine']:.4%}, onnxruntime {acc_f['onnx']:.4%} "
        f"(float32 first layer); int8 engine {acc_q['engine']:.4%}, int8 onnxruntime {acc_q['onnx']:.4%}.",
        f"Without the boundary correction (plain Clip(Ceil(z/α))) the float graph differs from the exact codes in "
        f"{plain['code_disagree_vs_engine']} of {plain['codes_total']} codes and {plain['pred_disagree_vs_engine']} predictions.",
        f"int8 input quantization recovers the raw 8-bit pixel exactly for "
        f"{r['int8_input_quantization']['inputs_equal_to_raw_pixels']} of {r['int8_input_quantization']['inputs_total']} inputs.",
        f"Hidden activations of the test set: float32 {mem['float32']:,} B, uint8 codes {mem['uint8']:,} B, "
        f"packed {mem['packed']:,} B ({mem['float32'] / mem['packed']:.0f}× smaller than float32).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
