"""A model as a ``torch.fx`` graph, for export: trace, record every node's value, find the quantized layers.

``torch.fx.symbolic_trace`` turns ``forward`` into a list of nodes (modules called,
functions, tensor methods), whatever class the model is. :class:`QuantReLU` is a leaf
(its autograd function is not traced into), and so is every module type in ``leaves``:
the ONNX op table's module types, so a new module type is one more table entry.

A *site* is one call of a QuantReLU: the node z it quantizes and, where z comes straight
from a Linear/Conv2d (optionally through a batch-norm that is folded into it), that
layer, its batch-norm and the layer's input a. Sites are numbered 1, 2, … in graph order;
the ONNX graph names their pre-activations ``preact1``, ``preact2``, ….
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.fx as fx
from torch import nn

from coarsegrad.errors import ConfigError
from coarsegrad.quant.autograd import QuantReLU
from coarsegrad.quant.spec import ActQuant

BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
FOLDS_INTO = (nn.Linear, nn.Conv2d)


class _Tracer(fx.Tracer):
    def __init__(self, leaves: tuple[type, ...]) -> None:
        super().__init__()
        self.leaves = leaves

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, self.leaves) or super().is_leaf_module(m, module_qualified_name)


def trace(model: nn.Module, leaves: Iterable[type] = ()) -> fx.GraphModule:
    """``model``'s forward as a GraphModule (QuantReLU and ``leaves`` kept whole);
    ConfigError if it cannot be traced (e.g. control flow that depends on the data)."""
    tracer = _Tracer((QuantReLU, *leaves))
    try:
        graph = tracer.trace(model)
    except Exception as exc:  # fx raises TraceError, TypeError, RuntimeError, ...
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise ConfigError("model", f"cannot trace {type(model).__name__}.forward with torch.fx: {first}") from None
    return fx.GraphModule(tracer.root, graph)


class _Recorder(fx.Interpreter):
    def __init__(self, gm: fx.GraphModule) -> None:
        super().__init__(gm)
        self.values: dict[str, Any] = {}

    def run_node(self, n: fx.Node) -> Any:
        out = super().run_node(n)
        self.values[n.name] = out
        return out


@torch.no_grad()
def node_values(gm: fx.GraphModule, x: torch.Tensor) -> dict[str, Any]:
    """{node name: value} of one eval-mode forward pass on ``x`` (every module's mode is restored)."""
    modes = [(m, m.training) for m in gm.modules()]
    gm.eval()
    try:
        recorder = _Recorder(gm)
        recorder.run(x)
    finally:
        for m, training in modes:
            m.training = training
    return recorder.values


def module(gm: fx.GraphModule, node: Any) -> nn.Module | None:
    """The module ``node`` calls (None for other nodes)."""
    if isinstance(node, fx.Node) and node.op == "call_module":
        return gm.get_submodule(str(node.target))
    return None


def folded_norm(gm: fx.GraphModule, node: fx.Node) -> nn.Module | None:
    """The batch-norm folded into the Linear/Conv2d ``node``: its only user, with running statistics."""
    if not isinstance(module(gm, node), FOLDS_INTO) or len(node.users) != 1:
        return None
    norm = module(gm, next(iter(node.users)))
    return norm if isinstance(norm, BATCHNORMS) and norm.running_var is not None else None


def fold_batchnorm(layer: nn.Module, norm: nn.Module) -> tuple[np.ndarray, np.ndarray]:
    """(w', b') float32 of ``layer`` (Conv2d or Linear) followed by ``norm`` (BatchNorm, eval
    statistics; with affine γ, β: w' = w·sγ, b' = (b − mean)·sγ + β)."""
    if not isinstance(layer, (nn.Conv2d, nn.Linear)):
        raise ConfigError("model", f"can fold a batch-norm into a Conv2d or Linear only, got {layer}")
    w = layer.weight.detach().to(torch.float64)
    b = (layer.bias.detach().to(torch.float64) if layer.bias is not None
         else torch.zeros(w.shape[0], dtype=torch.float64))
    s, mean, beta = norm_affine(norm)
    b_f = (b - mean) * s
    if beta is not None:
        b_f = b_f + beta
    w_f = w * s.reshape(-1, *([1] * (w.dim() - 1)))
    return w_f.to(torch.float32).numpy(), b_f.to(torch.float32).numpy()


def norm_affine(norm: nn.Module) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(s, mean, β) in float64 of an eval batch-norm y = (x − mean)·s + β: s = γ/√(var + ε)
    (γ = 1 and β None without affine). The one reading of a batch-norm for the fold and
    for the agreement tolerance."""
    if not isinstance(norm, (nn.BatchNorm1d, nn.BatchNorm2d)) or norm.running_var is None:
        raise ConfigError("model", f"can fold only a BatchNorm that tracks statistics, got {norm}")
    assert norm.running_mean is not None
    s = 1.0 / torch.sqrt(norm.running_var.to(torch.float64) + norm.eps)
    if not norm.affine:
        return s, norm.running_mean.to(torch.float64), None
    return (s * norm.weight.detach().to(torch.float64), norm.running_mean.to(torch.float64),
            norm.bias.detach().to(torch.float64))


@dataclass(frozen=True)
class Site:
    """One QuantReLU call (``node``, of the module at path ``module``): z = its input node
    ``preact``; ``layer``/``norm``/``layer_input`` where z = BN(layer(a))."""

    index: int
    node: str
    module: str
    quant: ActQuant
    preact: str
    layer: nn.Module | None = None
    norm: nn.Module | None = None
    layer_input: str | None = None


def sites(gm: fx.GraphModule) -> list[Site]:
    """Every QuantReLU call of ``gm`` in graph order (module docstring)."""
    out: list[Site] = []
    for node in gm.graph.nodes:
        act = module(gm, node)
        if not isinstance(act, QuantReLU):
            continue
        z = node.args[0]
        assert isinstance(z, fx.Node)  # a module call's input is a traced value
        layer_node, norm = z, None
        if isinstance(module(gm, z), BATCHNORMS) and isinstance(z.args[0], fx.Node):
            producer = z.args[0]
            if folded_norm(gm, producer) is not None:
                layer_node, norm = producer, module(gm, z)
        layer = module(gm, layer_node)
        if isinstance(layer, FOLDS_INTO) and isinstance(layer_node.args[0], fx.Node):
            out.append(Site(len(out) + 1, node.name, str(node.target), act.quant, z.name, layer, norm,
                            layer_node.args[0].name))
        else:
            out.append(Site(len(out) + 1, node.name, str(node.target), act.quant, z.name))
    return out
