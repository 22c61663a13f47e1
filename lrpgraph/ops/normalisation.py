"""Normalisation layers: layer, group, RMS and batch norm.

Op class "norm" (scale from the input's own statistics): the scale is held constant and the
epsilon rule runs through the linear map that is left (AttnLRP Prop. 3.4). Op class "batchnorm"
(eval mode, running statistics): a per-channel affine map; where it follows a conv or linear
layer the graph pass `fold_batchnorm` has already merged it into that layer.
"""

from __future__ import annotations

import dataclasses

import torch

from .adapter import LayerAdapter, RuleCall
from .branch import held_slope
from .gradient import Replay, form, rescaled, share_of
from .linear_maps import ChannelAffine, FrozenScaleNorm
from .registry import declare, rule
from .table import Facts, describe, register_ops

aten = torch.ops.aten

NORM = declare("norm", absorbs="bias")
BATCHNORM = declare("batchnorm", absorbs="bias")


@rule((NORM, BATCHNORM), "pass", needs=("x",))
def layer_pass(R, x, layer, out):
    """Identity: the normalisation hands relevance on unchanged (Zennit's choice for batch norm).

    It reads nothing itself; x is declared because the layer's statistics are built from it.
    """
    return R


@rule(NORM, "epsilon-own", needs=("x", "out"))
def epsilon_own(R, x, layer, out):
    """The PA-LRP authors' norm rule: σ held, epsilon through the centring with the norm's own eps, additive:
    g = (w/σ) ⊙ R/(y + eps), R_x = x ⊙ (g − mean g)."""
    return x * layer.adjoint(R / (out.to(R.dtype) + layer.eps), None)


@form((NORM, BATCHNORM), "pass")
def pass_form(call: Replay):
    out = call.out[0] if isinstance(call.out, (tuple, list)) else call.out
    y = call.passed(call.get(call.adapter.data), out)
    return (y, *(t.detach() for t in call.out[1:])) if isinstance(call.out, tuple) else y


@form(NORM, "epsilon-own")
def epsilon_own_form(call: Replay):
    y = call.held()
    first = y[0] if isinstance(y, tuple) else y
    out = call.out[0] if isinstance(call.out, (tuple, list)) else call.out
    eps = call.args.get("eps")
    eps = torch.finfo(out.dtype).eps if eps is None else float(eps)
    first = rescaled(first, share_of(out, out.detach() + eps))
    return (first, *y[1:]) if isinstance(y, tuple) else first


def _channel_view(t: torch.Tensor | None, rank: int) -> torch.Tensor | None:
    return None if t is None else t.reshape([1, -1] + [1] * (rank - 2))


def _layer_norm(args):
    x = args["input"]
    k = len(args["normalized_shape"])
    return FrozenScaleNorm(
        x, list(range(x.dim() - k, x.dim())), None, args.get("weight"), args.get("bias"), float(args.get("eps", 1e-5))
    )


def _rms_norm(args):
    x = args["input"]
    k = len(args["normalized_shape"])
    eps = args.get("eps")
    eps = torch.finfo(x.dtype).eps if eps is None else float(eps)
    return FrozenScaleNorm(x, list(range(x.dim() - k, x.dim())), None, args.get("weight"), None, eps, center=False)


def _group_norm(args):
    x = args["input"]
    groups = int(args["num_groups"])
    shape = [x.shape[0], groups, -1]
    view = [1, -1] + [1] * (x.dim() - 2)
    weight, bias = args.get("weight"), args.get("bias")
    weight = None if weight is None else weight.reshape(view)
    bias = None if bias is None else bias.reshape(view)
    return FrozenScaleNorm(x, [2], shape, weight, bias, float(args.get("eps", 1e-5)))


def _batch_norm_statistics(args):
    """Batch norm normalising with the batch's own statistics (train form, or no running stats)."""
    x = args["input"]
    dims = [0, *range(2, x.dim())]
    return FrozenScaleNorm(
        x,
        dims,
        None,
        _channel_view(args.get("weight"), x.dim()),
        _channel_view(args.get("bias"), x.dim()),
        float(args["eps"]),
    )


def _batch_norm_running(args):
    x = args["input"]
    var = args["running_var"]
    inv_std = torch.rsqrt(var.to(torch.promote_types(var.dtype, torch.float32)) + float(args["eps"]))
    weight, bias = args.get("weight"), args.get("bias")
    scale = inv_std if weight is None else weight * inv_std
    shift = -args["running_mean"] * scale + (0 if bias is None else bias)
    return ChannelAffine(x.shape, scale, shift)


def _first_output(call: RuleCall) -> RuleCall:
    """The call seen through the op's first output (ops returning output and saved statistics)."""
    R = call.R[0] if isinstance(call.R, list) else call.R
    out = call.out[0] if isinstance(call.out, (tuple, list)) else call.out
    return dataclasses.replace(call, R=R, out=out)


class NormAdapter(LayerAdapter):
    """Layer, RMS and group norm: statistics over features or positions of each sample. `held`: the op written
    with its scale held constant, for `verify`'s gradient forms (not the walker's linear map)."""

    facts = Facts(mixes_positions=True)

    def __init__(self, op_class, data, build, held):
        super().__init__(op_class, data, build)
        self.held = held

    def replay(self, call, replace, detach=()):
        args = {**call.args, **replace}
        for key in detach:
            args[key] = args[key].detach()
        return self.held(args)

    def with_statistics_held(self, op, args):
        """Mean and variance (RMS for RMS norm) constant: ∂y/∂x = w/σ elementwise; saved statistics constant."""
        return held_slope(op, args, self.data, lambda x: self.build({**args, self.data: x}).gain(x))


class TupleNormAdapter(NormAdapter):
    """Norm ops returning (output, saved statistics…): only the first output carries relevance."""

    def apply(self, call):
        return super().apply(_first_output(call))

    def replay(self, call, replace, detach=()):
        rest = (t.detach() for t in call.out[1:])
        return (super().replay(call, replace, detach), *rest)


class BatchNormAdapter(LayerAdapter):
    """batch_norm: running statistics (class "batchnorm") or the batch's own (class "norm")."""

    always = ("weight", "bias", "running_mean", "running_var")

    def __init__(self, training: str | None):
        super().__init__(BATCHNORM, "input", _batch_norm_running)
        self.training = training

    def _uses_batch_statistics(self, args) -> bool:
        if self.training is None:
            return args.get("running_mean") is None
        return bool(args.get(self.training))

    def op_class(self, args, relevant, role):
        return NORM if self._uses_batch_statistics(args) else BATCHNORM

    def apply(self, call):
        call = _first_output(call)
        layer = (_batch_norm_statistics if call.op_class is NORM else _batch_norm_running)(call.args)
        return {"input": call.run(call.args["input"], layer, call.out)}

    def replay(self, call, replace, detach=()):
        if not self._uses_batch_statistics(call.args):
            return super().replay(call, replace, detach)  # running statistics: the op is affine already
        args = {**call.args, **replace}
        x = args["input"]
        y = _held(
            x, [0, *range(2, x.dim())], None, _channel(args.get("weight"), x), _channel(args.get("bias"), x), args
        )
        rest = tuple(t.detach() for t in call.out[1:]) if isinstance(call.out, (tuple, list)) else ()
        return (y, *rest) if rest else y

    def with_statistics_held(self, op, args):
        """Running statistics: the op is affine already. The batch's own: mean and variance constant (γ/σ)."""
        if not self._uses_batch_statistics(args):
            return super().with_statistics_held(op, args)
        return held_slope(op, args, "input", lambda x: _batch_norm_statistics({**args, "input": x}).gain(x))


def _held(x, dims, group_shape, weight, bias, args, center: bool = True):
    """(x − mean x) / σ · w + b with σ held constant (no centring for RMS norm), over `dims` of x viewed as
    `group_shape`: the norm as the rules see it, written for the replay."""
    eps = args.get("eps")
    eps = torch.finfo(x.dtype).eps if eps is None else float(eps)
    g = x if group_shape is None else x.reshape(group_shape)
    mean = g.mean(dims, keepdim=True) if center else 0
    spread = (g.detach() - g.detach().mean(dims, keepdim=True)) if center else g.detach()
    y = ((g - mean) * torch.rsqrt(spread.pow(2).mean(dims, keepdim=True) + eps)).reshape(x.shape)
    y = y if weight is None else y * weight
    return y if bias is None else y + bias


def _channel(t, x):
    return None if t is None else t.reshape([1, -1] + [1] * (x.dim() - 2))


def _last_dims(args):
    x = args["input"]
    return list(range(x.dim() - len(args["normalized_shape"]), x.dim()))


def _layer_norm_held(args):
    return _held(args["input"], _last_dims(args), None, args.get("weight"), args.get("bias"), args)


def _rms_norm_held(args):
    return _held(args["input"], _last_dims(args), None, args.get("weight"), None, args, center=False)


def _group_norm_held(args):
    x = args["input"]
    shape = [x.shape[0], int(args["num_groups"]), -1]
    return _held(x, [2], shape, _channel(args.get("weight"), x), _channel(args.get("bias"), x), args)


register_ops(NormAdapter(NORM, "input", _layer_norm, _layer_norm_held), aten.layer_norm.default)
register_ops(TupleNormAdapter(NORM, "input", _layer_norm, _layer_norm_held), aten.native_layer_norm.default)
register_ops(NormAdapter(NORM, "input", _rms_norm, _rms_norm_held), aten.rms_norm.default)
register_ops(NormAdapter(NORM, "input", _group_norm, _group_norm_held), aten.group_norm.default)
register_ops(BatchNormAdapter(None), aten._native_batch_norm_legit_no_training.default)
register_ops(
    BatchNormAdapter("training"),
    aten._native_batch_norm_legit.default,
    aten.batch_norm.default,
    aten._native_batch_norm_legit_functional.default,
)
register_ops(BatchNormAdapter(None), aten._native_batch_norm_legit.no_stats)
# second moments written out (RMSNorm, F.normalize, hand-written layer norms): a pass holds the scales they make
describe(
    aten.var.correction,
    aten.var.dim,
    aten.var.default,
    aten.std.correction,
    aten.std.dim,
    aten.std.default,
    aten.var_mean.correction,
    aten.var_mean.dim,
    aten.std_mean.correction,
    aten.std_mean.dim,
    aten.linalg_vector_norm.default,
    aten.norm.ScalarOpt_dim,
    aten.norm.Scalar,
    statistic="moment",
)
