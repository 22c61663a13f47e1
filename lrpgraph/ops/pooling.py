"""Pooling and reductions: sums, means and average pools (Norm), max pools and max reductions (winner).

Max pooling hands each output's relevance to the input that won the max (Zennit's behaviour: the
gradient of max pooling); max/amax reductions split it evenly among tied winners.
"""

from __future__ import annotations

import torch

from .adapter import Adapter, LayerAdapter
from .gradient import Replay, delta, form, rescaled, share_of, stabilized
from .linear_maps import AvgPool, CumulativeSum, Quantile, Reduction, Resample, pool_window
from .registry import declare, rule
from .table import register_ops

aten = torch.ops.aten

SUM = declare("sum")
AVGPOOL = declare("avgpool")
MAXPOOL = declare("maxpool")
MAX = declare("max")


class MaxPool:
    """Which input won each pooling window, and how to send relevance there."""

    def __init__(self, x: torch.Tensor, dims: int, adaptive: bool, args: dict):
        self.dims, self.adaptive, self.args = dims, adaptive, args
        self.x = x.unsqueeze(-2) if dims == 1 else x
        d = max(dims, 2)
        if adaptive:
            size = list(args["output_size"])
            size = [1, *size] if dims == 1 else size
            op = aten.adaptive_max_pool2d if d == 2 else aten.adaptive_max_pool3d
            self.indices = op(self.x, size)[1]
        else:
            self.window = (*pool_window(args, dims), bool(args.get("ceil_mode", False)))
            op = aten.max_pool2d_with_indices if d == 2 else aten.max_pool3d_with_indices
            self.indices = op(self.x, *self.window)[1]

    def of(self, x: torch.Tensor) -> MaxPool:
        """The same pooling over another input (its own winners)."""
        return MaxPool(x, self.dims, self.adaptive, self.args)

    def to_winners(self, R: torch.Tensor) -> torch.Tensor:
        R = R.unsqueeze(-2) if self.dims == 1 else R
        x = self.x.to(R.dtype)
        d = max(self.dims, 2)
        if self.adaptive:
            op = aten.adaptive_max_pool2d_backward if d == 2 else aten.adaptive_max_pool3d_backward
            g = op(R.contiguous(), x, self.indices)
        else:
            op = aten.max_pool2d_with_indices_backward if d == 2 else aten.max_pool3d_with_indices_backward
            g = op(R.contiguous(), x, *self.window, self.indices)
        return g.squeeze(-2) if self.dims == 1 else g


@rule(MAXPOOL, "winner", needs=("x",), default=True)
def maxpool_winner(R, x, pool: MaxPool):
    """All relevance of a pooled output goes to the input that was the maximum."""
    return pool.to_winners(R)


@rule(MAX, "winner", needs=("x", "out"), default=True)
def max_winner(R, x, out, dims):
    """max/amax over dims (R and out kept-dim shaped): relevance to the maxima, split among ties."""
    winners = (x == out).to(R.dtype)
    return winners * (R / winners.sum(dim=dims, keepdim=True))


@form(MAXPOOL, "winner")
def maxpool_form(call: Replay):
    """The gradient of max pooling goes to each window's maximum."""
    return call.run()


@form(MAX, "winner")
def max_form(call: Replay):
    """The output's value; its gradient split evenly among the maxima (ties share, as the rule does)."""
    x, values = call.get("self"), call.out[0] if isinstance(call.out, tuple) else call.out
    dims = call.adapter.dims(x, call.args)
    kept = [1 if d in dims else n for d, n in enumerate(x.shape)]
    winners = (x.detach() == values.detach().reshape(kept)).to(x.dtype)
    g = (x * winners / winners.sum(dims, keepdim=True)).sum(dims, keepdim=True).reshape(values.shape)
    y = values.detach() + delta(g)
    return (y, *call.out[1:]) if isinstance(call.out, tuple) else y


@form((SUM, AVGPOOL), "norm")
def norm_form(call: Replay, *, stabilizer: float = 1e-6):
    """ρ·y/stab(y) through the sum or average."""
    return rescaled(call.run(), share_of(call.out, stabilized(call.out.detach(), stabilizer)))


class MaxPoolAdapter(Adapter):
    def __init__(self, dims: int, adaptive: bool):
        super().__init__(MAXPOOL)
        self.dims, self.adaptive = dims, adaptive

    def apply(self, call):
        R = call.R[0] if isinstance(call.R, list) else call.R  # *_with_indices: the values output only
        pool = MaxPool(call.args["self"], self.dims, self.adaptive, call.args)
        return {"self": call.run_on(R, call.args["self"], pool)}


class MaxAdapter(Adapter):
    """amax / max.dim / max / min reductions (values output only)."""

    def __init__(self, with_indices: bool):
        super().__init__(MAX)
        self.with_indices = with_indices

    def needs(self, op_class, kernel, args, relevant):
        return {"self"}, True

    def apply(self, call):
        x, R, out = call.args["self"], call.R, call.out
        if self.with_indices:
            R, out = R[0], out[0]
        dims = self.dims(x, call.args)
        kept = [1 if d in dims else n for d, n in enumerate(x.shape)]
        return {"self": call.run_on(R.reshape(kept), x, out.reshape(kept), dims)}

    def dims(self, x, args) -> list[int]:
        """The reduced dimensions."""
        dim = args.get("dim")
        return list(range(x.dim())) if dim is None or dim == [] else [d % max(x.dim(), 1) for d in _as_dims(dim)]


def _reduction(mean: bool):
    def build(args):
        x = args["self"]
        return Reduction(x.shape, args.get("dim"), args.get("keepdim", False), mean)

    return build


class QuantileAdapter(LayerAdapter):
    """torch.quantile (scalar q): which sorted values it interpolates depends on x, so x is always read."""

    def needs(self, op_class, kernel, args, relevant):
        return {"self"}, True


def _quantile(args):
    x = args["self"]
    return Quantile(x, args["q"], args.get("dim"), args.get("keepdim", False), args.get("interpolation", "linear"))


def _cumsum(args):
    return CumulativeSum(args["self"].shape, args["dim"])


def _resample(backward):
    def build(args):
        x = args["input"]
        out_size = args.get("output_size")
        scales = args.get("scale_factors")
        if out_size is None:
            out_size = [int(n * f) for n, f in zip(x.shape[2:], scales, strict=True)]
        scales = (None, None) if scales is None else tuple(scales)
        return Resample(x.shape, (*x.shape[:2], *out_size), bool(args.get("align_corners", False)), scales, backward)

    return build


def _avgpool(dims: int, adaptive: bool):
    def build(args):
        return AvgPool(args["self"].shape, dims, adaptive, args)

    return build


def _as_dims(dim) -> list[int]:
    return [dim] if isinstance(dim, int) else list(dim)


register_ops(LayerAdapter(SUM, "self", _reduction(False)), aten.sum.dim_IntList, aten.sum.default, statistic="mean")
register_ops(LayerAdapter(SUM, "self", _reduction(True)), aten.mean.dim, aten.mean.default, statistic="mean")
for _dims, _ops in ((1, [aten.avg_pool1d.default]), (2, [aten.avg_pool2d.default]), (3, [aten.avg_pool3d.default])):
    register_ops(LayerAdapter(AVGPOOL, "self", _avgpool(_dims, False)), *_ops)
for _dims, _ops in (
    (1, [aten.adaptive_avg_pool1d.default]),
    (2, [aten.adaptive_avg_pool2d.default, aten._adaptive_avg_pool2d.default]),
    (3, [aten.adaptive_avg_pool3d.default, aten._adaptive_avg_pool3d.default]),
):
    register_ops(LayerAdapter(AVGPOOL, "self", _avgpool(_dims, True)), *_ops)
register_ops(LayerAdapter(SUM, "self", _cumsum), aten.cumsum.default)
register_ops(
    LayerAdapter(AVGPOOL, "input", _resample(aten.upsample_bilinear2d_backward.default)),
    aten.upsample_bilinear2d.vec,
)
register_ops(
    LayerAdapter(AVGPOOL, "input", _resample(aten.upsample_bicubic2d_backward.default)),
    aten.upsample_bicubic2d.vec,
)
register_ops(MaxPoolAdapter(1, False), aten.max_pool1d.default)
register_ops(MaxPoolAdapter(2, False), aten.max_pool2d.default, aten.max_pool2d_with_indices.default)
register_ops(MaxPoolAdapter(3, False), aten.max_pool3d.default, aten.max_pool3d_with_indices.default)
register_ops(MaxPoolAdapter(1, True), aten.adaptive_max_pool1d.default)
register_ops(MaxPoolAdapter(2, True), aten.adaptive_max_pool2d.default)
register_ops(MaxPoolAdapter(3, True), aten.adaptive_max_pool3d.default)
register_ops(MaxAdapter(False), aten.amax.default, aten.amin.default, aten.max.default, aten.min.default)
register_ops(MaxAdapter(True), aten.max.dim, aten.min.dim)
# selections of one value (ties share): the same winner rule
register_ops(MaxAdapter(False), aten.median.default, aten.nanmedian.default)
register_ops(MaxAdapter(True), aten.median.dim, aten.nanmedian.dim, aten.kthvalue.default)
register_ops(QuantileAdapter(SUM, "self", _quantile), aten.quantile.scalar, aten.nanquantile.scalar)
