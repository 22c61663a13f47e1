"""Snapshot everything about a model a call could change, to assert it did not."""

from __future__ import annotations

import torch

HOOK_DICTS = (
    "_forward_hooks",
    "_forward_pre_hooks",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_state_dict_hooks",
    "_load_state_dict_pre_hooks",
)


def snapshot(model: torch.nn.Module) -> dict:
    return {
        "params": {n: (id(p), p.detach().clone(), p.requires_grad) for n, p in model.named_parameters()},
        "grads": {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()},
        "buffers": {n: (id(b), b.clone()) for n, b in model.named_buffers()},
        "training": {n: m.training for n, m in model.named_modules()},
        "hooks": {n: tuple(tuple(getattr(m, d, {}).keys()) for d in HOOK_DICTS) for n, m in model.named_modules()},
        "modules": [(n, id(m)) for n, m in model.named_modules()],
    }


def assert_unchanged(before: dict, model: torch.nn.Module) -> None:
    after = snapshot(model)
    assert before["modules"] == after["modules"]
    assert before["training"] == after["training"]
    assert before["hooks"] == after["hooks"]
    for name, (pid, value, requires_grad) in before["params"].items():
        aid, avalue, arg = after["params"][name]
        assert pid == aid and requires_grad == arg and torch.equal(value, avalue), name
    for name, grad in before["grads"].items():
        other = after["grads"][name]
        assert (grad is None and other is None) or torch.equal(grad, other), name
    for name, (bid, value) in before["buffers"].items():
        aid, avalue = after["buffers"][name]
        assert bid == aid and torch.equal(value, avalue), name
