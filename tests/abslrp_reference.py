"""absLRP (relative absolute magnitude LRP) computed a second way: module by module, by hand.

An independent reference for the models of `reference_models.py` (`TinyCNN`, `TinyViT`, `TinyResNet`). It follows
../shared/REFERENCE-METHODS.md (beside this repository, not in it), section "absLRP", and does not use lrpgraph. The
forward pass is re-run here step by step from the modules' parameters (and checked against `model(x)`); the backward
pass applies each rule by hand. Autograd is never used: the one Jacobian the spec defines (the residual branch's,
below) is written out by hand as well, and the only adjoint borrowed from torch is the transposed convolution
`torch.nn.grad.conv2d_input`.

The one rule (REFERENCE-METHODS.md, "One rule for every module-level op"): for `y = f(x_1..x_n; θ)` and
`f~` the same op on `|x_k|` with `|θ|`, `s = R/(|y| + 1e-9)` with y the actual output (bias included) and
`R_k = N1(x_k ⊙ J_f,k(x)ᵀ s + |x_k| ⊙ J_f~,k(|x|)ᵀ s)`, every input normalised separately;
`N1(R) = R/(Σ|R| + 1e-9)` and `Nmax(R) = R/(max|R| + 1e-9)`, both per sample over all non-batch dims.
Functional re-indexing (flatten of the patch grid, reshape, head split, transpose, qkv unbind, CLS concat,
`q·scale`, a functional `torch.flatten`) moves relevance exactly and does not normalise. Fan-outs (the residual
stream) add their branch relevances, each already N1, without renormalising.

Residual adds ("residual add" bullet). `y = x + b` whose branch is computed from the shortcut, `b = f(x)` (the ViT's
add1 with f = LN1→attention→proj→proj_drop, add2 with f = LN2→fc1→GELU→drop1→fc2→drop2, a ResNet identity shortcut
with f = conv1→bn1→ReLU→conv2→bn2): `s = R/(|y|+1e-9)`, `R_b = N1((b+|b|)⊙s)` and
`R_x = N1((x+|x|)⊙s + x ⊙ J_f(x)ᵀ[(1+sign b)⊙s])`. `J_f(x)ᵀv` is the plain vector–Jacobian product of the branch,
written out here layer by layer (`_attention_vjp`, `_mlp_vjp`, `_basic_block_vjp`): LayerNorm `w/σ` elementwise
(mean and variance constant), softmax `p` elementwise (max and denominator constant), q·kᵀ and A·v in both factors,
GELU f′, ReLU `1[x>0]`, linear `W`, conv its transpose, eval BatchNorm `γ/σ`, dropout the identity. The adds of
independent terms (tokens + pos_embed) and a ResNet downsample block's add (its shortcut is not an ancestor of the
branch) keep the local rule `R_a = N1((a+|a|)⊙s)`, the same for b.

The positivity filter `N1((x+|x|)·R/(|x|+1e-9))` belongs to the module: it acts at every `nn.Dropout` and `nn.Flatten`
module, and where a model has an `nn.Identity` instead (a ViT built without dropout) relevance passes unchanged.

Choices where the text leaves room; each can be switched to its other candidate, so that a test can show its
tolerance tells the two apart (the defaults are the authors' code, which lrpgraph follows):

- `attn_drop_filter`: the spec's list of the ViT's filters (head, attention-output and both MLP dropouts) leaves out
  attn_drop, the dropout of the attention probabilities; the authors' attention forward calls it, so their code
  filters there too (default True). Its input is strictly positive, so the filter only rescales each entry by
  `2A/(A+1e-9)` before N1: the maps move at the 1e-9 level. pos_drop never filters: the spec's input end goes
  straight from the blocks to the tokens+pos_embed add (the authors' forward never calls `pos_drop`). The Identity
  modules ls1, ls2, drop_path1, drop_path2 pass relevance unchanged. The fused attention
  (`F.scaled_dot_product_attention`) does not call attn_drop, so it has no filter there.
- `relu`: "pointwise" (default, the authors' code) is the general pointwise formula
  `N1((x f'(x) + |x| f'(|x|))⊙R/(|f(x)|+1e-9))`, i.e. `2x/(x+1e-9)·R` for x>0 and `|x|·R/1e-9` for x<0 (R is exactly
  0 there in these models, because the rules above every ReLU multiply by the ReLU output); "indicator" is the spec's
  stated short form `N1(2·1[x>0]·R)`. They differ by about 1e-7 of the Nmax-scaled maps here.
- `residual`: "total" (default) is the residual rule above; "local" gives residual adds the local add rule (the old
  text), which is far off (cos 0.97 on a ViT's positive map).
- The CLS select is the general rule for `y = x[:, 0]`: row 0 gets `(x_0+|x_0|)·R/(|x_0|+1e-9)`, the
  other rows 0, then N1 over [N, D]. The tokens+pos_embed add keeps the token share
  `N1((t+|t|)·R/(|t+p|+1e-9))` (N1 over all rows, the CLS row included); the pos share is dropped, then
  the CLS row is dropped (no renormalisation), and the rest reshaped to the patch grid for the patch conv.
- LayerNorm: σ = sqrt(biased var + the norm's own eps) (1e-6 in the blocks, 1e-5 for the final norm);
  σ~ the same statistic of |x|. BatchNorm: σ = sqrt(running_var + eps), shared by both branches.
- Softmax: `p~ = softmax(|x|)` along the same (last) dim; `s = R/(p + 1e-9)`.
- Maxpool routes to the index `F.max_pool2d(..., return_indices=True)` returns (first maximum on ties).
- Seeds are exactly `e_y` and `(1−e_y)/(C−1)`. Both passes share one forward. The contrastive map is
  `Nmax(P − Q)` over [3, H, W], channels kept; the non-contrastive map is P as it arrives at the input.
- Either ViT attention variant (`fused` True or False) is explained through the written-out attention
  (q·scale, q·kᵀ, softmax, A·v), so both give the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace

import torch
from torch import nn
from torch.nn import functional as F

EPS = 1e-9


@dataclass(frozen=True)
class Choices:
    """The candidate formulas where the text leaves room (module docstring); the defaults are the authors' code."""

    relu: str = "pointwise"
    attn_drop_filter: bool = True
    residual: str = "total"


# ---------------------------------------------------------------------------------------------------------
# Normalisations
# ---------------------------------------------------------------------------------------------------------


def _per_sample(values: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    return values.view(-1, *([1] * (r.dim() - 1)))


def n1(r: torch.Tensor) -> torch.Tensor:
    """`N1(R) = R/(Σ|R| + 1e-9)` per sample over all non-batch dims (REFERENCE-METHODS.md, preamble)."""
    return r / (_per_sample(r.abs().flatten(1).sum(1), r) + EPS)


def nmax(r: torch.Tensor) -> torch.Tensor:
    """`Nmax(R) = R/(max|R| + 1e-9)` per sample over all non-batch dims (REFERENCE-METHODS.md, preamble)."""
    return r / (_per_sample(r.abs().flatten(1).amax(1), r) + EPS)


# ---------------------------------------------------------------------------------------------------------
# Rules, one per op (REFERENCE-METHODS.md, "absLRP"). Each takes the op's input(s) and the relevance R at its
# output, recomputes the actual output y, and returns the N1-normalised relevance of each input.
# ---------------------------------------------------------------------------------------------------------


def linear_rule(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, r: torch.Tensor) -> torch.Tensor:
    """Linear: `R_i = N1(Σ_j (x_i w_ij + |x_i||w_ij|) R_j/(|z_j|+1e-9))`, `z = x Wᵀ + b` (bias included)."""
    s = r / (F.linear(x, weight, bias).abs() + EPS)
    return n1(x * (s @ weight) + x.abs() * (s @ weight.abs()))


def conv_rule(conv: nn.Conv2d, x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Conv2d: the linear rule with the sum over each output's receptive field (transposed convolution)."""
    s = r / (conv(x).abs() + EPS)

    def adjoint(weight: torch.Tensor) -> torch.Tensor:
        return torch.nn.grad.conv2d_input(
            x.shape, weight, s, stride=conv.stride, padding=conv.padding, dilation=conv.dilation, groups=conv.groups
        )

    return n1(x * adjoint(conv.weight) + x.abs() * adjoint(conv.weight.abs()))


def add_rule(a: torch.Tensor, b: torch.Tensor, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Add `y = a + b`: `R_a = N1((a+|a|)·R/(|a+b|+1e-9))` and the same for b."""
    s = r / ((a + b).abs() + EPS)
    return n1((a + a.abs()) * s), n1((b + b.abs()) * s)


def matmul_rule(a: torch.Tensor, b: torch.Tensor, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Bilinear `y = a @ b` (batched): `s = R/(|ab|+1e-9)`, `R_a = N1(a⊙(s bᵀ) + |a|⊙(s |b|ᵀ))`,
    `R_b = N1(b⊙(aᵀ s) + |b|⊙(|a|ᵀ s))`. With b = kᵀ this is the spec's q·kᵀ rule (R_k = R_bᵀ); with
    (A, v) it is the A·v rule."""
    s = r / ((a @ b).abs() + EPS)
    r_a = a * (s @ b.transpose(-2, -1)) + a.abs() * (s @ b.abs().transpose(-2, -1))
    r_b = b * (a.transpose(-2, -1) @ s) + b.abs() * (a.abs().transpose(-2, -1) @ s)
    return n1(r_a), n1(r_b)


def softmax_rule(x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dim with max and denominator detached (diagonal Jacobian p), `p~ = softmax(|x|)`:
    `R_x = N1((x⊙p + |x|⊙p~)⊙R/(p+1e-9))`."""
    p, p_abs = x.softmax(-1), x.abs().softmax(-1)
    return n1((x * p + x.abs() * p_abs) * r / (p + EPS))


def layer_norm_rule(norm: nn.LayerNorm, x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """LayerNorm over the last dim, mean and biased variance detached, σ = sqrt(var + eps), σ~ the same of |x|:
    `R_x = N1((x⊙w/σ + |x|⊙|w|/σ~)⊙R/(|y|+1e-9))`, elementwise (no centring term)."""

    def sigma(t: torch.Tensor) -> torch.Tensor:
        return (t.var(-1, unbiased=False, keepdim=True) + norm.eps).sqrt()

    sig, sig_abs = sigma(x), sigma(x.abs())
    y = (x - x.mean(-1, keepdim=True)) / sig * norm.weight + norm.bias
    return n1((x * norm.weight / sig + x.abs() * norm.weight.abs() / sig_abs) * r / (y.abs() + EPS))


def batch_norm_rule(norm: nn.BatchNorm2d, x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """BatchNorm2d in eval (running statistics, not folded), σ = sqrt(running_var + eps):
    `R_x = N1((xγ/σ + |x||γ|/σ)·R/(|y|+1e-9))`."""
    shape = (1, -1, 1, 1)
    sig = (norm.running_var + norm.eps).sqrt().view(shape)
    gamma, beta = norm.weight.view(shape), norm.bias.view(shape)
    y = (x - norm.running_mean.view(shape)) / sig * gamma + beta
    return n1((x * gamma / sig + x.abs() * gamma.abs() / sig) * r / (y.abs() + EPS))


def _gelu_and_derivative(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact (erf) GELU `f(x) = xΦ(x)` and `f'(x) = Φ(x) + xφ(x)`."""
    cdf = 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))
    pdf = torch.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
    return x * cdf, cdf + x * pdf


def gelu_rule(x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Pointwise GELU: `R_x = N1((x f'(x) + |x| f'(|x|))⊙R/(|f(x)|+1e-9))`."""
    y, dy = _gelu_and_derivative(x)
    _, dy_abs = _gelu_and_derivative(x.abs())
    return n1((x * dy + x.abs() * dy_abs) * r / (y.abs() + EPS))


def relu_rule(x: torch.Tensor, r: torch.Tensor, form: str = "pointwise") -> torch.Tensor:
    """ReLU: "pointwise", the general formula `N1((x·1[x>0] + |x|·1[|x|>0])⊙R/(|relu(x)|+1e-9))`; "indicator", the
    spec's short form `N1(2·1[x>0]·R)` (equal up to the 1e-9 stabilizer where R=0 for x≤0)."""
    if form == "indicator":
        return n1(2.0 * (x > 0).to(r.dtype) * r)
    if form != "pointwise":
        raise ValueError(f"relu must be 'pointwise' or 'indicator', not {form!r}")
    step, step_abs = (x > 0).to(x.dtype), (x.abs() > 0).to(x.dtype)
    return n1((x * step + x.abs() * step_abs) * r / (x.clamp_min(0) + EPS))


def filter_rule(x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Dropout (eval), Flatten, Identity outside the ViT, i.e. `y = x`: the positivity filter
    `N1((x+|x|)·R/(|x|+1e-9))`. R may come in the output's shape; it is reshaped to x's."""
    return n1((x + x.abs()) * r.reshape(x.shape) / (x.abs() + EPS))


def cls_select_rule(x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """CLS select `y = x[:, 0]`: row 0 gets `(x_0+|x_0|)·R/(|x_0|+1e-9)`, the other rows 0; then N1 over [N, D]."""
    out = torch.zeros_like(x)
    x0 = x[:, 0]
    out[:, 0] = (x0 + x0.abs()) * r / (x0.abs() + EPS)
    return n1(out)


def _adaptive_windows(size: int, out: int) -> list[tuple[int, int]]:
    return [((i * size) // out, -((-(i + 1) * size) // out)) for i in range(out)]


def adaptive_avg_pool_rule(pool: nn.AdaptiveAvgPool2d, x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Adaptive average pool (windows as torch defines them): `R_i = N1(Σ_j (x_i+|x_i|)/n_j · R_j/(|y_j|+1e-9))`."""
    height, width = x.shape[-2:]
    size = pool.output_size if isinstance(pool.output_size, tuple) else (pool.output_size,) * 2
    oh, ow = (height if size[0] is None else size[0]), (width if size[1] is None else size[1])
    spread = torch.zeros_like(x)
    for i, (h0, h1) in enumerate(_adaptive_windows(height, oh)):
        for j, (w0, w1) in enumerate(_adaptive_windows(width, ow)):
            window = x[..., h0:h1, w0:w1]
            n = window.shape[-2] * window.shape[-1]
            y = window.mean((-2, -1))
            spread[..., h0:h1, w0:w1] += (r[..., i, j] / (y.abs() + EPS) / n)[..., None, None]
    return n1((x + x.abs()) * spread)


def max_pool_rule(pool: nn.MaxPool2d, x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Max pool, no division: `R_x = N1(x⊙route_argmax(x)(R) + |x|⊙route_argmax(|x|)(R))`, where route sends
    each output's R to the input position its max came from."""

    def route(t: torch.Tensor) -> torch.Tensor:
        _, idx = F.max_pool2d(
            t, pool.kernel_size, pool.stride, pool.padding, pool.dilation, pool.ceil_mode, return_indices=True
        )
        routed = torch.zeros_like(t).flatten(2)
        routed.scatter_add_(2, idx.flatten(2), r.flatten(2))
        return routed.view_as(t)

    return n1(x * route(x) + x.abs() * route(x.abs()))


def dropout_rule(module: nn.Module, x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """A dropout place: the positivity filter where the model has an `nn.Dropout` there, else (an `nn.Identity`)
    relevance passes unchanged — the filter belongs to the module."""
    if isinstance(module, nn.Dropout):
        return filter_rule(x, r)
    if isinstance(module, nn.Identity):
        return r
    raise TypeError(f"no absLRP reference rule for {type(module).__name__} at a dropout place")


def residual_rule(
    x: torch.Tensor, b: torch.Tensor, r: torch.Tensor, vjp: Callable[[torch.Tensor], torch.Tensor], residual: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Residual add `y = x + b`, `b = f(x)`: `s = R/(|y|+1e-9)`, `R_b = N1((b+|b|)⊙s)`,
    `R_x = N1((x+|x|)⊙s + x ⊙ J_f(x)ᵀ[(1+sign b)⊙s])` with `vjp(v) = J_f(x)ᵀv`. Returns (R_x, R_b).
    `residual="local"`: the local add rule instead (the old text)."""
    if residual == "local":
        return add_rule(x, b, r)
    if residual != "total":
        raise ValueError(f"residual must be 'total' or 'local', not {residual!r}")
    s = r / ((x + b).abs() + EPS)
    return n1((x + x.abs()) * s + x * vjp((1.0 + b.sign()) * s)), n1((b + b.abs()) * s)


# ---------------------------------------------------------------------------------------------------------
# Jacobians of residual branches, transposed, written out (J_f(x)ᵀ v): statistics held as the spec says
# ---------------------------------------------------------------------------------------------------------


def _layer_norm_slope(norm: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    """∂y/∂x of a LayerNorm with mean and variance constant: `w/σ` elementwise."""
    return norm.weight / (x.var(-1, unbiased=False, keepdim=True) + norm.eps).sqrt()


def _batch_norm_slope(norm: nn.BatchNorm2d) -> torch.Tensor:
    """∂y/∂x of an eval BatchNorm2d: `γ/σ` per channel, σ = sqrt(running_var + eps)."""
    return (norm.weight / (norm.running_var + norm.eps).sqrt()).view(1, -1, 1, 1)


def _conv_transpose(conv: nn.Conv2d, shape: torch.Size, g: torch.Tensor) -> torch.Tensor:
    """Jᵀg of a convolution (its input's shape given): the transposed convolution."""
    return torch.nn.grad.conv2d_input(
        shape, conv.weight, g, stride=conv.stride, padding=conv.padding, dilation=conv.dilation, groups=conv.groups
    )


def _attention_vjp(block: nn.Module, c: SimpleNamespace, g: torch.Tensor) -> torch.Tensor:
    """Jᵀg of f = LN1 → qkv → heads → q·scale·kᵀ → softmax → (attn_drop) → A·v → proj → (proj_drop), at the block
    input: proj `W`, A·v both factors, softmax `p` elementwise, q·kᵀ both factors, qkv `W`, LN1 `w/σ`."""
    attn = block.attn
    batch, tokens, dim = c.inp.shape
    g_o = (g @ attn.proj.weight).reshape(batch, tokens, attn.heads, attn.head_dim).transpose(1, 2)
    g_attn, g_v = g_o @ c.v.transpose(-2, -1), c.attn.transpose(-2, -1) @ g_o
    g_scores = c.attn * g_attn
    g_q, g_k = (g_scores @ c.k) * attn.scale, g_scores.transpose(-2, -1) @ c.q
    g_qkv = torch.stack([g_q, g_k, g_v]).permute(1, 3, 0, 2, 4).reshape(batch, tokens, 3 * dim)
    return (g_qkv @ attn.qkv.weight) * _layer_norm_slope(block.norm1, c.inp)


def _mlp_vjp(block: nn.Module, c: SimpleNamespace, g: torch.Tensor) -> torch.Tensor:
    """Jᵀg of f = LN2 → fc1 → GELU → (drop1) → fc2 → (drop2), at the attention half's output: fc2 `W`, GELU f′,
    fc1 `W`, LN2 `w/σ`."""
    mlp = block.mlp
    g_f1 = (g @ mlp.fc2.weight) * _gelu_and_derivative(c.f1)[1]
    return (g_f1 @ mlp.fc1.weight) * _layer_norm_slope(block.norm2, c.h1)


def _basic_block_vjp(block: nn.Module, c: SimpleNamespace, g: torch.Tensor) -> torch.Tensor:
    """Jᵀg of f = conv1 → bn1 → ReLU → conv2 → bn2, at the block input: bn `γ/σ`, conv transposed, ReLU `1[x>0]`."""
    g = _conv_transpose(block.conv2, c.a1.shape, g * _batch_norm_slope(block.bn2))
    g = g * (c.h1 > 0).to(g.dtype) * _batch_norm_slope(block.bn1)
    return _conv_transpose(block.conv1, c.inp.shape, g)


# ---------------------------------------------------------------------------------------------------------
# TinyCNN: features (conv, bn, relu, maxpool, conv, bn, relu), avgpool, flatten, classifier
# ---------------------------------------------------------------------------------------------------------


def _cnn_layers(model: nn.Module) -> list[nn.Module]:
    return [*model.features, model.avgpool, model.flatten, *model.classifier]


def _cnn_forward(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Run the layers one by one; keep each layer's input."""
    inputs = []
    h = x
    for layer in _cnn_layers(model):
        inputs.append(h)
        h = layer(h)
    return h, inputs


def _layer_backward(layer: nn.Module, x: torch.Tensor, r: torch.Tensor, choices: Choices) -> torch.Tensor:
    """The rule of one CNN layer at its input x."""
    if isinstance(layer, nn.Linear):
        return linear_rule(x, layer.weight, layer.bias, r)
    if isinstance(layer, nn.Conv2d):
        return conv_rule(layer, x, r)
    if isinstance(layer, nn.BatchNorm2d):
        return batch_norm_rule(layer, x, r)
    if isinstance(layer, nn.ReLU):
        return relu_rule(x, r, choices.relu)
    if isinstance(layer, nn.MaxPool2d):
        return max_pool_rule(layer, x, r)
    if isinstance(layer, nn.AdaptiveAvgPool2d):
        return adaptive_avg_pool_rule(layer, x, r)
    if isinstance(layer, (nn.Dropout, nn.Flatten)):
        return filter_rule(x, r)
    raise TypeError(f"no absLRP reference rule for {type(layer).__name__}")


def _cnn_backward(model: nn.Module, inputs: list[torch.Tensor], seed: torch.Tensor, choices: Choices) -> torch.Tensor:
    """Apply the rules in reverse layer order (the order the authors' sequential rule uses)."""
    r = seed
    for layer, x in zip(reversed(_cnn_layers(model)), reversed(inputs), strict=True):
        r = _layer_backward(layer, x, r, choices)
    return r


# ---------------------------------------------------------------------------------------------------------
# TinyResNet: stem (conv, bn, relu, maxpool), basic blocks (identity or downsample shortcut), avgpool,
# torch.flatten (functional: no module, no filter), fc
# ---------------------------------------------------------------------------------------------------------


def _basic_block_forward(block: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, SimpleNamespace]:
    c = SimpleNamespace(inp=x)
    c.c1 = block.conv1(x)
    c.h1 = block.bn1(c.c1)
    c.a1 = torch.relu(c.h1)
    c.c2 = block.conv2(c.a1)
    c.b = block.bn2(c.c2)
    if block.downsample is None:
        c.shortcut = x
    else:
        c.d1 = block.downsample[0](x)
        c.shortcut = block.downsample[1](c.d1)
    c.pre = c.b + c.shortcut
    return torch.relu(c.pre), c


def _basic_block_backward(block: nn.Module, c: SimpleNamespace, r: torch.Tensor, choices: Choices) -> torch.Tensor:
    """ReLU → add (identity shortcut: the residual rule; downsample: the local add rule, its shortcut not being an
    ancestor of the branch) → [bn2, conv2, ReLU, bn1, conv1] + shortcut (or [bn, conv] of the downsample)."""
    r = relu_rule(c.pre, r, choices.relu)
    if block.downsample is None:
        r_short, r_b = residual_rule(c.inp, c.b, r, lambda g: _basic_block_vjp(block, c, g), choices.residual)
    else:
        r_b, r_d = add_rule(c.b, c.shortcut, r)
        r_short = conv_rule(block.downsample[0], c.inp, batch_norm_rule(block.downsample[1], c.d1, r_d))
    r_a1 = conv_rule(block.conv2, c.a1, batch_norm_rule(block.bn2, c.c2, r_b))
    r_c1 = batch_norm_rule(block.bn1, c.c1, relu_rule(c.h1, r_a1, choices.relu))
    return conv_rule(block.conv1, c.inp, r_c1) + r_short  # fan-out: added, not renormalised


def _resnet_forward(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, SimpleNamespace]:
    c = SimpleNamespace(x=x)
    c.stem = [x]
    h = x
    for layer in (model.conv1, model.bn1, model.relu, model.maxpool):
        h = layer(h)
        c.stem.append(h)
    c.blocks = []
    for block in model.blocks:
        h, cb = _basic_block_forward(block, h)
        c.blocks.append(cb)
    c.last = h
    c.pooled = model.avgpool(h)
    return model.fc(torch.flatten(c.pooled, 1)), c


def _resnet_backward(model: nn.Module, c: SimpleNamespace, seed: torch.Tensor, choices: Choices) -> torch.Tensor:
    r = linear_rule(torch.flatten(c.pooled, 1), model.fc.weight, model.fc.bias, seed)
    r = adaptive_avg_pool_rule(model.avgpool, c.last, r.reshape(c.pooled.shape))  # functional flatten: exact
    for block, cb in zip(reversed(model.blocks), reversed(c.blocks), strict=True):
        r = _basic_block_backward(block, cb, r, choices)
    for layer, x in zip(
        reversed((model.conv1, model.bn1, model.relu, model.maxpool)), reversed(c.stem[:-1]), strict=True
    ):
        r = _layer_backward(layer, x, r, choices)
    return r


# ---------------------------------------------------------------------------------------------------------
# TinyViT: patch conv, CLS concat, + pos_embed, pre-norm blocks, final norm, CLS select, head
# ---------------------------------------------------------------------------------------------------------


def _vit_block_forward(block: nn.Module, h: torch.Tensor) -> tuple[torch.Tensor, SimpleNamespace]:
    """One block with the attention written out (q·scale, q·kᵀ, softmax, A·v) whatever `fused` says."""
    attn, mlp = block.attn, block.mlp
    batch, tokens, dim = h.shape
    c = SimpleNamespace(inp=h)
    c.n1 = block.norm1(h)
    qkv = attn.qkv(c.n1).reshape(batch, tokens, 3, attn.heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, c.k, c.v = qkv.unbind(0)
    c.q = q * attn.scale
    c.scores = c.q @ c.k.transpose(-2, -1)
    c.attn = c.scores.softmax(-1)  # attn_drop: identity in eval
    c.o = (c.attn @ c.v).transpose(1, 2).reshape(batch, tokens, dim)
    c.z = attn.proj(c.o)  # proj_drop, ls1, drop_path1: identities in eval
    c.h1 = c.inp + c.z
    c.n2 = block.norm2(c.h1)
    c.f1 = mlp.fc1(c.n2)
    if mlp.act.approximate != "none":
        raise TypeError("the reference's GELU rule is the exact (erf) GELU")
    c.g = mlp.act(c.f1)  # drop1: identity in eval
    c.f2 = mlp.fc2(c.g)  # drop2, ls2, drop_path2: identities in eval
    return c.h1 + c.f2, c


def _vit_forward(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, SimpleNamespace]:
    c = SimpleNamespace(x=x)
    grid = model.patch_embed.proj(x)
    c.grid = grid.shape[-2:]
    patches = grid.flatten(2).transpose(1, 2)
    c.tokens = torch.cat([model.cls_token.expand(x.shape[0], -1, -1), patches], dim=1)
    c.pos = model.pos_embed.expand_as(c.tokens)
    h = c.tokens + c.pos  # pos_drop: identity in eval
    c.blocks = []
    for block in model.blocks:
        h, cb = _vit_block_forward(block, h)
        c.blocks.append(cb)
    c.last = h
    c.normed = model.norm(h)
    c.cls = c.normed[:, 0]  # head_drop: identity in eval
    return model.head(c.cls), c


def _vit_block_backward(block: nn.Module, c: SimpleNamespace, r: torch.Tensor, choices: Choices) -> torch.Tensor:
    """add2 → [drop2, fc2, drop1, GELU, fc1, LN2] + shortcut → add1 → [proj_drop, proj, heads, A·v → (R_A, R_v);
    R_A → attn_drop → softmax → q·kᵀ → (R_q, R_k); reassemble qkv → qkv linear; LN1] + shortcut."""
    attn, mlp = block.attn, block.mlp
    batch, tokens, dim = c.inp.shape
    # MLP half: ls2 and drop_path2 (Identity) pass relevance unchanged.
    r_short, r_f2 = residual_rule(c.h1, c.f2, r, lambda g: _mlp_vjp(block, c, g), choices.residual)
    r_f2 = dropout_rule(mlp.drop2, c.f2, r_f2)
    r_g = linear_rule(c.g, mlp.fc2.weight, mlp.fc2.bias, r_f2)
    r_g = dropout_rule(mlp.drop1, c.g, r_g)
    r_f1 = gelu_rule(c.f1, r_g)
    r_n2 = linear_rule(c.n2, mlp.fc1.weight, mlp.fc1.bias, r_f1)
    r = layer_norm_rule(block.norm2, c.h1, r_n2) + r_short  # fan-out: added, not renormalised
    # Attention half: ls1 and drop_path1 (Identity) pass relevance unchanged.
    r_short, r_z = residual_rule(c.inp, c.z, r, lambda g: _attention_vjp(block, c, g), choices.residual)
    r_z = dropout_rule(attn.proj_drop, c.z, r_z)
    r_o = linear_rule(c.o, attn.proj.weight, attn.proj.bias, r_z)
    r_o = r_o.reshape(batch, tokens, attn.heads, attn.head_dim).transpose(1, 2)  # exact re-indexing
    r_a, r_v = matmul_rule(c.attn, c.v, r_o)
    if choices.attn_drop_filter and not attn.fused:  # the fused attention does not call attn_drop
        r_a = dropout_rule(attn.attn_drop, c.attn, r_a)  # as the authors' attention forward runs it
    r_scores = softmax_rule(c.scores, r_a)
    r_q, r_kt = matmul_rule(c.q, c.k.transpose(-2, -1), r_scores)  # q already scaled; q·scale passes exactly
    r_qkv = torch.stack([r_q, r_kt.transpose(-2, -1), r_v]).permute(1, 3, 0, 2, 4).reshape(batch, tokens, 3 * dim)
    r_n1 = linear_rule(c.n1, attn.qkv.weight, attn.qkv.bias, r_qkv)
    return layer_norm_rule(block.norm1, c.inp, r_n1) + r_short


def _vit_backward(model: nn.Module, c: SimpleNamespace, seed: torch.Tensor, choices: Choices) -> torch.Tensor:
    """head → head_drop filter → CLS select → final LN → blocks (last first) → token share of + pos_embed →
    drop the CLS row → patch grid → patch conv → pixels [B, 3, H, W]."""
    r = linear_rule(c.cls, model.head.weight, model.head.bias, seed)
    r = dropout_rule(model.head_drop, c.cls, r)
    r = cls_select_rule(c.normed, r)
    r = layer_norm_rule(model.norm, c.last, r)
    for block, cb in zip(reversed(model.blocks), reversed(c.blocks), strict=True):
        r = _vit_block_backward(block, cb, r, choices)
    r_tokens, _ = add_rule(c.tokens, c.pos, r)  # independent terms: the local rule; the pos_embed share is dropped
    r_patches = r_tokens[:, 1:]  # the CLS row (cls_token parameter) is dropped
    r_grid = r_patches.transpose(1, 2).reshape(r.shape[0], -1, *c.grid)
    return conv_rule(model.patch_embed.proj, c.x, r_grid)


# ---------------------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------------------


def relevance(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor | None = None,
    contrastive: bool = False,
    *,
    relu: str = "pointwise",
    attn_drop_filter: bool = True,
    residual: str = "total",
) -> torch.Tensor:
    """absLRP map at the input pixels, [B, 3, H, W], channels kept (REFERENCE-METHODS.md, "absLRP").

    `model` is a `TinyCNN`, `TinyViT` (either attention variant, with or without dropout modules) or `TinyResNet`
    in eval mode; `target` a LongTensor [B] of class ids, the argmax logit if None. One forward pass; then
    - `contrastive=False`: one backward pass seeded with one-hot 1.0 at the target; the map is that pass's
      relevance at the input (N1-normalised by the first layer's rule);
    - `contrastive=True`: passes P (seed e_y) and Q (seed (1−e_y)/(C−1) = N1(1−e_y)); the map is
      `Nmax(P − Q)` per sample over [3, H, W].
    `relu`, `attn_drop_filter`, `residual`: the candidate formulas of the module docstring (defaults: the authors').
    """
    if model.training:
        raise ValueError("the reference explains models in eval mode")
    choices = Choices(relu, attn_drop_filter, residual)
    with torch.no_grad():
        if hasattr(model, "patch_embed"):
            forward, backward = _vit_forward, _vit_backward
        elif hasattr(model, "features"):
            forward, backward = _cnn_forward, _cnn_backward
        elif hasattr(model, "blocks"):
            forward, backward = _resnet_forward, _resnet_backward
        else:
            raise TypeError(f"no absLRP reference for {type(model).__name__}")
        logits, cache = forward(model, x)
        torch.testing.assert_close(logits, model(x), rtol=1e-12, atol=1e-12)  # the step-by-step forward is the model's
        if target is None:
            target = logits.argmax(-1)
        one_hot = F.one_hot(target, logits.shape[-1]).to(logits.dtype)
        positive = backward(model, cache, one_hot, choices)
        if not contrastive:
            return positive
        negative = backward(model, cache, (1.0 - one_hot) / (logits.shape[-1] - 1), choices)
        return nmax(positive - negative)
