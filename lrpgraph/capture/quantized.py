"""Quantized weights are traced as the float weights they stand for.

A weight quantized by a tensor-subclass scheme (torchao's `quantize_`, optimum-quanto's `quantize` + `freeze`,
transformers' `TorchAoConfig` / `QuantoConfig`) reaches its layer as a subclass whose kernel dispatch hides the
product (`quanto.qbytes_mm`, an int4 matmul): no rule could split it. While a model is traced, each layer function
called with such a weight is called with `weight.dequantize()` instead, so the graph holds the scheme's own
dequantization ops on the weight's stored tensors, feeding the float layer op (`aten.linear`, a convolution, an
embedding). The layer then gets the float layer's rules, with the weights the forward actually uses; the
dequantized weight is computed from the model's state alone, so the memory schedule recomputes it where a rule
reads it instead of holding it: one layer's float weight at a time, never the whole model's.

torch.ao's dynamic quantization (`quantize_dynamic`) keeps each Linear's int8 (or float16) weight in a packed
TorchScript object torch.export cannot trace: such a model is traced through `dequantized_view`, the model with each
of those layers standing in as the float layer of its dequantized weight (its int8 data kept as int8, the rest of
the model shared, the model itself untouched). Its kernel also rounds each layer's input to int8, which the float
layer does not: the explanation is of the model with the dequantized weights, as for the other schemes, and says so
once. Schemes that quantize activations as part of the model (torch.ao's static quantization, torchao's
dynamic-activation configs, optimum-quanto with `activations=`) are refused by `unsupported_quantization`, naming the
module, its scheme and the way out, before anything is traced.
"""

from __future__ import annotations

import copy
import weakref
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import is_traceable_wrapper_subclass

from ..caller import warn
from ..errors import TraceError

# layer functions and the positions / names of their weight arguments
_WEIGHTS: dict[Any, tuple[int, str]] = {
    F.linear: (1, "weight"),
    F.bilinear: (2, "weight"),
    F.conv1d: (1, "weight"),
    F.conv2d: (1, "weight"),
    F.conv3d: (1, "weight"),
    F.conv_transpose1d: (1, "weight"),
    F.conv_transpose2d: (1, "weight"),
    F.conv_transpose3d: (1, "weight"),
    F.embedding: (1, "weight"),
    F.embedding_bag: (1, "weight"),
}


def is_quantized_weight(value: Any) -> bool:
    """A tensor subclass that stands for a float tensor it can dequantize to (not a plain, quantized-dtype tensor)."""
    return is_traceable_wrapper_subclass(value) and type(value).dequantize is not torch.Tensor.dequantize


class DequantizedWeights(TorchFunctionMode):
    """Calls layer functions whose weight is a quantized subclass with the dequantized weight (see the module)."""

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        where = _WEIGHTS.get(func)
        if where is not None:
            index, name = where
            if len(args) > index and is_quantized_weight(args[index]):
                args = (*args[:index], args[index].dequantize(), *args[index + 1 :])
            elif is_quantized_weight(kwargs.get(name)):
                kwargs = {**kwargs, name: kwargs[name].dequantize()}
        return func(*args, **kwargs)


# attributes of a quantized weight that quantize or rescale the layer's input inside its kernel (torchao)
_INPUT_TRANSFORMS = ("act_quant_kwargs", "act_pre_scale", "input_quant_func")
_EAGER_QUANTIZED = ("torch.ao.nn.quantized", "torch.nn.quantized", "torch.ao.nn.intrinsic.quantized")
_DYNAMIC_LINEAR = "torch.ao.nn.quantized.dynamic.modules.linear.Linear"
_WAY_OUT = (
    "lrpgraph explains weight-only quantization (torchao `Int8WeightOnlyConfig` / `Int4WeightOnlyConfig`, "
    "optimum-quanto `quantize(model, weights=qint8)` or `qint4`), with the dequantized weights"
)


def refuse_unfaithful_quantization(model: torch.nn.Module) -> None:
    """TraceError if the model quantizes activations as part of the model (`unsupported_quantization`): its
    dequantized float layers would not compute what it computes. A scan of the modules, cheap enough for every call."""
    why = unsupported_quantization(model)
    if why:
        raise TraceError(f"cannot explain {type(model).__name__} faithfully: {why}")


def refuse_disagreeing_kernels(model: torch.nn.Module) -> None:
    """TraceError if a linear weight's own kernel disagrees with its dequantization on a probe input (an unknown
    scheme's hidden input transform): checked before each new trace."""
    why = _kernel_disagreement(model)
    if why:
        raise TraceError(f"cannot explain {type(model).__name__} faithfully: {why}")


def _kernel_disagreement(model: torch.nn.Module) -> str | None:
    """The first 2-D quantized weight whose kernel, F.linear on two random rows, differs from the same product with
    its dequantized weight by more than float rounding (1e-3 of the output's scale); one layer at a time."""
    generator = torch.Generator().manual_seed(0)
    for path, module in model.named_modules():
        for name, weight in module.named_parameters(recurse=False):
            if not is_quantized_weight(weight) or weight.dim() != 2:
                continue
            probe = torch.randn(2, weight.shape[1], generator=generator).to(weight.dtype).to(weight.device)
            with torch.no_grad():
                kernel, dequantized = F.linear(probe, weight), F.linear(probe, weight.dequantize())
            gap = float((kernel.float() - dequantized.float()).abs().max())
            if gap > 1e-3 * float(dequantized.float().abs().max()):
                return (
                    f"the {type(weight).__name__} {name} of module '{path}' computes a linear layer that differs from "
                    f"the same layer with its dequantized weight (by {gap:.3g} on a probe input); {_WAY_OUT}"
                )
    return None


def unsupported_quantization(model: torch.nn.Module) -> str | None:
    """Why the model's quantization cannot be traced faithfully (the first module so quantized, its scheme and what
    to use instead), or None. Schemes that quantize activations compute a function of rounded inputs that the
    dequantized float layer would not reproduce: they are refused, never explained as something else."""
    for path, module in model.named_modules():
        kind, where = type(module), f"module '{path or '<model>'}' ({type(module).__module__}.{type(module).__name__})"
        if kind.__module__.startswith(_EAGER_QUANTIZED) and _qualified(kind) != _DYNAMIC_LINEAR:
            return (
                f"{where} is quantized with torch.ao's eager-mode quantization (static `convert`, or a dynamic module "
                f"other than Linear), which quantizes activations as part of the model; {_WAY_OUT}"
            )
        if kind.__module__.startswith("optimum.quanto") and getattr(module, "activation_qtype", None) is not None:
            scheme = f"optimum-quanto activations={getattr(module.activation_qtype, 'name', module.activation_qtype)}"
            return f"{where} quantizes its activations ({scheme}); {_WAY_OUT}"
        for name, weight in module.named_parameters(recurse=False):
            transform = next((a for a in _INPUT_TRANSFORMS if getattr(weight, a, None) is not None), None)
            if is_quantized_weight(weight) and transform:
                return (
                    f"{where} has a {type(weight).__name__} {name} that transforms the layer's input ({transform}: "
                    f"activation quantization or pre-scaling); {_WAY_OUT}"
                )
    return None


def _qualified(kind: type) -> str:
    return f"{kind.__module__}.{kind.__qualname__}"


class DequantizedLinear(torch.nn.Module):
    """A torch.ao dynamic quantized Linear as the float layer of its dequantized weight: (int8 − zero point) × scale
    per output channel (or its float16 weight), computed in the input's dtype; the int8 data stays int8."""

    def __init__(self, layer: torch.nn.Module):
        super().__init__()
        weight, bias = layer.weight(), layer.bias()
        scale = zero_point = None
        if weight.is_quantized:
            if weight.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
                scale, zero_point = torch.tensor([weight.q_scale()]), torch.tensor([weight.q_zero_point()])
            else:
                scale, zero_point = weight.q_per_channel_scales(), weight.q_per_channel_zero_points()
            weight = weight.int_repr()
        self.register_buffer("data", weight.detach())
        self.register_buffer("scale", None if scale is None else scale.float()[:, None])
        self.register_buffer("zero_point", None if zero_point is None else zero_point.float()[:, None])
        self.register_buffer("bias", None if bias is None else bias.detach())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.data.to(x.dtype)
        if self.scale is not None:
            weight = (weight - self.zero_point.to(x.dtype)) * self.scale.to(x.dtype)
        return F.linear(x, weight, None if self.bias is None else self.bias.to(x.dtype))


_VIEWS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model → (its dynamic layers' identities, view)


def dequantized_view(model: torch.nn.Module) -> torch.nn.Module:
    """The model as traced: itself, or where torch.ao dynamic quantized Linear layers hold packed weights, a view of it
    with each such layer a `DequantizedLinear` (every other module shared; made again when a layer's packed weights
    are replaced, else the same object, so that its traces are kept)."""
    layers = [(path, m) for path, m in model.named_modules() if _qualified(type(m)) == _DYNAMIC_LINEAR]
    if not layers:
        return model
    key = tuple((path, id(m), id(m._packed_params._packed_params)) for path, m in layers)
    found = _VIEWS.get(model)
    if found is not None and found[0] == key:
        return found[1]
    view = _replaced(model, {path: DequantizedLinear(m) for path, m in layers}, "")
    _VIEWS[model] = (key, view)
    warn(
        f"{type(model).__name__} has torch.ao dynamic quantized Linear layers: they are explained as float layers of "
        "their dequantized weights; their kernel also rounds each layer's input to int8, which the explanation does "
        "not model (its output differs from the model's by that rounding)"
    )
    return view


def _replaced(module: torch.nn.Module, layers: dict[str, torch.nn.Module], path: str) -> torch.nn.Module:
    """`module` with the modules at these paths replaced: a shallow copy of each module on the way to one of them."""
    if path in layers:
        return layers[path]
    children = {
        name: _replaced(child, layers, f"{path}.{name}" if path else name)
        for name, child in module._modules.items()
        if child is not None
    }
    if all(children[name] is module._modules[name] for name in children):
        return module
    copied = copy.copy(module)
    copied.__dict__["_modules"] = {**module._modules, **children}
    return copied
