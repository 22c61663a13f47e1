"""Re-indexing ops (views, permutes, slices, cats, gathers, casts, …): relevance moves exactly as values did.

The rule is the op's adjoint: a value copied to several places collects the relevance of every
copy, a value dropped (sliced away, masked) passes none, so relevance is conserved. Each op has
an explicit adjoint; rarer pure re-indexing ops use `traced_adjoint`, which runs the op on a
tensor of element indices to learn where each output element came from.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable

import torch

from ..capture.graph import float_node
from .adapter import Adapter, with_marks
from .gradient import Replay, form
from .registry import declare, rule
from .table import Facts, register_ops
from .tensors import laid_out_as, unbroadcast

aten = torch.ops.aten
Adjoint = Callable[[torch.Tensor, dict], dict]

REINDEX = declare("reindex", exact=True)


@rule(REINDEX, "exact", default=True)
def exact(R, adjoint, out):
    """Relevance moves back exactly as the values moved forward (the op's adjoint)."""
    return adjoint(R)


@form(REINDEX, "exact")
def exact_form(call: Replay):
    """Values moved forward, gradients move back with them. Relevant ids used as addresses (the indices of an
    index op) are read as the ids they are, not as their shadows; a cast of relevant ids keeps their shadow's
    float dtype, which carries the gradient (an integer shadow would drop it)."""
    addresses = {name: call.ids[name] for name in ("indices", "index") if name in call.ids}
    shadow = call.get("self")
    if call.integer and call.get("dtype") is not None and isinstance(shadow, torch.Tensor):
        addresses["dtype"] = shadow.dtype
    if call.op is aten.view.default:  # the same values as a reshape; the replay's tensors may be laid out otherwise
        args = {"self": call.args["self"], "shape": call.args["size"]}
        call = dataclasses.replace(call, op=aten.reshape.default, args=args)
    return call.held(replace=addresses)


class ReindexAdapter(Adapter):
    """`adjoint(R, args)` — or `adjoint(R, args, out)` for ops whose output says where values went."""

    def __init__(
        self,
        adjoint: Adjoint,
        always: tuple[str, ...] = (),
        reads_output: bool = False,
        conserving: bool = True,
        shape_only: tuple[str, ...] = (),
        lead_free: bool = False,
    ):
        super().__init__(REINDEX)
        self.adjoint, self.always, self.reads_output = adjoint, always, reads_output
        self.facts = Facts(moves_values=True, shape_only=shape_only)
        self.lead_free = lead_free  # the adjoint works on R with leading relevance maps as it is
        self.conserving = conserving  # False where outputs can come from constants (padding, filling, masking)

    def batched(self, op_class):
        return self.lead_free

    def needs(self, op_class, kernel, args, relevant):
        names, out = super().needs(op_class, kernel, args, relevant)
        return names, out or self.reads_output

    def conserves(self, args, relevant):
        """All it receives moves on when the op copies only values and every float operand is relevant."""
        return self.conserving and all(
            mark is not False
            for name, value in args.items()
            for v, mark in with_marks(value, relevant.get(name))
            if float_node(v)
        )

    def apply(self, call):
        if self.reads_output:
            return call.run(lambda r: self.adjoint(r, call.args, call.out), call.out)
        return call.run(lambda r: self.adjoint(r, call.args), call.out)


def _zeros(R: torch.Tensor, shape) -> torch.Tensor:
    return R.new_zeros(shape)


def _reshape(R, a):
    return {"self": R.reshape(a["self"].shape)}


def _expand(R, a):
    return {"self": unbroadcast(R, a["self"].shape)}


def _permute(R, a):
    dims = [d % R.dim() for d in a["dims"]]
    inverse = [0] * len(dims)
    for i, d in enumerate(dims):
        inverse[d] = i
    return {"self": R.permute(inverse)}


def _transpose(R, a):
    return {"self": R.transpose(a["dim0"], a["dim1"])}


def _t(R, a):
    return {"self": R.t() if R.dim() == 2 else R}


def _movedim(R, a):
    return {"self": R.movedim(a["destination"], a["source"])}


def _bounds(a, size: int) -> tuple[int, int, int]:
    """A slice's start, end and step clamped to the dimension (exported graphs use INT64_MAX for ':')."""
    start, end, step = a.get("start"), a.get("end"), a.get("step", 1) or 1
    start, end, _ = slice(start, end).indices(size)
    return start, max(start, end), step


def _slice(R, a):
    x, dim = a["self"], a["dim"]
    start, end, step = _bounds(a, x.shape[dim])
    return {"self": _zeros(R, x.shape).slice_scatter(R, dim, start, end, step)}


def _narrow(R, a):
    start = a["start"]
    return {"self": _zeros(R, a["self"].shape).slice_scatter(R, a["dim"], start, start + a["length"])}


def _select(R, a):
    return {"self": _zeros(R, a["self"].shape).select_scatter(R, a["dim"], a["index"])}


def _cat(R, a):
    tensors, dim = a["tensors"], a.get("dim", 0) % R.dim()
    sizes = [t.shape[dim] if t.dim() == R.dim() else 0 for t in tensors]  # legacy 1-D empties take none
    chunks = torch.split(R, sizes, dim=dim)
    return {"tensors": [c.reshape(t.shape) for c, t in zip(chunks, tensors, strict=True)]}


def _stack(R, a):
    return {"tensors": list(R.unbind(a.get("dim", 0)))}


def _broadcast_tensors(R, a):
    """Each broadcast copy's relevance summed back over the dims it was broadcast along."""
    return {"tensors": [None if r is None else unbroadcast(r, t.shape) for r, t in zip(R, a["tensors"], strict=True)]}


def _split(R, a):
    x, dim = a["self"], a.get("dim", 0)
    return {"self": _put_back(R, x.shape, dim, _split_sizes(x.shape[dim], a))}


def _put_back(R, shape, dim: int, sizes: list[int]):
    """The pieces' relevance side by side along dim (zeros for pieces that received none)."""
    filled = [r if r is not None else _zeros(_first(R), _with(shape, dim, n)) for r, n in zip(R, sizes, strict=True)]
    return torch.cat(filled, dim=dim)


def _split_sizes(total: int, a) -> list[int]:
    if "split_sizes" in a:
        return list(a["split_sizes"])
    size = a["split_size"]
    return [min(size, total - i) for i in range(0, total, size)]


def _tensor_split(R, a):
    """tensor_split by indices or sections: the pieces' relevance put back side by side along dim."""
    x, dim = a["self"], a.get("dim", 0)
    cut = a.get("indices", a.get("sections", a.get("tensor_indices_or_sections")))
    cut = cut.tolist() if isinstance(cut, torch.Tensor) else cut
    sizes = [len(p) for p in torch.tensor_split(torch.empty(x.shape[dim], device="meta"), cut)]
    return {"self": _put_back(R, x.shape, dim, sizes)}


def _masked_scatter(R, a):
    """masked_scatter(self, mask, source): the masked places hold source's first elements in order (image features
    put into a text's embeddings); the rest hold self's, as masked_fill leaves them."""
    source = a["source"]
    taken = R[a["mask"].expand(R.shape)]
    to_source = _zeros(R, (source.numel(),))
    to_source[: taken.numel()] = taken
    return {**_masked_fill(R, a), "source": to_source.reshape(source.shape)}


def _dropout(R, a):
    if a.get("train"):
        raise ValueError("dropout in training mode: the model is explained in eval mode")
    return {"input": R}


def _chunk(R, a):
    x, dim = a["self"], a.get("dim", 0)
    size = -(-x.shape[dim] // a["chunks"])
    return _split(R, {"self": x, "dim": dim, "split_size": size})


def _numpy_t(R, a):
    return {"self": R.permute(*reversed(range(R.dim())))}


def _unbind(R, a):
    x, dim = a["self"], a.get("dim", 0)
    slot = _with(x.shape, dim, None)
    filled = [r if r is not None else _zeros(_first(R), slot) for r in R]
    return {"self": torch.stack(filled, dim=dim)}


def _with(shape, dim: int, n: int | None) -> list[int]:
    shape = list(shape)
    if n is None:
        del shape[dim]
    else:
        shape[dim] = n
    return shape


def _first(parts):
    return next(p for p in parts if p is not None)


def _getitem(R, a):
    source = a["0"]
    parts: list = [None] * len(source)
    parts[a["1"]] = R
    return {"0": parts}


def index_adjoint(R, a):
    return {"self": aten.index_put(_zeros(R, a["self"].shape), a["indices"], R, True)}


def index_select_adjoint(R, a):
    return {"self": _zeros(R, a["self"].shape).index_add_(a["dim"], a["index"], R)}


def _gather(R, a):
    return {"self": _zeros(R, a["self"].shape).scatter_add_(a["dim"], a["index"], R)}


def _roll(R, a):
    shifts, dims = [-s for s in a["shifts"]], list(a.get("dims") or [])
    if dims:
        return {"self": R.roll(shifts, dims)}
    return {"self": R.reshape(-1).roll(shifts[0]).reshape(R.shape)}


def _flip(R, a):
    return {"self": R.flip(a["dims"])}


def _pad(R, a):
    return {"self": aten.constant_pad_nd(R, [-p for p in a["pad"]], 0.0)}


def _pad_any_mode(R, a):
    if a.get("mode", "constant") == "constant":
        return _pad(R, a)
    return traced_adjoint(aten.pad.default)(R, a)


def _where(R, a):
    cond = a["condition"]
    zero = torch.zeros((), dtype=R.dtype, device=R.device)
    result = {}
    for name, keep in (("self", cond), ("other", ~cond)):
        value = a.get(name)
        if isinstance(value, torch.Tensor):
            result[name] = unbroadcast(torch.where(keep, R, zero), value.shape)
    return result


def _masked_fill(R, a):
    zero = torch.zeros((), dtype=R.dtype, device=R.device)
    return {"self": unbroadcast(torch.where(a["mask"], zero, R), a["self"].shape)}


def _selected_values(R, a, out):
    """topk / sort: values = x gathered at the returned indices along dim."""
    values_R, indices = R[0], out[1]
    return {"self": _zeros(values_R, a["self"].shape).scatter_add_(a.get("dim", -1), indices, values_R)}


def _tril(R, a):
    return {"self": R.tril(a.get("diagonal", 0))}


def _triu(R, a):
    return {"self": R.triu(a.get("diagonal", 0))}


def _slice_scatter(R, a):
    dim = a.get("dim", 0)
    start, end, step = _bounds(a, a["self"].shape[dim])
    src = a["src"]
    return {
        "self": R.slice_scatter(_zeros(R, src.shape), dim, start, end, step),
        "src": aten.slice.Tensor(R, dim, start, end, step).reshape(src.shape),
    }


def _select_scatter(R, a):
    src = a["src"]
    return {
        "self": R.select_scatter(_zeros(R, src.shape), a["dim"], a["index"]),
        "src": R.select(a["dim"], a["index"]).reshape(src.shape),
    }


def _copy(R, a):
    """copy(self, src): the output is src (broadcast) in self's place; what was overwritten gets nothing."""
    return {"src": unbroadcast(R, a["src"].shape)}


def traced_adjoint(op: Callable, data: str = "self") -> Adjoint:
    """Adjoint of a pure re-indexing op learned by running it on element indices (float64: exact to 2**53);
    positions the op fills with zeros (padding) pass nothing."""

    def adjoint(R, a):
        x = a[data]
        ids = torch.arange(1, x.numel() + 1, device=R.device, dtype=torch.float64).reshape(x.shape)
        moved = op(**{**a, data: ids}).round().long().reshape(-1) - 1
        kept = moved >= 0
        flat = _zeros(R, (x.numel(),)).index_add_(0, moved[kept], R.reshape(-1)[kept])
        return {data: flat.reshape(x.shape)}

    return adjoint


# reshapes and broadcasts keep a statistic a statistic (scale_chain); copies hold their input's values
register_ops(
    ReindexAdapter(_reshape),
    aten.view.default,
    aten._unsafe_view.default,
    aten.reshape.default,
    aten.view_copy.default,
    aten.flatten.using_ints,
    aten.unflatten.int,
    aten.squeeze.default,
    aten.squeeze.dim,
    aten.squeeze.dims,
    aten.unsqueeze.default,
    scale_chain=True,
)
register_ops(ReindexAdapter(_reshape), aten.clone.default, copy=True, scale_chain=True)
register_ops(ReindexAdapter(_reshape), aten._to_copy.default, copy=True, cast=True, scale_chain=True)
register_ops(ReindexAdapter(_reshape), aten.contiguous.default, copy=True)
# conjugation negates imaginary components: each keeps its relevance, as a negation does
register_ops(ReindexAdapter(_reshape), aten._conj.default, aten.conj_physical.default)
register_ops(
    ReindexAdapter(_reshape),
    aten.alias.default,
    aten.detach.default,
    aten.lift_fresh_copy.default,
    copy=True,
    alias=True,
    scale_chain=True,
)
register_ops(
    ReindexAdapter(_reshape, shape_only=("other",)), aten.view_as.default, aten.reshape_as.default, aten.type_as.default
)
register_ops(
    ReindexAdapter(_expand), aten.expand.default, aten.expand_copy.default, aten.broadcast_to.default, scale_chain=True
)
register_ops(ReindexAdapter(_expand, shape_only=("other",)), aten.expand_as.default, scale_chain=True)
EXPAND_AS = aten.expand_as.default  # what a pass inserts to broadcast an operand to the shape of its consumer
UNBIND = aten.unbind.int  # what a pass inserts to take every index of a dim at once (`flow/selects.py`)
register_ops(ReindexAdapter(_permute), aten.permute.default, aten.permute_copy.default)
register_ops(ReindexAdapter(_transpose), aten.transpose.int)
register_ops(ReindexAdapter(_t), aten.t.default)
register_ops(ReindexAdapter(_movedim), aten.movedim.int, aten.movedim.intlist)
register_ops(ReindexAdapter(_slice), aten.slice.Tensor, spans=True)
register_ops(ReindexAdapter(_narrow), aten.narrow.default)
register_ops(ReindexAdapter(_select), aten.select.int, picks="index")
register_ops(ReindexAdapter(_cat), aten.cat.default, aten.concat.default, aten.concatenate.default)
register_ops(ReindexAdapter(_stack), aten.stack.default)
register_ops(ReindexAdapter(_split), aten.split.Tensor, aten.split_with_sizes.default, aten.unsafe_split.Tensor)
register_ops(ReindexAdapter(_chunk), aten.chunk.default)
register_ops(
    ReindexAdapter(_tensor_split),
    aten.tensor_split.indices,
    aten.tensor_split.sections,
    aten.tensor_split.tensor_indices_or_sections,
)
register_ops(ReindexAdapter(_masked_scatter, always=("mask",)), aten.masked_scatter.default)
register_ops(ReindexAdapter(_dropout), aten.dropout.default)
register_ops(ReindexAdapter(_numpy_t), aten.numpy_T.default)
register_ops(ReindexAdapter(_unbind), aten.unbind.int)
register_ops(ReindexAdapter(_broadcast_tensors), aten.broadcast_tensors.default)
register_ops(ReindexAdapter(_getitem, lead_free=True), operator.getitem, scale_chain=True)
register_ops(ReindexAdapter(_gather, always=("index",)), aten.gather.default, gather="index")
register_ops(ReindexAdapter(_roll), aten.roll.default)
register_ops(ReindexAdapter(_flip), aten.flip.default)
register_ops(ReindexAdapter(_pad, conserving=False), aten.constant_pad_nd.default)
register_ops(ReindexAdapter(_pad_any_mode, conserving=False), aten.pad.default)
register_ops(ReindexAdapter(_where, always=("condition",)), aten.where.self)
# a scalar side is a constant: what reaches its positions stays there (booked, not passed on)
register_ops(
    ReindexAdapter(_where, always=("condition",), conserving=False), aten.where.ScalarOther, aten.where.ScalarSelf
)
register_ops(
    ReindexAdapter(_masked_fill, always=("mask",), conserving=False), aten.masked_fill.Scalar, aten.masked_fill.Tensor
)
register_ops(
    ReindexAdapter(_selected_values, reads_output=True), aten.topk.default, aten.sort.default, aten.sort.stable
)
register_ops(ReindexAdapter(_tril, conserving=False), aten.tril.default)
register_ops(ReindexAdapter(_triu, conserving=False), aten.triu.default)
register_ops(ReindexAdapter(_slice_scatter), aten.slice_scatter.default)
register_ops(ReindexAdapter(_select_scatter), aten.select_scatter.default)


class CopyAdapter(ReindexAdapter):
    """copy(self, src): torch has no derivative for it, so the replay writes it as src broadcast into self."""

    def replay(self, call, replace, detach=()):
        args = {**call.args, **replace}
        src = args["src"].detach() if "src" in detach else args["src"]
        return src.to(args["self"].dtype).expand(args["self"].shape)

    def with_statistics_held(self, op, args):
        return laid_out_as(args["src"].to(args["self"].dtype).expand(args["self"].shape), args["self"])


register_ops(CopyAdapter(_copy), aten.copy.default)
register_ops(ReindexAdapter(traced_adjoint(aten.im2col.default), conserving=False), aten.im2col.default)


def _as_strided(R, a):
    """as_strided reads its input's memory, so where each output element came from depends on how the input is laid
    out (a non-contiguous view, an offset): element indices are laid out in the same storage positions."""
    x = a["self"]
    span = x.storage_offset() + sum((n - 1) * st for n, st in zip(x.shape, x.stride(), strict=True)) + 1
    storage = torch.zeros(max(span, 1), dtype=torch.float64, device=R.device)
    ids = storage.as_strided(x.shape, x.stride(), x.storage_offset())
    ids.copy_(torch.arange(1, x.numel() + 1, device=R.device, dtype=torch.float64).reshape(x.shape))
    moved = aten.as_strided(ids, a["size"], a["stride"], a.get("storage_offset")).round().long().reshape(-1) - 1
    kept = moved >= 0  # storage outside x (never in a traced graph) passes nothing
    flat = _zeros(R, (x.numel(),)).index_add_(0, moved[kept], R.reshape(-1)[kept])
    return {"self": flat.reshape(x.shape)}


register_ops(ReindexAdapter(_as_strided, always=("self",)), aten.as_strided.default)
for _op in (
    aten.repeat.default,
    aten.unfold.default,
    aten.diagonal.default,
    aten.pixel_shuffle.default,
    aten.pixel_unshuffle.default,
    aten.channel_shuffle.default,
    aten.tile.default,
    aten.repeat_interleave.self_int,
    aten.repeat_interleave.self_Tensor,  # repeats per element (a recorded call's durations: constants)
    aten.upsample_nearest1d.default,
    aten.upsample_nearest2d.default,
    aten.upsample_nearest3d.default,
):
    register_ops(ReindexAdapter(traced_adjoint(_op)), _op)
for _op in (aten.upsample_nearest1d.vec, aten.upsample_nearest2d.vec, aten.upsample_nearest3d.vec):
    register_ops(ReindexAdapter(traced_adjoint(_op, data="input")), _op)


class ShapeOnlyAdapter(Adapter):
    """Ops whose output depends on their tensor arguments' shapes only (zeros_like, new_ones, …): constants."""

    facts = Facts(shape_only=("self",))


register_ops(
    ShapeOnlyAdapter(REINDEX),
    aten.zeros_like.default,
    aten.ones_like.default,
    aten.empty_like.default,
    aten.full_like.default,
    aten.new_zeros.default,
    aten.new_ones.default,
    aten.new_empty.default,
    aten.new_full.default,
    aten.sym_size.int,
    aten.sym_numel.default,
    aten.sym_stride.int,
    aten.sym_storage_offset.default,
)
# draws from a random generator: held, never recomputed (a recomputation would draw other values than the forward's)
register_ops(ShapeOnlyAdapter(REINDEX), aten.rand_like.default, aten.randn_like.default, random=True)
