"""Attention: softmax, attention-weighted values, scaled_dot_product_attention, and gates.

Op classes and their kernels (formulas: ../shared/RULES.md beside the repository, "Attention (AttnLRP)"):
- "softmax": `taylor`, AttnLRP's softmax rule R_x = x ⊙ (R − s·ΣR), masked (−inf) entries count as 0.
- "attention_values": a matrix product of attention probabilities with values (written-out
  attention); `uniform` (AttnLRP) or `values` (CP-LRP: probabilities constant, all to the values).
- "attention": `aten.scaled_dot_product_attention` as one op — scale, boolean and additive masks,
  is_causal and grouped-query heads; `uniform` composes the uniform rule on p·v, the softmax rule
  and the uniform rule on q·kᵀ; `values` is CP-LRP.
Gates (act(gate)·up, MoE routing weights) are elementwise products: elementwise.py.
"""

from __future__ import annotations

import math
import weakref

import torch

from .adapter import Adapter
from .bilinear import Bilinear, bias_key, product_term, shared, shared_form, uniform, uniform_form, with_bias_share
from .branch import held_slope
from .elementwise import ADD, GATE
from .gradient import Replay, call_op, form, rescaled, share_of, split, stabilized
from .registry import declare, rule
from .table import Facts, register_ops
from .tensors import laid_out_as, stabilize, unbroadcast, writable

aten = torch.ops.aten

SOFTMAX = declare("softmax", absorbs="rules")
ATTENTION_VALUES = declare("attention_values", absorbs="rules")
ATTENTION = declare("attention", absorbs="rules")

# elements of one [query block × keys] score matrix held at once by the attention rules
_BLOCK_ELEMENTS = 1 << 21  # 8 MiB of float32 scores per block: fastest on CPU, small on GPU


def masked_to_zero(x: torch.Tensor) -> torch.Tensor:
    return torch.where(torch.isfinite(x), x, torch.zeros((), dtype=x.dtype, device=x.device))


@rule(SOFTMAX, "taylor", needs=("x", "out"), default=True)
def softmax_taylor(R, x, out, dim: int):
    """R_x = x ⊙ (R − s·ΣR) over the softmax dim (AttnLRP Prop. 3.1); −inf inputs count as 0, so a row masked
    whole (its softmax NaN, which models zero afterwards: Longformer) passes nothing."""
    s = out.to(R.dtype)
    s = torch.where(torch.isnan(s), 0.0, s)
    return masked_to_zero(x.to(R.dtype)) * (R - s * R.sum(dim, keepdim=True))


class LogSoftmaxAdapter(Adapter):
    """log_softmax(x) = x − logsumexp(x): the log-normaliser is a constant term of a sum."""

    def __init__(self):
        super().__init__(ADD)

    def constant_terms(self, args):
        return True

    def needs(self, op_class, kernel, args, relevant):
        return {"self"}, True

    def apply(self, call):
        x = call.args["self"]
        (r, _) = call.run([x, call.out - x], call.out, [True, False])
        return {"self": r}

    def replay(self, call, replace, detach=()):
        x = {**call.args, **replace}["self"]
        return x - torch.logsumexp(x.detach(), call.args["dim"], keepdim=True)

    def with_statistics_held(self, op, args):
        """The log-normaliser (max and denominator) constant: ∂y/∂x = 1."""
        return held_slope(op, args, "self", torch.ones_like)


class GluAdapter(Adapter):
    """glu(x) = a·σ(b) for the two halves a, b of x: a gate on its own input."""

    def __init__(self):
        super().__init__(GATE)

    def replay(self, call, replace, detach=()):
        """a · g, g = σ(b) passing its relevance to b (the identity rule); "gate" in `detach` holds g constant."""
        x = {**call.args, **replace}["self"]
        a, b = x.chunk(2, dim=call.args.get("dim", -1))
        gate = call.passed(b, torch.sigmoid(b.detach()))
        return a * (gate.detach() if "gate" in detach else gate)

    def needs(self, op_class, kernel, args, relevant):
        return set(), False

    def apply(self, call):
        x, dim = call.args["self"], call.args.get("dim", -1)
        shape = list(x.shape)
        shape[dim] //= 2
        halves = [torch.empty(shape, device="meta"), torch.empty(shape, device="meta")]
        ra, rb = call.run(halves, [True, True], 1)
        zeros = call.R.new_zeros(shape)
        return {"self": torch.cat([zeros if ra is None else ra, zeros if rb is None else rb], dim)}


class SoftmaxAdapter(Adapter):
    facts = Facts(mixes_positions=True, gate_source="softmax")

    def __init__(self):
        super().__init__(SOFTMAX)

    def apply(self, call):
        return {"self": call.run(call.args["self"], call.out, call.args["dim"])}

    def with_statistics_held(self, op, args):
        """Max and denominator constant: ∂p/∂x = p elementwise (masked −inf entries: 0)."""
        return held_softmax(args["self"], call_op(op, {**args, "self": args["self"].detach()}))


def held_softmax(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Probabilities p = softmax(x) with the softmax's max and denominator held constant: p's value, slope p."""
    shift = torch.where(torch.isfinite(x), x - x.detach(), torch.zeros((), dtype=x.dtype, device=x.device))
    return laid_out_as(p.detach() + p.detach() * shift.to(p.dtype), p)


@rule(ATTENTION_VALUES, "uniform", needs=("a", "b", "out"), default=True)
def attention_values_uniform(
    R, a, b, out, product: Bilinear, probs_first: bool, *, epsilon: float = 1e-6, sign_aware: bool = True
):
    """AttnLRP: the uniform rule, as for any product of two relevant tensors."""
    return uniform(R, a, b, out, product, epsilon=epsilon, sign_aware=sign_aware)


@rule(ATTENTION_VALUES, "gradient", needs=("a", "b", "out"))
def attention_values_gradient(
    R, a, b, out, product: Bilinear, probs_first: bool, *, epsilon: float = 1e-6, sign_aware: bool = True
):
    """Gradient × input on p·v: the probabilities and the values each get the whole (RelP's attention by its plain
    gradient)."""
    return shared(R, a, b, out, product, 1, epsilon, sign_aware)


def _values(R, a, b, out, product: Bilinear, probs_first: bool, halves: int, epsilon: float, sign_aware: bool):
    """Epsilon rule to the values only (the probabilities are constants): R/stab(halves·out) moved to v."""
    s = R / stabilize(halves * out.to(R.dtype), epsilon, sign_aware)
    if probs_first:
        return None, b * unbroadcast(product.adjoint_b(s, a.to(s.dtype)), b.shape)
    return a * unbroadcast(product.adjoint_a(s, b.to(s.dtype)), a.shape), None


@rule(ATTENTION_VALUES, "values", needs=("a", "b", "out"))
def attention_values_only(
    R, a, b, out, product: Bilinear, probs_first: bool, *, epsilon: float = 1e-6, sign_aware: bool = True
):
    """CP-LRP: attention probabilities are constants; epsilon rule to the values, nothing to the scores."""
    return _values(R, a, b, out, product, probs_first, 1, epsilon, sign_aware)


@rule(ATTENTION_VALUES, "half-values", needs=("a", "b", "out"))
def attention_half_values(
    R, a, b, out, product: Bilinear, probs_first: bool, *, epsilon: float = 1e-6, sign_aware: bool = True
):
    """PA-LRP's vision setting: the uniform rule's half for the values, the probabilities' half discarded."""
    return _values(R, a, b, out, product, probs_first, 2, epsilon, sign_aware)


class Attention:
    """scaled_dot_product_attention(q, k, v, mask, is_causal, scale, enable_gqa), recomputed in query blocks."""

    def __init__(self, q, k, v, mask, is_causal: bool, scale: float | None, gqa: bool, maps: int = 1):
        if mask is not None and not is_causal and _exactly_causal(mask, q.shape[-2], k.shape[-2]):
            mask, is_causal = None, True  # the same keys kept; blocks then mask their diagonal square only
        self.q, self.k, self.v, self.mask, self.is_causal = q, k, v, mask, bool(is_causal)
        self.maps = maps  # relevance maps carried at once: blocks shrink by it
        self.scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
        heads, kv_heads = q.shape[-3] if q.dim() >= 3 else 1, k.shape[-3] if k.dim() >= 3 else 1
        self.groups = heads // kv_heads if gqa and heads != kv_heads else 1

    def repeat(self, t):
        """Keys/values as the queries see them: grouped heads repeated, broadcast batch dims expanded."""
        if self.groups > 1:
            t = t.repeat_interleave(self.groups, dim=-3)
        return t.expand(*self.q.shape[:-2], *t.shape[-2:])

    def fold(self, t, like):
        """Adjoint of `repeat`: sum the copies back into `like`'s shape."""
        if self.groups > 1:
            shape = list(t.shape)
            t = t.reshape([*shape[:-3], shape[-3] // self.groups, self.groups, *shape[-2:]]).sum(-3)
        return unbroadcast(t, like.shape)

    def causal_keys(self) -> bool:
        """Whether query i attends to keys ≤ i only (is_causal, or a boolean mask with nothing above the diagonal)."""
        L, S = self.q.shape[-2], self.k.shape[-2]
        if self.is_causal:
            return True
        mask = self.mask
        return (
            L == S
            and mask is not None
            and mask.dtype == torch.bool
            and mask.shape[-2] == L
            and not bool(mask.triu(1).any())
        )

    def blocks(self, dtype):
        """(rows, keys, scaled q block, probabilities, additive mask block or None) per block of query rows.

        Under causal masking a block of rows only needs the keys up to its last row, so blocks are
        smaller and skip the masked upper triangle (about half the work, as flash attention does).
        """
        q, k = self.q.to(dtype), self.repeat(self.k.to(dtype))
        L, S = q.shape[-2], k.shape[-2]
        lead = math.prod(q.shape[:-2]) if q.dim() > 2 else 1
        step = max(min(L, 64), _BLOCK_ELEMENTS // max(1, lead * S * self.maps))
        causal = self.causal_keys()
        if causal:
            step = min(step, max(64, -(-L // 8)))
        # rows with no key to attend to: asked once of the whole mask (a causal block's keys end at its last row,
        # and the mask keeps nothing beyond it, so a row's keys in its block are all it has); under is_causal alone
        # every row keeps key 0
        unattended = False
        if self.mask is not None:
            keep, _ = self._mask_block(slice(0, L), slice(0, S), L, q.device)
            unattended = keep is not None and not bool(keep.any(-1).all())
            del keep
        for start in range(0, L, step):
            rows = slice(start, min(L, start + step))
            keys = slice(0, rows.stop if causal else S)
            qb = q[..., rows, :] * self.scale
            scores = qb @ k[..., keys, :].mT
            if self.mask is None and self.is_causal and rows.stop <= S:  # masked keys: the block's diagonal square
                n = rows.stop - rows.start
                above = torch.ones((n, n), dtype=torch.bool, device=q.device).triu_(1)
                scores[..., rows.start :].masked_fill_(above, float("-inf"))
                additive = None
            else:
                keep, additive = self._mask_block(rows, keys, L, q.device)
                if additive is not None:
                    scores += additive.to(dtype)
                if keep is not None:
                    scores.masked_fill_(~keep, float("-inf"))
            # in the scores' buffer where it may (bit for bit torch.softmax; fresh memory per block costs page faults
            # beside a pass this cheap)
            inplace = writable(scores)
            probs = torch.ops.aten._softmax.out(scores, -1, False, out=scores) if inplace else scores.softmax(-1)
            if additive is not None or unattended:
                probs = torch.nan_to_num_(probs, nan=0.0)  # fully masked rows attend to nothing
            yield rows, keys, qb, probs, additive

    def _mask_block(self, rows: slice, keys: slice, L: int, device) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(boolean keep mask, additive float mask) for a block of query rows and keys."""
        keep = additive = None
        mask = self.mask
        if mask is not None:
            block = mask[..., rows, :] if mask.dim() >= 2 and mask.shape[-2] == L and L != 1 else mask
            block = block[..., keys] if block.shape[-1] != 1 else block
            if block.dtype == torch.bool:
                keep = block
            else:
                additive = block
        if self.is_causal:
            positions = torch.arange(rows.start, rows.stop, device=device)
            causal = torch.arange(keys.start, keys.stop, device=device) <= positions[:, None]
            keep = causal if keep is None else keep & causal
        return keep, additive


@rule(ATTENTION, "uniform", needs=("q", "k", "v", "mask", "out"), default=True)
def attention_uniform(
    R,
    attention: Attention,
    out,
    want_mask: bool,
    *,
    epsilon: float = 1e-6,
    logit_epsilon: float | None = None,
    sign_aware: bool = True,
):
    """AttnLRP on SDPA: uniform rule on p·v, softmax rule, epsilon split with an additive mask, uniform on q·kᵀ.

    With f = R_p − p·ΣR_p (the softmax rule's factor), the scores get scores ⊙ f; the epsilon split
    of scores = logits + mask gives logits ⊙ f and mask ⊙ f, and the uniform rule on q·kᵀ divides
    logits ⊙ f by 2·logits again. With `logit_epsilon` None those ratios cancel exactly (the
    stabilizer's limit), so the rule uses f/2 directly, saving passes over the score matrix and never
    dividing by −inf; with a number the q·kᵀ rule is stabilized by it as written.
    Returns (R_q, R_k, R_v, R_mask); R_mask only when `want_mask` (a mask that carries relevance).
    """
    return _sdpa_products(R, attention, out, want_mask, 2, epsilon, logit_epsilon, sign_aware)


@rule(ATTENTION, "gradient", needs=("q", "k", "v", "mask", "out"))
def attention_gradient(
    R,
    attention: Attention,
    out,
    want_mask: bool,
    *,
    epsilon: float = 1e-6,
    logit_epsilon: float | None = None,
    sign_aware: bool = True,
):
    """SDPA by its plain gradient × input: p·v and q·kᵀ give each factor the whole (not half), the softmax rule
    (itself gradient × input) between them; RelP's attention "by its gradient". Returns (R_q, R_k, R_v, R_mask)."""
    return _sdpa_products(R, attention, out, want_mask, 1, epsilon, logit_epsilon, sign_aware)


def _sdpa_products(R, attention: Attention, out, want_mask: bool, halves: int, epsilon, logit_epsilon, sign_aware):
    """The SDPA rules whose products q·kᵀ and p·v give each factor 1/`halves` of each term (AttnLRP's 2, gradient ×
    input's 1), computed in query blocks."""
    dtype = R.dtype
    v = attention.repeat(attention.v.to(dtype))
    k = attention.repeat(attention.k.to(dtype))
    Rq = R.new_empty(attention.q.shape, dtype=dtype)
    Rk = R.new_zeros(k.shape, dtype=dtype)
    Rv = R.new_zeros(v.shape, dtype=dtype)
    Rmask = R.new_zeros(attention.mask.shape, dtype=dtype) if want_mask else None
    for rows, keys, qb, probs, additive in attention.blocks(dtype):
        s_out = R[..., rows, :] / stabilize(halves * out[..., rows, :].to(dtype), epsilon, sign_aware)
        Rv[..., keys, :] += probs.mT @ s_out
        # the q·kᵀ rule's 1/halves (a power of two: exact) taken on s_out's block rather than on the scores' when
        # nothing else reads the whole factor
        fold = logit_epsilon is None and (Rmask is None or additive is None)
        s = s_out * (1 / halves) if fold else s_out
        g = s @ v[..., keys, :].mT  # R_p = g ⊙ p, the relevance of the probabilities
        # the softmax rule's R_p − p·ΣR_p, with ΣR_p = Σ_j p_j g_j = s · (p v) = s · out (flash attention's D): a
        # pass over a row of values instead of two over the scores
        total = (s * out[..., rows, :].to(dtype)).sum(-1, keepdim=True)
        factor = g.sub_(total).mul_(probs)
        del probs
        if Rmask is not None and additive is not None:
            _accumulate_mask(Rmask, masked_to_zero(additive.to(dtype)) * factor, rows, keys, attention.q.shape[-2])
        if fold:
            half = factor
        elif logit_epsilon is None:
            half = factor.mul_(1 / halves)
        else:  # (logits ⊙ f) / stab(halves·logits): the q·kᵀ rule with its own stabilizer
            logits = qb @ k[..., keys, :].mT
            half = factor.mul_(logits).div_(stabilize(halves * logits, logit_epsilon, sign_aware))
        Rq[..., rows, :] = (half @ k[..., keys, :]).mul_(qb)
        Rk[..., keys, :] += half.mT @ qb
    return Rq, attention.fold(k * Rk, attention.k), attention.fold(v * Rv, attention.v), Rmask


def _sdpa_values(R, attention: Attention, out, halves: int, epsilon: float, sign_aware: bool):
    dtype = R.dtype
    v = attention.repeat(attention.v.to(dtype))
    Rv = R.new_zeros(v.shape, dtype=dtype)
    for rows, keys, _, probs, _ in attention.blocks(dtype):
        Rv[..., keys, :] += probs.mT @ (
            R[..., rows, :] / stabilize(halves * out[..., rows, :].to(dtype), epsilon, sign_aware)
        )
    return None, None, attention.fold(v * Rv, attention.v), None


@rule(ATTENTION, "values", needs=("q", "k", "v", "mask", "out"))
def attention_values_sdpa(R, attention: Attention, out, want_mask: bool, *, epsilon: float = 1e-6, sign_aware=True):
    """CP-LRP on SDPA: the attention probabilities are constants; epsilon rule to the values only."""
    return _sdpa_values(R, attention, out, 1, epsilon, sign_aware)


@rule(ATTENTION, "half-values", needs=("q", "k", "v", "mask", "out"))
def attention_half_values_sdpa(
    R, attention: Attention, out, want_mask: bool, *, epsilon: float = 1e-6, sign_aware: bool = True
):
    """PA-LRP's vision setting on SDPA: the values get the uniform rule's half, the probabilities' half is discarded."""
    return _sdpa_values(R, attention, out, 2, epsilon, sign_aware)


def _accumulate_mask(Rmask: torch.Tensor, part: torch.Tensor, rows: slice, keys: slice, length: int) -> None:
    """Add one block's mask relevance into a mask that may broadcast over batch, heads, rows or keys."""
    target = Rmask[..., rows, :] if Rmask.dim() >= 2 and Rmask.shape[-2] == length and length != 1 else Rmask
    if target.shape[-1] != 1:
        target = target[..., keys]
    target += unbroadcast(part, target.shape)


class AttentionAdapter(Adapter):
    """aten.scaled_dot_product_attention(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa)."""

    facts = Facts(expensive=True, mixes_positions=True)

    def __init__(self):
        super().__init__(ATTENTION)

    def needs(self, op_class, kernel, args, relevant):
        names = {"query", "key", "value"}
        if args.get("attn_mask") is not None:
            names.add("attn_mask")
        return names, "out" in kernel.needs

    def apply(self, call):
        a = call.args
        if float(a.get("dropout_p", 0.0)) != 0.0:
            raise ValueError("attention dropout must be 0 (the model is explained in eval mode)")
        attention = Attention(
            a["query"],
            a["key"],
            a["value"],
            a.get("attn_mask"),
            a.get("is_causal", False),
            a.get("scale"),
            bool(a.get("enable_gqa", False)),
            call.maps,
        )
        Rq, Rk, Rv, Rmask = call.run(attention, call.out, bool(call.relevant.get("attn_mask")))
        return {"query": Rq, "key": Rk, "value": Rv, "attn_mask": Rmask}

    def with_statistics_held(self, op, args):
        """Written out: q·kᵀ and p·v differentiated in both factors, the softmax with max and denominator held."""
        if float(args.get("dropout_p", 0.0)) != 0.0:
            raise ValueError("attention dropout must be 0 (the model is explained in eval mode)")
        plain = call_op(op, {k: v.detach() if isinstance(v, torch.Tensor) else v for k, v in args.items()})
        return laid_out_as(_sdpa(args, lambda z: z, lambda p, v: p @ v, held_softmax), plain)


register_ops(SoftmaxAdapter(), aten.softmax.int, aten._softmax.default, aten._safe_softmax.default)
register_ops(LogSoftmaxAdapter(), aten.log_softmax.int, aten._log_softmax.default)
register_ops(GluAdapter(), aten.glu.default)


def causal_when_lower_triangular(
    query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, *, scale=None, enable_gqa=False
):
    """SDPA, with a boolean mask that is exactly the causal one given as `is_causal` instead: the same function (the
    masked scores are −inf either way; on CPU the same kernel, so the same values), without reading the mask, and
    the kernel skips the blocks above the diagonal. A traced model materialises its causal mask (it cannot know the
    padding), so this is the usual case."""
    if attn_mask is not None and not is_causal and _exactly_causal(attn_mask, query.shape[-2], key.shape[-2]):
        attn_mask, is_causal = None, True
    return aten.scaled_dot_product_attention.default(
        query, key, value, attn_mask, dropout_p, is_causal, scale=scale, enable_gqa=enable_gqa
    )


_LAST_MASK: tuple = (None, False)  # (weak reference to the last mask checked, its answer): layers share one mask


def _exactly_causal(mask: torch.Tensor, L: int, S: int) -> bool:
    """Whether a mask keeps exactly the keys up to each query's own position, for every batch entry and head."""
    global _LAST_MASK
    if mask.dtype != torch.bool or L != S or L < 2 or mask.shape[-2:] != (L, S):
        return False
    reference, answer = _LAST_MASK
    if reference is not None and reference() is mask:
        return answer
    lower = torch.ones((L, S), dtype=torch.bool, device=mask.device).tril_()
    answer = torch.equal(mask, lower.expand(mask.shape))
    _LAST_MASK = (weakref.ref(mask), answer)
    return answer


register_ops(AttentionAdapter(), aten.scaled_dot_product_attention.default, fast_forward=causal_when_lower_triangular)


# --- the same rules as modified gradients (`gradient.py`), for verify ---


@form(SOFTMAX, "taylor")
def softmax_form(call: Replay):
    """The softmax rule is gradient × input of the softmax itself (−inf inputs give nothing); a row masked whole keeps
    the model's NaN value and passes no gradient."""
    x = call.get("self")  # in the softmax's own dtype (a float64 −1.8e308 is −inf in float32)
    dead = (x.detach().to(call.out.dtype) == float("-inf")).all(call.get("dim"), keepdim=True)
    if not bool(dead.any()):
        return call.run()
    return torch.where(dead, call.out.detach(), call.run({"self": x.masked_fill(dead, 0.0)}))


@form(ATTENTION_VALUES, "uniform")
def attention_values_form(call: Replay, *, epsilon: float = 1e-6, sign_aware: bool = True):
    return uniform_form(call, epsilon=epsilon, sign_aware=sign_aware)


@form(ATTENTION_VALUES, "gradient")
def attention_values_gradient_form(call: Replay, *, epsilon: float = 1e-6, sign_aware: bool = True):
    return shared_form(call, 1, epsilon, sign_aware)


def _values_form(call: Replay, halves: int, epsilon: float, sign_aware: bool):
    """The probabilities held constant; ρ·(what the product gets)/stab(halves·product) to the values."""
    role = call.role
    probs = role.operand if role.index is None else (role.operand, role.index)
    product, share = product_term(call, epsilon)
    scale = share_of(call.out, stabilized(halves * product, epsilon, sign_aware)) * share
    return with_bias_share(call, rescaled(call.held(detach=[probs, *bias_key(call)]), scale), epsilon)


@form(ATTENTION_VALUES, "values")
def attention_values_only_form(call: Replay, *, epsilon: float = 1e-6, sign_aware: bool = True):
    return _values_form(call, 1, epsilon, sign_aware)


@form(ATTENTION_VALUES, "half-values")
def attention_half_values_form(call: Replay, *, epsilon: float = 1e-6, sign_aware: bool = True):
    return _values_form(call, 2, epsilon, sign_aware)


def _sdpa(a: dict, logits_gradient, values_gradient, probabilities=lambda logits, p: p):
    """scaled_dot_product_attention written out under autograd (`a`: its arguments), with the gradient of q·kᵀ, of
    the softmax (`probabilities(logits, p)`) and of p·v modified."""
    q, k, v, mask = a["query"], a["key"], a["value"], a.get("attn_mask")
    scale = 1.0 / math.sqrt(q.shape[-1]) if a.get("scale") is None else float(a["scale"])
    heads, kv_heads = q.shape[-3] if q.dim() >= 3 else 1, k.shape[-3] if k.dim() >= 3 else 1
    if a.get("enable_gqa") and heads != kv_heads:
        k, v = k.repeat_interleave(heads // kv_heads, -3), v.repeat_interleave(heads // kv_heads, -3)
    logits = logits_gradient((q * scale) @ k.mT)
    keep = None
    if mask is not None and mask.dtype == torch.bool:
        keep = mask
    elif mask is not None:
        logits = logits + mask
    if a.get("is_causal"):
        L, S = q.shape[-2], k.shape[-2]
        causal = torch.ones(L, S, dtype=torch.bool, device=q.device).tril()
        keep = causal if keep is None else keep & causal
    if keep is not None:
        logits = logits.masked_fill(~keep, float("-inf"))
    attended = torch.isfinite(logits).any(-1, keepdim=True)  # fully masked rows attend to nothing
    probs = torch.softmax(torch.where(attended, logits, torch.zeros_like(logits)), -1) * attended
    return values_gradient(probabilities(logits, probs), v)


@form(ATTENTION, "uniform")
def attention_form(call: Replay, *, epsilon: float = 1e-6, logit_epsilon: float | None = None, sign_aware: bool = True):
    """Uniform rule on q·kᵀ (half of its gradient each), softmax gradient, uniform rule on p·v."""
    return _sdpa_products_form(call, 2, epsilon, logit_epsilon, sign_aware)


@form(ATTENTION, "gradient")
def attention_gradient_form(
    call: Replay, *, epsilon: float = 1e-6, logit_epsilon: float | None = None, sign_aware: bool = True
):
    """q·kᵀ, the softmax and p·v by their plain gradients (the stabilizers aside)."""
    return _sdpa_products_form(call, 1, epsilon, logit_epsilon, sign_aware)


def _sdpa_products_form(call: Replay, halves: int, epsilon: float, logit_epsilon: float | None, sign_aware: bool):
    out = call.out

    def logits(z):
        if logit_epsilon is None:
            return split(z, 1 / halves)
        return rescaled(z, share_of(z, stabilized(halves * z.detach(), logit_epsilon, sign_aware)))

    def values(p, v):
        return rescaled(p @ v, share_of(out, stabilized(halves * out.detach(), epsilon, sign_aware)))

    return _sdpa(call.args, logits, values)


def _sdpa_values_form(call: Replay, halves: int, epsilon: float, sign_aware: bool):
    out = call.out

    def values(p, v):
        return rescaled(p.detach() @ v, share_of(out, stabilized(halves * out.detach(), epsilon, sign_aware)))

    return _sdpa(call.args, lambda z: z, values)


@form(ATTENTION, "values")
def attention_values_sdpa_form(call: Replay, *, epsilon: float = 1e-6, sign_aware: bool = True):
    return _sdpa_values_form(call, 1, epsilon, sign_aware)


@form(ATTENTION, "half-values")
def attention_half_values_sdpa_form(call: Replay, *, epsilon: float = 1e-6, sign_aware: bool = True):
    return _sdpa_values_form(call, 2, epsilon, sign_aware)
