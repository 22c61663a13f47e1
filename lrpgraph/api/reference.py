"""`reference_examples`: what each unit of a latent point stands for, over a data set (CRP's RelMax and ActMax).

For every input, each unit's relevance at the point (summed over its positions, from one `explain_many`) and its
largest activation; per unit, the `top` inputs where it is most relevant (RelMax) and most active (ActMax); and
for each of those, the conditional heatmap — the input relevance of that unit alone (`conditions=`), all the units
an input is a reference for walked as the K maps of one explain. With `path=`, both passes are written as they go
(scores after every chunk of inputs, heatmaps after every input) and a rerun resumes where the last one stopped.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import fx

from ..capture.call import accepts, prepare_call
from ..engine.bound_call import BoundCall
from ..engine.conditions import unit_dim
from ..engine.interpreted import values_at
from ..engine.traced import shapes_vary, traced
from ..errors import InputError
from ..files import set_aside, write_atomically
from .arguments import record_nodes
from .explain import explain
from .items import as_item, targets_per_input
from .many import collate, explain_many, progress_bar

SCORES, HEATMAPS = "scores.safetensors", "heatmaps.safetensors"


@dataclass
class ReferenceExamples:
    """Per unit of `point`: its reference inputs by relevance (RelMax) and by activation (ActMax), with the
    conditional heatmap of each (the unit's relevance in that input, shaped like the explained input)."""

    point: str
    relevance: torch.Tensor  # [N, U]: each input's relevance at each unit, summed over positions
    activation: torch.Tensor  # [N, U]: each input's largest activation of each unit
    relmax: dict[int, list[int]]  # unit → the inputs where it is most relevant, most first
    actmax: dict[int, list[int]]  # unit → the inputs where it is most active, most first
    heatmaps: dict[int, dict[int, torch.Tensor]] = field(default_factory=dict)  # unit → input → heatmap
    input: str = ""  # which input the heatmaps are of


def reference_examples(
    model: torch.nn.Module,
    inputs: Sequence[Any],
    point: str,
    target: Any = None,
    rules: Any = "epsilon",
    *,
    units: Sequence[int] | None = None,
    top: int = 5,
    tokenizer: Any = None,
    path: str | os.PathLike | None = None,
    batch_size: int = 8,
    progress: bool | None = None,
    **options: Any,
) -> ReferenceExamples:
    """RelMax and ActMax reference inputs of each unit of `point` (a module path, 'path:input' or a node name),
    with their conditional heatmaps; `inputs` and `target` as `explain_many` takes them, `options` `explain`'s.

    units: which units (channels of a feature map, else the last dim) to find references for (default: all).
    path: a folder to write into and resume from.
    """
    if not isinstance(top, int) or isinstance(top, bool) or top < 1:
        raise InputError(f"top must be a positive int, not {top!r}")
    if "record" in options or "conditions" in options:
        raise InputError("reference_examples records the point and sets the conditions itself")
    inputs = list(inputs)
    items = [as_item(x, tokenizer, i) for i, x in enumerate(inputs)]
    if not items:
        raise InputError("inputs is empty: there is nothing to find references in")
    targets = targets_per_input(target, len(items))
    folder = None if path is None else Path(path)
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    with shapes_vary():  # inputs of many lengths: one symbolic trace from the first
        _point_node(_call(model, items[0], options), point)  # a point the model lacks fails here, before any walk
        scores = UnitScores.read(folder, len(items))
        chunk = batch_size * 4
        todo = [i for i in range(len(items)) if not scores.done[i]]
        for start in progress_bar(range(0, len(todo), chunk), progress, -(-len(todo) // chunk)):
            part = todo[start : start + chunk]
            explained = explain_many(
                model, [inputs[i] for i in part], [targets[i] for i in part], rules, tokenizer=tokenizer,
                batch_size=batch_size, progress=False, record=[point], **options,
            )  # fmt: skip
            for i, ex in zip(part, explained, strict=True):
                scores.put(i, *unit_scores(model, items[i], ex.latent[point][0], point, options))
            scores.write(folder)
        return rank_references(model, items, targets, rules, point, scores, units, top, folder, options)


def _point_node(call: BoundCall, point: str) -> fx.Node:
    """The node of the call's traced graph a point names."""
    return record_nodes(call.graph, [point])[point]


def unit_scores(
    model: torch.nn.Module, item: dict[str, torch.Tensor], latent: torch.Tensor, point: str, options: dict
) -> tuple[torch.Tensor, torch.Tensor]:
    """One input's ([U] relevance of each unit summed over its positions, [U] its largest activation), from the
    relevance recorded at the point (per sample) and the traced graph's value there (the graph serving this input:
    another length may be served by another trace)."""
    call = _call(model, item, options)
    node = _point_node(call, point)
    activation = values_at(call, [node])[node][0]
    return _per_unit(latent, "sum"), _per_unit(activation, "max")


def rank_references(
    model: torch.nn.Module,
    items: list[dict[str, torch.Tensor]],
    targets: list[Any],
    rules: Any,
    point: str,
    scores: UnitScores,
    units: Sequence[int] | None,
    top: int,
    folder: Path | None,
    options: dict,
) -> ReferenceExamples:
    """Per unit, the RelMax and ActMax inputs of finished scores, and their conditional heatmaps."""
    count = scores.relevance.shape[1]
    chosen = list(range(count)) if units is None else [int(u) for u in units]
    if any(not 0 <= u < count for u in chosen):
        raise InputError(f"units {chosen} out of range: {point!r} has {count} units")
    k = min(top, len(items))
    relmax = {u: scores.relevance[:, u].topk(k).indices.tolist() for u in chosen}
    actmax = {u: scores.activation[:, u].topk(k).indices.tolist() for u in chosen}
    heatmaps, name = _heatmaps(model, items, targets, rules, point, relmax, actmax, folder, options)
    return ReferenceExamples(point, scores.relevance, scores.activation, relmax, actmax, heatmaps, name)


def _call(model: torch.nn.Module, item: dict[str, torch.Tensor], options: dict) -> BoundCall:
    """The traced call of one input."""
    args, kwargs = prepare_call(model, _called(model, item))
    model_trace = traced(model, args, kwargs, options.get("cache_dir"), options.get("tracer", "auto"))
    return BoundCall(model_trace, model, args, kwargs)


def _called(model: torch.nn.Module, item: dict[str, torch.Tensor]) -> Any:
    """One input as `explain_many` calls the model with it: an attention mask added for a model taking one, an
    image's tensor itself."""
    batch, _, _ = collate([item], 0, accepts(model, "attention_mask"))
    return batch[""] if set(batch) == {""} else batch


def _per_unit(value: torch.Tensor, how: str) -> torch.Tensor:
    """[U]: a per-sample value [*S] reduced over everything but its unit dim."""
    dim = unit_dim(value.shape)
    flat = value.movedim(dim, -1).reshape(-1, value.shape[dim]).double()
    return flat.sum(0) if how == "sum" else flat.amax(0)


def _heatmaps(model, items, targets, rules, point, relmax, actmax, folder, options):
    """Each unit's conditional heatmap in each of its reference inputs: one explain per input, its units as K maps."""
    wanted: dict[int, list[int]] = {}
    for table in (relmax, actmax):
        for unit, chosen in table.items():
            for i in chosen:
                if unit not in wanted.setdefault(i, []):
                    wanted[i].append(unit)
    stored, name = _read_heatmaps(folder)
    heatmaps: dict[int, dict[int, torch.Tensor]] = {}
    for i, units in sorted(wanted.items()):
        missing = [u for u in units if (u, i) not in stored]
        if missing:
            ex = explain(model, _called(model, items[i]), targets[i], rules, conditions={point: [[u] for u in missing]},
                         **options)  # fmt: skip
            name = name or next(iter(ex.conditional))
            for k, u in enumerate(missing):
                stored[(u, i)] = ex.conditional[name][k, 0]
            _write_heatmaps(folder, stored, name)
        for u in units:
            heatmaps.setdefault(u, {})[i] = stored[(u, i)]
    return heatmaps, name


def _read_heatmaps(folder: Path | None) -> tuple[dict[tuple[int, int], torch.Tensor], str]:
    """The heatmaps written so far, by (unit, input); a damaged file is set aside and its heatmaps walked again."""
    if folder is None or not (folder / HEATMAPS).exists():
        return {}, ""
    from safetensors import safe_open

    try:
        with safe_open(str(folder / HEATMAPS), framework="pt") as f:
            name = json.loads((f.metadata() or {}).get("lrpgraph", "{}")).get("input", "")
            found = {}
            for key in f.keys():  # noqa: SIM118 (a safe_open handle, not a dict)
                unit, index = key.split("/")
                found[(int(unit), int(index))] = f.get_tensor(key)
    except Exception as error:  # safetensors' own errors, a truncated header, a key not "unit/input"
        set_aside(folder / HEATMAPS, f"cannot be read ({type(error).__name__})", "its heatmaps are walked again")
        return {}, ""
    return found, name


def _write_heatmaps(folder: Path | None, stored: dict[tuple[int, int], torch.Tensor], name: str) -> None:
    if folder is None:
        return
    from safetensors.torch import save

    tensors = {f"{u}/{i}": t.detach().contiguous().cpu() for (u, i), t in stored.items()}
    data = save(tensors, metadata={"lrpgraph": json.dumps({"input": name})})
    write_atomically(folder / HEATMAPS, lambda file: file.write(data))


class UnitScores:
    """Per input and unit: relevance and activation, and which inputs are done (read from and written to a folder)."""

    def __init__(self, count: int):
        self.done = torch.zeros(count, dtype=torch.bool)
        self.relevance = self.activation = torch.zeros(count, 0, dtype=torch.float64)

    @classmethod
    def read(cls, folder: Path | None, count: int) -> UnitScores:
        scores = cls(count)
        if folder is None or not (folder / SCORES).exists():
            return scores
        from safetensors.torch import load_file

        try:
            saved = load_file(str(folder / SCORES))
            saved = {k: saved[k] for k in ("done", "relevance", "activation")}
        except Exception as error:  # safetensors' own errors, a truncated header, a missing tensor
            set_aside(folder / SCORES, f"cannot be read ({type(error).__name__})", "every input is scored again")
            return scores
        if saved["done"].shape[0] != count:
            raise InputError(f"{folder / SCORES} holds scores of {saved['done'].shape[0]} inputs, not {count}")
        scores.done, scores.relevance, scores.activation = saved["done"], saved["relevance"], saved["activation"]
        return scores

    def put(self, i: int, relevance: torch.Tensor, activation: torch.Tensor) -> None:
        if self.relevance.shape[1] == 0:
            self.relevance = torch.zeros(self.done.shape[0], relevance.shape[0], dtype=torch.float64)
            self.activation = torch.zeros_like(self.relevance)
        self.relevance[i], self.activation[i], self.done[i] = relevance, activation, True

    def write(self, folder: Path | None) -> None:
        if folder is None:
            return
        from safetensors.torch import save

        tensors = {"done": self.done, "relevance": self.relevance, "activation": self.activation}
        data = save({k: v.contiguous() for k, v in tensors.items()})
        write_atomically(folder / SCORES, lambda file: file.write(data))
