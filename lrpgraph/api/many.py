"""`explain_many`: a corpus of inputs through one trace — grouped by length into padded batches.

Texts (with a tokenizer), token dicts or image tensors are sorted by length, cut into batches of
similar length, padded on the right (where a causal model's real tokens see exactly what they would
alone, and a bidirectional one masks the padding) and explained together; each result is then cut
back to its own input, as if it had been explained alone with a batch of one.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

import torch

from ..capture.call import accepts
from ..engine.output import DeferredOutput
from ..engine.traced import shapes_vary
from ..errors import InputError, LRPGraphError
from ..ops.sparse import RowSparse
from .explain import explain
from .explanation import Conservation, Explanation, raw_output
from .items import as_item, item_length, targets_per_input


class ExplainManyError(LRPGraphError):
    """Some inputs could not be explained; `failures` maps their index to the error, `results` holds the rest."""

    def __init__(self, failures: dict[int, BaseException], results: list[Explanation | None]):
        self.failures, self.results = failures, results
        shown = "; ".join(f"input {i}: {type(e).__name__}: {e}" for i, e in list(failures.items())[:3])
        more = f" (and {len(failures) - 3} more)" if len(failures) > 3 else ""
        super().__init__(
            f"{len(failures)} of {len(results)} inputs failed — {shown}{more}; the others are in this error's .results"
        )


def explain_many(
    model: torch.nn.Module,
    inputs: Iterable[Any],
    target: Any = None,
    rules: Any = "epsilon",
    *,
    tokenizer: Any = None,
    batch_size: int = 8,
    max_tokens: int | None = 2048,
    progress: bool | None = None,
    **options: Any,
) -> list[Explanation]:
    """Explain every input, in input order; each result equals `explain` of that input alone (batch of one).

    inputs: texts (needs `tokenizer`), dicts of token tensors (one sample each, [T] or [1, T]), or image
        tensors ([C, H, W] or [1, C, H, W]).
    target: None (the predicted class or next token), one target for every input, or a sequence of one
        per input (class or token ids).
    batch_size: inputs explained together (all of similar length).
    max_tokens: a padded batch of token inputs holds at most this many tokens (inputs × longest); None: no
        limit. Beyond about 2k tokens a batch is no faster per token on a CPU and holds more activations.
    progress: show a progress bar (default: when stderr is a terminal and there is more than one batch).
    options: the keyword options of `explain` (output, record, memory_budget, dtype, cache_dir, …).
    A bad input does not stop the others: ExplainManyError lists the failures by index and carries the
    other results.
    """
    if not _positive(batch_size):
        raise InputError(f"batch_size must be a positive int, not {batch_size!r}")
    if max_tokens is not None and not _positive(max_tokens):
        raise InputError(f"max_tokens must be a positive int or None, not {max_tokens!r}")
    items = [as_item(x, tokenizer, i) for i, x in enumerate(inputs)]
    targets = targets_per_input(target, len(items))
    order = sorted(range(len(items)), key=lambda i: item_length(items[i]))
    masked = accepts(model, "attention_mask")
    batches = _batches(order, [item_length(x) for x in items], batch_size, masked, max_tokens)
    results: list[Explanation | None] = [None] * len(items)
    failures: dict[int, BaseException] = {}
    with shapes_vary():
        for batch in progress_bar(batches, progress):
            try:
                _explain_batch(model, items, targets, batch, rules, _pad_id(tokenizer), options, results)
            except Exception:  # find the bad input: explain this batch's inputs one by one
                for i in batch:
                    try:
                        _explain_batch(model, items, targets, [i], rules, _pad_id(tokenizer), options, results)
                    except Exception as error:
                        failures[i] = error
    if failures:
        raise ExplainManyError(dict(sorted(failures.items())), results)
    return results


def _positive(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _batches(order: list[int], lengths: list[Any], size: int, pad: bool, max_tokens: int | None) -> list[list[int]]:
    """Runs of at most `size` inputs in length order, padded to at most `max_tokens` (count × longest); without
    padding (a model with no attention mask, which padding would change) only inputs of one length go together."""
    runs: list[list[int]] = []
    for i in order:
        run = runs[-1] if runs else None
        if (
            run is not None
            and len(run) < size
            and (pad or lengths[run[0]] == lengths[i])
            and (max_tokens is None or (len(run) + 1) * _tokens(lengths[i]) <= max_tokens)
        ):
            run.append(i)
        else:
            runs.append([i])
    return runs


def _tokens(length: tuple) -> int:
    """A token input's padded length (its first tensor's sequence dim); 0 for other inputs (images), which the
    token limit does not bound."""
    return length[0][0] if length and len(length[0]) == 1 else 0


def _pad_id(tokenizer: Any) -> int:
    pad = getattr(tokenizer, "pad_token_id", None)
    return 0 if pad is None else int(pad)


def _explain_batch(model, items, targets, batch, rules, pad_id, options, results) -> None:
    inputs, lengths, longest = collate([items[i] for i in batch], pad_id, accepts(model, "attention_mask"))
    chosen = [targets[i] for i in batch]
    if len(batch) == 1 or all(t is None for t in chosen):
        target = chosen[0]
    elif all(isinstance(t, int) and not isinstance(t, bool) for t in chosen):
        target = torch.tensor(chosen)
    else:
        raise InputError("inputs explained together need class or token ids as targets (or none)")
    ex = explain(model, inputs[""] if set(inputs) == {""} else inputs, target=target, rules=rules, **options)
    for row, (i, length) in enumerate(zip(batch, lengths, strict=True)):
        results[i] = _one(ex, row, length, longest)


def collate(
    group: list[dict[str, torch.Tensor]], pad_id: int, masked: bool
) -> tuple[dict, list[int | None], int | None]:
    """The group stacked, token tensors right-padded (ids with pad_id, masks with 0; a mask added for a model
    that takes one): (batch, lengths, longest)."""
    keys = list(group[0])
    if any(list(item) != keys for item in group):
        raise InputError("inputs explained together must have the same keys")
    main = "input_ids" if "input_ids" in keys else "attention_mask" if "attention_mask" in keys else None
    lengths = [item[main].shape[1] if main else None for item in group]
    longest = max(lengths) if main else None
    batch = {}
    for key in keys:
        parts = [item[key] for item in group]
        if main and parts[0].dim() == 2 and all(p.shape[1] == n for p, n in zip(parts, lengths, strict=True)):
            fill = pad_id if key == "input_ids" else 0
            parts = [torch.nn.functional.pad(p, (0, longest - p.shape[1]), value=fill) for p in parts]
        if any(p.shape[1:] != parts[0].shape[1:] for p in parts):
            raise InputError(f"'{key}' differs in shape between inputs of one batch: {[tuple(p.shape) for p in parts]}")
        batch[key] = torch.cat(parts)
    if masked and main == "input_ids" and "attention_mask" not in batch and longest is not None:
        batch["attention_mask"] = torch.stack([(torch.arange(longest) < n).long() for n in lengths])
    return batch, lengths, longest


def _one(ex: Explanation, row: int, length: int | None, longest: int | None) -> Explanation:
    """Sample `row` of a batched explanation, its token dimension cut back from `longest` to `length`; copies,
    so that no result keeps its whole batch alive."""

    def cut(t: Any, smallest: int = 2) -> Any:
        if not isinstance(t, torch.Tensor) or t.dim() == 0:
            return t
        t = t[row : row + 1]
        return (t[:, :length] if length is not None and t.dim() >= smallest and t.shape[1] == longest else t).clone()

    seed = ex.seed_relevance
    sparse = isinstance(seed, RowSparse) and seed.lead == 0 and len(seed.shape) == 3
    c = ex.conservation
    conservation = Conservation(
        seed=c.seed[row : row + 1],
        inputs={k: v[row : row + 1] for k, v in c.inputs.items()},
        absorbed=_absorbed(c, row),
        positional=None if c.positional is None else c.positional[row : row + 1],
    )
    return replace(
        ex,
        relevance={k: cut(v) for k, v in ex.relevance.items()},
        output=_output(raw_output(ex), row, length, cut),
        seed_relevance=seed.sample(row, length or seed.shape[1]) if sparse else cut(ex.seed, 3),
        conservation=conservation,
        latent={k: cut(v, 3) for k, v in ex.latent.items()},
        conditional={k: torch.stack([cut(m) for m in v]) for k, v in ex.conditional.items()},
        rho={k: cut(v, 3) for k, v in ex.rho.items()},
        positional=cut(ex.positional) if isinstance(ex.positional, torch.Tensor) else ex.positional,
        combined=cut(ex.combined) if isinstance(ex.combined, torch.Tensor) else ex.combined,
    )


def _output(output: Any, row: int, length: int | None, cut: Callable) -> Any:
    """Sample `row`'s output: [B, T, V] outputs have a token dim, [B, C] ones do not; a deferred one stays deferred,
    its [B, T, H] input cut by the same rule."""
    if isinstance(output, DeferredOutput):
        return output.sample(row, cut(output.x, 3))
    return cut(output, 3)


def _absorbed(c: Conservation, row: int) -> dict[str, float]:
    """Sample `row`'s absorbed relevance (the walk books totals per batch): exactly seed − inputs − positions,
    under the batch's one category, or "mixed" when the batch's absorption fell in several (explain_many with
    batch_size=1 splits it)."""
    if c.seed.shape[0] == 1:
        return dict(c.absorbed)
    booked = [k for k, v in c.absorbed.items() if v != 0.0]
    if not booked:
        return {}
    return {booked[0] if len(booked) == 1 else "mixed": float(c.seed[row] - c.accounted[row])}


def progress_bar(batches: Iterable, progress: bool | None, total: int | None = None) -> Iterable:
    """Batches with a bar on stderr: when asked, or by default when stderr is a terminal and there are several."""
    count = len(batches) if total is None else total
    show = progress if progress is not None else sys.stderr.isatty() and count > 1
    if not show:
        return batches
    from tqdm.auto import tqdm

    return tqdm(batches, total=count, desc="explaining", unit="batch", file=sys.stderr)
