"""One input of a corpus, as `explain_many` and the Ray job take it: a text, a token dict or an image tensor made a
dict of tensors with a batch dim of one; one target per input; an input's length, to group similar ones."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ..errors import InputError


def as_item(value: Any, tokenizer: Any, index: int) -> dict[str, torch.Tensor]:
    """One input as a dict of tensors with a batch dim of one."""
    if isinstance(value, str):
        if tokenizer is None:
            raise InputError(f"input {index} is text: pass tokenizer= to explain texts")
        return dict(tokenizer(value, return_tensors="pt"))
    if isinstance(value, torch.Tensor):
        if value.dim() < 2:
            raise InputError(
                f"input {index}: an image tensor needs [C, H, W] or [1, C, H, W], got {tuple(value.shape)}"
            )
        return {"": value if value.dim() == 4 and value.shape[0] == 1 else value.unsqueeze(0)}
    if isinstance(value, Mapping):
        item = {}
        for key, tensor in value.items():
            tensor = torch.as_tensor(tensor)
            item[str(key)] = tensor.unsqueeze(0) if tensor.dim() == 1 else tensor
        if any(t.dim() < 2 or t.shape[0] != 1 for t in item.values()):
            raise InputError(f"input {index}: token dicts hold one sample each ([T] or [1, T] tensors)")
        return item
    raise InputError(f"input {index} is a {type(value).__name__}: pass texts, dicts of token tensors or image tensors")


def targets_per_input(target: Any, count: int) -> list[Any]:
    """One target per input: a list or 1-D tensor gives them one by one, anything else is shared."""
    if isinstance(target, list) or (isinstance(target, torch.Tensor) and target.dim() == 1):
        values = [int(t) if isinstance(t, torch.Tensor) else t for t in target]
        if len(values) != count:
            raise InputError(f"target has {len(values)} entries for {count} inputs: give one per input, or one for all")
        return values
    return [target] * count


def item_length(item: dict[str, torch.Tensor]) -> tuple:
    return tuple(t.shape[1:] for t in item.values())
