"""A Captum-style attribution: `LRP(model, rules).attribute(inputs, target=…, additional_forward_args=…)`.

It follows Captum's conventions — a tensor or a tuple of tensors in, attributions of the same structure
out, `target` as an int, an index tuple, or one of those per sample — so code written for
`captum.attr.LRP` (and Captum's metrics, which call `attribute`) runs unchanged, on any traceable model.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..api.explain import explain
from ..capture.call import leaf_names
from ..errors import InputError, TargetError


def _captum_method(method: Callable) -> Callable:
    """Expose `__wrapped__`, as Captum's own logging decorator does: its wrappers (NoiseTunnel) call that."""

    @functools.wraps(method)
    def attribute(*args: Any, **kwargs: Any) -> Any:
        return method(*args, **kwargs)

    return attribute


class LRP:
    """LRP of `model` with lrpgraph's `rules` (a preset name, RuleSet or dict), Captum-style."""

    multiplies_by_inputs = True

    def __init__(self, model: torch.nn.Module, rules: Any = "epsilon", **options: Any) -> None:
        if not isinstance(model, torch.nn.Module):
            raise InputError(f"model must be a torch.nn.Module, not {type(model).__name__}")
        self.forward_func = model
        self.rules = rules
        self.options = options

    @_captum_method
    def attribute(
        self,
        inputs: torch.Tensor | tuple[torch.Tensor, ...],
        target: Any = None,
        additional_forward_args: Any = None,
        return_convergence_delta: bool = False,
    ) -> Any:
        """Relevance of each input, shaped like it; with return_convergence_delta, also output − Σ relevance
        per sample (Captum's delta: biases and stabilizers absorb it)."""
        single = isinstance(inputs, torch.Tensor)
        given = (inputs,) if single else tuple(inputs)
        if not given or not all(isinstance(x, torch.Tensor) for x in given):
            raise InputError("inputs must be a tensor or a tuple of tensors")
        extra = _as_tuple(additional_forward_args)
        call = given + extra
        ex = explain(self.forward_func, call, _target(target, given[0].shape[0]), self.rules, **self.options)
        names = leaf_names(self.forward_func, call, {})[: len(given)]
        # Captum wants a tensor per input: an integer input relevance cannot reach (`ex.unreached`) gets zeros
        attributions = tuple(
            ex.relevance[name] if name in ex.relevance else torch.zeros(x.shape, dtype=ex.seed.dtype, device=x.device)
            for name, x in zip(names, given, strict=True)
        )
        result = attributions[0] if single else attributions
        if not return_convergence_delta:
            return result
        return result, ex.conservation.seed.float() - sum(a.reshape(a.shape[0], -1).sum(1) for a in attributions)

    def has_convergence_delta(self) -> bool:
        """Captum's flag: `attribute` can return a convergence delta."""
        return True


def _as_tuple(args: Any) -> tuple:
    if args is None:
        return ()
    return tuple(args) if isinstance(args, (tuple, list)) else (args,)


def _target(target: Any, batch: int) -> Any:
    """Captum's target forms as an lrpgraph target: an int or an index tuple (the same for every sample),
    a tensor of one or `batch` ids, or a list of ints or index tuples, one per sample."""
    if target is None or isinstance(target, int):
        return target
    if isinstance(target, torch.Tensor):
        if target.numel() == 1:
            return int(target)
        return target.reshape(-1).long()
    if isinstance(target, tuple):
        return _select([target] * batch)
    if isinstance(target, Sequence) and len(target) == batch:
        if all(isinstance(t, int) for t in target):
            return torch.tensor(target)
        if all(isinstance(t, tuple) for t in target):
            return _select(list(target))
    raise TargetError(
        f"target must be an int, an index tuple, a tensor of ids, or a list of {batch} ints or tuples "
        f"(one per sample), not {target!r}"
    )


def _select(indices: list[tuple]) -> Any:
    """A seed function: each sample's output value at its own index tuple (over the non-batch dims)."""

    def seed(out: torch.Tensor) -> torch.Tensor:
        chosen = torch.zeros_like(out)
        for i, index in enumerate(indices):
            chosen[(i, *index)] = out[(i, *index)]
        return chosen

    return seed
