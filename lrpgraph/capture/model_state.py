"""Guarding the user's model: put it in eval mode for a call and restore exactly what it was."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def evaluation_mode(model: torch.nn.Module) -> Iterator[None]:
    """Run the body with every submodule in eval mode, then restore each module's own flag."""
    flags = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        yield
    finally:
        for module, training in flags:
            module.training = training
