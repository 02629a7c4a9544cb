"""Any ``quantize_model``'d network: its state_dict plus its activation specs.

    cg.save_quantized_state("net.safetensors", model)        # model: your own class
    model = cg.load_quantized_state(MyNet(), "net.safetensors")

No code and no pickle goes into the file, so the loader needs the architecture from
you: a *skeleton*, an instance of your own class (fresh weights, plain ``nn.ReLU`` or
``QuantReLU`` where the quantized activations go). The file holds

* every tensor of ``model.state_dict()`` (safetensors, with the SHA-256 digest of
  :mod:`coarsegrad.io.tensorfile` over metadata and bytes);
* metadata ``coarsegrad.quantized`` = JSON {format, version, quant: {module path:
  ``ActQuant.to_dict()``}, one entry per :class:`QuantReLU`, by its path in
  ``named_modules()``; relu: [paths of the plain ``nn.ReLU`` modules left in float]}.
  A learned-step QuantReLU (``learn="lsq"``/``"pact"``) saves its ``step``/``clip``
  parameter among the tensors, so the learned value comes back exactly; so do quantized-weight
  layers their latent weights, BinaryRelax buffers and LSQ ``weight_step`` (the skeleton
  must be ``quantize_model``'d with the same ``weight=`` spec: the file holds no weight spec).

Loading checks the digest, then that every saved path is an ``nn.ReLU`` or
``QuantReLU`` of the skeleton and every ``QuantReLU``/``nn.ReLU`` of the skeleton is saved (as a spec, or as a
plain ReLU), replaces
each by ``QuantReLU(ActQuant.from_dict(spec))``, and loads the tensors only if their
names, shapes and dtypes are exactly the skeleton's. Any failure is a DataError. The
skeleton is built by you, so the file never makes the loader allocate more than it holds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from coarsegrad.errors import ConfigError, DataError
from coarsegrad.io import tensorfile
from coarsegrad.io.records import remove_stale_temporaries
from coarsegrad.quant.autograd import QuantReLU
from coarsegrad.quant.spec import ActQuant

QUANT_KEY = "coarsegrad.quantized"
VERSION = 1


def quant_specs(model: nn.Module) -> dict[str, ActQuant]:
    """{module path: spec} of every QuantReLU in ``model``."""
    return {name: m.quant for name, m in model.named_modules() if isinstance(m, QuantReLU)}


def _plain_relus(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if type(m) is nn.ReLU]


def save_quantized_state(path: str | Path, model: nn.Module) -> dict[str, Any]:
    """Atomically write ``model``'s state_dict and QuantReLU specs to ``path``; returns the header."""
    specs = quant_specs(model)
    if not specs:
        raise ConfigError("model", "has no QuantReLU (quantize_model it first, or use torch.save)")
    header = {"format": QUANT_KEY, "version": VERSION,
              "quant": {name: spec.to_dict() for name, spec in specs.items()}, "relu": _plain_relus(model)}
    state = {k: v.detach().to("cpu") for k, v in model.state_dict().items()}
    remove_stale_temporaries(Path(path).parent, Path(path).name)
    tensorfile.save(path, state, {QUANT_KEY: json.dumps(header, sort_keys=True, allow_nan=False)})
    return header


def _set_module(root: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, name, module)


def _state_after(skeleton: nn.Module, fresh: dict[str, QuantReLU]) -> dict[str, torch.Tensor]:
    """The skeleton's state_dict as it will be once the ``fresh`` activations replace its
    own (fixed-α ones hold no tensors; learned ones their ``step``/``clip``)."""
    state = skeleton.state_dict()
    for name, module in fresh.items():
        prefix = f"{name}." if name else ""
        old = skeleton.get_submodule(name).state_dict()
        for key in old:
            state.pop(prefix + key, None)
        state.update({prefix + key: value for key, value in module.state_dict().items()})
    return state


def _device(model: nn.Module) -> torch.device:
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


def load_quantized_state(skeleton: nn.Module, path: str | Path) -> nn.Module:
    """``skeleton`` (in place, then eval mode) with the QuantReLU specs and tensors of ``path``."""
    source = str(path)
    tensors, metadata = tensorfile.load(path)  # digest, layout and size checked here
    try:
        header = json.loads(metadata[QUANT_KEY])
        if header.get("format") != QUANT_KEY or header.get("version") != VERSION:
            raise ValueError(f"format/version {header.get('format')!r}/{header.get('version')!r}")
        saved = header["quant"]
        specs = {str(name): ActQuant.from_dict(spec) for name, spec in saved.items()}
        relus = header["relu"]
        if not isinstance(relus, list) or not all(isinstance(n, str) for n in relus):
            raise ValueError("'relu' must be a list of module paths")
    except (KeyError, AttributeError, TypeError, ValueError, RecursionError) as exc:  # ConfigError is a ValueError
        raise DataError(source, f"not a quantized-model file, or its specs are unusable ({exc!r})") from None
    modules = dict(skeleton.named_modules())
    wrong = [n for n in specs if not isinstance(modules.get(n), (nn.ReLU, QuantReLU))]
    activations = set(quant_specs(skeleton)) | set(_plain_relus(skeleton))
    unsaved = sorted(activations - set(specs) - set(relus))
    wrong += [n for n in relus if type(modules.get(n)) is not nn.ReLU]
    if wrong or unsaved:
        raise DataError(source, f"does not fit the skeleton: saved activations that are not ReLU/QuantReLU "
                        f"there {sorted(wrong)}, skeleton activations not saved {unsaved}")
    fresh = {name: QuantReLU(spec) for name, spec in specs.items()}
    expected = _state_after(skeleton, fresh)  # checked before anything changes
    missing, extra = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    differ = [k for k in expected if k in tensors and (tensors[k].shape != expected[k].shape
                                                      or tensors[k].dtype != expected[k].dtype)]
    if missing or extra or differ:
        raise DataError(source, f"tensors do not fit the skeleton: missing {missing}, unexpected {extra}, "
                        f"shape/dtype differs {differ}")
    for name, module in fresh.items():
        _set_module(skeleton, name, module.to(_device(skeleton)))
    with torch.no_grad():
        skeleton.load_state_dict(tensors, strict=True)
    return skeleton.eval()
