"""Speed and memory of `explain` against a plain gradient, on a VGG-16-shaped CNN (224×224) and an MLP.

    python benchmarks/bench_cnn.py [--device cuda] [--repeats 5] [--batch 1]

For each model it prints the median time and peak memory of: a plain gradient (forward + backward
of the target logit, parameters requiring grad as usual), the gradient w.r.t. the input only, and
`explain` with several presets; ratios are against the plain gradient measured in the same run.
Targets (issue 2): explain ≤ 1.5× the gradient's time and ≤ its peak memory.
"""

from __future__ import annotations

import argparse

import torch
from measure import measure, mib, table
from torch import nn

import lrpgraph


def vgg16(num_classes: int = 1000) -> nn.Sequential:
    """The VGG-16 architecture (configuration D) without torchvision."""
    layers: list[nn.Module] = []
    channels = 3
    for v in [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]:
        if v == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            layers += [nn.Conv2d(channels, v, 3, padding=1), nn.ReLU(inplace=True)]
            channels = v
    layers += [
        nn.AdaptiveAvgPool2d((7, 7)),
        nn.Flatten(),
        nn.Linear(512 * 7 * 7, 4096),
        nn.ReLU(True),
        nn.Dropout(),
        nn.Linear(4096, 4096),
        nn.ReLU(True),
        nn.Dropout(),
        nn.Linear(4096, num_classes),
    ]
    return nn.Sequential(*layers)


def mlp() -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(1024, 4096),
        nn.ReLU(),
        nn.Linear(4096, 4096),
        nn.ReLU(),
        nn.Linear(4096, 4096),
        nn.ReLU(),
        nn.Linear(4096, 1000),
    )


def gradient(model, x, target, inputs_only=False):
    def run():
        if inputs_only:
            for p in model.parameters():
                p.requires_grad_(False)
        xr = x.detach().clone().requires_grad_()
        out = model(xr)
        out[torch.arange(len(x)), target].sum().backward()
        grad = xr.grad
        model.zero_grad(set_to_none=True)
        if inputs_only:
            for p in model.parameters():
                p.requires_grad_(True)
        return grad

    return run


def bench(name, model, x, target, device, repeats, presets):
    rows = []
    base = measure(gradient(model, x, target), device, repeats)
    rows.append((name, "gradient (fwd+bwd)", f"{base.seconds * 1000:.1f}", mib(base.peak_bytes), "1.00", "1.00"))
    only = measure(gradient(model, x, target, inputs_only=True), device, repeats)
    rows.append(
        (
            name,
            "gradient, input only",
            f"{only.seconds * 1000:.1f}",
            mib(only.peak_bytes),
            f"{only.seconds / base.seconds:.2f}",
            f"{only.peak_bytes / base.peak_bytes:.2f}",
        )
    )
    for preset in presets:
        rules = lrpgraph.preset(preset, low=-3.0, high=3.0) if "box" in preset else preset
        m = measure(lambda rules=rules: lrpgraph.explain(model, x, target=target, rules=rules), device, repeats)
        rows.append(
            (
                name,
                f"explain {preset}",
                f"{m.seconds * 1000:.1f}",
                mib(m.peak_bytes),
                f"{m.seconds / base.seconds:.2f}",
                f"{m.peak_bytes / base.peak_bytes:.2f}",
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=1)
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    presets = ["epsilon", "epsilon-gamma-box", "epsilon-plus-flat", "epsilon-alpha2-beta1"]
    rows = []
    model = vgg16().to(device).eval()
    x = torch.randn(args.batch, 3, 224, 224, device=device)
    rows += bench("VGG-16 224×224", model, x, torch.zeros(args.batch, dtype=torch.long), device, args.repeats, presets)
    del model
    model = mlp().to(device).eval()
    x = torch.randn(max(args.batch, 64), 1024, device=device)
    rows += bench(
        "MLP 1024-4096³-1000",
        model,
        x,
        torch.zeros(len(x), dtype=torch.long),
        device,
        args.repeats,
        ["epsilon", "epsilon-plus-flat"],
    )
    print(f"device: {device}, batch {args.batch}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(table(rows, ("model", "method", "median ms", "peak MiB", "time ×grad", "memory ×grad")))


if __name__ == "__main__":
    main()
