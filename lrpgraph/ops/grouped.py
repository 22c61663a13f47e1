"""Grouped matrix products of mixture-of-experts layers: rows sorted by expert, one weight per expert.

transformers' `grouped_mm_fallback(input [S, d], weight [E, d, f], offs [E])` multiplies the rows
of expert e (offs[e-1]:offs[e]) by weight[e]. With constant weights it is a layer ("linear").
"""

from __future__ import annotations

import torch

from .adapter import LayerAdapter
from .layer_rules import LINEAR
from .linear_maps import LinearMap
from .table import Facts, register_ops


class GroupedMatMul(LinearMap):
    def __init__(self, x_shape, weight: torch.Tensor, offsets: torch.Tensor):
        super().__init__(x_shape)
        self.weight, self.bias = weight, None
        self.bounds = [0, *offsets.tolist()]

    def _apply(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        out = x.new_zeros((x.shape[0], weights.shape[2]))
        for e, (start, end) in enumerate(zip(self.bounds[:-1], self.bounds[1:], strict=True)):
            if end > start:
                out[start:end] = x[start:end] @ weights[e].to(x.dtype)
        return out

    def forward(self, x, weight, bias):
        out = self._apply(x, weight)
        return out if bias is None else out + bias

    def adjoint(self, s, weight):
        return self._apply(s, weight.transpose(1, 2))


def _grouped(args):
    return GroupedMatMul(args["input"].shape, args["weight"], args["offs"])


class GroupedAdapter(LayerAdapter):
    always = ("weight", "offs")
    bias = None
    facts = Facts(expensive=True, mixes_positions=True)

    def with_statistics_held(self, op, args):
        """The layer's own product, one expert at a time: transformers registers the op's derivative as an autograd
        function that torch.func (a residual branch's Jacobian, `branch.py`) cannot run."""
        return _grouped(args).forward(args["input"], args["weight"], None)


register_ops(GroupedAdapter(LINEAR, "input", _grouped), "transformers.grouped_mm_fallback.default")
