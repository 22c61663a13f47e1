"""The built-in zoo: HuggingFace architectures built from small configs with random weights (no downloads), listed
in the data file `zoo.toml` beside this module, and the plain PyTorch models of `torch_zoo.py`.

Used by the architecture tests and by `lrpgraph coverage`.
"""

from __future__ import annotations

import importlib.resources
import sys
from dataclasses import dataclass, field
from typing import Any

import torch

from .torch_zoo import TORCH_ARCHITECTURES, TorchArchitecture

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib


@dataclass(frozen=True)
class Architecture:
    """One zoo model: `build()` returns (model in eval mode, example inputs)."""

    name: str
    family: str
    config: str
    model: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    inputs: str = "tokens"

    def build(self, batch: int = 2, length: int = 8, seed: int = 0) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
        import transformers

        torch.manual_seed(seed)
        config = getattr(transformers, self.config)(**self.kwargs)
        model = getattr(transformers, self.model)(config).eval()
        return model, example_inputs(self.inputs, config, batch, length)


def example_inputs(kind: str, config: Any, batch: int = 2, length: int = 8) -> dict[str, torch.Tensor]:
    """Random inputs of the given kind that fit `config`."""
    generator = torch.Generator().manual_seed(1)
    if kind == "pixels":
        size = config.image_size
        channels = getattr(config, "num_channels", 3)
        return {"pixel_values": torch.randn(batch, channels, size, size, generator=generator)}
    if kind == "audio-features":  # log-mel frames; Whisper wants exactly 2 × max_source_positions of them
        frames = 2 * config.max_source_positions
        return {"input_features": torch.randn(batch, config.num_mel_bins, frames, generator=generator)}
    if kind == "audio-wave":
        return {"input_values": torch.randn(batch, 400, generator=generator)}
    vocab = config.vocab_size
    ids = torch.randint(3, vocab, (batch, length), generator=generator)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if kind == "seq2seq":
        inputs["decoder_input_ids"] = torch.randint(3, vocab, (batch, max(2, length // 2)), generator=generator)
    return inputs


def _read_table() -> list[Architecture]:
    """The HuggingFace entries of `zoo.toml`, each config's arguments its base's updated with its own."""
    table = tomllib.loads((importlib.resources.files(__package__) / "zoo.toml").read_text())
    found = []
    for entry in table["architecture"]:
        kwargs = {**table["base"].get(entry.get("base"), {}), **entry.get("kwargs", {})}
        kwargs.update(dict.fromkeys(entry.get("none", [])))
        inputs = entry.get("inputs", "tokens")
        found.append(Architecture(entry["name"], entry["family"], entry["config"], entry["model"], kwargs, inputs))
    return found


ARCHITECTURES: list[Architecture | TorchArchitecture] = [*_read_table(), *TORCH_ARCHITECTURES]


def architectures(names: list[str] | None = None) -> list[Architecture | TorchArchitecture]:
    """The built-in zoo, or the named entries of it."""
    if names is None:
        return list(ARCHITECTURES)
    known = {a.name: a for a in ARCHITECTURES}
    missing = [n for n in names if n not in known]
    if missing:
        raise KeyError(f"unknown zoo architecture(s) {', '.join(missing)}; known: {', '.join(known)}")
    return [known[n] for n in names]
