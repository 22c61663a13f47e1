"""MambaLRP computed a second way: gradient × input of a modified forward, with autograd.

MambaLRP (Rezaei Jafari et al., NeurIPS 2024, and its code, which detaches): with eps → 0 the relevance of a Mamba
model is gradient × input of the model with Δ, Ā, B̄ and C detached in every scan, SiLU given the identity rule
(x · σ(x) with σ(x) detached), the gate product's gradient halved and normalisation scales detached. The scans
here are written from the papers' recurrences, step by step (h_t = exp(Δ_t A) h_{t−1} + Δ_t B_t x_t,
y_t = C_t h_t + D x_t), not copied from transformers' chunked or looped code; attention and MLP layers of hybrids
get AttnLRP's modifications (`attnlrp_reference.py`). lrpgraph itself never uses autograd."""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F
from attnlrp_reference import modified_model as attnlrp_model
from attnlrp_reference import scaled_gradient
from torch import nn


def _silu(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(x).detach()


def _gated(y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """y ⊙ SiLU(z), half of the relevance to each factor."""
    return scaled_gradient(y, 0.5) * scaled_gradient(_silu(z), 0.5)


def _causal_conv(conv: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    """[B, T, C] → [B, T, C]: the depthwise causal convolution, then SiLU (identity rule)."""
    length = x.shape[1]
    return _silu(conv(x.transpose(1, 2))[..., :length].transpose(1, 2))


def _mamba_mixer(self, hidden_states, *args, **kwargs):
    """Mamba-1: selective scan over channels D with state size N."""
    rank, n = self.time_step_rank, self.ssm_state_size
    x, z = self.in_proj(hidden_states).chunk(2, dim=-1)
    x = _causal_conv(self.conv1d, x)
    dt, b, c = torch.split(self.x_proj(x), [rank, n, n], dim=-1)
    dt = F.softplus(self.dt_proj(dt)).detach()  # [B, T, D]
    b, c = b.detach(), c.detach()
    a = -torch.exp(self.A_log.to(x.dtype))  # [D, N]
    h = x.new_zeros(x.shape[0], x.shape[2], n)
    ys = []
    for t in range(x.shape[1]):
        h = torch.exp(dt[:, t, :, None] * a) * h + (dt[:, t, :, None] * b[:, t, None, :]) * x[:, t, :, None]
        ys.append((h * c[:, t, None, :]).sum(-1) + self.D * x[:, t])
    return self.out_proj(_gated(torch.stack(ys, 1), z))


def _mamba2_mixer(self, hidden_states, *args, **kwargs):
    """Mamba-2: a scalar decay per head, heads of size P, B and C shared by the heads of a group."""
    heads, p, n, groups = self.num_heads, self.head_dim, self.ssm_state_size, self.n_groups
    z, xbc, dt = self.in_proj(hidden_states).split([self.intermediate_size, self.conv_dim, heads], dim=-1)
    x, b, c = _causal_conv(self.conv1d, xbc).split([self.intermediate_size, groups * n, groups * n], dim=-1)
    batch, length = x.shape[:2]
    dt = F.softplus(dt + self.dt_bias).clamp(*self.time_step_limit).detach()  # [B, T, H]
    b, c = (v.reshape(batch, length, groups, n).repeat_interleave(heads // groups, 2).detach() for v in (b, c))
    a = -torch.exp(self.A_log.to(x.dtype))  # [H]
    x = x.reshape(batch, length, heads, p)
    h = x.new_zeros(batch, heads, p, n)
    ys = []
    for t in range(length):
        decay = torch.exp(dt[:, t] * a)[:, :, None, None]
        h = decay * h + (dt[:, t, :, None, None] * b[:, t, :, None, :]) * x[:, t, :, :, None]
        ys.append((h * c[:, t, :, None, :]).sum(-1) + self.D[:, None] * x[:, t])
    y = _gated(torch.stack(ys, 1).reshape(batch, length, -1), z)
    norm = self.norm  # the gated norm normalises groups of `group_size` channels (newer transformers), or all
    grouped = y.reshape(batch, length, -1, getattr(norm, "group_size", y.shape[-1]))
    grouped = grouped * torch.rsqrt(grouped.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon).detach()
    return self.out_proj(norm.weight * grouped.reshape(batch, length, -1))


MIXERS = {"MambaMixer": _mamba_mixer, "Mamba2Mixer": _mamba2_mixer, "BambaMixer": _mamba2_mixer}


def modified_model(model: nn.Module) -> nn.Module:
    """A copy of `model` whose plain gradient × input is MambaLRP's relevance."""
    ref = attnlrp_model(model, "attnlrp")
    for module in ref.modules():
        mixer = MIXERS.get(type(module).__name__)
        if mixer is not None:
            module.forward = types.MethodType(mixer, module)
    return ref


def relevance(model: nn.Module, ids: torch.Tensor, target: int) -> torch.Tensor:
    """Token relevance [B, T] for the logit of `target` at the last position: (gradient × input) at the embeddings."""
    ref = modified_model(model)
    embeds = ref.get_input_embeddings()(ids).detach().requires_grad_()
    ref(inputs_embeds=embeds).logits[:, -1, target].sum().backward()
    return (embeds.grad * embeds).sum(-1).detach()
