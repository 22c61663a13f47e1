"""The pipelines people already run: a transformers `Pipeline`, a sentence-transformers `SentenceTransformer` or
`CrossEncoder`, explained as they are — their own tokenizer or processor, model and labels.

`explain(pipe, inputs, target)` reads the pipeline's task: a classifier's target is a label name (default the
predicted one), a token classifier explains each predicted entity (or a chosen token), fill-mask the predicted (or
a given) token at the mask, text generation every generated token (`explain_generation`), feature extraction the
similarity of two texts (`explain_similarity`), image classification a label of the image. The explanation
carries the tokens and what each map explains (`Explanation.tokens`, `target_names`), so `show()` speaks the
pipeline's language.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
from collections.abc import Sequence
from typing import Any

import torch

from ..errors import InputError, TargetError
from .explain import explain as explain_model
from .generation import explain_generation
from .similarity import explain_similarity
from .targets import Targets
from .wrappers import (
    is_cross_encoder,
    is_pipeline,
    is_sentence_transformer,
    sentence_embedding,
    sentence_features,
    tokens_of,
)

TASKS = (
    "text-classification",
    "token-classification",
    "fill-mask",
    "text-generation",
    "feature-extraction",
    "image-classification",
)


@functools.wraps(explain_model)
def explain(model: Any, inputs: Any, target: Any = None, rules: Any = "epsilon", **options: Any) -> Any:
    """`lrpgraph.explain`: a torch model, or a pipeline around one (a transformers Pipeline, a SentenceTransformer,
    a CrossEncoder), explained in the pipeline's terms."""
    if is_pipeline(model) or is_cross_encoder(model) or is_sentence_transformer(model):
        return explain_wrapped(model, inputs, target, rules, options)
    return explain_model(model, inputs, target, rules, **options)


def explain_wrapped(model: Any, inputs: Any, target: Any, rules: Any, options: dict[str, Any]) -> Any:
    """`explain` of a pipeline, a CrossEncoder or a SentenceTransformer."""
    if is_pipeline(model):
        return explain_pipeline(model, inputs, target, rules, options)
    if is_cross_encoder(model):
        return _cross_encoder(model, inputs, target, rules, options)
    return _sentence_transformer(model, inputs, target, rules, options)


def _sentence_transformer(model: Any, inputs: Any, target: Any, rules: Any, options: dict[str, Any]) -> Any:
    """Each text's relevance for its embedding's similarity to a query (a text: cosine, the norms constant), or
    any target `explain` takes on the embedding [B, D] (a seed tensor or function)."""

    enc = sentence_features(model, inputs)
    if isinstance(target, str):
        with torch.no_grad():
            query = sentence_embedding(model)(**sentence_features(model, [target]))[0]

        def target(e: torch.Tensor, q: torch.Tensor = query) -> torch.Tensor:
            return e * q / (e.norm(dim=-1, keepdim=True) * q.norm())

    elif target is None:
        raise TargetError(
            "explain a SentenceTransformer against a query text (target='…') or with a seed of the embedding"
        )
    ex = explain_model(sentence_embedding(model), enc, target=target, rules=rules, **options)
    return _named(ex, tokens_of(model, enc), [])


def _cross_encoder(model: Any, inputs: Any, target: Any, rules: Any, options: dict[str, Any]) -> Any:
    """A CrossEncoder's score of (query, document) pairs, explained like a classifier's logit."""

    pairs = [inputs] if isinstance(inputs, tuple) else list(inputs)
    if not pairs or not all(isinstance(p, (tuple, list)) and len(p) == 2 for p in pairs):
        raise InputError("a CrossEncoder explains a (query, document) pair or a list of them")
    enc = dict(
        model.tokenizer(
            [p[0] for p in pairs], [p[1] for p in pairs], padding=True, truncation=True, return_tensors="pt"
        )
    )
    inner = model.model
    if target is None and getattr(inner.config, "num_labels", 1) == 1:
        target = 0
    ex = explain_model(inner, enc, target=_label_ids(inner, target, len(pairs)), rules=rules, **options)
    return _named(ex, tokens_of(model, enc), _label_names(inner, ex))


def explain_pipeline(pipe: Any, inputs: Any, target: Any, rules: Any, options: dict[str, Any]) -> Any:
    """`explain` of a pipeline: the task's inputs and targets, the pipeline's own preprocessing."""

    task, model = pipe.task, pipe.model
    if task not in TASKS:
        raise InputError(f"lrpgraph does not explain the pipeline task {task!r}; it explains: {', '.join(TASKS)}")
    if not isinstance(model, torch.nn.Module):
        raise InputError(
            f"the pipeline's model is a {type(model).__name__}, not a torch module: lrpgraph explains torch"
        )
    if task == "text-generation":
        if not isinstance(inputs, str):
            raise InputError("a text-generation pipeline explains one prompt (a string)")
        return explain_generation(model, pipe.tokenizer, inputs, rules=rules, **options)
    if task == "feature-extraction":
        a, b = _pair(inputs)
        enc_a, enc_b = _encoded(pipe, [a]), _encoded(pipe, [b])
        sim = explain_similarity(model, enc_a, enc_b, rules=rules, **options)
        sim.tokens_a, sim.tokens_b = tokens_of(pipe, enc_a), tokens_of(pipe, enc_b)
        return sim
    if task == "image-classification":
        images = inputs if isinstance(inputs, (list, tuple)) else [inputs]
        pixels = pipe.image_processor(images, return_tensors="pt")["pixel_values"]
        ids = _label_ids(model, target, len(images))
        ex = explain_model(model, pixels, target=ids, rules=rules, **options)
        return _named(ex, None, _label_names(model, ex))
    texts = [inputs] if isinstance(inputs, str) else list(inputs)
    if not texts or not all(isinstance(t, str) for t in texts):
        raise InputError(f"a {task} pipeline explains a text or a list of texts, not {type(inputs).__name__}")
    enc = _encoded(pipe, texts)
    tokens = tokens_of(pipe, enc)
    if task == "text-classification":
        ex = explain_model(model, enc, target=_label_ids(model, target, len(texts)), rules=rules, **options)
        return _named(ex, tokens, _label_names(model, ex))
    if len(texts) != 1:
        raise InputError(f"a {task} pipeline is explained one text at a time")
    if task == "fill-mask":
        return _fill_mask(pipe, enc, tokens, target, rules, options)
    return _token_classification(pipe, enc, tokens, target, rules, options)


def _pair(inputs: Any) -> tuple[str, str]:
    if isinstance(inputs, (list, tuple)) and len(inputs) == 2 and all(isinstance(t, str) for t in inputs):
        return inputs[0], inputs[1]
    raise InputError("a feature-extraction pipeline explains the similarity of two texts: pass (text_a, text_b)")


def _encoded(pipe: Any, texts: list[str]) -> dict[str, torch.Tensor]:
    return dict(pipe.tokenizer(texts, padding=True, truncation=True, return_tensors="pt"))


def _label_ids(model: torch.nn.Module, target: Any, count: int) -> Any:
    """A label name (or one per input) as class ids; ids and None pass through."""
    if target is None or (isinstance(target, int) and not isinstance(target, bool)):
        return target
    names = [target] * count if isinstance(target, str) else list(target) if isinstance(target, Sequence) else None
    if names is None or len(names) != count:
        raise TargetError(f"target must be a label name (or one per input), a class id or None, not {target!r}")
    return torch.tensor([_label_id(model, n) for n in names])


def _label_id(model: torch.nn.Module, name: Any) -> int:
    if isinstance(name, int) and not isinstance(name, bool):
        return name
    labels = dict(getattr(model.config, "label2id", {}) or {})
    if name in labels:
        return int(labels[name])
    close = difflib.get_close_matches(str(name), list(labels), n=1)
    guess = f"; did you mean {close[0]!r}?" if close else ""
    raise TargetError(f"the model has no label {name!r}{guess} Its labels: {', '.join(labels)}")


def _label_names(model: torch.nn.Module, ex: Any) -> list[str]:
    """The label each sample's map explains, by name."""
    id2label = getattr(model.config, "id2label", {}) or {}
    seed = ex.seed
    ids = seed.reshape(seed.shape[0], -1).abs().argmax(-1).tolist()
    return [str(id2label.get(i, i)) for i in ids]


def _named(ex: Any, tokens: list[list[str]] | None, names: list[str]) -> Any:
    return dataclasses.replace(ex, tokens=tokens, target_names=names)


def _fill_mask(pipe: Any, enc: dict, tokens: list[list[str]], target: Any, rules: Any, options: dict) -> Any:

    mask_id = pipe.tokenizer.mask_token_id
    positions = (enc["input_ids"][0] == mask_id).nonzero().flatten().tolist()
    if len(positions) != 1:
        raise InputError(f"a fill-mask input holds one {pipe.tokenizer.mask_token} token, this one {len(positions)}")
    position = positions[0]
    if target is None:
        with torch.no_grad():
            token = int(pipe.model(**enc).logits[0, position].argmax())
    elif isinstance(target, str):
        ids = pipe.tokenizer.convert_tokens_to_ids([target])
        if ids[0] == pipe.tokenizer.unk_token_id:
            raise TargetError(f"{target!r} is not one token of the vocabulary: pass a token (as tokenize() writes it)")
        token = ids[0]
    else:
        token = int(target)
    ex = explain_model(pipe.model, enc, target=(0, position, token), rules=rules, **options)
    word = pipe.tokenizer.convert_ids_to_tokens([token])[0]
    return _named(ex, tokens, [f"{word!r} at {pipe.tokenizer.mask_token} (position {position})"])


def _token_classification(pipe: Any, enc: dict, tokens: list[list[str]], target: Any, rules: Any, options: dict):
    """Each predicted entity (a token whose predicted label is not the outside label), as K maps; or a chosen token
    (a position, or (position, label))."""

    model = pipe.model
    with torch.no_grad():
        predicted = model(**enc).logits[0].argmax(-1).tolist()
    id2label = getattr(model.config, "id2label", {}) or {}
    special = set(pipe.tokenizer.all_special_ids)
    ids = enc["input_ids"][0].tolist()
    if target is None:
        chosen = [
            (t, predicted[t])
            for t in range(len(ids))
            if ids[t] not in special and id2label.get(predicted[t], "O") != "O"
        ]
        if not chosen:
            raise TargetError("the model predicts no entity in this text: pass target=position to explain a token")
    elif isinstance(target, int) and not isinstance(target, bool):
        chosen = [(target, predicted[target])]
    elif isinstance(target, tuple) and len(target) == 2:
        chosen = [(int(target[0]), _label_id(model, target[1]))]
    else:
        raise TargetError(
            f"target must be None (each predicted entity), a position or (position, label), not {target!r}"
        )
    for position, _ in chosen:
        if not 0 <= position < len(ids):
            raise TargetError(f"position {position} is outside the text's {len(ids)} tokens")
    ex = explain_model(model, enc, target=Targets([(0, t, c) for t, c in chosen]), rules=rules, **options)
    names = [f"{tokens[0][t]} (position {t}): {id2label.get(c, c)}" for t, c in chosen]
    return _named(ex, tokens, names)
