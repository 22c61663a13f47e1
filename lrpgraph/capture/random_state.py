"""The random generators' states (CPU, and every CUDA device in use): a forward that draws random numbers (a random
mask, sampled keys) draws the same values again from the same state."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

State = tuple[torch.Tensor, list[torch.Tensor]]


def random_state() -> State:
    """The CPU generator's state and each initialised CUDA device's."""
    return torch.get_rng_state(), torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else []


def set_random_state(state: State) -> None:
    cpu, cuda = state
    torch.set_rng_state(cpu)
    if cuda:
        torch.cuda.set_rng_state_all(cuda)


@contextmanager
def random_state_kept() -> Iterator[None]:
    """Whatever runs inside draws from the generators as they are, which are then put back: recording a call that
    draws leaves the draws to the forward that follows (the same values), as one call of the model would."""
    state = random_state()
    try:
        yield
    finally:
        set_random_state(state)
