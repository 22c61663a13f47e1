"""An independent re-implementation of Zennit's composites for nn.Sequential CNNs, used only by tests.

It follows Zennit's own mechanics, not lrpgraph's: per module, modified copies of the layer are run
forward with autograd and the relevance is the reducer of autograd gradients (Zennit's BasicHook);
unhooked modules (max pooling, flatten, dropout) propagate plain gradients; batch norm is merged
into the preceding layer first (Zennit's SequentialMergeBatchNorm). The formulas are transcribed
from zennit/rules.py in Zennit's repository (Epsilon, Gamma, ZPlus, AlphaBeta, ZBox, Flat, Norm, Pass).
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def stabilize(z, eps=1e-6):
    return z + ((z == 0).to(z) + z.sign()) * eps


def merge_batchnorm(model: nn.Sequential) -> nn.Sequential:
    layers = []
    for module in model:
        if isinstance(module, nn.BatchNorm2d) and layers and isinstance(layers[-1], (nn.Conv2d, nn.Linear)):
            layer = copy.deepcopy(layers[-1])
            scale = module.weight / torch.sqrt(module.running_var + module.eps)
            bias = layer.bias if layer.bias is not None else torch.zeros_like(module.running_mean)
            layer.weight = nn.Parameter(layer.weight * scale.view(-1, *([1] * (layer.weight.dim() - 1))))
            layer.bias = nn.Parameter((bias - module.running_mean) * scale + module.bias)
            layers[-1] = layer
        else:
            layers.append(module)
    return nn.Sequential(*layers)


def _modified(module, param_fn, zero_bias=False):
    clone = copy.deepcopy(module)
    with torch.no_grad():
        clone.weight.copy_(param_fn(module.weight))
        if clone.bias is not None:
            clone.bias.copy_(torch.zeros_like(module.bias) if zero_bias else param_fn(module.bias))
    return clone


def _basic_hook(module, x, R, input_mods, param_mods, gradient_mapper, reducer):
    """Zennit's BasicHook.backward: modified forwards, mapped gradients, autograd, reducer."""
    inputs, outputs = [], []
    for input_mod, (param_fn, zero_bias) in zip(input_mods, param_mods, strict=True):
        xi = input_mod(x).detach().requires_grad_()
        inputs.append(xi)
        outputs.append(_modified(module, param_fn, zero_bias)(xi))
    grads = gradient_mapper(R, outputs)
    gradients = [torch.autograd.grad(o, i, g)[0] for o, i, g in zip(outputs, inputs, grads, strict=True)]
    return reducer([i.detach() for i in inputs], gradients)


def epsilon(module, x, R, eps=1e-6):
    return _basic_hook(
        module,
        x,
        R,
        [lambda t: t],
        [(lambda p: p, False)],
        lambda g, o: [g / stabilize(o[0], eps)],
        lambda i, g: i[0] * g[0],
    )


def gamma(module, x, R, gamma=0.25, stab=1e-6):
    def gm(mn, mx):
        return lambda p: p + gamma * p.clamp(min=mn, max=mx)

    pos, neg = (lambda t: t.clamp(min=0)), (lambda t: t.clamp(max=0))
    return _basic_hook(
        module,
        x,
        R,
        [pos, neg, pos, neg, lambda t: t],
        [
            (gm(0.0, None), False),
            (gm(None, 0.0), True),
            (gm(None, 0.0), False),
            (gm(0.0, None), True),
            (lambda p: p, False),
        ],
        lambda g, o: (
            [m * g / stabilize(d, stab) for m, d in [(o[4] > 0, o[0] + o[1])] * 2 + [(o[4] < 0, o[2] + o[3])] * 2]
            + [torch.zeros_like(g)]
        ),
        lambda i, g: sum(a * b for a, b in zip(i[:4], g[:4], strict=True)),
    )


def zplus(module, x, R, stab=1e-6):
    return _basic_hook(
        module,
        x,
        R,
        [lambda t: t.clamp(min=0), lambda t: t.clamp(max=0)],
        [(lambda p: p.clamp(min=0), False), (lambda p: p.clamp(max=0), True)],
        lambda g, o: [g / stabilize(o[0] + o[1], stab)] * 2,
        lambda i, g: i[0] * g[0] + i[1] * g[1],
    )


def alphabeta(module, x, R, alpha=2.0, beta=1.0, stab=1e-6):
    pos, neg = (lambda t: t.clamp(min=0)), (lambda t: t.clamp(max=0))
    return _basic_hook(
        module,
        x,
        R,
        [pos, neg, pos, neg],
        [
            (lambda p: p.clamp(min=0), False),
            (lambda p: p.clamp(max=0), True),
            (lambda p: p.clamp(max=0), False),
            (lambda p: p.clamp(min=0), True),
        ],
        lambda g, o: [g / stabilize(o[0] + o[1], stab)] * 2 + [g / stabilize(o[2] + o[3], stab)] * 2,
        lambda i, g: alpha * (i[0] * g[0] + i[1] * g[1]) - beta * (i[2] * g[2] + i[3] * g[3]),
    )


def zbox(module, x, R, low, high, stab=1e-6):
    return _basic_hook(
        module,
        x,
        R,
        [lambda t: t, lambda t: torch.full_like(t, low), lambda t: torch.full_like(t, high)],
        [(lambda p: p, False), (lambda p: p.clamp(min=0), False), (lambda p: p.clamp(max=0), False)],
        lambda g, o: [g / stabilize(o[0] - o[1] - o[2], stab)] * 3,
        lambda i, g: i[0] * g[0] - i[1] * g[1] - i[2] * g[2],
    )


def flat(module, x, R, stab=1e-6):
    return _basic_hook(
        module,
        x,
        R,
        [torch.ones_like],
        [(torch.ones_like, True)],
        lambda g, o: [g / stabilize(o[0], stab)],
        lambda i, g: g[0],
    )


def norm(module, x, R, stab=1e-6):
    x = x.detach().requires_grad_()
    y = module(x)
    return x.detach() * torch.autograd.grad(y, x, R / stabilize(y.detach(), stab))[0]


def gradient(module, x, R):
    x = x.detach().requires_grad_()
    return torch.autograd.grad(module(x), x, R)[0]


COMPOSITES = {
    "epsilon": {"conv": epsilon, "linear": epsilon, "first": None},
    "epsilon-gamma-box": {"conv": gamma, "linear": epsilon, "first": ("conv", zbox)},
    "epsilon-plus-flat": {"conv": zplus, "linear": epsilon, "first": ("any", flat)},
    "epsilon-alpha2-beta1": {"conv": alphabeta, "linear": epsilon, "first": None},
    "epsilon-plus": {"conv": zplus, "linear": epsilon, "first": None},
}


def attribute(model: nn.Sequential, x: torch.Tensor, seed: torch.Tensor, composite: str, low=None, high=None):
    """Relevance at the input of `model` for the given output seed, as Zennit's composite computes it."""
    spec = COMPOSITES[composite]
    model = merge_batchnorm(model)
    inputs = []
    h = x
    for module in model:
        inputs.append(h)
        h = module(h)
    first_index = None
    if spec["first"] is not None:
        kind = spec["first"][0]
        types = (nn.Conv2d,) if kind == "conv" else (nn.Conv2d, nn.Linear)
        first_index = next(i for i, m in enumerate(model) if isinstance(m, types))
    R = seed
    for index in reversed(range(len(model))):
        module, xi = model[index], inputs[index]
        if index == first_index:
            fn = spec["first"][1]
            R = fn(module, xi, R, low, high) if fn is zbox else fn(module, xi, R)
        elif isinstance(module, nn.Conv2d):
            R = spec["conv"](module, xi, R)
        elif isinstance(module, nn.Linear):
            R = spec["linear"](module, xi, R)
        elif isinstance(module, (nn.ReLU,)):
            pass  # Pass rule
        elif isinstance(module, (nn.AdaptiveAvgPool2d, nn.AvgPool2d)):
            R = norm(module, xi, R)
        else:  # max pooling, flatten, dropout (eval): Zennit leaves them to the gradient
            R = gradient(module, xi, R)
    return R
