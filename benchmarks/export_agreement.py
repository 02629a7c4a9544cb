"""Agreement of PyTorch, onnxruntime and the NumPy integer engine on the MNIST test set.

    python benchmarks/export_agreement.py [--hidden 512] [--bits 2] [--epochs 2]
    python benchmarks/export_agreement.py --model lenet5 [--bits 2] [--epochs 1] [--lr 0.05]

MLP: trains (or reuses) an MLP 784-H-10 run in runs/, exports it (float32 and int8 first
layer), runs all three implementations on the 10,000 test images and writes
results/export/agreement.json and agreement.md. Counts are defined in
:mod:`coarsegrad.export.agreement`.

Quantized weights (``--weight-kind ternary|binary|uniform [--weight-bits B] [--weight-granularity
layer|channel]``, either model): the integer-only form (:mod:`coarsegrad.export.qmodel`), PyTorch
vs NumPy engine vs onnxruntime per layer on the 10,000 test images
(:mod:`coarsegrad.export.qagreement`), packed size vs float32 and images/s of the three;
writes results/export/agreement_qweights_{mlp,lenet5}.json and .md.

LeNet-5: trains (or reuses) a LeNet-5 run (momentum SGD, batch 128), exports it to ONNX
(batch-norm folded) and compares PyTorch with onnxruntime per quantized layer on the
10,000 test images (:mod:`coarsegrad.export.layer_agreement`); writes
results/export/agreement_lenet5.json and agreement_lenet5.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

from coarsegrad.data.datasets import load_dataset
from coarsegrad.data.splits import prepare_dataset
from coarsegrad.export import build_onnx, onnx_session, pack_codes, to_integer
from coarsegrad.export.agreement import agreement, engine_outputs, onnx_outputs
from coarsegrad.export.layer_agreement import layer_agreement
from coarsegrad.export.onnx_graph import run_onnx
from coarsegrad.export.onnx_lenet import build_lenet_onnx
from coarsegrad.export.onnx_qmodel import build_qmodel_onnx, integer_ops
from coarsegrad.export.qagreement import qmodel_agreement
from coarsegrad.export.qmodel import deployed_size, images_per_second, to_quantized
from coarsegrad.export.qmodel_io import save_quantized
from coarsegrad.io.checkpoint import load_checkpoint, save_checkpoint
from coarsegrad.io.records import atomic_write_json, atomic_write_text, environment
from coarsegrad.io.runs import load_run

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _mnist_runs import mnist_lenet_run, mnist_mlp_run  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", choices=("mlp", "lenet5"), default="mlp")
    p.add_argument("--hidden", type=int, default=512, help="MLP hidden units")
    p.add_argument("--bits", type=int, default=2)
    p.add_argument("--epochs", type=int, default=None, help="(default: 2 for mlp, 1 for lenet5)")
    p.add_argument("--lr", type=float, default=0.05, help="LeNet-5 momentum SGD learning rate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", default="runs/export")
    p.add_argument("--out", default="results/export")
    p.add_argument("--weight-kind", choices=("float", "binary", "ternary", "uniform"), default="float")
    p.add_argument("--weight-bits", type=int, default=None)
    p.add_argument("--weight-granularity", choices=("layer", "channel"), default="layer")
    p.add_argument("--repeats", type=int, default=3, help="timed passes for images/s (quantized weights)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    started = time.time()
    if args.weight_kind != "float":
        qweights_main(args, started)
        return
    if args.model == "lenet5":
        lenet_main(args, 1 if args.epochs is None else args.epochs, started)
        return
    args.epochs = 2 if args.epochs is None else args.epochs
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


def lenet_main(args: argparse.Namespace, epochs: int, started: float) -> None:
    run_dir = mnist_lenet_run(Path(args.runs) / f"mnist-lenet5-b{args.bits}-e{epochs}-lr{args.lr:g}-s{args.seed}",
                              args.bits, epochs, args.seed, args.lr)
    model, config = load_run(run_dir)
    splits = prepare_dataset("mnist")
    session = onnx_session(build_lenet_onnx(model, with_preact=True), threads=args.threads)
    report = layer_agreement(model, session, splits.x_test.numpy(), (784,), splits.y_test.numpy())
    summary = json.loads((run_dir / "summary.json").read_text())
    record = {"command": " ".join(["python"] + sys.argv), "run": str(run_dir), "run_summary": summary,
              "run_config": config, "data": splits.record(), "env": environment(),
              "seconds": time.time() - started, **report}
    out = Path(args.out)
    atomic_write_json(out / "agreement_lenet5.json", record)
    atomic_write_text(out / "agreement_lenet5.md", render_lenet(record))
    print(render_lenet(record))


def qweights_main(args: argparse.Namespace, started: float) -> None:
    """Quantized weights: integer-only form, three-way agreement, sizes and speed."""
    weights = {"weight_kind": args.weight_kind, "weight_bits": args.weight_bits,
               "weight_granularity": args.weight_granularity}
    tag = f"w-{args.weight_kind}{args.weight_bits or ''}-{args.weight_granularity}"
    if args.model == "lenet5":
        epochs = 1 if args.epochs is None else args.epochs
        run_dir = mnist_lenet_run(Path(args.runs) / f"mnist-lenet5-b{args.bits}-e{epochs}-lr{args.lr:g}-s{args.seed}-{tag}",
                                  args.bits, epochs, args.seed, args.lr, **weights)
    else:
        epochs = 1 if args.epochs is None else args.epochs
        run_dir = mnist_mlp_run(Path(args.runs) / f"mnist-mlp{args.hidden}-b{args.bits}-e{epochs}-s{args.seed}-{tag}",
                                args.hidden, args.bits, epochs, args.seed, **weights)
    model, config = load_run(run_dir)
    model.eval()
    splits = prepare_dataset("mnist")
    x, y = splits.x_test.numpy(), splits.y_test.numpy()
    qm = to_quantized(model, (splits.mean, splits.std))
    session = onnx_session(build_qmodel_onnx(qm, with_codes=True), threads=args.threads)
    trained = time.time()
    report = qmodel_agreement(model, qm, x, y, session)
    agreement_s = time.time() - trained
    packed_path = save_quantized(run_dir / "model.qint.safetensors", qm)
    packed, full = deployed_size(model)
    plain = onnx_session(build_qmodel_onnx(qm), threads=args.threads)

    def torch_predict(xs):
        with torch.inference_mode():
            return model(torch.from_numpy(xs)).argmax(1)

    speed = {"engine_numpy": images_per_second(qm.predict, x, args.repeats),
             "torch_float32": images_per_second(torch_predict, x, args.repeats),
             "onnxruntime": images_per_second(lambda xs: run_onnx(plain, xs)["logits"].argmax(1), x, args.repeats)}
    summary = json.loads((run_dir / "summary.json").read_text())
    record = {"command": " ".join(["python"] + sys.argv), "run": str(run_dir), "run_summary": summary,
              "run_config": config, "data": splits.record(), "env": environment(),
              "model": args.model, "weight_quant": config["model"], "layer_bounds": [qm.bound(i) for i in range(len(qm.layers))],
              "integer_ops_layers": [i + 1 for i in range(len(qm.layers)) if integer_ops(qm, i)],
              "size_bytes": {"packed_tensors": packed, "packed_file": packed_path.stat().st_size,
                             "float32_state": full, "float32_run_file": (run_dir / "model.safetensors").stat().st_size},
              "images_per_s": speed, "threads": args.threads, "load_average_after": list(os.getloadavg()),
              "agreement_seconds": agreement_s, "seconds": time.time() - started, **report}
    out = Path(args.out)
    atomic_write_json(out / f"agreement_qweights_{args.model}.json", record)
    atomic_write_text(out / f"agreement_qweights_{args.model}.md", render_qweights(record))
    print(render_qweights(record))


def render_qweights(r: dict) -> str:
    m, t = r["run_config"]["model"], r["run_config"]["train"]
    wbits = f" {m['weight_bits']}-bit" if m.get("weight_bits") else ""
    name = "LeNet-5 (conv 20, conv 50, fc 500)" if r["model"] == "lenet5" else f"MLP 784-{m['hidden']}-10"
    acc, size, speed = r["accuracy"], r["size_bytes"], r["images_per_s"]
    ov = r["onnx_vs_engine"]
    lines = [
        f"# Integer-only {r['model']} with quantized weights: agreement on the MNIST test set",
        "",
        f"Model: {name}, batch-norm folded into integer thresholds, {m['bits']}-bit activations, "
        f"{m['weight_kind']}{wbits} weights per {m['weight_granularity']} ({m['weight_method']}), trained "
        f"{t['epochs']} epoch(s), {t['optimizer']} lr {t['lr']}, batch {t['batch_size']}, seed {t['seed']} "
        f"(run `{r['run']}`). Command: `{r['command']}`; machine: {r['env']['platform']}, {r['env']['cpu_count']} "
        f"CPUs (shared), torch {r['env']['torch']}; wall time {r['seconds']:.0f} s (agreement pass "
        f"{r['agreement_seconds']:.0f} s). Definitions in `coarsegrad.export.qagreement`.",
        "",
        f"Accumulator bounds A per layer: {', '.join(f'{b:,}' for b in r['layer_bounds'])} "
        f"(float32 Conv/MatMul exact below 2^24 = 16,777,216; integer operators in layers: "
        f"{r['integer_ops_layers'] or 'none'}).",
        "",
        "PyTorch (float32) vs NumPy integer engine, per hidden layer:",
        "",
        "| layer | module | codes | within rounding of a threshold | codes differ | near a threshold | downstream | unexplained "
        "| ONNX vs engine codes differ |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for s in r["layers"]:
        lines.append(f"| {s['layer']} | {s['module']} | {s['codes_total']:,} | {s['units_near_threshold']} | {s['code_disagree']} | "
                     f"{s['near_threshold']} | "
                     f"{s['downstream']} | {s['unexplained']} | {s['onnx_vs_engine_code_disagree']} |")
    lines += [
        "",
        f"Predictions: PyTorch vs engine differ on {r['torch_vs_engine_pred_disagree']} of {r['samples']} images "
        f"({r['torch_vs_engine_pred_unexplained']} unexplained). onnxruntime vs engine: logits not bit-for-bit "
        f"equal on {ov['samples_with_logits_not_bitwise_equal']} images, {ov['code_disagree']} codes differ, "
        f"{ov['pred_disagree']} predictions differ.",
        f"Test accuracy: PyTorch {acc['torch']:.4%}, NumPy engine {acc['engine']:.4%}, onnxruntime {acc['onnx']:.4%}.",
        "",
        f"Size: packed tensors {size['packed_tensors']:,} B (file {size['packed_file']:,} B with its header) vs float32 "
        f"eval state {size['float32_state']:,} B ({size['float32_state'] / size['packed_tensors']:.1f}× smaller; the "
        f"run's float32 checkpoint file is {size['float32_run_file']:,} B).",
        f"Speed ({r['threads']} threads, median of timed passes over the 10,000 images, load average after "
        f"{r['load_average_after'][0]:.1f}): NumPy engine {speed['engine_numpy']:,.0f} images/s, PyTorch float32 "
        f"{speed['torch_float32']:,.0f} images/s ({speed['engine_numpy'] / speed['torch_float32']:.2f}×), onnxruntime "
        f"{speed['onnxruntime']:,.0f} images/s.",
        "",
    ]
    for d in r["differing_codes"][:40]:
        lines.append(f"- layer {d['layer']}, image {d['sample']}, unit {d['unit']}: PyTorch z = {d['z_torch']:.9g}, code "
                     f"{d['code_torch']} (engine {d['code_engine']}), distance to threshold {d['distance_to_threshold']:.3g}, "
                     f"tol {d['tolerance']:.3g}: {d['class']}")
    for p in r["differing_predictions"]:
        lines.append(f"- prediction, image {p['sample']}: PyTorch {p['torch']}, engine {p['engine']} ({p['class']}; "
                     f"engine top-two gap {p['top2_gap_engine']:.3g}, tie tolerance {p['tie_tolerance']:.3g})")
    return "\n".join(lines + [""])


def render_lenet(r: dict) -> str:
    t = r["run_config"]["train"]
    lines = [
        "# LeNet-5 export agreement on the MNIST test set",
        "",
        f"Model: LeNet-5 (conv 20, conv 50, fc 500; batch-norm folded into the Conv/Gemm before it), "
        f"{r['run_config']['model']['bits']}-bit codes, trained {t['epochs']} epoch(s), {t['optimizer']} lr {t['lr']}, "
        f"batch {t['batch_size']}, seed {t['seed']} (run `{r['run']}`). Command: `{r['command']}`; machine: "
        f"{r['env']['platform']}, {r['env']['cpu_count']} CPUs, torch {r['env']['torch']}. PyTorch against "
        f"onnxruntime on {r['samples']} images; definitions in `coarsegrad.export.layer_agreement`.",
        "",
        "| site | module | layer | codes | codes differ | near a threshold | downstream | unexplained |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for s in r["sites"]:
        lines.append(f"| {s['site']} | {s['module']} | {s['layer']} | {s['codes_total']:,} | {s['code_disagree']} | "
                     f"{s['near_threshold']} | {s['downstream']} | {s['unexplained']} |")
    acc = r["accuracy"]
    lines += [
        "",
        f"Predictions differ on {r['pred_disagree']} of {r['samples']} images "
        f"({r['pred_disagree_with_code_disagree']} of them with a code difference). "
        f"Test accuracy: PyTorch {acc['torch']:.4%}, onnxruntime {acc['onnx']:.4%}.",
        "",
    ]
    if r["differing_codes"]:
        lines += ["Differing codes (first 40; all listed up to 1000 in the JSON): site, image, unit, PyTorch z, "
                  "onnxruntime z, distance of PyTorch's z to the nearest threshold, rounding bound tol.", "",
                  "| site | image | unit | z torch | z onnx | distance | tol | class |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for d in r["differing_codes"][:40]:
            tol = "—" if d["tolerance"] is None else f"{d['tolerance']:.3g}"
            lines.append(f"| {d['site']} | {d['sample']} | {d['unit']} | {d['z_torch']:.9g} | {d['z_onnx']:.9g} | "
                         f"{d['distance_to_threshold']:.3g} | {tol} | {d['class']} |")
        lines.append("")
    for p in r["differing_predictions"]:
        lines.append(f"- image {p['sample']}: PyTorch {p['torch']}, onnxruntime {p['onnx']}; code difference in "
                     f"that image: {p['has_code_disagree']}; PyTorch's top-two logit gap {p['top2_gap_torch']:.3g}.")
    return "\n".join(lines + [""])


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
