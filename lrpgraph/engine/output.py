"""The explained output: which of the model's outputs, and how the forward computes it — whole, or, for a deferred
head (`propagate/head.py`), at the rows the seed reads, the full output made only when someone reads it."""

from __future__ import annotations

import weakref
from collections.abc import Callable

import torch
from torch import fx

from ..capture.call import without_autocast
from ..capture.graph import INPUT, Graph
from ..errors import InputError
from ..ops.sparse import RowSparse
from ..propagate.head import deferred_head
from ..propagate.plan import Plan
from ..propagate.schedule import Schedule
from ..propagate.store import ActivationStore
from .bound_call import BoundCall

Output = torch.Tensor | RowSparse  # the explained output, or (a deferred head's logits) its rows a seed reads


def output_index(graph: Graph, output: str | int | None) -> int:
    """The flat index of the explained output: by name, by index, or the first floating-point tensor computed from
    the inputs (an output made from the weights alone, as a detector's initial reference points, explains nothing;
    the first floating-point one where none is computed from the inputs)."""
    candidates = [
        i
        for i, node in enumerate(graph.outputs)
        if isinstance(node, fx.Node)
        and isinstance(node.meta.get("val"), torch.Tensor)
        and node.meta["val"].is_floating_point()
    ]
    if output is None:
        if not candidates:
            raise InputError("the model has no floating-point tensor output to explain")
        index = _DEFAULT_OUTPUT.get(graph)
        if index is None:  # once per graph: a walk over every node is no work for each warm call
            fed = _fed_by_inputs(graph)
            index = _DEFAULT_OUTPUT[graph] = next((i for i in candidates if graph.outputs[i] in fed), candidates[0])
        return index
    if isinstance(output, int) and not isinstance(output, bool):
        if output in candidates:
            return output
    elif output in graph.output_names:
        index = graph.output_names.index(output)
        if index in candidates:
            return index
    names = ", ".join(graph.output_names[i] for i in candidates)
    raise InputError(f"no floating-point output {output!r}; the model's outputs are: {names}")


_DEFAULT_OUTPUT: weakref.WeakKeyDictionary[Graph, int] = weakref.WeakKeyDictionary()  # graph → its default output


def _fed_by_inputs(graph: Graph) -> set[fx.Node]:
    """The nodes computed from the values of at least one user input (not only from their sizes: a batch of
    weights expanded to the input's batch size is made from the weights)."""
    fed = {node for node, kind in graph.kinds.items() if kind == INPUT}
    for node in graph.module.graph.nodes:
        sizes = isinstance(node.meta.get("val"), (torch.SymInt, int))
        if node.op != "placeholder" and not sizes and any(n in fed for n in node.all_input_nodes):
            fed.add(node)
    return fed


class DeferredOutput:
    """An output not computed yet: a deferred head's full logits (`propagate/head.py`), made when first read from
    the head's input `x`, the model's head weights and the rows the explain computed (`rows`, written in as they
    were, so that the output holds exactly the logits the seed explains), in the model's dtypes as the explain.

    The weights are the model's own, not copies (an unread output keeps them alive). If they were changed in place,
    given new data, moved or cast before the output is read, reading it is an error rather than another model's
    output; a write through `.data` cannot be seen. (A module given a new weight object leaves these intact.)
    """

    def __init__(
        self,
        compute: Callable[..., torch.Tensor],
        x: torch.Tensor,
        weights: tuple[torch.Tensor | None, ...],
        rows: RowSparse,
        state: tuple | None = None,
    ):
        self.compute, self.x, self.weights, self.rows = compute, x, weights, rows
        self.state = state if state is not None else tuple(map(_weight_state, weights))

    def value(self) -> torch.Tensor:
        if tuple(map(_weight_state, self.weights)) != self.state:
            raise InputError(
                "the model's output head weights were changed, given new data, moved or cast since this explanation "
                "was made; its output, computed when first read, can no longer be: read `.output` before changing them"
            )
        with torch.inference_mode(False), torch.no_grad(), without_autocast():
            full = self.compute(self.x, *self.weights)
            flat = full.view(-1, full.shape[-1])
            flat.index_copy_(0, self.rows.index.to(full.device), self.rows.values.to(full.dtype))
        return full

    def __reduce__(self) -> tuple:
        """Pickled (and deep-copied) as its value: the copy cannot check the weights it would be computed from."""
        return torch.clone, (self.value(),)

    def sample(self, row: int, x: torch.Tensor) -> DeferredOutput:
        """Sample `row`'s output, made from `x`: its rows of this input [1, length, H], cut as the caller cuts it."""
        return DeferredOutput(self.compute, x, self.weights, self.rows.sample(row, x.shape[1]), self.state)


def _weight_state(w: torch.Tensor | None) -> tuple | None:
    """What must not change for a deferred output to be computed from `w`: where it is, what it holds, its version."""
    return None if w is None else (w.data_ptr(), w.dtype, w.device, tuple(w.shape), w._version)


class ForwardPass:
    """The forward of one explain: the schedule of what the walk reads (kept, or recomputed under `memory_budget`),
    the store holding it, and once run the output the seed reads (`out`) and the one the explanation returns.

    rows: the rows of [B, T, V] logits the seed reads (`api/targets.py: seed_rows`); with them a deferred head runs
    only there (None: the whole output is computed).
    """

    def __init__(
        self, call: BoundCall, plan: Plan, rows: torch.Tensor | None, memory_budget: int | None, offload: bool
    ):
        self.call, self.rows = call, rows
        self.head = deferred_head(plan) if rows is not None else None
        self.schedule: Schedule = plan.schedule(call.shapes, memory_budget, None if self.head is None else len(rows))
        self.store = ActivationStore(call.value_of, call.shapes, self.schedule.recomputation, offload)
        self.out: Output | None = None
        self.output: torch.Tensor | DeferredOutput | None = None

    def run(self, index: int) -> Output:
        """Run the forward of output `index`; returns what the seed reads (`out`): the output itself, or with a deferred
        head the output at the seed's rows, the full output (`output`) then deferred."""
        model_trace, values = self.call.model_trace, self.call.values
        head, rows, store = self.head, self.rows, self.store
        if head is None:
            self.out = self.output = model_trace.forward(self.schedule.keep).run(values, store)[index]
            return self.out
        x = model_trace.forward(self.schedule.keep, (head.node, head.input)).run(values, store)[index]
        weight, bias = store.get(head.weight), None if head.bias is None else store.get(head.bias)
        shape = torch.Size((*x.shape[:-1], weight.shape[0]))
        with torch.inference_mode():
            self.out = RowSparse(rows.to(x.device), head.rows(x, rows, weight, bias), shape)
        if head.node in self.schedule.keep:
            store.put(head.node, self.out)
        self.output = DeferredOutput(head.full, x.clone(), (weight, bias), self.out)
        return self.out
