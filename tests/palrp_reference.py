"""PA-LRP (positional-attribution LRP) written out by hand, as `../shared/REFERENCE-METHODS.md` ("PA-LRP"; beside this
repository, not in it) specifies it — an independent reference for tests; it does not use lrpgraph or autograd.

Each function reruns the model's forward from its own modules (norms, linears, convs and the rotary table
are called as modules, so their numerics are the model's), keeps every activation, checks that it
reproduces the model's logits, and then applies the rules of REFERENCE-METHODS.md backwards, op by op:

- `vit_relevance`: the ViT setting (REFERENCE-METHODS.md, "PA-LRP" → "ViT (DeiT-T/S/B …)") on a timm-style
  vision transformer such as `reference_models.TinyViT`.
- `llama_relevance`: the NLP rotary setting (REFERENCE-METHODS.md, "PA-LRP" → "NLP (LLaMA, rotary)") on a
  HuggingFace `LlamaForCausalLM`.

Attention is recomputed here from q, k and v in the model's dtype (written out, -inf causal mask), so the
result does not depend on the attention implementation (eager, SDPA, fused); note that HF's eager Llama
attention runs its softmax in float32 even for a float64 model, so its logits differ from SDPA's at ~1e-7.
All stabilizers can be overridden through `eps` (for conservation checks with tiny stabilizers); the
defaults are the ones REFERENCE-METHODS.md gives.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.grad import conv2d_input

VIT_EPS = {"linear": 1e-8, "add": 1e-6, "av": 1e-6, "gamma_stabilizer": 1e-6, "ln": None}
"""ViT stabilizers: attention proj / value projection (additive), residual and pos_embed adds (additive),
A·v (additive), generalised gamma (sign-aware); "ln" None means each LayerNorm's own eps (additive)."""
VIT_GAMMA = {"linear": 0.05, "conv": 100.0}
"""Generalised-gamma γ of the head, fc1, fc2 ("linear") and the patch conv ("conv")."""
LLAMA_EPS = {"linear": 1e-8, "add": 1e-8, "qk": 1e-8, "av": 1e-6}
"""Llama stabilizers, all additive: linears, adds (residual and rotary), q·kᵀ and A·v."""


# ---------------------------------------------------------------------------------------------------------
# Rules (REFERENCE-METHODS.md, "PA-LRP"; RULES.md for the generic forms)
# ---------------------------------------------------------------------------------------------------------


def sign_stabilize(z: torch.Tensor, eps: float) -> torch.Tensor:
    """Sign-aware stabilizer `z + eps·sign(z)` with sign(0) = +1 (RULES.md, notation)."""
    return z + eps * torch.where(z >= 0, 1.0, -1.0).to(z)


def epsilon_linear(x: torch.Tensor, linear: nn.Linear, R: torch.Tensor, eps: float) -> torch.Tensor:
    """Epsilon with an ADDITIVE stabilizer: `R_i = x_i Σ_j w_ij R_j/(z_j + eps)`, z with its bias."""
    z = F.linear(x, linear.weight, linear.bias)
    return x * ((R / (z + eps)) @ linear.weight)


def generalized_gamma(x, R, weight, bias, gamma, forward, transpose, stabilizer=1e-6):
    """Zennit's generalised gamma (REFERENCE-METHODS.md, ViT rules; RULES.md, "Gamma").

    For outputs with z_j > 0: `w + γw⁺` on x⁺ (with bias `b + γb⁺`) and `w + γw⁻` on x⁻; for z_j < 0 the
    weights swap (bias `b + γb⁻`, again on the x⁺ part); each part gets `x·w_mod·R_j / stab(sum of parts)`
    with the sign-aware stabilizer; outputs with z_j = 0 pass nothing. `forward(x, w, b)` is the layer,
    `transpose(s, w)` its transposed linear map applied to an output-shaped `s`.
    """
    up, down = weight + gamma * weight.clamp(min=0), weight + gamma * weight.clamp(max=0)
    b_up = None if bias is None else bias + gamma * bias.clamp(min=0)
    b_down = None if bias is None else bias + gamma * bias.clamp(max=0)
    xp, xn = x.clamp(min=0), x.clamp(max=0)
    z = forward(x, weight, bias)
    d_pos = forward(xp, up, b_up) + forward(xn, down, None)
    d_neg = forward(xp, down, b_down) + forward(xn, up, None)
    s_pos = torch.where(z > 0, R / sign_stabilize(d_pos, stabilizer), torch.zeros_like(R))
    s_neg = torch.where(z < 0, R / sign_stabilize(d_neg, stabilizer), torch.zeros_like(R))
    return xp * (transpose(s_pos, up) + transpose(s_neg, down)) + xn * (transpose(s_pos, down) + transpose(s_neg, up))


def gamma_linear(x: torch.Tensor, linear: nn.Linear, R: torch.Tensor, gamma: float, stabilizer: float):
    """Generalised gamma on an `nn.Linear`."""
    return generalized_gamma(x, R, linear.weight, linear.bias, gamma, F.linear, lambda s, w: s @ w, stabilizer)


def gamma_conv2d(x: torch.Tensor, conv: nn.Conv2d, R: torch.Tensor, gamma: float, stabilizer: float):
    """Generalised gamma on an `nn.Conv2d` (zero padding)."""
    kw = {"stride": conv.stride, "padding": conv.padding, "dilation": conv.dilation, "groups": conv.groups}

    def forward(t, w, b):
        return F.conv2d(t, w, b, **kw)

    def transpose(s, w):
        return conv2d_input(x.shape, w, s, **kw)

    return generalized_gamma(x, R, conv.weight, conv.bias, gamma, forward, transpose, stabilizer)


def add_rule(a: torch.Tensor, b: torch.Tensor, R: torch.Tensor, eps: float):
    """Additive-stabilized epsilon split of `a + b`: `a·R/(a+b+eps)` and `b·R/(a+b+eps)`."""
    s = R / (a + b + eps)
    return a * s, b * s


def uniform_matmul(A: torch.Tensor, B: torch.Tensor, R: torch.Tensor, eps: float):
    """Uniform rule of `O = A @ B`: `R_A = A⊙((R/(2·O+eps)) Bᵀ)`, `R_B = B⊙(Aᵀ (R/(2·O+eps)))`."""
    s = R / (2 * (A @ B) + eps)
    return A * (s @ B.transpose(-2, -1)), B * (A.transpose(-2, -1) @ s)


def softmax_rule(x: torch.Tensor, p: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    """AttnLRP softmax: `R_x = x⊙(R − p·ΣR)` over the last dim; masked (−inf) logits count as 0."""
    x = torch.where(torch.isinf(x), torch.zeros_like(x), x)
    return x * (R - p * R.sum(-1, keepdim=True))


def layer_norm_rule(x: torch.Tensor, norm: nn.LayerNorm, R: torch.Tensor, eps: float | None = None):
    """LayerNorm with σ constant, epsilon through the centring (REFERENCE-METHODS.md, ViT rules):
    `g = (w/σ)⊙R/(y + eps_LN)`, `R_x = x⊙(g − mean_D g)`, y the norm's actual output, eps_LN its own eps."""
    eps = norm.eps if eps is None else eps
    sigma = torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + norm.eps)
    y = norm(x)
    w = norm.weight if norm.weight is not None else torch.ones_like(y)
    g = w / sigma * R / (y + eps)
    return x * (g - g.mean(-1, keepdim=True))


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """HF's `rotate_half`: cat(−x2, x1)."""
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], -1)


def rotary_rule(q: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, R: torch.Tensor, eps: float):
    """Relevance of `q_rot = q⊙cos + rot(q)⊙sin` (REFERENCE-METHODS.md, NLP, "Rotary").

    The add uses the additive epsilon split; each product gives R/2 to each factor; `rot` re-indexes and
    its negation passes R. Returns (R_q, R_cos, R_sin), the last two per head (same shape as q).
    """
    r_cos, r_sin = add_rule(q * cos, rotate_half(q) * sin, R, eps)
    half = q.shape[-1] // 2
    r_rot = r_sin / 2  # relevance of rot(q); rot(q)[:h] = −q[h:], rot(q)[h:] = q[:h]
    r_q = r_cos / 2 + torch.cat([r_rot[..., half:], r_rot[..., :half]], -1)
    return r_q, r_cos / 2, r_sin / 2


def _per_sample(value, batch: int, device) -> torch.Tensor:
    return torch.as_tensor(value, device=device).long().reshape(-1).expand(batch)


def _check_logits(ours: torch.Tensor, theirs: torch.Tensor, what: str) -> None:
    """The rerun forward must reproduce the model (loose: HF eager softmax runs in float32). Samples whose
    model logits are not finite are skipped (HF eager Llama gives NaN for a left-padded float64 sample)."""
    ok = torch.isfinite(theirs).reshape(len(theirs), -1).all(-1)
    torch.testing.assert_close(ours[ok], theirs[ok].to(ours), rtol=1e-4, atol=1e-5, msg=lambda m: f"{what}: {m}")


# ---------------------------------------------------------------------------------------------------------
# ViT (REFERENCE-METHODS.md, "PA-LRP" → "ViT")
# ---------------------------------------------------------------------------------------------------------


@torch.no_grad()
def vit_relevance(model: nn.Module, x: torch.Tensor, target=None, eps: dict | None = None, gamma=None) -> dict:
    """PA-LRP on a timm-style ViT (e.g. `reference_models.TinyViT`), REFERENCE-METHODS.md "PA-LRP" → "ViT".

    Rules: seed one-hot 1.0 at `target` (argmax when None; int or one per sample); head, fc1, fc2:
    generalised gamma γ=0.05; patch conv: generalised gamma γ=100 (sign-aware stabilizer 1e-6); attention
    proj and the v rows of qkv: epsilon `R/(z+1e-8)`; A·v: `R_v = v⊙(Aᵀ(R/(2·out+1e-6)))` (A's half is
    discarded, so q, k and softmax get nothing: CP-LRP); LayerNorm: σ constant, epsilon through the
    centring with the norm's own eps; GELU and dropouts: identity; residual adds and tokens + pos_embed:
    `a·R/(a+b+1e-6)`; fan-outs add; CLS select: relevance to row 0; the cls_token row is a parameter and
    is dropped.

    Returns a dict:
      "pixels" R_input [B,3,H,W]; "tokens_pixels" Σ_channels R_input [B,H,W];
      "positional" [B, N_patches]: Σ_d of pos_embed's share of the add, CLS row dropped, signed, row-major;
      "positional_pixels" [B,H,W]: "positional"/p² painted on each p×p patch;
      "combined" relu(tokens_pixels + positional_pixels) [B,H,W];
      diagnostics: "positional_cls" [B] (pos_embed share of the CLS row), "cls_token" [B] (the cls_token
      share, dropped), "seed" [B], "target" [B], "logits" [B,C].
    """
    eps = {**VIT_EPS, **(eps or {})}
    gamma = {**VIT_GAMMA, **(gamma or {})}
    conv = model.patch_embed.proj
    B = x.shape[0]

    # forward, keeping what the rules need
    z = conv(x)  # [B, D, h, w]
    grid = z.shape[-2:]
    tokens = z.flatten(2).transpose(1, 2)
    t = torch.cat([model.cls_token.expand(B, -1, -1), tokens], 1)
    pos = model.pos_embed.expand(B, -1, -1)
    h = t + pos
    saved = []
    for blk in model.blocks:
        attn = blk.attn
        n1 = blk.norm1(h)
        N, C = n1.shape[1], n1.shape[2]
        q, k, v = attn.qkv(n1).reshape(B, N, 3, attn.heads, C // attn.heads).permute(2, 0, 3, 1, 4).unbind(0)
        A = torch.softmax((q * attn.scale) @ k.transpose(-2, -1), -1)
        o_in = (A @ v).transpose(1, 2).reshape(B, N, C)
        a = attn.proj(o_in)
        h_mid = h + a
        n2 = blk.norm2(h_mid)
        f1 = blk.mlp.fc1(n2)
        g = blk.mlp.act(f1)
        f2 = blk.mlp.fc2(g)
        saved.append((h, n1, A, v, o_in, a, h_mid, n2, g, f2))
        h = h_mid + f2
    hn = model.norm(h)
    cls = hn[:, 0]
    logits = model.head(cls)
    _check_logits(logits, model(x), "ViT forward")

    # seed
    target = logits.argmax(-1) if target is None else _per_sample(target, B, x.device)
    R = torch.zeros_like(logits)
    R[torch.arange(B), target] = 1.0

    # backward
    R_cls = gamma_linear(cls, model.head, R, gamma["linear"], eps["gamma_stabilizer"])
    R_hn = torch.zeros_like(hn)
    R_hn[:, 0] = R_cls
    R_h = layer_norm_rule(h, model.norm, R_hn, eps["ln"])
    for blk, (h_in, n1, A, v, o_in, a, h_mid, n2, g, f2) in zip(reversed(model.blocks), reversed(saved), strict=True):
        attn = blk.attn
        R_mid, R_f2 = add_rule(h_mid, f2, R_h, eps["add"])
        R_g = gamma_linear(g, blk.mlp.fc2, R_f2, gamma["linear"], eps["gamma_stabilizer"])
        R_n2 = gamma_linear(n2, blk.mlp.fc1, R_g, gamma["linear"], eps["gamma_stabilizer"])  # GELU: identity
        R_mid = R_mid + layer_norm_rule(h_mid, blk.norm2, R_n2, eps["ln"])
        R_in, R_a = add_rule(h_in, a, R_mid, eps["add"])
        R_o = epsilon_linear(o_in, attn.proj, R_a, eps["linear"])
        R_out = R_o.reshape(B, -1, attn.heads, o_in.shape[-1] // attn.heads).transpose(1, 2)
        out = A @ v
        R_v = v * (A.transpose(-2, -1) @ (R_out / (2 * out + eps["av"])))
        R_qkv = torch.zeros(3, *R_v.shape, dtype=R_v.dtype, device=R_v.device)
        R_qkv[2] = R_v  # q and k get nothing (CP-LRP)
        R_qkv = R_qkv.permute(1, 3, 0, 2, 4).reshape(B, o_in.shape[1], -1)
        R_n1 = epsilon_linear(n1, attn.qkv, R_qkv, eps["linear"])  # only the v rows carry relevance
        R_h = R_in + layer_norm_rule(h_in, blk.norm1, R_n1, eps["ln"])
    R_t, R_pos = add_rule(t, pos, R_h, eps["add"])
    R_z = R_t[:, 1:].transpose(1, 2).reshape(z.shape)
    R_x = gamma_conv2d(x, conv, R_z, gamma["conv"], eps["gamma_stabilizer"])

    # maps
    p = model.patch_embed.proj.kernel_size[0]
    r_pos = R_pos[:, 1:].sum(-1)  # [B, N_patches], row-major over the patch grid
    pos_pixels = torch.zeros(B, *x.shape[-2:], dtype=x.dtype, device=x.device)
    painted = r_pos.reshape(B, *grid).repeat_interleave(p, 1).repeat_interleave(p, 2) / p**2
    pos_pixels[:, : painted.shape[1], : painted.shape[2]] = painted
    r_pix = R_x.sum(1)
    return {
        "pixels": R_x,
        "tokens_pixels": r_pix,
        "positional": r_pos,
        "positional_pixels": pos_pixels,
        "combined": torch.relu(r_pix + pos_pixels),
        "positional_cls": R_pos[:, 0].sum(-1),
        "cls_token": R_t[:, 0].sum(-1),
        "seed": R.sum(-1),
        "target": target,
        "logits": logits,
    }


# ---------------------------------------------------------------------------------------------------------
# Llama, rotary (REFERENCE-METHODS.md, "PA-LRP" → "NLP (LLaMA, rotary)")
# ---------------------------------------------------------------------------------------------------------


@torch.no_grad()
def llama_relevance(
    model: nn.Module, input_ids: torch.Tensor, target=None, position=-1, attention_mask=None, eps: dict | None = None
) -> dict:
    """PA-LRP on a HuggingFace `LlamaForCausalLM`, REFERENCE-METHODS.md "PA-LRP" → "NLP (LLaMA, rotary)".

    Seed: the value of logit `target` (token id; argmax when None) at `position` (int or one per sample),
    one seed per sample. Rules: linears: epsilon `R/(z+1e-8)`, z with bias; adds (residual, and the rotary
    `q⊙cos + rot(q)⊙sin`): `a·R/(a+b+1e-8)`; RMSNorm, SiLU: identity; silu(g)·u: R/2 each; ×1/√d passes
    (the q·kᵀ denominator is the unscaled product, HF's order); GQA repeats: copies add; q·kᵀ and A·v:
    uniform rule with 1e-8 and 1e-6; softmax `x⊙(R − pΣR)`, masked (−inf) logits count as 0; the causal
    (and padding) mask is a constant that passes R unchanged; each rotary product gives R/2 to each factor.
    cos and sin are per layer: `R_c^ℓ[t,d] = Σ_heads ½(R of q⊙c + R of k⊙c)`, q and k added before |·|.

    Returns a dict:
      "tokens" R_tok [B,T] = Σ_d R at the input embeddings; "positional" R_pos [B,T] =
      Σ_ℓ Σ_{c∈{cos,sin}} |Σ_d R_c^ℓ[t,d]|;
      diagnostics: "embeddings" [B,T,D]; "positional_terms" [L,2,B,T], the signed Σ_d R_c^ℓ (c = cos, sin);
      "positional_signed" [B,T], their sum; "seed" [B]; "target" [B]; "logits" [B,T,V].
    """
    eps = {**LLAMA_EPS, **(eps or {})}
    base = model.model
    B, T = input_ids.shape
    device = input_ids.device

    # forward, keeping what the rules need
    emb = base.embed_tokens(input_ids)
    cos, sin = base.rotary_emb(emb, torch.arange(T, device=device).unsqueeze(0))
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # [1 or B, 1, T, d], broadcast over heads
    keep = torch.ones(T, T, dtype=torch.bool, device=device).tril()[None, None]
    if attention_mask is not None:
        keep = keep & attention_mask.bool()[:, None, None, :]
    empty = ~keep.any(-1, keepdim=True)  # query rows with nothing to attend to (padding) get p = 0
    h = emb
    saved = []
    for layer in base.layers:
        attn, mlp = layer.self_attn, layer.mlp
        hd = attn.head_dim
        x1 = layer.input_layernorm(h)
        q = attn.q_proj(x1).view(B, T, -1, hd).transpose(1, 2)
        k = attn.k_proj(x1).view(B, T, -1, hd).transpose(1, 2)
        v = attn.v_proj(x1).view(B, T, -1, hd).transpose(1, 2)
        groups = q.shape[1] // k.shape[1]
        q_rot, k_rot = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        k_rep, v_rep = k_rot.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1)
        scores = (q_rot @ k_rep.transpose(-2, -1)) * attn.scaling
        scores = scores.masked_fill(~keep, float("-inf"))
        P = torch.softmax(scores.masked_fill(empty, 0.0), -1) * ~empty
        o_in = (P @ v_rep).transpose(1, 2).reshape(B, T, -1)
        a = attn.o_proj(o_in)
        h_mid = h + a
        x2 = layer.post_attention_layernorm(h_mid)
        gate, up = mlp.gate_proj(x2), mlp.up_proj(x2)
        prod = mlp.act_fn(gate) * up
        m = mlp.down_proj(prod)
        saved.append((h, x1, q, k, q_rot, k_rep, v_rep, scores, P, o_in, a, h_mid, x2, gate, up, prod, m))
        h = h_mid + m
    hf = base.norm(h)
    logits = model.lm_head(hf)

    # seed
    rows = torch.arange(B, device=device)
    position = _per_sample(position, B, device) % T
    target = logits[rows, position].argmax(-1) if target is None else _per_sample(target, B, device)
    reference = model(input_ids=input_ids, attention_mask=attention_mask).logits
    _check_logits(logits[rows, position], reference[rows, position], "Llama forward")
    R = torch.zeros_like(logits)
    R[rows, position, target] = logits[rows, position, target]

    # backward
    R_h = epsilon_linear(hf, model.lm_head, R, eps["linear"])  # final RMSNorm: identity
    terms = []
    for layer, s in zip(reversed(base.layers), reversed(saved), strict=True):
        h_in, x1, q, k, q_rot, k_rep, v_rep, scores, P, o_in, a, h_mid, x2, gate, up, prod, m = s
        attn, mlp = layer.self_attn, layer.mlp
        # MLP: down_proj → silu(g)·u (R/2 each, SiLU identity) → gate_proj, up_proj → RMSNorm (identity)
        R_mid, R_m = add_rule(h_mid, m, R_h, eps["add"])
        R_prod = epsilon_linear(prod, mlp.down_proj, R_m, eps["linear"])
        R_x2 = epsilon_linear(x2, mlp.gate_proj, R_prod / 2, eps["linear"])
        R_x2 = R_x2 + epsilon_linear(x2, mlp.up_proj, R_prod / 2, eps["linear"])
        R_mid = R_mid + R_x2
        # attention: o_proj → A·v → softmax (×1/√d passes) → q·kᵀ → GQA copies add → rotary → projections
        R_in, R_a = add_rule(h_in, a, R_mid, eps["add"])
        R_o = epsilon_linear(o_in, attn.o_proj, R_a, eps["linear"])
        R_out = R_o.view(B, T, -1, attn.head_dim).transpose(1, 2)
        R_P, R_vrep = uniform_matmul(P, v_rep, R_out, eps["av"])
        R_scores = softmax_rule(scores, P, R_P)
        R_qrot, R_kT = uniform_matmul(q_rot, k_rep.transpose(-2, -1), R_scores, eps["qk"])
        kv, groups = k.shape[1], q.shape[1] // k.shape[1]
        R_krot = R_kT.transpose(-2, -1).reshape(B, kv, groups, T, -1).sum(2)
        R_v = R_vrep.reshape(B, kv, groups, T, -1).sum(2)
        R_q, R_cos_q, R_sin_q = rotary_rule(q, cos, sin, R_qrot, eps["add"])
        R_k, R_cos_k, R_sin_k = rotary_rule(k, cos, sin, R_krot, eps["add"])
        R_cos = R_cos_q.sum(1) + R_cos_k.sum(1)  # [B, T, d]: heads summed, q and k added before |·|
        R_sin = R_sin_q.sum(1) + R_sin_k.sum(1)
        terms.append(torch.stack([R_cos.sum(-1), R_sin.sum(-1)]))
        R_x1 = epsilon_linear(x1, attn.q_proj, R_q.transpose(1, 2).reshape(B, T, -1), eps["linear"])
        R_x1 = R_x1 + epsilon_linear(x1, attn.k_proj, R_k.transpose(1, 2).reshape(B, T, -1), eps["linear"])
        R_x1 = R_x1 + epsilon_linear(x1, attn.v_proj, R_v.transpose(1, 2).reshape(B, T, -1), eps["linear"])
        R_h = R_in + R_x1  # input RMSNorm: identity
    terms = torch.stack(terms[::-1])  # [L, 2, B, T], layer order
    return {
        "tokens": R_h.sum(-1),
        "positional": terms.abs().sum((0, 1)),
        "embeddings": R_h,
        "positional_terms": terms,
        "positional_signed": terms.sum((0, 1)),
        "seed": R.sum((1, 2)),
        "target": target,
        "logits": logits,
    }
