import numpy as np
import pytest
import torch

import coarsegrad as cg


def test_two_layer_net_computes_v_sigma_wx(gen):
    net = cg.TwoLayerNet(6, 3, 4, init_scale=5.0, generator=gen, quant=cg.ActQuant(2, 0.5, rounding="ceil"))
    x = torch.randn(10, 6, generator=gen)
    W = net.W.detach().numpy().astype(np.float64)
    h = x.numpy().astype(np.float64) @ W.T
    s = 0.5 * np.clip(np.ceil(h / 0.5), 0, 3)
    expected = np.stack([s[:, k * 4:(k + 1) * 4].sum(1) for k in range(3)], axis=1)
    np.testing.assert_allclose(net(x).detach().numpy(), expected, rtol=1e-6, atol=1e-6)


def test_second_layer_fixed_or_trained(gen):
    fixed = cg.TwoLayerNet(5, 2, 3, generator=gen)
    trained = cg.TwoLayerNet(5, 2, 3, second_layer="trained", generator=gen)
    assert [n for n, _ in fixed.named_parameters()] == ["W"]
    assert sorted(n for n, _ in trained.named_parameters()) == ["V", "W"]
    block = torch.tensor([[1.0, 1, 1, 0, 0, 0], [0, 0, 0, 1, 1, 1]])
    assert torch.equal(fixed.V, block) and torch.equal(trained.V.detach(), block)
    with pytest.raises(cg.ConfigError):
        cg.TwoLayerNet(5, 2, 3, second_layer="free")


def test_init_uses_only_the_generator():
    state = torch.random.get_rng_state()
    a = cg.TwoLayerNet(5, 2, 3, generator=torch.Generator().manual_seed(7))
    b = cg.TwoLayerNet(5, 2, 3, generator=torch.Generator().manual_seed(7))
    m1 = cg.MLP(8, 16, 3, generator=torch.Generator().manual_seed(7))
    m2 = cg.MLP(8, 16, 3, generator=torch.Generator().manual_seed(7))
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(a.W, b.W)
    assert all(torch.equal(p, q) for p, q in zip(m1.parameters(), m2.parameters(), strict=False))


def test_mlp_batchnorm_has_no_affine(gen):
    m = cg.MLP(8, 16, 3, bits=4, ste="relu", batchnorm=True, generator=gen)
    assert isinstance(m.norm, torch.nn.BatchNorm1d) and not m.norm.affine
    assert m(torch.randn(5, 8, generator=gen)).shape == (5, 3)
    assert m.act.bits == 4 and m.act.ste.name == "relu"
    plain = cg.MLP(8, 16, 3, generator=gen)
    assert isinstance(plain.norm, torch.nn.Identity)


@pytest.mark.parametrize("kwargs", [{"units_per_class": 0}, {"num_classes": -1}, {"bits": 9},
                                    {"ste": "x"}, {"init_scale": 0.0}, {"alpha": -1.0}])
def test_two_layer_net_bad_arguments(kwargs):
    args = {"in_features": 4, "num_classes": 2, "units_per_class": 3, **kwargs}
    with pytest.raises(cg.ConfigError):
        cg.TwoLayerNet(**args)


def test_models_carry_one_spec_whole():
    from torch import nn

    from coarsegrad.models.networks import LeNet5

    quant = cg.ActQuant(3, 0.25, "relu", "floor")
    assert cg.TwoLayerNet(5, 2, 3, quant=quant).act.quant is quant
    assert cg.MLP(8, 16, 3, quant=quant).act.quant is quant
    acts = [m for m in LeNet5(quant=quant).modules() if isinstance(m, cg.QuantReLU)]
    assert len(acts) == 3 and all(a.quant is quant for a in acts)
    for float_net in (LeNet5(quant=None), LeNet5(bits=None)):
        assert not any(isinstance(m, cg.QuantReLU) for m in float_net.modules())
        assert sum(isinstance(m, nn.ReLU) for m in float_net.modules()) == 3


def test_build_model_uses_the_config_spec():
    from coarsegrad.config import ModelConfig
    from coarsegrad.models.build import build_model

    for model in ("two_layer", "mlp", "lenet5"):
        cfg = ModelConfig(model=model, bits=3, ste="relu", rounding="nearest")
        net = build_model(cfg, 784, 10, seed=0)
        specs = {m.quant for m in net.modules() if isinstance(m, cg.QuantReLU)}
        assert specs == {cfg.act_quant()}
