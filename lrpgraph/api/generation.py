"""`explain_generation`: generate a continuation, then attribute every generated token to everything before
it — prompt and earlier generated tokens — with one forward over the final sequence and one walk of K maps
(K = generated tokens, in chunks under a memory budget), instead of one backward pass per token."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..capture.call import accepts
from ..errors import InputError
from ..viz import generation_html, show_generation
from .explain import explain
from .targets import Targets, TokenAt


@dataclass
class Generation:
    """One prompt's continuation and where each generated token came from.

    relevance[j, s]: relevance of source token s for the j-th generated token's logit, at the position that
    produced it. Sources are the prompt's tokens (an encoder-decoder's encoder tokens) followed by the
    tokens fed to the model before the last step (the generated ones, or the decoder's start token and
    them); a source after the step's position gets exactly 0 in a causal model.
    """

    source_ids: torch.Tensor  # [S]
    source_tokens: list[str]
    generated_ids: torch.Tensor  # [N]
    generated_tokens: list[str]
    relevance: torch.Tensor  # [N, S]
    logits: torch.Tensor  # [N]: the explained logit of each step (the relevance put on it)
    prompt_length: int  # sources[:prompt_length] are the prompt's
    rules: str
    encoder_decoder: bool = False
    stats: dict[str, Any] = field(default_factory=dict)

    def seen(self, step: int) -> int:
        """How many sources step `step` could see: the prompt and what was fed before it (all encoder tokens)."""
        return self.prompt_length + step + (1 if self.encoder_decoder else 0)

    @property
    def absorbed(self) -> torch.Tensor:
        """Per step, what did not reach a source token (biases, positions, the rules' stabilizers)."""
        return self.logits.double() - self.relevance.double().sum(1)

    @property
    def text(self) -> str:
        return "".join(self.generated_tokens)

    def show(self) -> None:
        """The matrix as HTML in a notebook, as one coloured line per generated token in a terminal."""
        show_generation(self)

    def _repr_html_(self) -> str:
        return generation_html(self)


def explain_generation(
    model: torch.nn.Module,
    tokenizer: Any,
    prompt: str | Sequence[str] | None = None,
    max_new_tokens: int = 20,
    rules: Any = "attnlrp",
    *,
    sequences: torch.Tensor | None = None,
    prompt_length: int | None = None,
    step_targets: Any = None,
    generate_kwargs: dict[str, Any] | None = None,
    **options: Any,
) -> Generation | list[Generation]:
    """Generate from `prompt` (greedy unless `generate_kwargs` say otherwise; the model's generation config
    holds for the rest) and explain each generated token; a list of prompts is generated as one batch.

    sequences / prompt_length: explain an existing generation instead ([B, prompt + generated] ids, for a
        decoder-only model; every prompt of the same length).
    step_targets: None (each generated token), token ids per step ([N], or [B, N]: e.g. contrast tokens),
        or a function of the step index returning any target `explain` takes.
    options: `explain`'s keyword options (memory_budget splits the K maps into several walks, dtype, …).
    Returns a Generation, or one per prompt for a list.
    """
    if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or max_new_tokens < 1:
        raise InputError(f"max_new_tokens must be a positive int, not {max_new_tokens!r}")
    if "target" in options or "output" in options:
        raise InputError("explain_generation chooses the target and output itself; use step_targets=")
    started = time.perf_counter()
    encoder_decoder = bool(getattr(getattr(model, "config", None), "is_encoder_decoder", False))
    single = isinstance(prompt, str)
    if sequences is not None:
        if encoder_decoder or prompt is not None or prompt_length is None:
            raise InputError("sequences= takes a decoder-only model's ids with prompt_length=, and no prompt")
        ids = torch.as_tensor(sequences)
        if ids.dim() != 2 or not 0 < prompt_length < ids.shape[1]:
            raise InputError(f"sequences must be [batch, prompt + generated] ids past prompt_length={prompt_length}")
        call = {"input_ids": ids[:, :prompt_length], "attention_mask": torch.ones_like(ids[:, :prompt_length])}
        generated = ids
    else:
        prompts = [prompt] if single else list(prompt or [])
        if not prompts or not all(isinstance(p, str) and p for p in prompts):
            raise InputError("prompt must be a non-empty text or a list of them")
        call, generated = _generate(model, tokenizer, prompts, max_new_tokens, encoder_decoder, generate_kwargs)
    generate_seconds = time.perf_counter() - started
    if encoder_decoder:
        results = _explain_encoder_decoder(model, tokenizer, call, generated, rules, step_targets, options)
    else:
        results = _explain_decoder(model, tokenizer, call, generated, rules, step_targets, options)
    for result in results:
        result.stats["generate_seconds"] = generate_seconds
    return results[0] if single or (sequences is not None and len(results) == 1) else results


def _generate(
    model: torch.nn.Module, tokenizer: Any, prompts: list[str], n: int, encoder_decoder: bool, extra: dict | None
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    side = {} if encoder_decoder else {"padding_side": "left"}  # a decoder continues right after the prompt
    enc = tokenizer(prompts, return_tensors="pt", padding=True, **side)
    call = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    kwargs = {"max_new_tokens": n, "do_sample": False, "pad_token_id": pad, **(extra or {})}
    with torch.no_grad():
        sequences = model.generate(**{k: v.to(device) for k, v in call.items()}, **kwargs)
    return call, sequences.cpu()


def _eos(model: torch.nn.Module, tokenizer: Any) -> set[int]:
    config = getattr(model, "generation_config", None)
    ids = getattr(config, "eos_token_id", None)
    ids = ids if ids is not None else tokenizer.eos_token_id
    return set(ids if isinstance(ids, (list, tuple)) else [] if ids is None else [ids])


def _steps(generated: torch.Tensor, eos: set[int]) -> torch.Tensor:
    """[B, N] True for the tokens each sample generated (up to and including its first end-of-sequence)."""
    ended = torch.zeros_like(generated, dtype=torch.bool)
    for token in eos:
        ended |= generated == token
    after = ended.long().cumsum(1) - ended.long()  # end tokens before this step
    return after == 0


def _targets(step_targets: Any, positions: list[int], ids: torch.Tensor, valid: torch.Tensor) -> Targets:
    """One target per step: the generated token (or the given one) at the position that produced it."""
    batch, steps = ids.shape
    if callable(step_targets):
        return Targets([step_targets(j) for j in range(steps)])
    if step_targets is not None:
        chosen = torch.as_tensor(step_targets).long()
        if chosen.dim() == 1:
            chosen = chosen.expand(batch, -1)
        if tuple(chosen.shape) != (batch, steps):
            raise InputError(
                f"step_targets must be ids shaped [{steps}] or [{batch}, {steps}], not {tuple(chosen.shape)}"
            )
        ids = chosen
    ids = torch.where(valid, ids, torch.full_like(ids, -1))
    return Targets([TokenAt(torch.full((batch,), p), ids[:, j]) for j, p in enumerate(positions)])


def _explain_decoder(model, tokenizer, call, sequences, rules, step_targets, options) -> list[Generation]:
    prompt_ids, prompt_mask = call["input_ids"], call["attention_mask"]
    batch, length = prompt_ids.shape
    generated = sequences[:, length:]
    steps = generated.shape[1]
    if steps == 0:
        raise InputError("nothing was generated")
    valid = _steps(generated, _eos(model, tokenizer))
    mask = torch.cat([prompt_mask, torch.ones((batch, steps - 1), dtype=prompt_mask.dtype)], 1)
    inputs = {"input_ids": sequences[:, :-1], "attention_mask": mask}
    if accepts(model, "position_ids"):  # as generate numbers left-padded prompts: from the first real token
        inputs["position_ids"] = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 1)
    positions = [length - 1 + j for j in range(steps)]
    ex = explain(model, inputs, _targets(step_targets, positions, generated, valid), rules, output="logits", **options)
    relevance, seed = ex.relevance["input_ids"], ex.conservation.seed  # [N, B, T], [N, B]
    results = []
    for b in range(batch):
        n = int(valid[b].sum())
        columns = mask[b].bool()
        columns[length + n - 1 :] = False  # fed after this sample's last step
        ids = inputs["input_ids"][b][columns]
        results.append(
            _generation(tokenizer, ex, ids, generated[b, :n], relevance[:n, b][:, columns], seed[:n, b], prompt_mask[b])
        )
    return results


def _generation(tokenizer, ex, ids, generated, relevance, logits, prompt_mask, encoder_decoder=False) -> Generation:
    """One sample's Generation from its slices of the batched explanation (copies: no result keeps the batch)."""
    return Generation(
        source_ids=ids,
        source_tokens=tokenizer.convert_ids_to_tokens(ids.tolist()),
        generated_ids=generated.clone(),
        generated_tokens=tokenizer.convert_ids_to_tokens(generated.tolist()),
        relevance=relevance.clone(),
        logits=logits.clone(),
        prompt_length=int(prompt_mask.sum()),
        rules=ex.rules,
        encoder_decoder=encoder_decoder,
        stats=dict(ex.stats),
    )


def _explain_encoder_decoder(model, tokenizer, call, sequences, rules, step_targets, options) -> list[Generation]:
    batch = sequences.shape[0]
    decoder_in, generated = sequences[:, :-1], sequences[:, 1:]
    steps = generated.shape[1]
    valid = _steps(generated, _eos(model, tokenizer))
    inputs = {**call, "decoder_input_ids": decoder_in}
    positions = list(range(steps))
    ex = explain(model, inputs, _targets(step_targets, positions, generated, valid), rules, output="logits", **options)
    encoder, decoder, seed = ex.relevance["input_ids"], ex.relevance["decoder_input_ids"], ex.conservation.seed
    results = []
    for b in range(batch):
        n = int(valid[b].sum())
        real = call["attention_mask"][b].bool()
        ids = torch.cat([call["input_ids"][b][real], decoder_in[b, :n]])
        relevance = torch.cat([encoder[:n, b][:, real], decoder[:n, b, :n]], 1)
        results.append(_generation(tokenizer, ex, ids, generated[b, :n], relevance, seed[:n, b], real, True))
    return results
