"""Small models shared by the tests."""

from __future__ import annotations

import torch
from torch import nn


def vgg_like(batchnorm: bool = False, dtype=torch.float64, bias: bool = True) -> nn.Sequential:
    """A VGG-shaped CNN: conv blocks with max pooling, adaptive average pooling, a classifier head."""

    def block(cin, cout):
        layers = [nn.Conv2d(cin, cout, 3, padding=1, bias=bias)]
        if batchnorm:
            layers.append(nn.BatchNorm2d(cout))
        return [*layers, nn.ReLU()]

    model = nn.Sequential(
        *block(3, 8),
        *block(8, 8),
        nn.MaxPool2d(2),
        *block(8, 16),
        nn.MaxPool2d(2),
        nn.AdaptiveAvgPool2d((2, 2)),
        nn.Flatten(),
        nn.Linear(64, 32, bias=bias),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(32, 10, bias=bias),
    )
    if batchnorm:
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.data.uniform_(0.5, 1.5)
                m.bias.data.normal_(0, 0.2)
    return model.to(dtype).eval()


def mlp(bias: bool = True, dtype=torch.float64) -> nn.Sequential:
    return (
        nn.Sequential(
            nn.Linear(6, 16, bias=bias), nn.ReLU(), nn.Linear(16, 16, bias=bias), nn.ReLU(), nn.Linear(16, 4, bias=bias)
        )
        .to(dtype)
        .eval()
    )


def relu_mlp() -> nn.Sequential:
    """Bias-free ReLU layers 6 → 12 → 10 → 4 in float64, seeded: LRP-0 is gradient × input on it."""
    torch.manual_seed(0)
    layers = [nn.Linear(6, 12, bias=False), nn.ReLU(), nn.Linear(12, 10, bias=False), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(10, 4, bias=False)).double().eval()


def tiny_llama(**config) -> nn.Module:
    """A two-layer Llama (vocab 64, hidden 16, one key/value head) in float64, seeded; `config` overrides its config."""
    import transformers

    torch.manual_seed(0)
    sizes = dict(
        vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1,
    )  # fmt: skip
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(**{**sizes, **config})).double().eval()


def wide_llama() -> nn.Module:
    """tiny_llama with hidden 32, MLP 48, four heads over two key/value heads (heads of 8 dims)."""
    return tiny_llama(hidden_size=32, intermediate_size=48, num_attention_heads=4, num_key_value_heads=2)
