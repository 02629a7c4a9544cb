"""Convert a float network: activations → :class:`QuantReLU`, weights → quantized layers.

    model = cg.quantize_model(model, act=cg.ActQuant(2), weight=wq)            # model
    model, report = cg.quantize_model(model, act=..., report=True)             # + what changed

What is replaced:

* ``nn.ReLU`` → ``QuantReLU(act)``.
* Clipping activations, ``nn.ReLU6`` and ``nn.Hardtanh(0, m)`` (ReLU6 is Hardtanh(0, 6)) →
  ``QuantReLU`` of ``act`` with α = m/L (L = 2^b − 1), so its top level q_max = L·α is the
  float clip level m; a learned PACT clip then starts at a = m. Any other Hardtanh stays float.
* Functional calls in ``forward``, found by tracing it with ``torch.fx``: ``F.relu``,
  ``torch.relu``, ``x.relu()``, ``F.relu6`` (m = 6), ``F.hardtanh(x, 0, m)``,
  ``torch.clamp``/``torch.clip``/``x.clamp`` with min = 0 (and max = m > 0, a clip level),
  ``torch.clamp_min(x, 0)``. Each call becomes its own ``QuantReLU`` submodule (own learned
  step when ``act.learn`` is set), and the model returned is then a ``torch.fx.GraphModule``
  holding the same submodules and parameters (make the optimizer after converting).
  When there is no such call the model is changed in place and returned itself.
* With ``weight``: ``nn.Linear`` → ``QuantLinear.from_float``, ``nn.Conv2d`` →
  ``QuantConv2d.from_float`` (exact types; a subclass may override forward and stays float).

Everything left in float is listed in the report and in one ``UserWarning``: other
activation modules (GELU, Sigmoid, Tanh, SiLU, …) and calls (``F.gelu``, ``torch.sigmoid``, …),
clamps that are not a ReLU, other weighted layers when ``weight`` is given (Conv1d, Embedding,
…), the paths in ``keep_float`` (e.g. the first and last layers), and a ``forward`` that
``torch.fx`` cannot trace (then its functional calls were not checked; pass
``functional=False`` to skip the tracing).
"""

from __future__ import annotations

import dataclasses
import numbers
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, overload

import torch
import torch.nn.functional as F
from torch import nn

from coarsegrad.errors import ConfigError
from coarsegrad.quant.autograd import QuantReLU
from coarsegrad.quant.qlayers import quantize_weights
from coarsegrad.quant.spec import ActQuant, as_quant
from coarsegrad.quant.staircase import DEFAULT_ROUNDING, Rounding
from coarsegrad.quant.ste import STE
from coarsegrad.quant.weight_spec import WeightQuant

_UNSET: Any = object()
_NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)
_FLOAT_ACTIVATIONS = (nn.GELU, nn.Sigmoid, nn.Tanh, nn.SiLU, nn.Mish, nn.LeakyReLU, nn.ELU, nn.SELU,
                      nn.CELU, nn.Softplus, nn.PReLU, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh,
                      nn.RReLU, nn.Softsign, nn.Tanhshrink, nn.LogSigmoid, nn.Threshold)
_FLOAT_CALLS: dict[Any, str] = {
    F.gelu: "F.gelu", torch.sigmoid: "torch.sigmoid", F.sigmoid: "F.sigmoid", torch.tanh: "torch.tanh",
    F.tanh: "F.tanh", F.silu: "F.silu", F.mish: "F.mish", F.leaky_relu: "F.leaky_relu", F.elu: "F.elu",
    F.selu: "F.selu", F.celu: "F.celu", F.softplus: "F.softplus", F.hardswish: "F.hardswish",
    F.hardsigmoid: "F.hardsigmoid", F.prelu: "F.prelu", F.threshold: "F.threshold",
}
_FLOAT_METHODS = ("sigmoid", "tanh")
_CLAMPS = ("hardtanh", "clamp", "clip", "clamp_min", "Tensor.clamp", "Tensor.clip", "Tensor.clamp_min")


@dataclass(frozen=True)
class QuantizeReport:
    """What :func:`quantize_model` replaced and what it left in float, as
    ``"path: Old → New"`` lines (fx node names for functional calls)."""

    activations: tuple[str, ...] = ()
    functional: tuple[str, ...] = ()
    weights: tuple[str, ...] = ()
    left_float: tuple[str, ...] = ()
    traced: bool = False


@dataclass
class _Notes:
    activations: list[str] = field(default_factory=list)
    functional: list[str] = field(default_factory=list)
    weights: list[str] = field(default_factory=list)
    left_float: list[str] = field(default_factory=list)
    traced: bool = False


def clip_spec(act: ActQuant, clip: float | None) -> ActQuant:
    """``act`` for a plain ReLU (``clip`` None), else ``act`` with α = clip/L (q_max = clip)."""
    if clip is None:
        return act
    return dataclasses.replace(act, alpha=float(clip) / act.levels)


def _placed(new: QuantReLU, near: nn.Module) -> QuantReLU:
    """``new`` with its learned parameter (if any) on the device and float dtype of ``near``'s
    first parameter or buffer (a fixed-α QuantReLU holds none; CPU float32 when ``near`` has none)."""
    tensors = [t for t in (*near.parameters(), *near.buffers()) if t.is_floating_point()]
    return new.to(device=tensors[0].device, dtype=tensors[0].dtype) if tensors else new


def _swap_modules(module: nn.Module, prefix: str, act: ActQuant | None, weight: WeightQuant | None,
                  keep: set[str], notes: _Notes) -> None:
    for name, child in list(module.named_children()):
        path, kind = f"{prefix}{name}", type(child).__name__
        if path in keep:
            notes.left_float.append(f"{path} ({kind}, kept)")
        elif act is not None and isinstance(child, nn.ReLU):
            setattr(module, name, _placed(QuantReLU(act), module))
            notes.activations.append(f"{path}: {kind} → QuantReLU")
        elif act is not None and isinstance(child, nn.Hardtanh) and child.min_val == 0 and child.max_val > 0:
            setattr(module, name, _placed(QuantReLU(clip_spec(act, child.max_val)), module))
            notes.activations.append(f"{path}: {kind} → QuantReLU (q_max = {child.max_val:g})")
        elif weight is not None and type(child) in (nn.Linear, nn.Conv2d):
            new = quantize_weights(child, weight)  # the layer → QuantLinear/QuantConv2d rule
            setattr(module, name, new)
            notes.weights.append(f"{path}: {kind} → {type(new).__name__}")
        elif act is not None and isinstance(child, _FLOAT_ACTIVATIONS):
            notes.left_float.append(f"{path} ({kind})")
        elif (weight is not None and isinstance(getattr(child, "weight", None), nn.Parameter)
              and not isinstance(child, _NORMS) and not type(child).__module__.startswith("coarsegrad.quant")):
            notes.left_float.append(f"{path} ({kind}, weight not quantized)")
        else:
            _swap_modules(child, f"{path}.", act, weight, keep, notes)


def _number(value: Any) -> float | None:
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    return None


def _relu_clip(node: Any) -> tuple[bool, float | None, str]:
    """(is a ReLU-like call, its clip level or None, its name) of an fx node."""
    args, kwargs, target = node.args, node.kwargs, node.target
    if node.op == "call_function":
        name = getattr(target, "__name__", str(target))
        if target in (F.relu, torch.relu):
            return True, None, name
        if target is F.relu6:
            return True, 6.0, name
        if target is F.hardtanh:
            lo = args[1] if len(args) > 1 else kwargs.get("min_val", -1.0)
            hi = args[2] if len(args) > 2 else kwargs.get("max_val", 1.0)
        elif target in (torch.clamp, torch.clip, torch.clamp_min):
            lo = args[1] if len(args) > 1 else kwargs.get("min")
            hi = None if target is torch.clamp_min else (args[2] if len(args) > 2 else kwargs.get("max"))
        else:
            return False, None, name
    elif node.op == "call_method" and target in ("relu", "clamp", "clip", "clamp_min"):
        name = f"Tensor.{target}"
        if target == "relu":
            return True, None, name
        lo = args[1] if len(args) > 1 else kwargs.get("min")
        hi = None if target == "clamp_min" else (args[2] if len(args) > 2 else kwargs.get("max"))
    else:
        return False, None, str(target)
    low, high = _number(lo), _number(hi)
    relu = low == 0.0 and (hi is None or (high is not None and high > 0))
    return relu, high if relu else None, name


class _Tracer(torch.fx.Tracer):
    """Keeps coarsegrad's quantized layers (their autograd functions are not traceable) and
    the ``keep_float`` modules whole."""

    def __init__(self, keep: set[str]) -> None:
        super().__init__()
        self.keep = keep

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return (type(m).__module__.startswith("coarsegrad.quant") or module_qualified_name in self.keep
                or super().is_leaf_module(m, module_qualified_name))


def _rewrite_functional(model: nn.Module, act: ActQuant, keep: set[str], notes: _Notes) -> nn.Module:
    try:
        graph = _Tracer(keep).trace(model)
    except Exception as exc:  # torch.fx raises many types (TraceError, TypeError, …)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        notes.left_float.append(f"forward of {type(model).__name__}: not traceable by torch.fx ({first[:120]}); "
                                "its functional activations were not checked")
        return model
    notes.traced = True
    gm = torch.fx.GraphModule(model, graph, type(model).__name__)
    count = 0
    for node in list(graph.nodes):
        if node.op not in ("call_function", "call_method"):
            continue
        relu, clip, name = _relu_clip(node)
        if not relu:
            if node.target in _FLOAT_CALLS or node.target in _FLOAT_METHODS or name in _CLAMPS:
                notes.left_float.append(f"{node.name} ({_FLOAT_CALLS.get(node.target, name)})")
            continue
        while hasattr(gm, f"quant_relu_{count}"):
            count += 1
        module_name = f"quant_relu_{count}"
        gm.add_submodule(module_name, _placed(QuantReLU(clip_spec(act, clip)), model))
        with graph.inserting_after(node):
            new = graph.call_module(module_name, (node.args[0] if node.args else node.kwargs["input"],))
        node.replace_all_uses_with(new)
        graph.erase_node(node)
        notes.functional.append(f"{node.name}: {name} → QuantReLU {module_name}")
    if not notes.functional:
        return model  # nothing to rewrite: the original module, changed in place
    gm.recompile()
    return gm


def freeze_learned(model: nn.Module) -> nn.Module:
    """Replace (in place) every learned-step :class:`QuantReLU` by a fixed-α one with the
    learned value: LSQ α = s, PACT α = a/L, rounding ``nearest``, ``learn=None`` (what the
    exporters, the fast step and the theory code read). Returns ``model``. The fixed
    staircase sends a tie x = (k + ½)α to the lower level where LSQ/PACT round half to
    even, so the two agree everywhere but there. A step trained to ≤ 0 raises
    ``ConfigError('alpha')``."""
    for name, child in list(model.named_children()):
        learn = child.quant.learn if isinstance(child, QuantReLU) else None
        if isinstance(child, QuantReLU) and learn is not None:
            value = float((child.step if learn == "lsq" else child.clip / child.quant.levels).detach())
            setattr(model, name, QuantReLU(dataclasses.replace(child.quant, alpha=value, learn=None)))
        else:
            freeze_learned(child)
    return model


def check_fixed(model: nn.Module) -> None:
    """Raise ``ConfigError('model')`` naming the learned-step QuantReLUs of ``model`` (code
    that reads a fixed ``quant.alpha``, such as the exporters, calls this first)."""
    learned = [name or "(root)" for name, m in model.named_modules()
               if isinstance(m, QuantReLU) and m.quant.learn is not None]
    if learned:
        raise ConfigError("model", f"has learned activation steps at {learned}; call "
                          "coarsegrad.freeze_learned(model) first to fix them as α")


@overload
def quantize_model(model: nn.Module, quant: ActQuant | int = ..., alpha: float | None = ...,
                   ste: str | STE = ..., rounding: Rounding = ..., *, act: ActQuant | int | None = ...,
                   weight: WeightQuant | None = ..., keep_float: Iterable[str] = ..., functional: bool = ...,
                   report: Literal[False] = ...) -> nn.Module: ...
@overload
def quantize_model(model: nn.Module, quant: ActQuant | int = ..., alpha: float | None = ...,
                   ste: str | STE = ..., rounding: Rounding = ..., *, act: ActQuant | int | None = ...,
                   weight: WeightQuant | None = ..., keep_float: Iterable[str] = ..., functional: bool = ...,
                   report: Literal[True]) -> tuple[nn.Module, QuantizeReport]: ...
def quantize_model(model: nn.Module, quant: ActQuant | int = _UNSET, alpha: float | None = None,
                   ste: str | STE = "clipped_relu", rounding: Rounding = DEFAULT_ROUNDING, *,
                   act: ActQuant | int | None = _UNSET, weight: WeightQuant | None = None, keep_float: Iterable[str] = (),
                   functional: bool = True, report: bool = False) -> nn.Module | tuple[nn.Module, QuantizeReport]:
    """Quantize ``model``'s activations with ``act`` and its Linear/Conv2d weights with
    ``weight`` (a :class:`WeightQuant`; None keeps weights float), as the module docstring lists.

    ``act`` defaults to ``ActQuant(2)``; ``act=None`` keeps activations float. The older
    positional form ``quantize_model(model, quant, alpha, ste, rounding)`` still works
    (``quant``: an ActQuant or its bits). ``keep_float``: module paths left as they are.
    Returns the model (itself, or a ``torch.fx.GraphModule`` when functional calls were
    rewritten), and with ``report=True`` also a :class:`QuantizeReport`.
    """
    if quant is not _UNSET and act is not _UNSET:
        raise ConfigError("act", "give the activation spec once: act= or the positional quant, not both")
    if act is _UNSET:
        act = 2 if quant is _UNSET else quant
    elif alpha is not None or ste != "clipped_relu" or rounding != DEFAULT_ROUNDING:
        raise ConfigError("act", "alpha/ste/rounding go with the positional quant; put them in the ActQuant")
    spec = None if act is None else as_quant(act, alpha, ste, rounding)
    if weight is not None and not isinstance(weight, WeightQuant):
        raise ConfigError("weight", f"must be a WeightQuant or None, got {type(weight).__name__}")
    if not isinstance(model, nn.Module):
        raise ConfigError("model", f"must be a torch.nn.Module, got {type(model).__name__}")
    keep = set(keep_float)
    unknown = sorted(keep - {name for name, _ in model.named_modules()})
    if unknown:
        raise ConfigError("keep_float", f"no such module paths in the model: {unknown}")
    notes = _Notes()
    _swap_modules(model, "", spec, weight, keep, notes)
    if functional and spec is not None:
        model = _rewrite_functional(model, spec, keep, notes)
    if notes.left_float:
        warnings.warn(f"quantize_model left in float: {'; '.join(notes.left_float)}", UserWarning, stacklevel=2)
    if not report:
        return model
    return model, QuantizeReport(tuple(notes.activations), tuple(notes.functional), tuple(notes.weights),
                                 tuple(notes.left_float), notes.traced)
