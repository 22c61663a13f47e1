"""Maps that are linear in their relevant input — y = A(x; w) + b — described by forward and adjoint.

The classic LRP rules (epsilon, gamma, z⁺, alpha-beta, z^B, flat, w², norm) are all of the form
x' ⊙ Aᵀ(R / stab(z')) for modified inputs, weights and biases; so a rule needs nothing but a
forward with substitute weights and the adjoint Aᵀ. Each class here provides both for one
family of ATen ops, computed with plain ops (never autograd).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .tensors import unbroadcast

aten = torch.ops.aten


class LinearMap:
    """y = A(x; weight) + bias for a fixed x shape. `weight` is None for maps without parameters."""

    weight: torch.Tensor | None = None
    bias: torch.Tensor | None = None

    def __init__(self, x_shape: Sequence[int]):
        self.x_shape = torch.Size(x_shape)

    def forward(self, x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def adjoint(self, s: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
        """Aᵀ s for the map with `weight`: shaped like x."""
        raise NotImplementedError

    def bias_term(self, bias: torch.Tensor) -> torch.Tensor:
        """The bias shaped to broadcast against the output."""
        return bias

    def without_bias(self, out: torch.Tensor) -> torch.Tensor:
        """A(x; weight) from the output, without running the map again."""
        return out if self.bias is None else out - self.bias_term(self.bias).to(out.dtype)


class Dense(LinearMap):
    """aten.linear: x @ wᵀ + b."""

    def __init__(self, x_shape, weight, bias):
        super().__init__(x_shape)
        self.weight, self.bias = weight, bias

    def forward(self, x, weight, bias):
        return F.linear(x, weight.to(x.dtype), None if bias is None else bias.to(x.dtype))

    def adjoint(self, s, weight):
        return s @ weight.to(s.dtype)

    def columns(self, index: torch.Tensor) -> Dense:
        """The map to the output columns `index` only (each output column is its own weight row and bias)."""
        bias = None if self.bias is None else self.bias.index_select(0, index)
        return Dense(self.x_shape, self.weight.index_select(0, index), bias)


class MatMul(LinearMap):
    """x @ w (+ b) or w @ x for mm/bmm/matmul/addmm/baddbmm with a non-relevant operand w."""

    def __init__(self, x_shape, weight, bias, weight_first: bool, beta: float = 1.0, alpha: float = 1.0):
        super().__init__(x_shape)
        if weight.dim() < 2 or len(x_shape) < 2:
            raise ValueError("matrix products with 1-D operands are not supported by the layer rules")
        self.weight, self.weight_first, self.alpha = weight, weight_first, alpha
        self.bias = None if bias is None else bias * beta

    def forward(self, x, weight, bias):
        weight = weight.to(x.dtype)
        y = weight @ x if self.weight_first else x @ weight
        if self.alpha != 1.0:
            y = y * self.alpha
        return y if bias is None else y + bias.to(y.dtype)

    def adjoint(self, s, weight):
        weight = weight.to(s.dtype)
        g = weight.mT @ s if self.weight_first else s @ weight.mT
        if self.alpha != 1.0:
            g = g * self.alpha
        return unbroadcast(g, self.x_shape)


class Conv(LinearMap):
    """aten.convolution and the conv{1,2,3}d / conv_transpose{1,2,3}d overloads."""

    def __init__(
        self, x_shape, weight, bias, stride, padding, dilation, transposed, output_padding, groups, extra=None
    ):
        super().__init__(x_shape)
        dims = weight.dim() - 2
        self.weight, self.bias = weight, bias
        # padding='same' with an even kernel: the input padded by one more at the end of these dims first
        self.extra = [0] * dims if extra is None else list(extra)
        lead, spatial = x_shape[: len(x_shape) - dims], x_shape[len(x_shape) - dims :]
        self.padded_shape = (*lead, *(n + e for n, e in zip(spatial, self.extra, strict=True)))
        # stride, padding, dilation, transposed, output_padding, groups: as aten.convolution and its backward take them
        self.geometry = (
            as_list(stride, dims),
            as_list(padding, dims),
            as_list(dilation, dims),
            bool(transposed),
            as_list(output_padding, dims),
            int(groups),
        )

    def forward(self, x, weight, bias):
        bias = None if bias is None else bias.to(x.dtype)
        if any(self.extra):
            x = torch.nn.functional.pad(x, [p for e in reversed(self.extra) for p in (0, e)])
        return aten.convolution(x, weight.to(x.dtype), bias, *self.geometry)

    def bias_term(self, bias):
        return bias.reshape([-1] + [1] * (len(self.x_shape) - 2))

    def adjoint(self, s, weight):
        dummy = torch.zeros((), dtype=s.dtype, device=s.device).expand(self.padded_shape)
        grad = aten.convolution_backward(s, dummy, weight.to(s.dtype), None, *self.geometry, [True, False, False])[0]
        if any(self.extra):
            grad = grad[(..., *(slice(0, n) for n in self.x_shape[len(self.x_shape) - len(self.extra) :]))]
        return grad


class Reduction(LinearMap):
    """sum or mean over `dims` (all dims when empty)."""

    def __init__(self, x_shape, dims, keepdim: bool, mean: bool):
        super().__init__(x_shape)
        rank = len(self.x_shape)
        dims = list(range(rank)) if dims is None or len(dims) == 0 else [d % rank for d in dims]
        self.dims, self.keepdim = sorted(dims), bool(keepdim)
        self.scale = 1.0 / math.prod(self.x_shape[d] for d in self.dims) if mean else 1.0

    def forward(self, x, weight=None, bias=None):
        return x.sum(dim=self.dims, keepdim=self.keepdim) * self.scale

    def adjoint(self, s, weight=None):
        if not self.keepdim:
            for d in self.dims:
                s = s.unsqueeze(d)
        return (s * self.scale).expand(self.x_shape)


class CumulativeSum(LinearMap):
    """cumsum along `dim`: each output is the sum of the inputs up to it; the adjoint sums from the end."""

    def __init__(self, x_shape, dim: int):
        super().__init__(x_shape)
        self.dim = dim % len(self.x_shape)

    def forward(self, x, weight=None, bias=None):
        return x.cumsum(self.dim)

    def adjoint(self, s, weight=None):
        return s.flip(self.dim).cumsum(self.dim).flip(self.dim)


class Quantile(LinearMap):
    """torch.quantile with a scalar q along `dim` (all elements when None): y = w₀·x₍ᵢ₎ + w₁·x₍ⱼ₎ of the sorted
    values (i, j and the weights from q and the interpolation mode), a fixed linear map for these x."""

    def __init__(self, x: torch.Tensor, q: float, dim: int | None, keepdim: bool, interpolation: str):
        super().__init__(x.shape)
        values = x.reshape(-1) if dim is None else x
        self.dim = 0 if dim is None else dim % x.dim()
        self.keepdim, self.flat = keepdim, dim is None
        count = values.shape[self.dim]
        position = float(q) * (count - 1)
        low, high = math.floor(position), min(math.ceil(position), count - 1)
        share = {
            "linear": position - low,
            "lower": 0.0,
            "higher": 1.0,
            "nearest": float(round(position) > low),  # round half to even, as torch
            "midpoint": 0.5 if high > low else 0.0,
        }[interpolation]
        order = values.argsort(dim=self.dim, stable=True)
        self.picks = [(order.narrow(self.dim, low, 1), 1.0 - share), (order.narrow(self.dim, high, 1), share)]
        self.kept = list(values.shape)
        self.kept[self.dim] = 1

    def forward(self, x, weight=None, bias=None):
        values = x.reshape(-1) if self.flat else x
        y = sum(w * values.gather(self.dim, index) for index, w in self.picks)
        return y if self.keepdim and not self.flat else y.squeeze(self.dim)

    def adjoint(self, s, weight=None):
        s = s.reshape(self.kept)
        out = s.new_zeros(self.x_shape.numel() if self.flat else self.x_shape)
        for index, w in self.picks:
            out = out.scatter_add(self.dim, index, s * w)
        return out.reshape(self.x_shape)


class Resample(LinearMap):
    """Bilinear (or bicubic) up/down-sampling: a fixed linear interpolation, adjoint from ATen's backward."""

    def __init__(self, x_shape, out_shape, align_corners: bool, scales, backward):
        super().__init__(x_shape)
        self.out_shape, self.align_corners, self.scales, self.backward = out_shape, align_corners, scales, backward

    def adjoint(self, s, weight=None):
        return self.backward(
            s.contiguous(), list(self.out_shape[2:]), list(self.x_shape), self.align_corners, *self.scales
        )


class AvgPool(LinearMap):
    """avg_pool{1,2,3}d and adaptive_avg_pool{1,2,3}d; the adjoint uses ATen's backward kernels."""

    def __init__(self, x_shape, dims: int, adaptive: bool, args: dict):
        super().__init__(x_shape)
        self.dims, self.adaptive, self.args = dims, adaptive, args

    def forward(self, x, weight=None, bias=None):
        x2, squeeze = self._lift(x)
        y = self._pool(x2)
        return y.squeeze(-2) if squeeze else y

    def adjoint(self, s, weight=None):
        shape = self.x_shape
        if self.dims == 1:  # 1-D pools are 2-D pools over a height of one
            s, shape = s.unsqueeze(-2), torch.Size((*shape[:-1], 1, shape[-1]))
        dummy = torch.zeros((), dtype=s.dtype, device=s.device).expand(shape)
        d = max(self.dims, 2)
        a = self.args
        if self.adaptive:
            backward = aten._adaptive_avg_pool2d_backward if d == 2 else aten._adaptive_avg_pool3d_backward
            g = backward(s.contiguous(), dummy)
        else:
            kernel, stride, padding = self._window()
            backward = aten.avg_pool2d_backward if d == 2 else aten.avg_pool3d_backward
            g = backward(
                s.contiguous(),
                dummy,
                kernel,
                stride,
                padding,
                a.get("ceil_mode", False),
                a.get("count_include_pad", True),
                a.get("divisor_override"),
            )
        return g.squeeze(-2) if self.dims == 1 else g

    def _lift(self, x):
        return (x.unsqueeze(-2), True) if self.dims == 1 else (x, False)

    def _window(self):
        kernel, stride, padding, _ = pool_window(self.args, self.dims)
        return kernel, stride, padding

    def _pool(self, x):
        a = self.args
        if self.adaptive:
            size = list(a["output_size"])
            size = [1, *size] if self.dims == 1 else size
            return F.adaptive_avg_pool2d(x, size) if len(size) == 2 else F.adaptive_avg_pool3d(x, size)
        kernel, stride, padding = self._window()
        pool = F.avg_pool2d if len(kernel) == 2 else F.avg_pool3d
        return pool(
            x,
            kernel,
            stride,
            padding,
            a.get("ceil_mode", False),
            a.get("count_include_pad", True),
            a.get("divisor_override"),
        )


class FrozenScaleNorm(LinearMap):
    """layer/group/batch/RMS norm with its scale 1/std held constant: what is left is linear (AttnLRP Prop. 3.4).

    y = (x - mean(x)) · a + b with a = weight/std per element (no centring for RMS norm); mean and
    std run over `reduce_dims` of x viewed as `group_shape`.
    """

    def __init__(
        self,
        x: torch.Tensor,
        reduce_dims: Sequence[int],
        group_shape: Sequence[int] | None,
        weight: torch.Tensor | None,
        bias: torch.Tensor | None,
        eps: float,
        center: bool = True,
    ):
        super().__init__(x.shape)
        self.reduce_dims, self.group_shape, self.center, self.eps = list(reduce_dims), group_shape, center, eps
        self.inv_std = self._inverse_std(x)
        self.affine_weight, self.bias = weight, bias

    def _inverse_std(self, x: torch.Tensor) -> torch.Tensor:
        xg = self._group(x.to(torch.promote_types(x.dtype, torch.float32)))
        if self.center:
            var = xg.var(dim=self.reduce_dims, unbiased=False, keepdim=True)
        else:
            var = xg.pow(2).mean(dim=self.reduce_dims, keepdim=True)
        return torch.rsqrt(var + self.eps)

    def gain(self, t: torch.Tensor, absolute: bool = False) -> torch.Tensor:
        """weight / std(t) per element of t (|weight| when `absolute`): the norm's slope with its statistics held."""
        scale = (torch.ones_like(self._group(t)) * self._inverse_std(t).to(t.dtype)).reshape(self.x_shape)
        weight = self.affine_weight
        if weight is None:
            return scale
        return scale * (weight.abs() if absolute else weight).to(t.dtype)

    def _group(self, t):
        return t.reshape(self.group_shape) if self.group_shape is not None else t

    def _centre(self, t):
        return t - t.mean(dim=self.reduce_dims, keepdim=True) if self.center else t

    def _scale(self, t):
        t = (self._group(t) * self.inv_std.to(t.dtype)).reshape(self.x_shape)
        return t if self.affine_weight is None else t * self.affine_weight.to(t.dtype)

    def forward(self, x, weight=None, bias=None):
        y = self._scale(self._centre(self._group(x)).reshape(self.x_shape))
        return y if self.bias is None else y + self.bias.to(y.dtype)

    def adjoint(self, s, weight=None):
        return self._centre(self._group(self._scale(s))).reshape(self.x_shape)


class ChannelAffine(LinearMap):
    """Eval-mode batch norm on its own: x · scale[c] + shift[c] along dim 1."""

    def __init__(self, x_shape, scale: torch.Tensor, shift: torch.Tensor):
        super().__init__(x_shape)
        view = [1, -1] + [1] * (len(self.x_shape) - 2)
        self.scale, self.bias = scale.reshape(view), shift.reshape(view)

    def forward(self, x, weight=None, bias=None):
        return x * self.scale.to(x.dtype) + self.bias.to(x.dtype)

    def adjoint(self, s, weight=None):
        return s * self.scale.to(s.dtype)


def as_list(value, n: int) -> list[int]:
    """An int or a sequence of ints (one shared value, or one per spatial dim) as n ints."""
    if isinstance(value, int):
        return [value] * n
    value = list(value)
    return value * n if len(value) == 1 else value


def pool_window(args: dict, dims: int) -> tuple[list[int], list[int], list[int], list[int]]:
    """(kernel, stride, padding, dilation) of a pooling op; 1-D pools as 2-D pools over a height of one."""
    kernel = as_list(args["kernel_size"], dims)
    stride = as_list(args["stride"], dims) if args.get("stride") else kernel
    padding, dilation = as_list(args.get("padding", 0), dims), as_list(args.get("dilation", 1), dims)
    if dims == 1:
        return [1, *kernel], [1, *stride], [0, *padding], [1, *dilation]
    return kernel, stride, padding, dilation
