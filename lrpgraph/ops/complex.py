"""Complex tensors in real terms. A complex tensor's relevance is complex too: its real part is the relevance
of the real components, its imaginary part that of the imaginary ones, and conservation counts both.

view_as_complex, view_as_real, real and imag move values (exact re-indexing). Multiplying by a constant
(rotary frequencies in Llama 4 or DeepSeek) and the discrete Fourier transforms (FNet) are real-linear
maps y = A x: they get the rules of layers — epsilon by default — through the real view of A's adjoint,
A^H s (for a DFT, conj(DFT(conj(s))) with the same normalisation); so do rfft and irfft, between real signals and
their non-negative frequencies. Conjugation moves relevance as it is (reindex.py).
"""

from __future__ import annotations

import functools
import math
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
    """A complex tensor's real components (a conjugated view resolved first), a real one as it is."""
    return torch.view_as_real(t.resolve_conj()) if t.is_complex() else t


class RealView(LinearMap):
    """A real-linear map of a complex (or real) x to a complex (or real) y seen on real views: adjoint(s) = view of
    A^H s, `adjoint` taking s in y's own type."""

    def __init__(self, x: torch.Tensor, adjoint: Callable[[torch.Tensor], torch.Tensor], complex_output: bool):
        super().__init__(real_view(x).shape)
        self.complex_input, self.complex_output, self._adjoint = x.is_complex(), complex_output, adjoint

    def adjoint(self, s, weight=None):
        g = self._adjoint(torch.view_as_complex(s.contiguous()) if self.complex_output else s)
        return torch.view_as_real(g) if self.complex_input else g.real


def run_real_linear(call, data: str, adjoint: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Run the class's kernel on real views; the result back in the data argument's own type."""
    x, complex_output = call.args[data], call.out.is_complex()
    R = call.R
    if complex_output and not R.is_complex():
        R = torch.complex(R, torch.zeros_like(R))
    r = call.run_on(real_view(R), real_view(x), RealView(x, adjoint, complex_output), real_view(call.out))
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


class RealFourierAdapter(Adapter):
    """rfft (real x of length L, zero-padded or cropped to n, → its n//2 + 1 non-negative frequencies) and irfft
    (the first n//2 + 1 of m frequencies → a real signal of length n), along one dim: real-linear maps.

    With c the forward scale of `norm` (1, 1/√n or 1/n for "backward", "ortho", "forward"; the inverse's
    1/n, 1/√n or 1): rfft's adjoint is c·Re(F^H s) padded back to n frequencies and cropped (or zero-padded)
    to L; irfft's, c·w_k·rfft(s)_k with w_k = 2 for the frequencies that stand for a conjugate pair, 1 for the
    zero frequency and (n even) the Nyquist one, and 0 past n//2 + 1.
    """

    def __init__(self, inverse: bool):
        super().__init__(COMPLEX)
        self.inverse = inverse

    def apply(self, call):
        x = call.args["self"]
        dim = call.args.get("dim", -1) % x.dim()
        norm = call.args.get("norm") or "backward"
        length = x.shape[dim]
        n = call.args.get("n") or (2 * (length - 1) if self.inverse else length)
        transposed = _irfft_adjoint if self.inverse else _rfft_adjoint
        adjoint = functools.partial(transposed, length=length, n=n, dim=dim, norm=norm)
        return {"self": run_real_linear(call, "self", adjoint)}


def _scale(n: int, norm: str, inverse: bool) -> float:
    """The factor `norm` puts on the unnormalised transform, forward (fft, rfft) or inverse (ifft, irfft)."""
    divide = {"backward": inverse, "forward": not inverse}.get(norm)
    return 1 / math.sqrt(n) if divide is None else (1 / n if divide else 1.0)


def _resized(t: torch.Tensor, dim: int, size: int) -> torch.Tensor:
    """t cropped or zero-padded to `size` along dim."""
    if t.shape[dim] >= size:
        return t.narrow(dim, 0, size)
    shape = list(t.shape)
    shape[dim] = size - t.shape[dim]
    return torch.cat([t, t.new_zeros(shape)], dim)


def _rfft_adjoint(s: torch.Tensor, length: int, n: int, dim: int, norm: str) -> torch.Tensor:
    full = _resized(s, dim, n)  # the negative frequencies rfft drops: zero
    back = torch.conj(torch.fft.fft(torch.conj(full), dim=dim)) * _scale(n, norm, inverse=False)
    return _resized(back.real, dim, length)


def _irfft_adjoint(s: torch.Tensor, length: int, n: int, dim: int, norm: str) -> torch.Tensor:
    spectrum = torch.fft.rfft(s, dim=dim) * _scale(n, norm, inverse=True)
    weights = torch.full((spectrum.shape[dim],), 2.0, dtype=s.dtype, device=s.device)
    weights[0] = 1.0
    if n % 2 == 0:
        weights[-1] = 1.0
    shape = [1] * spectrum.dim()
    shape[dim] = -1
    return _resized(spectrum * weights.view(shape), dim, length)


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
register_ops(RealFourierAdapter(inverse=False), aten.fft_rfft.default)
register_ops(RealFourierAdapter(inverse=True), aten.fft_irfft.default)
