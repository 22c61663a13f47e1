"""Attribution functions the metrics compare: LRP presets and the usual baselines.

Each is `fn(model, inputs, target) -> relevance` for one input (per token for ids, in the input's shape
for float inputs). The baselines — gradient × input, integrated gradients — are gradient methods and
use autograd by definition (`torch.autograd.grad` with respect to the inputs only: parameters' `.grad`
is never touched); LRP itself never does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..api.explain import explain
from ..capture.model_state import evaluation_mode
from .features import model_output, target_scores

Attribution = Callable[[torch.nn.Module, dict, Any], torch.Tensor]
Objective = Callable[[torch.Tensor], torch.Tensor]


def _named(fn: Attribution, name: str) -> Attribution:
    fn.__name__ = name
    fn.__qualname__ = name
    return fn


def lrp(rules: Any = "attnlrp", key: str | None = None, combined: bool = False, **explain_kwargs: Any) -> Attribution:
    """LRP with a preset (or RuleSet); relevance of input `key` (default: the first explained input).

    combined: for PA-LRP, each token's relevance plus its position's (the (token, position) pair's score).
    """

    def attribute(model, inputs, target):
        ex = explain(model, inputs, target=target, rules=rules, **explain_kwargs)
        relevance = ex.relevance[key] if key is not None else next(iter(ex.relevance.values()))
        if combined:
            if not isinstance(ex.positional, torch.Tensor) or ex.positional.shape != relevance.shape:
                raise ValueError("combined=True needs positional relevance shaped like the tokens (rules='pa-lrp')")
            relevance = relevance + ex.positional
        return relevance

    name = rules if isinstance(rules, str) else getattr(rules, "name", "rules")
    return _named(attribute, f"lrp[{name}{', tokens + positions' if combined else ''}]")


def _objective(objective: Objective | None, output: str | int | None):
    def scores(model, inputs, target):
        out = model_output(model, inputs, output)
        return (
            objective(out)
            if objective is not None
            else target_scores(out, torch.as_tensor(target).reshape(-1).expand(out.shape[0]))
        )

    return scores


def _differentiable(model, inputs: dict, key: str) -> tuple[dict, torch.Tensor, bool]:
    """(inputs with a leaf tensor that requires grad, that tensor, whether it is an embedding of ids)."""
    value = inputs[key]
    if value.is_floating_point():
        x = value.detach().clone().requires_grad_()
        return {**inputs, key: x}, x, False
    with torch.no_grad():
        embeds = model.get_input_embeddings()(value)
    x = embeds.detach().clone().requires_grad_()
    rest = {k: v for k, v in inputs.items() if k != key}
    return {**rest, "inputs_embeds": x}, x, True


def gradient_x_input(
    key: str = "input_ids", objective: Objective | None = None, output: str | int | None = None
) -> Attribution:
    """Gradient × input (per token: summed over the embedding); the score is the target's logit unless
    `objective(output) -> [B]` says otherwise."""
    scores = _objective(objective, output)

    def attribute(model, inputs, target):
        with evaluation_mode(model):
            call, x, embedded = _differentiable(model, dict(inputs), key)
            grad = torch.autograd.grad(scores(model, call, target).sum(), x)[0]
        r = (grad * x).detach()
        return r.sum(-1) if embedded else r

    return _named(attribute, "gradient×input")


def integrated_gradients(
    key: str = "input_ids", steps: int = 32, objective: Objective | None = None, output: str | int | None = None
) -> Attribution:
    """Integrated gradients from a zero baseline (zero embeddings for ids), midpoint rule with `steps` points."""
    if steps < 1:
        raise ValueError("integrated gradients needs at least one step")
    scores = _objective(objective, output)

    def attribute(model, inputs, target):
        with evaluation_mode(model):
            call, x, embedded = _differentiable(model, dict(inputs), key)
            name = "inputs_embeds" if embedded else key
            total = torch.zeros_like(x)
            for i in range(steps):
                point = (x.detach() * ((i + 0.5) / steps)).requires_grad_()
                total += torch.autograd.grad(scores(model, {**call, name: point}, target).sum(), point)[0]
        r = (x.detach() * total / steps).detach()
        return r.sum(-1) if embedded else r

    return _named(attribute, f"integrated gradients ({steps} steps)")


def random_attribution(key: str = "input_ids", seed: int = 0) -> Attribution:
    """Random relevance (standard normal), deterministic given `seed`: the floor any method should beat."""

    def attribute(model, inputs, target):
        value = inputs[key]
        generator = torch.Generator().manual_seed(seed)
        return torch.randn(value.shape, generator=generator, dtype=torch.float64).to(torch.float32)

    return _named(attribute, "random")
