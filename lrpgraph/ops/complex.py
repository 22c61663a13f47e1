"""Complex tensors in real terms. A complex tensor's relevance is complex too: its real part is the relevance
of the real components, its imaginary part that of the imaginary ones, and conservation counts both.

view_as_complex, view_as_real, real and imag move values (exact re-indexing). Multiplying by a constant
(rotary frequencies in Llama 4 or DeepSeek) and the discrete Fourier transforms (FNet) are real-linear
maps y = A x: they get the rules of layers — epsilon by default — through the real view of A's adjoint,
A^H s (for a DFT, conj(DFT(conj(s))) with the same normalisation).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .adapter import Adapter, is_tensor
from .gradient import Replay, delta, form, share_of, stabilized
from .linear_maps import LinearMap
from .registry import declare
from .reindex import ReindexAdapter
from .table import register_ops
from .tensors import unbroadcast

aten = torch.ops.aten

COMPLEX = declare("complex_linear", absorbs="rules")  # its kernels: the layer rules (layer_rules.py)


def real_view(t: torch.Tensor) -> torch.Tensor:
    return torch.view_as_real(t) if t.is_complex() else t


class RealView(LinearMap):
    """A real-linear map of a complex (or real) x seen on real views: adjoint(s) = view of A^H s."""

    def __init__(self, x: torch.Tensor, adjoint: Callable[[torch.Tensor], torch.Tensor]):
        super().__init__(real_view(x).shape)
        self.complex_input, self._adjoint = x.is_complex(), adjoint

    def adjoint(self, s, weight=None):
        g = self._adjoint(torch.view_as_complex(s.contiguous()))
        return torch.view_as_real(g) if self.complex_input else g.real


def run_real_linear(call, data: str, adjoint: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Run the class's kernel on real views; the result back in the data argument's own type."""
    x = call.args[data]
    R = call.R if call.R.is_complex() else torch.complex(call.R, torch.zeros_like(call.R))
    r = call.run_on(real_view(R), real_view(x), RealView(x, adjoint), real_view(call.out))
    return torch.view_as_complex(r.contiguous()) if x.is_complex() else r


def scale_by_constant(call, data: str, constant: str) -> dict:
    """y = c · f with f constant: A^H s = conj(f) · s, summed back to c's shape."""
    f = call.args[constant]
    shape = call.args[data].shape
    factor = torch.conj(f) if is_tensor(f) else f
    return {data: run_real_linear(call, data, lambda s: unbroadcast(factor * s, shape))}


@form(COMPLEX, "epsilon")
def epsilon_form(call: Replay, *, epsilon: float = 1e-6, sign_aware: bool = True):
    """ρ·y/stab(y) on each real component of a complex output."""
    y, out = call.held(), real_view(call.out.detach())
    scale = share_of(out, stabilized(out, epsilon, sign_aware))
    y_real = real_view(y)
    scaled = y_real.detach() + delta(y_real) * scale
    return torch.view_as_complex(scaled) if y.is_complex() else scaled


class FourierAdapter(Adapter):
    """fft / ifft / fftn / ifftn / fft2 / ifft2 over full spectra (no resizing): A^H s = conj(A conj(s))."""

    def __init__(self, op):
        super().__init__(COMPLEX)
        self.op = op

    def apply(self, call):
        x = call.args["self"]
        sizes = call.args.get("n", call.args.get("s"))
        if sizes is not None and list(torch.Size([sizes] if isinstance(sizes, int) else sizes)) != [
            x.shape[d] for d in _dims(call.args, x.dim())
        ]:
            raise ValueError("a Fourier transform that pads or crops its input has no rule here")
        rest = {k: v for k, v in call.args.items() if k not in ("self", "n", "s")}
        return {"self": run_real_linear(call, "self", lambda s: torch.conj(self.op(torch.conj(s), **rest)))}


def _dims(args: dict, rank: int) -> list[int]:
    dim = args.get("dim")
    if dim is None:
        return list(range(rank))
    return [d % rank for d in ([dim] if isinstance(dim, int) else dim)]


def _as_complex(R, a):
    return {"self": torch.view_as_real(R) if R.is_complex() else torch.stack([R, torch.zeros_like(R)], -1)}


def _as_real(R, a):
    return {"self": torch.view_as_complex(R.contiguous())}


def _real(R, a):
    return {"self": torch.complex(R, torch.zeros_like(R))}


def _imag(R, a):
    return {"self": torch.complex(torch.zeros_like(R), R)}


register_ops(ReindexAdapter(_as_complex), aten.view_as_complex.default)
register_ops(ReindexAdapter(_as_real), aten.view_as_real.default)
register_ops(ReindexAdapter(_real), aten.real.default)
register_ops(ReindexAdapter(_imag), aten.imag.default)
for _op in (
    aten.fft_fft.default,
    aten.fft_ifft.default,
    aten.fft_fftn.default,
    aten.fft_ifftn.default,
    aten.fft_fft2.default,
    aten.fft_ifft2.default,
):
    register_ops(FourierAdapter(_op), _op)
