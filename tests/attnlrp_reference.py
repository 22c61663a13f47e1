"""AttnLRP and CP-LRP computed a second way: gradient × input of a modified forward, with autograd.

../shared/RULES.md (beside this repository, not in it), "identities": with eps → 0, AttnLRP on a transformer is
gradient × input of the same model with norm scales detached, q and k gradients ÷4 and v ÷2 (the two uniform matmul
rules), each gate product's gradient halved, and pointwise nonlinearities given the identity rule (local gradient
f(x)/x). CP-LRP detaches q, k and the gate instead. The modifications are made here, in the test, by patching a deep
copy of a HuggingFace model — lrpgraph itself never uses autograd."""

from __future__ import annotations

import copy
import types

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask


def scaled_gradient(t: torch.Tensor, factor: float) -> torch.Tensor:
    """Same value, gradient multiplied by `factor`."""
    return t * factor + (t * (1 - factor)).detach()


def _attention(method: str):
    def attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
        if method == "attnlrp":
            query, key, value = scaled_gradient(query, 0.25), scaled_gradient(key, 0.25), scaled_gradient(value, 0.5)
        else:
            query, key = query.detach(), key.detach()
        groups = query.shape[1] // key.shape[1]
        key = key.repeat_interleave(groups, dim=1)
        value = value.repeat_interleave(groups, dim=1)
        scores = (query * scaling) @ key.transpose(2, 3)
        if attention_mask is None and getattr(module, "is_causal", False):  # mask skipped for SDPA's is_causal
            length = scores.shape[-1]
            attention_mask = torch.ones(length, length, dtype=torch.bool, device=scores.device).tril()
        if attention_mask is not None:
            if attention_mask.dtype == torch.bool:
                scores = scores.masked_fill(~attention_mask, float("-inf"))
            else:
                scores = scores + attention_mask
        fully_masked = torch.isinf(scores).all(-1, keepdim=True)  # padded query rows attend to nothing
        probs = torch.softmax(scores.masked_fill(fully_masked, 0.0), dim=-1) * ~fully_masked
        if method == "cp-lrp":
            probs = probs.detach()
        return (probs @ value).transpose(1, 2).contiguous(), probs

    return attention


for _method in ("attnlrp", "cp-lrp"):
    AttentionInterface.register(f"reference-{_method}", _attention(_method))
    AttentionMaskInterface.register(f"reference-{_method}", sdpa_mask)


class IdentityRule(nn.Module):
    """A pointwise nonlinearity whose local gradient is f(x)/x: relevance passes unchanged."""

    def __init__(self, act: nn.Module):
        super().__init__()
        self.act = act

    def forward(self, x):
        y = self.act(x)
        return x * (y / x).detach()


def _frozen_layer_norm(self, x):
    mean = x.mean(-1, keepdim=True)
    std = torch.sqrt(((x - mean) ** 2).mean(-1, keepdim=True) + self.eps).detach()
    y = (x - mean) / std
    return y * self.weight + self.bias if self.weight is not None else y


def _frozen_rms_norm(self, x):
    h = x.to(torch.float32)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.variance_epsilon).detach()
    return self.weight * h.to(x.dtype)


def _gated_mlp(method: str):
    def forward(self, x):
        gate, up = self.act_fn(self.gate_proj(x)), self.up_proj(x)
        if method == "attnlrp":
            gate, up = scaled_gradient(gate, 0.5), scaled_gradient(up, 0.5)
        else:
            gate = gate.detach()
        return self.down_proj(gate * up)

    return forward


ACTIVATIONS = (nn.GELU, nn.SiLU, nn.Tanh, nn.ReLU, nn.Sigmoid)


def modified_model(model: nn.Module, method: str) -> nn.Module:
    """A copy of `model` whose plain gradient × input is the method's relevance."""
    ref = copy.deepcopy(model)
    ref.set_attn_implementation(f"reference-{method}")
    for module in list(ref.modules()):
        for child_name, child in list(module.named_children()):
            is_act = isinstance(child, ACTIVATIONS) or type(child).__module__ == "transformers.activations"
            if is_act and not isinstance(module, IdentityRule):
                setattr(module, child_name, IdentityRule(child))
        if isinstance(module, nn.LayerNorm):
            module.forward = types.MethodType(_frozen_layer_norm, module)
        elif type(module).__name__.endswith("RMSNorm"):
            module.forward = types.MethodType(_frozen_rms_norm, module)
        elif type(module).__name__ in ("LlamaMLP", "Qwen2MLP", "BambaMLP"):
            module.forward = types.MethodType(_gated_mlp(method), module)
    return ref


def relevance(
    model: nn.Module, inputs: dict, target: torch.Tensor, method: str, positions: torch.Tensor
) -> torch.Tensor:
    """Token relevance [B, T]: (gradient × input) at the input embeddings, summed over the hidden dim."""
    ref = modified_model(model, method)
    ids = inputs["input_ids"]
    embeds = ref.get_input_embeddings()(ids).detach().requires_grad_()
    kwargs = {k: v for k, v in inputs.items() if k != "input_ids"}
    logits = ref(inputs_embeds=embeds, **kwargs).logits
    rows = torch.arange(len(ids))
    picked = logits[rows, positions, target] if logits.dim() == 3 else logits[rows, target]
    picked.sum().backward()
    return (embeds.grad * embeds).sum(-1).detach()
