"""The exporters read a fixed α: learned-step activations are refused until frozen."""

import pytest
from torch import nn

import coarsegrad as cg


def test_exporters_refuse_learned_steps_until_frozen(tmp_path, gen):
    model = cg.MLP(6, 5, 3, quant=cg.ActQuant(2, rounding="nearest", learn="lsq"), generator=gen)
    with pytest.raises(cg.ConfigError, match=r"learned activation steps at \['act'\]"):
        cg.export.to_integer(model)
    with pytest.raises(cg.ConfigError, match="freeze_learned"):
        cg.export.to_onnx(nn.Sequential(nn.Linear(6, 5), model.act), tmp_path / "m.onnx", input_shape=(6,))
    cg.freeze_learned(model)
    assert cg.export.to_integer(model).quant.alpha == pytest.approx(cg.ActQuant(2, rounding="nearest").alpha)
