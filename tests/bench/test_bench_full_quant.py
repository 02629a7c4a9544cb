"""`coarsegrad bench --weights`: the fully quantized workload (tiny sizes, no timing asserts);
Brevitas' quantized weights as an independent oracle of the same uniform rule."""

import json
from dataclasses import replace

import pytest
import torch

from coarsegrad.bench.epoch import BenchConfig, ours_model, run_bench
from coarsegrad.bench.full_quant import parse_weights
from coarsegrad.bench.report import format_markdown, format_table
from coarsegrad.cli.main import main
from coarsegrad.errors import ConfigError
from coarsegrad.io.results import EpochBenchRecord, read_record
from coarsegrad.quant.qlayers import QuantLinear
from coarsegrad.quant.weight_spec import WeightQuant
from coarsegrad.quant.weights import weight_codes

TINY = BenchConfig(hidden=(8, 16), samples=200, batch_size=64, repeats=1, sgemm_size=32, data="random",
                   brevitas=False, weights=WeightQuant("uniform", 4))


@pytest.mark.parametrize("text,want", [
    ("uniform:4", WeightQuant("uniform", 4)),
    ("uniform:2:channel", WeightQuant("uniform", 2, "channel")),
    ("ternary", WeightQuant("ternary")),
    ("binary:channel", WeightQuant("binary", granularity="channel")),
])
def test_parse_weights(text, want):
    assert parse_weights(text) == want


@pytest.mark.parametrize("text", ["uniform", "uniform:9", "float:4", "uniform:4:channel:x", "ternary:channel:2",
                                  "binary:2", ""])
def test_parse_weights_rejects_with_the_field(text):
    with pytest.raises(ConfigError) as info:
        parse_weights(text)
    assert info.value.field == "weights"


def test_ours_trains_quantized_linear_layers():
    model = ours_model(TINY, 784, 8, TINY.weights)
    layers = [m for m in model.modules() if isinstance(m, QuantLinear)]
    assert len(layers) == 2 and all(m.weight_quant == TINY.weights for m in layers)
    assert not any(isinstance(m, QuantLinear) for m in ours_model(TINY, 784, 8).modules())


def test_full_quant_record_structure():
    record = run_bench(TINY)
    assert record["config"]["weights"]["kind"] == "uniform" and record["config"]["weights"]["bits"] == 4
    for r in record["results"]:
        assert set(r["variants"]) == {"ours", "ours_float_weights", "float_relu"}
        assert all(v["median_s"] > 0 and len(v["times_s"]) == 1 for v in r["variants"].values())
        assert r["ratios"]["ours/float_relu"] == pytest.approx(
            r["variants"]["ours"]["times_s"][0] / r["variants"]["float_relu"]["times_s"][0])
        assert "full_batch_step/ours" not in r["ratios"]
    goals = {g["goal"] for g in record["goals"]}
    assert goals == set()  # no H ≥ 512 and no Brevitas: no goal applies
    table = format_table(record)
    assert "QuantLinear + QuantReLU (autograd)" in table and "float weights (fast path)" in table
    assert "with QuantLinear weights (uniform, 4 bits per layer, method ste" in format_markdown(record)


def test_float_goal_is_judged_at_h_512_and_above():
    from coarsegrad.bench.full_quant import full_quant_goals

    results = [{"hidden": h, "ratios": {"ours/float_relu": v}} for h, v in ((128, 2.0), (512, 1.25), (2048, 1.31))]
    (goal,) = full_quant_goals(results)
    assert goal["values"] == {512: 1.25, 2048: 1.31} and goal["met"] is False
    (goal,) = full_quant_goals(results[:2])
    assert goal["met"] is True


def test_cli_full_quant_writes_a_record_without_the_synthetic_step(tmp_path, capsys):
    out, md = tmp_path / "bench.json", tmp_path / "bench.md"
    code = main(["bench", "--quick", "--weights", "ternary:channel", "--hidden", "8", "--samples", "200", "--repeats", "1",
                 "--data", "random", "--no-brevitas", "--json", str(out), "--markdown", str(md)])
    assert code == 0
    record = read_record(out, EpochBenchRecord)
    assert record.synthetic is None and record.config["weights"]["granularity"] == "channel"
    assert json.loads(out.read_text())["results"][0]["hidden"] == 8
    assert "QuantLinear weights (ternary" in md.read_text()
    assert main(["bench", "--weights", "uniform:1", "--hidden", "8"]) == 2
    assert "weights" in capsys.readouterr().err


@pytest.mark.parametrize("granularity", ["layer", "channel"])
def test_brevitas_baseline_quantizes_weights_by_the_same_uniform_rule(granularity, gen):
    pytest.importorskip("brevitas")
    from coarsegrad.bench.baselines import brevitas_quant_mlp

    model = brevitas_quant_mlp(784, 32, 10, 0, 4, 2, granularity == "channel")
    assert model is not None
    for layer in (model[0], model[2]):
        q = layer.quant_weight()
        codes, scales = weight_codes(layer.weight.detach(), WeightQuant("uniform", 4, granularity))
        torch.testing.assert_close(q.scale.detach().reshape(scales.shape), scales)
        agree = (torch.round(q.value.detach() / q.scale.detach()) == codes.float()).float().mean()
        assert agree >= 0.999  # the same codes but where float32 rounding of w/s differs at a half
        assert float(q.bit_width) == 4.0


def test_brevitas_full_variant_when_installed():
    pytest.importorskip("brevitas")
    record = run_bench(replace(TINY, hidden=(8,), brevitas=True))
    r = record["results"][0]
    assert len(r["variants"]["brevitas_full"]["warmup_s"]) == -(-300 // 4) + 1  # after its statistics steps
    goals = {g["goal"] for g in record["goals"]}
    assert "fully quantized epoch / Brevitas epoch (after its 300 statistics steps)" in goals
    assert "Brevitas QuantLinear + QuantReLU, inside its statistics phase" in format_table(record)
    binary = run_bench(replace(TINY, hidden=(8,), brevitas=True, weights=WeightQuant("binary"), repeats=1))
    assert "brevitas_full" in binary["results"][0]["skipped"]


def test_conv_case_times_lenet5_with_quantized_conv_weights(monkeypatch):
    import coarsegrad.bench.full_quant as fq
    from coarsegrad.quant.qlayers import QuantConv2d

    monkeypatch.setattr(fq, "CONV_ROWS", 96)
    monkeypatch.setattr(fq, "CONV_BATCH", 32)
    built = []
    original = fq.quantize_weights
    monkeypatch.setattr(fq, "quantize_weights", lambda m, s: built.append(original(m, s)) or built[-1])
    record = run_bench(replace(TINY, hidden=(8,), samples=200, conv=True))
    conv = record["conv"]
    assert conv["model"] == "lenet5" and conv["rows"] == 96 and conv["batch"] == 32
    assert set(conv["medians_s"]) == {"ours", "float_relu"} and all(v > 0 for v in conv["medians_s"].values())
    assert conv["ratios"]["ours/float_relu"] == pytest.approx(conv["medians_s"]["ours"] / conv["medians_s"]["float_relu"])
    assert sum(isinstance(m, QuantConv2d) for m in built[0].modules()) == 2  # the timed model quantizes its convs
    assert "LeNet-5 (conv), one epoch over 96 rows" in format_markdown(record)
    EpochBenchRecord.from_dict(json.loads(json.dumps(record | {"command": "x", "machine": {}, "loadavg_after": None})),
                               "record")
    with pytest.raises(ConfigError) as info:
        BenchConfig(conv=True)
    assert info.value.field == "conv"


def test_brevitas_lenet_when_installed():
    pytest.importorskip("brevitas")
    from coarsegrad.bench.baselines import brevitas_quant_lenet

    model = brevitas_quant_lenet(10, 4, 2, per_channel=True, channels=(4, 6), hidden=16)
    assert model(torch.randn(3, 784)).shape == (3, 10)
