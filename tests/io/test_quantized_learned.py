"""save/load_quantized_state of learned-step activations (LSQ step, PACT clip)."""

import pytest
import torch
from torch import nn

import coarsegrad as cg
from coarsegrad.errors import DataError
from coarsegrad.io import tensorfile


def _net(first, second):
    return nn.Sequential(nn.Linear(4, 6), first, nn.Linear(6, 5), second, nn.Linear(5, 2))


@pytest.mark.parametrize("skeleton_act", [nn.ReLU, lambda: cg.QuantReLU(cg.ActQuant(3, rounding="nearest", learn="lsq"))])
def test_learned_parameters_round_trip(tmp_path, gen, skeleton_act):
    lsq = cg.ActQuant(2, rounding="nearest", learn="lsq")
    pact = cg.ActQuant(4, rounding="nearest", learn="pact")
    model = _net(cg.QuantReLU(lsq), cg.QuantReLU(pact))
    with torch.no_grad():
        model[1].step.fill_(0.3125)
        model[3].clip.fill_(2.75)
    header = cg.save_quantized_state(tmp_path / "net.safetensors", model)
    assert header["quant"]["1"]["learn"] == "lsq" and header["quant"]["3"]["learn"] == "pact"
    loaded = cg.load_quantized_state(_net(skeleton_act(), nn.ReLU()), tmp_path / "net.safetensors")
    assert loaded[1].quant == lsq and loaded[3].quant == pact
    assert loaded[1].step.item() == 0.3125 and loaded[3].clip.item() == 2.75
    x = torch.randn(16, 4, generator=gen)
    assert torch.equal(loaded(x), model.eval()(x))


def test_file_without_the_learned_tensor_is_data_error(tmp_path):
    model = _net(cg.QuantReLU(cg.ActQuant(2, rounding="nearest", learn="lsq")), nn.ReLU())
    cg.save_quantized_state(tmp_path / "net.safetensors", model)
    tensors, metadata = tensorfile.load(tmp_path / "net.safetensors")
    del tensors["1.step"]
    tensorfile.save(tmp_path / "cut.safetensors", tensors, metadata)
    skeleton = _net(nn.ReLU(), nn.ReLU())
    with pytest.raises(DataError, match="missing \\['1.step'\\]"):
        cg.load_quantized_state(skeleton, tmp_path / "cut.safetensors")
    assert isinstance(skeleton[1], nn.ReLU)  # untouched


def test_fixed_alpha_files_hold_no_activation_tensors(tmp_path):
    fixed = _net(cg.QuantReLU(cg.ActQuant(2, rounding="nearest")), nn.ReLU())
    cg.save_quantized_state(tmp_path / "fixed.safetensors", fixed)
    tensors, _ = tensorfile.load(tmp_path / "fixed.safetensors")
    assert sorted(tensors) == sorted(fixed.state_dict())
    assert not any(k.startswith("1.") for k in tensors)


class Functional(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 6), nn.Linear(6, 2)

    def forward(self, x):
        return self.fc2(torch.clamp(self.fc1(x), min=0, max=2.0))


def test_functional_model_round_trips_into_a_converted_skeleton(tmp_path, gen):
    """A forward rewritten by torch.fx loads into a skeleton converted the same way."""
    spec = cg.ActQuant(2, rounding="nearest", learn="pact")
    model = cg.quantize_model(Functional(), act=spec)
    with torch.no_grad():
        model.quant_relu_0.clip.fill_(1.5)
    cg.save_quantized_state(tmp_path / "f.safetensors", model)
    loaded = cg.load_quantized_state(cg.quantize_model(Functional(), act=spec), tmp_path / "f.safetensors")
    assert loaded.quant_relu_0.clip.item() == 1.5
    x = torch.randn(8, 4, generator=gen)
    assert torch.equal(loaded(x), model.eval()(x))
