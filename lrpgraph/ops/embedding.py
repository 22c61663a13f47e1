"""Embedding lookups: relevance of each looked-up row becomes the relevance of its token id.

Op class "embedding": the table is a constant, the relevant input is an integer index tensor
(input_ids). Kernels are `fn(R, ids, out, table_dims) -> R_ids` with R_ids shaped like the ids.
"""

from __future__ import annotations

import torch

from .adapter import Adapter
from .gradient import Replay, form
from .registry import declare, rule
from .reindex import REINDEX, ReindexAdapter, index_adjoint, index_select_adjoint
from .table import Facts, register_ops

aten = torch.ops.aten

EMBEDDING = declare("embedding")


@rule(EMBEDDING, "token", default=True)
def token(R, ids, out, table_dims: int):
    """R_token = Σ over the embedding dims of the looked-up row's relevance."""
    return R.sum(dim=tuple(range(R.dim() - table_dims, R.dim()))) if table_dims else R


@form(EMBEDDING, "token")
def token_form(call: Replay):
    """The ids' shadow s gets Σ over each looked-up row of y ⊙ ρ as its gradient: the token rule's relevance."""
    (key,) = call.relevant_keys()
    s = call.get(key)
    out = call.out
    s = s.reshape(*s.shape, *[1] * (out.dim() - s.dim()))
    if call.integer:  # ids looked up in a table of ids: the shadow moves on
        return s.expand(out.shape)
    return out.detach() + out.detach() * (s - s.detach()).to(out.dtype)


class EmbeddingAdapter(Adapter):
    """aten.embedding(weight, indices): out = weight[indices]."""

    facts = Facts(lookup="indices", gather="indices")

    def __init__(self):
        super().__init__(EMBEDDING, data="indices")

    def op_class(self, args, relevant, role):
        if relevant.get("weight"):
            raise TypeError("embedding with a relevant table is not supported")
        return EMBEDDING

    def apply(self, call):
        table_dims = call.args["weight"].dim() - 1
        return {"indices": call.run(call.args["indices"], call.out, table_dims)}


class TableIndexAdapter(ReindexAdapter):
    """index / index_select: a re-indexing of a relevant tensor, or a lookup of relevant ids in a table."""

    def __init__(self, adjoint, ids: str, always: tuple[str, ...]):
        super().__init__(adjoint, always)
        self.ids = ids
        self.facts = Facts(moves_values=True, lookup=ids, gather=ids)

    def op_class(self, args, relevant, role):
        return REINDEX if relevant.get("self") else EMBEDDING

    def apply(self, call):
        if call.op_class is REINDEX:
            return super().apply(call)
        args = call.args
        ids = args[self.ids]
        table_dims = args["self"].dim() - 1
        if isinstance(ids, list):
            if len(ids) != 1 or ids[0] is None:
                raise TypeError("a table lookup must index the first dimension with one index tensor")
            return {self.ids: [call.run(ids[0], call.out, table_dims)]}
        if args.get("dim", 0) != 0:
            raise TypeError("a table lookup must select along dimension 0")
        return {self.ids: call.run(ids, call.out, table_dims)}


register_ops(EmbeddingAdapter(), aten.embedding.default)
# _unsafe_index: index without bounds checks, what torch's decompositions (interpolation) write
register_ops(
    TableIndexAdapter(index_adjoint, "indices", always=("indices",)), aten.index.Tensor, aten._unsafe_index.Tensor
)
register_ops(TableIndexAdapter(index_select_adjoint, "index", always=("index",)), aten.index_select.default)
