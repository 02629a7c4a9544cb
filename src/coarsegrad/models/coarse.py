"""The coarse gradient of :class:`~coarsegrad.TwoLayerNet` in closed form (no autograd).

For L = (1/N) Σ_i CE(V σ(W x_i), y_i), with P the softmax outputs, Y the one-hot
labels, H = X Wᵀ the pre-activations and δ = (P − Y)/N:

    ∂̃L/∂W = ((δ V) ⊙ μ′(H))ᵀ X        (σ′ replaced by the STE derivative μ′)
    ∂L/∂V = δᵀ σ(H)

For the fixed block-of-ones V, row u = (k, j) of the first is the paper's
mean_i (p_ik − 1{y_i = k}) · μ′(w_kj·x_i) · x_i. This is a test oracle, not a training
path: the autograd backward and the fast step are tested against it (training runs the
kernels of :mod:`coarsegrad.quant.kernels`).
"""

from __future__ import annotations

import torch

from coarsegrad.errors import ConfigError
from coarsegrad.models.networks import TwoLayerNet
from coarsegrad.quant.autograd import QuantReLU, staircase
from coarsegrad.validate import check_data


@torch.no_grad()
def coarse_gradient(model: TwoLayerNet, X: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """Closed-form coarse gradient of the mean cross-entropy, in float64.

    Returns ``{"W": ∂̃L/∂W}`` and, when the second layer is trained, ``"V": ∂L/∂V``.
    """
    check_data(X, y)
    act = model.act
    if not isinstance(act, QuantReLU):
        raise ConfigError("model", "the coarse gradient needs a quantized activation (a float model has its true gradient)")
    quant = act.quant
    W = model.W.detach().to(torch.float64)
    V = model.V.detach().to(torch.float64)
    X64 = X.to(torch.float64)
    H = X64 @ W.t()
    S = staircase(H, quant)
    P = torch.softmax(S @ V.t(), dim=1)
    Y = torch.nn.functional.one_hot(y, num_classes=V.shape[0]).to(torch.float64)
    delta = (P - Y) / X.shape[0]
    grads = {"W": ((delta @ V) * quant.dmu(H)).t() @ X64}
    if model.second_layer == "trained":
        grads["V"] = delta.t() @ S
    return grads
