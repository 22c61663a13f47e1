"""Recurrences traced as one op: `lrpgraph::linear_scan`, and the model code that is traced through it.

A loop over tokens in a model's Python code (a state-space scan h_t = Ā_t·h_{t−1} + B̄_t·u_t written as
`for t in range(seq_len)`) unrolls under torch.export into T copies of its step: the trace grows with T, fixes
the sequence length (one trace per length) and takes seconds per hundred tokens. `linear_scan(a, b, dim)` is that
recurrence as one op (h_0 = b_0), with a symbolic length. While lrpgraph traces, the selective-scan functions of
transformers' Mamba-1 family (`SUBSTITUTED`) are replaced by the same computation written with it — only in the
tracing thread, and only where the function computes what the replacement computes (`agrees`; otherwise the loop
is traced as written, which gives the same relevance, slowly). The model's modules are never touched.
"""

from __future__ import annotations

import functools
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F


@torch.library.custom_op("lrpgraph::linear_scan", mutates_args=())
def linear_scan(a: torch.Tensor, b: torch.Tensor, dim: int) -> torch.Tensor:
    """All states of h_t = a_t·h_{t−1} + b_t along `dim` (h_{−1} = 0), a and b of one shape."""
    if a.shape != b.shape:
        raise ValueError(f"linear_scan: a {tuple(a.shape)} and b {tuple(b.shape)} must have one shape")
    dtype = torch.result_type(a, b)
    states = []
    h = torch.zeros_like(b.select(dim, 0), dtype=dtype)
    for t in range(b.shape[dim]):
        h = a.select(dim, t) * h + b.select(dim, t)
        states.append(h)
    return torch.stack(states, dim) if states else torch.empty_like(b, dtype=dtype)


SCAN_OP = torch.ops.lrpgraph.linear_scan.default


@linear_scan.register_fake
def _(a: torch.Tensor, b: torch.Tensor, dim: int) -> torch.Tensor:
    return b.new_empty(b.shape, dtype=torch.result_type(a, b))


def _keep(ctx: Any, inputs: tuple, output: torch.Tensor) -> None:
    ctx.save_for_backward(inputs[0], output)
    ctx.dim, ctx.b_dtype = inputs[2], inputs[1].dtype


def _backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
    """The adjoint recurrence, backwards: g_t = grad_t + a_{t+1}·g_{t+1}; ∂/∂b_t = g_t, ∂/∂a_t = g_t·h_{t−1}."""
    a, h = ctx.saved_tensors
    dim = ctx.dim
    steps = grad.shape[dim]
    grad_a, grad_b = [None] * steps, [None] * steps
    carry = torch.zeros_like(grad.select(dim, 0))
    for t in reversed(range(steps)):
        g = grad.select(dim, t) + carry
        grad_b[t] = g
        grad_a[t] = g * h.select(dim, t - 1) if t > 0 else torch.zeros_like(g)
        carry = g * a.select(dim, t)
    return torch.stack(grad_a, dim).to(a.dtype), torch.stack(grad_b, dim).to(ctx.b_dtype), None


linear_scan.register_autograd(_backward, setup_context=_keep)


def selective_scan(
    hidden_states: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    **kwargs: Any,
) -> Any:
    """transformers' `mamba_selective_scan` (5.25), its loop over tokens as one `linear_scan`."""
    input_dtype = hidden_states.dtype
    if delta_bias is not None:
        dt = dt + delta_bias.to(dt.dtype)[..., None]
    if delta_softplus:
        dt = F.softplus(dt)
    B = B.transpose(1, 2)
    C = C.transpose(1, 2)
    discrete_A = torch.exp(A[None, :, None, :] * dt[:, :, :, None])
    discrete_B = dt[:, :, :, None] * B[:, None, :, :].float()
    deltaB_u = discrete_B * hidden_states[:, :, :, None].float()
    states = SCAN_OP(discrete_A, deltaB_u, 2)
    scan_output = torch.matmul(states.transpose(1, 2).to(input_dtype), C.unsqueeze(-1))
    scan_output = scan_output.squeeze(-1).transpose(1, 2)
    if D is not None:
        scan_output = scan_output + hidden_states * D[None, :, None]
    if z is not None:
        scan_output = scan_output * F.silu(z)
    if return_last_state:
        return scan_output, states[:, :, -1]
    return scan_output


# module → (the function replaced while lrpgraph traces, its replacement)
SUBSTITUTED: dict[str, tuple[str, Callable[..., Any]]] = {
    f"transformers.models.{name}.modeling_{name}": ("mamba_selective_scan", selective_scan)
    for name in ("mamba", "falcon_mamba", "jamba", "zamba")
}

_TRACING = threading.local()


@functools.cache
def agrees(original: Callable[..., Any], replacement: Callable[..., Any]) -> bool:
    """Whether the replacement computes what the function computes, outputs and last state, on a small random
    scan (3 steps, softplus, bias, skip and gate): a function transformers has rewritten is traced as written."""
    g = torch.Generator().manual_seed(0)
    batch, channels, steps, state = 2, 3, 3, 2
    u, dt, z = (torch.randn(batch, channels, steps, generator=g, dtype=torch.float64) for _ in range(3))
    A = -torch.rand(channels, state, generator=g, dtype=torch.float64)
    B, C = (torch.randn(batch, state, steps, generator=g, dtype=torch.float64) for _ in range(2))
    D, bias = (torch.randn(channels, generator=g, dtype=torch.float64) for _ in range(2))
    call = dict(D=D, z=z, delta_bias=bias, delta_softplus=True, return_last_state=True)
    try:
        with torch.no_grad():
            expected, got = original(u, dt, A, B, C, **call), replacement(u, dt, A, B, C, **call)
        return all(torch.allclose(e, o, rtol=1e-10, atol=1e-12) for e, o in zip(expected, got, strict=True))
    except Exception:  # a different signature or result: not the function reproduced here
        return False


def substitutions() -> list[tuple[Any, str]]:
    """(module, function name) of every loaded function `scans_as_ops` replaces (see `agrees`)."""
    found = []
    for module_name, (name, replacement) in SUBSTITUTED.items():
        fn = getattr(sys.modules.get(module_name), name, None)
        if fn is not None and agrees(fn, replacement):
            found.append((sys.modules[module_name], name))
    return found


@contextmanager
def scans_as_ops() -> Iterator[None]:
    """While lrpgraph traces in this thread, the functions of `substitutions()` compute through `linear_scan`;
    every other caller (another thread) reaches the function as it was. Callers hold the export lock."""
    replaced = []
    for module, name in substitutions():
        original = getattr(module, name)
        setattr(module, name, _dispatching(original, SUBSTITUTED[module.__name__][1]))
        replaced.append((module, name, original))
    _TRACING.on = True
    try:
        yield
    finally:
        _TRACING.on = False
        for module, name, original in replaced:
            setattr(module, name, original)


def _dispatching(original: Callable[..., Any], replacement: Callable[..., Any]) -> Callable[..., Any]:
    def scan(*args: Any, **kwargs: Any) -> Any:
        return replacement(*args, **kwargs) if getattr(_TRACING, "on", False) else original(*args, **kwargs)

    return scan
