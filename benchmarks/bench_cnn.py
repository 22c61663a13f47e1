"""Speed and memory of `explain` against the input gradient, on a VGG-16-shaped CNN (224×224) and an MLP.

    python benchmarks/bench_cnn.py [--device cuda] [--repeats 5] [--batch 1]

For each model it measures the median time of --repeats warm calls and the peak memory (a second process,
see measure.py) of: the gradient a user would write for an input attribution (parameters without
requires_grad, `torch.autograd.grad` of the target logits with respect to the input only); the gradient as
training computes it (parameters requiring grad, `.backward()` filling every parameter's .grad), which
earlier versions of this script took as the baseline; and `explain` with several presets.
Writes benchmarks/results/cnn.json (--json) and prints the table report.py makes from it.
"""

from __future__ import annotations

import argparse

import torch
from bench_llama import measured, timed
from measure import Record, in_new_process, json_argument, peak_memory
from report import cnn_block
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


PRESETS = {
    "vgg16": ["epsilon", "epsilon-gamma-box", "epsilon-plus-flat", "epsilon-alpha2-beta1"],
    "mlp": ["epsilon", "epsilon-plus-flat"],
}
NAMES = {"vgg16": "VGG-16 224×224", "mlp": "MLP 1024-4096³-1000"}


def build(which: str, batch: int, device: torch.device) -> tuple:
    """(model, input, target) of one benchmark model, seeded: the same in every process."""
    torch.manual_seed(0)
    if which == "vgg16":
        model, x = vgg16().to(device).eval(), torch.randn(batch, 3, 224, 224, device=device)
    else:
        model, x = mlp().to(device).eval(), torch.randn(max(batch, 64), 1024, device=device)
    return model, x, torch.zeros(len(x), dtype=torch.long, device=device)


def methods(model, x: torch.Tensor, target: torch.Tensor, presets: list[str]) -> dict:
    """What this benchmark measures on one model, by the key report.py reads (name → (fn, run frozen?))."""
    rows = torch.arange(len(x), device=x.device)

    def gradient():
        xr = x.detach().clone().requires_grad_()
        return torch.autograd.grad(model(xr)[rows, target].sum(), xr)[0]

    def gradient_parameters():
        xr = x.detach().clone().requires_grad_()
        model(xr)[rows, target].sum().backward()
        model.zero_grad(set_to_none=True)
        return xr.grad

    found = {"gradient": (gradient, True), "gradient_parameters": (gradient_parameters, False)}
    for preset in presets:
        rules = lrpgraph.preset(preset, low=-3.0, high=3.0) if "box" in preset else preset
        found[f"explain {preset}"] = (lambda rules=rules: lrpgraph.explain(model, x, target=target, rules=rules), False)
    return found


def peaks(which: str, batch: int, device: str) -> dict:
    """Peak bytes of every method on one model, in a memory process (measure.in_new_process)."""
    device = torch.device(device)
    model, x, target = build(which, batch, device)
    return measured(model, methods(model, x, target, PRESETS[which]), lambda fn: peak_memory(fn, device))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=1, help="VGG-16's batch (the MLP's is at least 64)")
    json_argument(parser, "cnn")
    args = parser.parse_args()
    device = torch.device(args.device)
    record = Record("cnn", device, {"batch": args.batch, "repeats": args.repeats})
    models = []
    for which in PRESETS:
        model, x, target = build(which, args.batch, device)
        table = methods(model, x, target, PRESETS[which])
        models.append(
            {
                "model": NAMES[which],
                "batch": len(x),
                "seconds": timed(model, table, device, args.repeats),
                "peak_bytes": in_new_process(peaks, memory=True, which=which, batch=args.batch, device=str(device)),
            }
        )
        del model, table
    record.write(args.json, {"models": models})
    print(cnn_block(record.data))


if __name__ == "__main__":
    main()
