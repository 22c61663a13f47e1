"""Which wrapper a model arrives in — a transformers Pipeline, a sentence-transformers SentenceTransformer or
CrossEncoder — and a SentenceTransformer as a module called on token tensors."""

from __future__ import annotations

import weakref
from typing import Any

import torch

from ..errors import InputError


def is_pipeline(model: Any) -> bool:
    """A transformers Pipeline (duck-typed: a task, a model and a preprocess step)."""
    return not isinstance(model, torch.nn.Module) and all(hasattr(model, a) for a in ("task", "model", "preprocess"))


def is_sentence_transformer(model: Any) -> bool:
    """A sentence-transformers SentenceTransformer (tokenize, encode, and modules ending in a pooling)."""
    return isinstance(model, torch.nn.Module) and hasattr(model, "tokenize") and hasattr(model, "encode")


def is_cross_encoder(model: Any) -> bool:
    """A sentence-transformers CrossEncoder (predict over text pairs, a classifier and its tokenizer inside)."""
    has = all(hasattr(model, a) for a in ("predict", "tokenizer", "model"))
    return has and not is_pipeline(model) and not hasattr(model, "encode")


class SentenceEmbedding(torch.nn.Module):
    """A SentenceTransformer called on token tensors: its modules (transformer, pooling, normalise, dense) run as
    they are, the sentence embedding [B, D] returned. Holds the user's model, never changes it."""

    def __init__(self, sentence_transformer: torch.nn.Module):
        super().__init__()
        self.inner = sentence_transformer

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        features = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            features["token_type_ids"] = token_type_ids
        return self.inner(features)["sentence_embedding"]


_WRAPPED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def sentence_embedding(model: torch.nn.Module) -> SentenceEmbedding:
    """The SentenceEmbedding of a SentenceTransformer, one per model (so that its trace is cached)."""
    wrapped = _WRAPPED.get(model)
    if wrapped is None:
        wrapped = _WRAPPED[model] = SentenceEmbedding(model)
    return wrapped


def sentence_features(model: torch.nn.Module, texts: Any) -> dict[str, torch.Tensor]:
    """A SentenceTransformer's own tokenisation of a text or texts."""
    texts = [texts] if isinstance(texts, str) else list(texts)
    if not texts or not all(isinstance(t, str) for t in texts):
        raise InputError("a SentenceTransformer explains a text or a list of texts")
    features = model.tokenize(texts)
    return {k: v for k, v in features.items() if k in ("input_ids", "attention_mask", "token_type_ids")}


def tokens_of(owner: Any, enc: dict[str, torch.Tensor]) -> list[list[str]]:
    """Each row's tokens as `owner.tokenizer` (a pipeline's, a SentenceTransformer's) spells them, right padding
    cut off by the attention mask."""
    mask = enc.get("attention_mask")
    rows = []
    for b, ids in enumerate(enc["input_ids"]):
        length = int(mask[b].sum()) if mask is not None else len(ids)
        rows.append(owner.tokenizer.convert_ids_to_tokens(ids[:length].tolist()))
    return rows
