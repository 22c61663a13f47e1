"""Plain PyTorch models for the zoo: the op classes and model patterns HuggingFace models reach rarely.

Recurrent layers, a U-Net (upsampling and skip concatenation), message passing (index_add and scatter_add),
attention written with einsum, Fourier mixing, sort / quantile / median pooling, complex rotary embeddings,
slice writes, ids hashed or offset before their embedding, min/max activations, unfolded patches, and a
mixture of experts that loops over the experts that received tokens (Python branching on tensor values:
torch.export cannot trace it, lrpgraph records its call). Small, random weights, built in milliseconds.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

VOCAB, WIDTH, CLASSES = 96, 16, 3


@dataclass(frozen=True)
class TorchArchitecture:
    """One plain zoo model: `build()` returns (model in eval mode, example inputs keyed by forward parameter)."""

    name: str
    family: str
    factory: Callable[[], nn.Module]
    inputs: str  # "tokens" (input_ids), "pixels" (pixel_values), "nodes" (node_features)

    def build(self, batch: int = 2, length: int = 8, seed: int = 0) -> tuple[nn.Module, dict[str, torch.Tensor]]:
        torch.manual_seed(seed)
        model = self.factory().eval()
        generator = torch.Generator().manual_seed(1)
        if self.inputs == "tokens":
            return model, {"input_ids": torch.randint(3, VOCAB, (batch, length), generator=generator)}
        if self.inputs == "pixels":
            return model, {"pixel_values": torch.randn(batch, 3, 16, 16, generator=generator)}
        return model, {"node_features": torch.randn(batch, GRAPH_NODES, WIDTH, generator=generator)}


class Recurrent(nn.Module):
    """Embedding → two-layer LSTM or GRU (fused ATen op, decomposed into its cell ops) → last state → classes."""

    def __init__(self, cell: type[nn.RNNBase], bidirectional: bool = False):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, WIDTH)
        self.rnn = cell(WIDTH, WIDTH, num_layers=2, batch_first=True, bidirectional=bidirectional)
        self.head = nn.Linear(WIDTH * (2 if bidirectional else 1), CLASSES)

    def forward(self, input_ids):
        out, _ = self.rnn(self.embed(input_ids))
        return self.head(out[:, -1])


class UNet(nn.Module):
    """Two-level U-Net: convolutions, max pooling, bilinear upsampling, skip concatenation, pooled head."""

    def __init__(self):
        super().__init__()
        self.down = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.bottom = nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU())
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.fuse = nn.Sequential(nn.Conv2d(24, 8, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(8, CLASSES)

    def forward(self, pixel_values):
        skip = self.down(pixel_values)
        fused = self.fuse(torch.cat([skip, self.up(self.bottom(skip))], dim=1))
        return self.head(fused.mean((2, 3)))


GRAPH_NODES = 6
_EDGES = torch.tensor([[0, 1, 1, 2, 3, 4, 5, 0, 2], [1, 0, 2, 3, 4, 5, 0, 3, 5]])


class MessagePassing(nn.Module):
    """A graph network: messages gathered along edges, summed at their targets with index_add, then scatter_add."""

    def __init__(self):
        super().__init__()
        self.register_buffer("source", _EDGES[0].clone())
        self.register_buffer("target", _EDGES[1].clone())
        degree = torch.zeros(GRAPH_NODES).index_add(0, _EDGES[1], torch.ones(_EDGES.shape[1]))
        self.register_buffer("degree", degree.clamp(min=1)[:, None])
        self.first, self.second = nn.Linear(WIDTH, WIDTH), nn.Linear(WIDTH, WIDTH)
        self.head = nn.Linear(WIDTH, CLASSES)

    def forward(self, node_features):
        messages = self.first(node_features)[:, self.source]
        h = torch.relu(torch.zeros_like(node_features).index_add(1, self.target, messages) / self.degree)
        messages = self.second(h)[:, self.source]
        where = self.target[None, :, None].expand_as(messages)
        h = torch.relu(h + torch.zeros_like(h).scatter_add(1, where, messages))
        return self.head(h.mean(1))


class EinsumAttention(nn.Module):
    """Multi-head self-attention written with einsum, as research code often does."""

    def __init__(self, heads: int = 2):
        super().__init__()
        self.heads = heads
        self.embed = nn.Embedding(VOCAB, WIDTH)
        self.qkv = nn.Linear(WIDTH, 3 * WIDTH)
        self.out = nn.Linear(WIDTH, WIDTH)
        self.head = nn.Linear(WIDTH, CLASSES)

    def forward(self, input_ids):
        x = self.embed(input_ids)
        b, n, _ = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, -1).unbind(2)
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(q.shape[-1])
        mixed = torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), v).reshape(b, n, -1)
        return self.head((x + self.out(mixed)).mean(1))


class FourierMixer(nn.Module):
    """FNet's token mixing: the real part of a 2-D FFT over sequence and features, then a feed-forward block."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, WIDTH)
        self.norm = nn.LayerNorm(WIDTH)
        self.ff = nn.Sequential(nn.Linear(WIDTH, 2 * WIDTH), nn.GELU(), nn.Linear(2 * WIDTH, WIDTH))
        self.head = nn.Linear(WIDTH, CLASSES)

    def forward(self, input_ids):
        x = self.embed(input_ids)
        x = self.norm(x + torch.fft.fft2(x).real)
        return self.head((x + self.ff(x)).mean(1))


class SortPooling(nn.Module):
    """Convolutional features pooled by order statistics: the top-k of a sort, the median and a quantile."""

    def __init__(self, k: int = 3):
        super().__init__()
        self.k = k
        self.embed = nn.Embedding(VOCAB, WIDTH)
        self.conv = nn.Conv1d(WIDTH, WIDTH, 3, padding=1)
        self.head = nn.Linear(WIDTH * (k + 2), CLASSES)

    def forward(self, input_ids):
        h = torch.relu(self.conv(self.embed(input_ids).transpose(1, 2)))
        top = torch.sort(h, dim=-1, descending=True).values[..., : self.k]
        pooled = [top.flatten(1), h.median(-1).values, torch.quantile(h, 0.75, dim=-1)]
        return self.head(torch.cat(pooled, -1))


class ComplexRotary(nn.Module):
    """Rotary positions as Meta's Llama code writes them: pairs viewed as complex numbers times e^{iθ}."""

    def __init__(self, length: int = 64):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, WIDTH)
        self.qk = nn.Linear(WIDTH, 2 * WIDTH)
        self.v = nn.Linear(WIDTH, WIDTH)
        self.head = nn.Linear(WIDTH, CLASSES)
        angles = torch.outer(torch.arange(length), 1.0 / 10000 ** (torch.arange(0, WIDTH, 2) / WIDTH))
        self.register_buffer("rotation", torch.polar(torch.ones_like(angles), angles))

    def _rotate(self, x):
        pairs = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
        return torch.view_as_real(pairs * self.rotation[: x.shape[1]]).flatten(-2)

    def forward(self, input_ids):
        x = self.embed(input_ids)
        q, k = (self._rotate(part) for part in self.qk(x).chunk(2, -1))
        attention = F.scaled_dot_product_attention(q[:, None], k[:, None], self.v(x)[:, None], is_causal=True)
        return self.head(attention[:, 0, -1])


class SliceWrites(nn.Module):
    """In-place writes into slices (as multi-head latent attention does with its rotary half)."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, WIDTH)
        self.project = nn.Linear(WIDTH, WIDTH)
        self.rotary = nn.Linear(WIDTH // 2, WIDTH // 2)
        self.head = nn.Linear(WIDTH, CLASSES)

    def forward(self, input_ids):
        h = self.project(self.embed(input_ids))
        out = h.new_zeros(h.shape)
        out[..., : WIDTH // 2] = h[..., WIDTH // 2 :]
        out[..., WIDTH // 2 :] = self.rotary(h[..., : WIDTH // 2])
        return self.head(torch.tanh(out).mean(1))


class HashedIds(nn.Module):
    """Ids turned into several hash buckets by integer arithmetic before the embedding (CANINE's hash embedding)."""

    def __init__(self, hashes: int = 3, buckets: int = 31):
        super().__init__()
        self.buckets = buckets
        self.register_buffer("primes", torch.tensor([31, 43, 59][:hashes]))
        self.embed = nn.ModuleList(nn.Embedding(buckets, WIDTH) for _ in range(hashes))
        self.head = nn.Linear(WIDTH, CLASSES)

    def forward(self, input_ids):
        h = sum(e((input_ids + 1) * p % self.buckets) for e, p in zip(self.embed, self.primes, strict=True))
        return self.head(torch.relu(h).mean(1))


class TabularOffsets(nn.Module):
    """Categorical columns shifted by per-column offsets into one shared embedding table (tabular transformers)."""

    def __init__(self, columns: int = 8, cardinality: int = 12):
        super().__init__()
        self.register_buffer("offsets", torch.arange(columns) * cardinality)
        self.cardinality = cardinality
        self.embed = nn.Embedding(columns * cardinality, WIDTH)
        self.mix = nn.Linear(WIDTH, WIDTH)
        self.head = nn.Linear(WIDTH, CLASSES)

    def forward(self, input_ids):
        h = self.embed(input_ids % self.cardinality + self.offsets[: input_ids.shape[1]])
        return self.head(torch.relu(self.mix(h)).mean(1))


class MinMaxActivations(nn.Module):
    """Activations written with elementwise minimum / maximum and clamps (leaky maximum, hard tanh, a cap)."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, WIDTH)
        self.first, self.second = nn.Linear(WIDTH, WIDTH), nn.Linear(WIDTH, WIDTH)
        self.head = nn.Linear(WIDTH, CLASSES)

    def forward(self, input_ids):
        h = self.first(self.embed(input_ids))
        h = torch.maximum(h, 0.1 * h)
        h = torch.minimum(self.second(h).clamp(-2.0, 2.0), torch.ones_like(h))
        return self.head(h.mean(1))


class UnfoldPatches(nn.Module):
    """Patch embedding by unfolding (im2col) instead of a strided convolution, then a small MLP."""

    def __init__(self, patch: int = 4):
        super().__init__()
        self.patch = patch
        self.embed = nn.Linear(3 * patch * patch, WIDTH)
        self.mix = nn.Sequential(nn.LayerNorm(WIDTH), nn.Linear(WIDTH, WIDTH), nn.GELU())
        self.head = nn.Linear(WIDTH, CLASSES)

    def forward(self, pixel_values):
        patches = F.unfold(pixel_values, self.patch, stride=self.patch // 2).transpose(1, 2)
        h = self.embed(patches)
        return self.head((h + self.mix(h)).mean(1))


class LoopedExperts(nn.Module):
    """A mixture of experts as HuggingFace wrote it for years: a Python loop over the experts that received tokens,
    skipping the empty ones. torch.export cannot trace the test; lrpgraph records the call that ran."""

    def __init__(self, experts: int = 4):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, WIDTH)
        self.router = nn.Linear(WIDTH, experts, bias=False)
        self.experts = nn.ModuleList(
            nn.Sequential(nn.Linear(WIDTH, WIDTH), nn.SiLU(), nn.Linear(WIDTH, WIDTH)) for _ in range(experts)
        )
        self.head = nn.Linear(WIDTH, CLASSES)

    def forward(self, input_ids):
        x = self.embed(input_ids).flatten(0, 1)
        gate, choice = torch.softmax(self.router(x), -1).max(-1)
        out = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            rows = (choice == e).nonzero().squeeze(-1)
            if rows.numel() == 0:
                continue
            out = out.index_add(0, rows, gate[rows, None] * expert(x[rows]))
        return self.head((x + out).view(*input_ids.shape, -1).mean(1))


TORCH_ARCHITECTURES = [
    TorchArchitecture("lstm", "recurrent", lambda: Recurrent(nn.LSTM), "tokens"),
    TorchArchitecture("gru_bidirectional", "recurrent", lambda: Recurrent(nn.GRU, bidirectional=True), "tokens"),
    TorchArchitecture("unet", "convolutional", UNet, "pixels"),
    TorchArchitecture("unfold_patches", "convolutional", UnfoldPatches, "pixels"),
    TorchArchitecture("message_passing", "graph", MessagePassing, "nodes"),
    TorchArchitecture("einsum_attention", "attention", EinsumAttention, "tokens"),
    TorchArchitecture("complex_rotary", "attention", ComplexRotary, "tokens"),
    TorchArchitecture("slice_writes", "attention", SliceWrites, "tokens"),
    TorchArchitecture("fourier_mixer", "mixer", FourierMixer, "tokens"),
    TorchArchitecture("sort_pooling", "pooling", SortPooling, "tokens"),
    TorchArchitecture("hashed_ids", "embedding", HashedIds, "tokens"),
    TorchArchitecture("tabular_offsets", "embedding", TabularOffsets, "tokens"),
    TorchArchitecture("min_max_activations", "mlp", MinMaxActivations, "tokens"),
    TorchArchitecture("looped_experts", "data-dependent", LoopedExperts, "tokens"),
]
