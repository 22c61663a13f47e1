"""Quantized weights are traced as the float weights they stand for.

A weight quantized by a tensor-subclass scheme (torchao's `quantize_`, optimum-quanto's `quantize` + `freeze`,
transformers' `TorchAoConfig` / `QuantoConfig`) reaches its layer as a subclass whose kernel dispatch hides the
product (`quanto.qbytes_mm`, an int4 matmul): no rule could split it. While a model is traced, each layer function
called with such a weight is called with `weight.dequantize()` instead, so the graph holds the scheme's own
dequantization ops on the weight's stored tensors, feeding the float layer op (`aten.linear`, a convolution, an
embedding). The layer then gets the float layer's rules, with the weights the forward actually uses; the
dequantized weight is computed from the model's state alone, so the memory schedule recomputes it where a rule
reads it instead of holding it: one layer's float weight at a time, never the whole model's.

Schemes that quantize activations (torch.ao's dynamic and static quantization, torchao's dynamic-activation configs,
optimum-quanto with `activations=`) compute a function of rounded inputs: `unsupported_quantization` names such a
module, its scheme and the way out before anything is traced.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import is_traceable_wrapper_subclass

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
_WAY_OUT = (
    "lrpgraph explains weight-only quantization (torchao `Int8WeightOnlyConfig` / `Int4WeightOnlyConfig`, "
    "optimum-quanto `quantize(model, weights=qint8)` or `qint4`), with the dequantized weights"
)


def refuse_unfaithful_quantization(model: torch.nn.Module, probe: bool) -> None:
    """TraceError if the model is quantized so that its dequantized float layers would not compute what it computes:
    a scheme that quantizes activations (`unsupported_quantization`, a scan of the modules), or with `probe` (before a
    new trace) a linear weight whose own kernel disagrees with its dequantization on a probe input (an unknown
    scheme's hidden input transform)."""
    why = unsupported_quantization(model) or (_kernel_disagreement(model) if probe else None)
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
        if kind.__module__.startswith(_EAGER_QUANTIZED):
            return (
                f"{where} is quantized with torch.ao's eager-mode quantization (quantize_dynamic or convert), which "
                f"quantizes activations and keeps weights in packed objects torch.export cannot trace; {_WAY_OUT}"
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
