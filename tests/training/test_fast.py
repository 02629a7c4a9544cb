"""The fast training step against the autograd path and the library quantizer."""

import dataclasses
import math

import numpy as np
import pytest
import torch

import coarsegrad as cg
from coarsegrad.models.networks import LeNet5
from coarsegrad.quant.kernels import EagerQuantizer, kernel_alpha_ok
from coarsegrad.quant.ste import Piece
from coarsegrad.training.fast import fast_step, model_layout
from oracles import numpy_codes, numpy_dmu, numpy_thresholds

STES = ["identity", "relu", "clipped_relu", "log_tailed_relu"]


def boundary_inputs(bits, alpha, dtype):
    """Every fl(kα), its float neighbours, 0, ±tiny, q_max, far values and random ones."""
    levels = 2**bits - 1
    ks = torch.arange(-2, levels + 3, dtype=dtype) * alpha  # same product as staircase_codes
    inf = torch.tensor(math.inf, dtype=dtype)
    up, down = torch.nextafter(ks, inf), torch.nextafter(ks, -inf)
    tiny = torch.finfo(dtype).tiny
    special = torch.tensor([0.0, -0.0, tiny, -tiny, tiny / 4, 1e-30, -1e-30, 1e30, -1e30, math.inf,
                            -math.inf, math.nan, levels * alpha, (levels + 0.5) * alpha], dtype=dtype)
    rand = torch.randn(4096, generator=torch.Generator().manual_seed(bits), dtype=dtype) * levels * alpha
    return torch.cat([ks, up, down, special, rand])


ROUNDINGS = ["ceil", "nearest", "floor"]


def boundary_inputs_for(quant, dtype):
    """boundary_inputs plus every threshold t_j = fl((j + o)α) of ``quant`` and its neighbours."""
    t = torch.tensor(numpy_thresholds(quant.bits, quant.alpha, quant.rounding,
                                      np.float32 if dtype == torch.float32 else np.float64), dtype=dtype)
    inf = torch.tensor(math.inf, dtype=dtype)
    return torch.cat([boundary_inputs(quant.bits, quant.alpha, dtype), t, torch.nextafter(t, inf),
                      torch.nextafter(t, -inf)])


def numpy_dmu_of(quant, x):
    """μ′ in x's dtype, q rounded to it (as a tensor-by-scalar comparison rounds it)."""
    xn = x.numpy()
    return torch.from_numpy(np.asarray(numpy_dmu(quant.ste.name, xn, xn.dtype.type(quant.q_max)), dtype=xn.dtype))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bits", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("alpha", [None, 0.1, 0.3, 1.0, 3.7, 1e-3, 123.456])
@pytest.mark.parametrize("rounding", ROUNDINGS)
def test_eager_codes_equal_numpy_oracle_at_every_threshold(dtype, bits, alpha, rounding):
    base = cg.ActQuant(bits, alpha, rounding=rounding)
    assert kernel_alpha_ok(base, dtype)
    x = boundary_inputs_for(base, dtype)
    want = torch.from_numpy(numpy_codes(x.numpy(), bits, base.alpha, rounding))
    for ste in STES:
        quant = dataclasses.replace(base, ste=ste)
        kernel = EagerQuantizer(quant, dtype)
        h = x.clone().unsqueeze(0)
        codes, scratch = torch.empty_like(h), torch.empty_like(h)
        factor = kernel.forward(h, codes, scratch)
        # NaN stays NaN (a diverged run keeps its NaN loss)
        torch.testing.assert_close(codes[0], want, rtol=0, atol=0, equal_nan=True)
        torch.testing.assert_close(cg.staircase_codes(x, quant), want, rtol=0, atol=0, equal_nan=True)
        if factor is not None and quant.ste.is_indicator:
            assert factor.dtype == torch.bool  # one byte per element
        grad = torch.ones_like(h)
        kernel.backward(grad, h, factor)  # dσ = 1 gives m itself
        finite = ~x.isnan()
        assert torch.equal(grad[0][finite], numpy_dmu_of(quant, x)[finite])
        # into ``out`` from a dσ that only broadcasts (a stride-0 view): the same m
        out = torch.full_like(h, math.nan)
        kernel.backward(torch.ones((), dtype=dtype).expand_as(h), h, factor, out=out)
        assert torch.equal(out[0][finite], grad[0][finite])
        # the autograd function: same codes, backward = dσ·μ′ (NaN rows excepted)
        xr = x.clone().requires_grad_()
        y = cg.quantized_relu(xr, quant)
        torch.testing.assert_close(y.detach(), want * quant.alpha, rtol=0, atol=0, equal_nan=True)
        y.backward(torch.ones_like(x))
        assert torch.equal(xr.grad[finite], numpy_dmu_of(quant, x)[finite])


def test_custom_ste_through_the_kernels_and_autograd():
    decay = cg.custom_ste("decay", lambda x, q: ((x > 0) & (x <= 2 * q)) * (1 - x / (2 * q)))
    quant = cg.ActQuant(2, 0.4, decay, "nearest")
    x = boundary_inputs_for(quant, torch.float64)
    x = x[x.isfinite()]  # the user's μ′ gives 0·∞ = NaN at ±∞
    xn = x.numpy()
    q = 3 * 0.4
    want = np.where((xn > 0) & (xn <= 2 * q), 1 - xn / (2 * q), 0.0)
    kernel = EagerQuantizer(quant, torch.float64)
    assert kernel.mode is None
    h = x.clone().unsqueeze(0)
    factor = kernel.forward(h, torch.empty_like(h), torch.empty_like(h))
    grad = kernel.backward(torch.ones_like(h), h, factor)
    np.testing.assert_allclose(grad[0].numpy(), want, rtol=0, atol=1e-15)
    xr = x.clone().requires_grad_()
    cg.quantized_relu(xr, quant).backward(torch.ones_like(x))
    np.testing.assert_allclose(xr.grad.numpy(), want, rtol=0, atol=1e-15)


def test_boundary_cases_cover_every_kernel_path():
    paths = {EagerQuantizer(cg.ActQuant(bits, alpha, "relu", rounding), dtype).path
             for bits in (1, 2, 4) for alpha in (0.3, 3.7) for dtype in (torch.float32, torch.float64)
             for rounding in ROUNDINGS}
    assert paths == {"ceil", "count", "correct"}
    for rounding in ROUNDINGS:  # every rounding reaches the correction path somewhere
        assert any(EagerQuantizer(cg.ActQuant(bits, alpha, rounding=rounding), dtype).path == "correct"
                   for bits in (3, 4, 8) for alpha in (0.1, 0.3, 3.7, 1e-3)
                   for dtype in (torch.float32, torch.float64))


def test_fused_backward_is_derived_from_the_description():
    modes = {name: EagerQuantizer(cg.ActQuant(2, 0.5, name), torch.float32).mode for name in STES}
    assert modes == {"identity": "all", "relu": "threshold", "clipped_relu": "hardtanh", "log_tailed_relu": None}
    # an STE of the same shape under another name gets the same kernel: no name table
    twin = cg.STE("my_clip", pieces=(Piece(0.0, 1.0),))
    assert EagerQuantizer(cg.ActQuant(2, 0.5, twin), torch.float32).mode == "hardtanh"


@pytest.mark.parametrize("bits,alpha", [(2, None), (2, 0.3), (4, None)])
@pytest.mark.parametrize("ste", STES)
@pytest.mark.parametrize("rounding", ROUNDINGS)
def test_eager_quantizer_in_several_row_blocks(bits, alpha, ste, rounding):
    # 300 × 1024 elements span three BLOCK_ELEMENTS blocks; the last one is partial
    from coarsegrad.quant.kernels import BLOCK_ELEMENTS

    quant = cg.ActQuant(bits, alpha, ste, rounding)
    gen = torch.Generator().manual_seed(bits)
    x = torch.randn(300, 1024, generator=gen) * quant.q_max
    assert x.numel() > 2 * BLOCK_ELEMENTS
    kernel = EagerQuantizer(quant, torch.float32)
    h, codes, scratch = x.clone(), torch.empty_like(x), torch.empty_like(x)
    factor = kernel.forward(h, codes, scratch)
    assert torch.equal(codes, torch.from_numpy(numpy_codes(x.numpy(), bits, quant.alpha, rounding)))
    grad = torch.ones_like(x)
    kernel.backward(grad, h, factor)
    assert torch.equal(grad, numpy_dmu_of(quant, x))


def test_codes_fix_the_rounding_of_x_over_alpha():
    # inputs exactly at fl(kα) where fl(x/α) lands on the other side of k
    quant = cg.ActQuant(4, 0.1, "relu")
    x = torch.arange(0, 16, dtype=torch.float32) * 0.1
    naive = torch.clamp(torch.ceil(x / 0.1), 0, 15)
    kernel = EagerQuantizer(quant, torch.float32)
    h = x.clone().unsqueeze(0)
    codes = torch.empty_like(h)
    kernel.forward(h, codes, torch.empty_like(h))
    assert torch.equal(codes[0], torch.arange(0, 16, dtype=torch.float32))
    assert torch.equal(codes[0], cg.staircase_codes(x, quant))
    assert not torch.equal(naive, codes[0])  # the case the correction exists for


def problem(model_kind, ste, bits, seed=0):
    X, y = cg.orthogonal_subspaces(4, 40, 5, 60, generator=torch.Generator().manual_seed(seed))
    gen = torch.Generator().manual_seed(seed + 1)
    if model_kind == "mlp":
        net = cg.MLP(40, 32, 4, bits=bits, ste=ste, generator=gen)
    else:
        net = cg.TwoLayerNet(40, 4, 8, bits=bits, ste=ste, second_layer=model_kind.split("-")[1],
                             init_scale=1.0, generator=gen)
    return X, y, net


def run_both(model_kind, ste, bits, **train_kwargs):
    out = []
    for fast in (True, False):
        X, y, net = problem(model_kind, ste, bits)
        config = cg.TrainConfig(stop_at_perfect=False, fast=fast, **train_kwargs)
        history = cg.train(net, X, y, config)
        out.append((history, {n: p.detach().clone() for n, p in net.named_parameters()}))
    return out


def check_one_step(model_kind, ste, bits, optimizer, batch):
    (fh, fast), (ah, slow) = run_both(model_kind, ste, bits, optimizer=optimizer, lr=0.1,
                                      batch_size=batch, steps=1, chunk_size=37)
    assert fh.loss == pytest.approx(ah.loss, abs=1e-5)
    # σ-sums of a fixed V tie exactly; the fast path sums integer codes before ×α, so a
    # tie can go the other way: accuracy agrees up to a few tied rows
    assert fh.train_acc == pytest.approx(ah.train_acc, abs=0.02)
    for name in slow:
        torch.testing.assert_close(fast[name], slow[name], atol=1e-5, rtol=0)


@pytest.mark.parametrize("ste", STES)
@pytest.mark.parametrize("bits", [1, 2, 4])
@pytest.mark.parametrize("optimizer", ["sgd", "momentum"])
@pytest.mark.parametrize("batch", [None, 50])
def test_mlp_fast_path_matches_autograd_after_one_step(ste, bits, optimizer, batch):
    check_one_step("mlp", ste, bits, optimizer, batch)


@pytest.mark.parametrize("model_kind", ["two-fixed", "two-trained"])
@pytest.mark.parametrize("ste", STES)
@pytest.mark.parametrize("optimizer,batch", [("momentum", None), ("adam", 64)])
def test_two_layer_fast_path_matches_autograd_after_one_step(model_kind, ste, optimizer, batch):
    check_one_step(model_kind, ste, 2, optimizer, batch)


@pytest.mark.parametrize("ste", STES)
@pytest.mark.parametrize("optimizer,batch", [("sgd", None), ("momentum", 64)])
def test_fast_path_loss_history_matches_autograd(ste, optimizer, batch):
    (fh, _), (ah, _) = run_both("mlp", ste, 2, optimizer=optimizer, lr=0.05, batch_size=batch,
                                steps=5, chunk_size=100)
    assert len(fh.loss) == 5
    assert fh.loss == pytest.approx(ah.loss, abs=1e-5)


def test_fast_path_sets_grad_like_autograd():
    X, y, net = problem("mlp", "clipped_relu", 2)
    step = fast_step(net, X, y, 64)
    loss, correct = step.accumulate(X, y, None, 1.0 / X.shape[0])
    fast = {n: p.grad.clone() for n, p in net.named_parameters()}
    net.zero_grad()
    out = net(X)
    reference = torch.nn.functional.cross_entropy(out, y)
    reference.backward()
    assert float(loss) / X.shape[0] == pytest.approx(reference.item(), abs=1e-6)
    assert int(correct) == int((out.argmax(1) == y).sum())
    for n, p in net.named_parameters():
        torch.testing.assert_close(fast[n], p.grad, atol=1e-6, rtol=0)


def test_dispatch_covers_two_layer_models_only():
    X, y, net = problem("mlp", "clipped_relu", 2)
    assert fast_step(net, X, y, 64) is not None
    assert model_layout(cg.MLP(40, 8, 4, batchnorm=True)) is None
    assert model_layout(LeNet5()) is None
    assert fast_step(net, X.double(), y, 64) is None  # dtype mismatch: autograd path
    assert fast_step(cg.MLP(40, 8, 4, alpha=1e-300), X, y, 64) is None  # α underflows float32
    with pytest.raises(cg.DataError, match="^y"):
        fast_step(net, X, torch.full_like(y, 9), 64)
    with pytest.raises(cg.ConfigError, match="^fast"):
        cg.TrainConfig(fast="yes")


def test_fast_path_keeps_working_with_batchnorm_models_via_autograd():
    X, y, _ = problem("mlp", "clipped_relu", 2)
    net = cg.MLP(40, 16, 4, batchnorm=True, generator=torch.Generator().manual_seed(0))
    history = cg.train(net, X, y, cg.TrainConfig(steps=2, batch_size=32, stop_at_perfect=False))
    assert history.steps_run == 2


def test_check_data_accepts_finite_data_whose_sum_overflows():
    from coarsegrad.validate import check_data

    X = torch.full((4, 3), 3e38)  # every entry finite, the float32 sum is inf
    y = torch.tensor([0, 1, 0, 1])
    check_data(X, y)
    for bad in (math.nan, math.inf, -math.inf):
        X[1, 2] = bad
        with pytest.raises(cg.DataError, match="^X"):
            check_data(X, y)


class MyMLP(cg.MLP):
    """A user subclass that keeps MLP's forward: the model still offers the fast step."""

    def describe(self):
        return "mine"


class ScaledMLP(cg.MLP):
    """A user subclass with its own forward: the fast step would compute the wrong model."""

    calls = 0

    def forward(self, x):
        ScaledMLP.calls += 1
        return 2.0 * super().forward(x)


def test_the_model_decides_the_fast_path_for_subclasses():
    X, y, _ = problem("mlp", "clipped_relu", 2)
    mine = MyMLP(40, 16, 4, generator=torch.Generator().manual_seed(0))
    assert fast_step(mine, X, y, 64) is not None
    scaled = ScaledMLP(40, 16, 4, generator=torch.Generator().manual_seed(0))
    assert scaled.two_layer_form() is None and fast_step(scaled, X, y, 64) is None
    ScaledMLP.calls = 0
    cg.train(scaled, X, y, cg.TrainConfig(steps=2, stop_at_perfect=False, fast=True))
    assert ScaledMLP.calls >= 2  # autograd ran the override
    # the subclass on the fast path trains exactly as MLP itself does through autograd
    ref = cg.MLP(40, 16, 4, generator=torch.Generator().manual_seed(0))
    cg.train(mine, X, y, cg.TrainConfig(steps=3, lr=0.1, stop_at_perfect=False, fast=True))
    cg.train(ref, X, y, cg.TrainConfig(steps=3, lr=0.1, stop_at_perfect=False, fast=False))
    for a, b in zip(mine.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


@pytest.mark.parametrize("rounding", ROUNDINGS)
@pytest.mark.parametrize("ste", STES)
def test_quantize_model_sequential_trains_with_the_oracle_gradient(rounding, ste):
    """nn.Sequential(Linear, ReLU, Linear) made quantized: its autograd gradient (through the
    kernels) equals the NumPy closed form ((δW₂) ⊙ μ′(H))ᵀX, δᵀσ(H)."""
    gen = torch.Generator().manual_seed(5)
    X = torch.randn(64, 6, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (64,), generator=gen)
    net = torch.nn.Sequential(torch.nn.Linear(6, 12, bias=False), torch.nn.ReLU(),
                              torch.nn.Linear(12, 3, bias=False)).double()
    quant = cg.ActQuant(2, 0.4, ste, rounding)
    cg.quantize_model(net, quant)
    assert fast_step(net, X, y, 64) is None  # no two-layer form: autograd through the kernels
    torch.nn.functional.cross_entropy(net(X), y).backward()
    W1, W2 = net[0].weight.detach().numpy(), net[2].weight.detach().numpy()
    Xn, yn = X.numpy(), y.numpy()
    H = Xn @ W1.T
    S = 0.4 * numpy_codes(H, 2, 0.4, rounding)
    logits = S @ W2.T
    P = np.exp(logits - logits.max(1, keepdims=True))
    P /= P.sum(1, keepdims=True)
    delta = (P - np.eye(3)[yn]) / len(yn)
    dW1 = ((delta @ W2) * numpy_dmu(ste, H, quant.q_max)).T @ Xn
    np.testing.assert_allclose(net[0].weight.grad.numpy(), dW1, rtol=0, atol=1e-12)
    np.testing.assert_allclose(net[2].weight.grad.numpy(), delta.T @ S, rtol=0, atol=1e-12)
