"""Write RESULTS.md's "Speed and memory" section and the README's speed figures from the benchmarks' JSON.

    python benchmarks/report.py

Reads benchmarks/results/<name>.json (written by bench_llama.py, bench_memory.py, bench_corpus.py,
bench_generation.py, bench_cnn.py, bench_ray.py, bench_similarity.py, bench_patching.py, bench_quantized.py and
bench_mamba.py:
seconds and bytes, the command and the machine), computes every ratio from those measurements (of medians, within
one file: one run), and rewrites:
- benchmarks/RESULTS.md from its "## Speed and memory" heading to the end (faithfulness.py writes what is
  above it, and calls `speed_section` for the rest);
- each `<!-- bench:NAME -->…<!-- /bench:NAME -->` block of README.md.
tests/test_benchmark_report.py checks that both are exactly what this makes from the committed JSON, so a
figure typed by hand fails the tests. The benchmark scripts print their own block with the same functions.
"""

from __future__ import annotations

import json
import re
import statistics
import textwrap
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
RESULTS_MD = HERE / "RESULTS.md"
README = HERE.parent / "README.md"
SECTION = "## Speed and memory"
BENCHMARKS = (
    "llama",
    "memory",
    "corpus",
    "generation",
    "cnn",
    "ray",
    "similarity",
    "patching",
    "quantized",
    "mamba",
)
WIDTH = 110


def table(rows: list[tuple], headers: tuple) -> str:
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
    line = "| " + " | ".join(str(h).ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"
    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = ["| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows]
    return "\n".join([line, rule, *body])


def load(folder: Path = RESULTS) -> dict[str, dict]:
    """Every benchmark's JSON, by name; a missing file is an error naming the script that writes it."""
    found = {}
    for name in BENCHMARKS:
        path = folder / f"{name}.json"
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: run benchmarks/bench_{name}.py, which writes it")
        found[name] = json.loads(path.read_text())
    return found


def median(value: float | list[float]) -> float:
    return statistics.median(value) if isinstance(value, list) else value


def ms(seconds: float) -> str:
    value = seconds * 1000
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}"


def sec(seconds: float) -> str:
    return f"{seconds:.2f}"


def mib(n: float) -> str:
    return f"{n / 2**20:.1f}"


def x(ratio: float) -> str:
    return f"{ratio:.2f}×"


def spread(values: list[float], unit: Callable[[float], str]) -> str:
    """The median, and the range when there are several values."""
    if len(values) < 2:
        return unit(median(values))
    return f"{unit(median(values))} ({unit(min(values))}–{unit(max(values))})"


def joined(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def machine(data: dict) -> str:
    """Where a benchmark ran, and how busy the machine was (the 1-minute load average at its start and end)."""
    m = data["machine"]
    where = f"{m['gpu']}" if m["gpu"] else f"{m['cpu']}, {m['cpu_count']} logical CPUs"
    return (
        f"{m['device']} ({where}), {m['threads']} torch threads; torch {m['torch']}, transformers "
        f"{m['transformers']}, lrpgraph {m['lrpgraph']} at {m['commit']}; {m['date']}; load average "
        f"{m['load_average_start'][0]:.2f} at the start, {m['load_average_end'][0]:.2f} at the end"
    )


def prose(text: str) -> str:
    """A paragraph wrapped as the rest of the Markdown is (code spans may break at their spaces)."""
    return textwrap.fill(text, WIDTH, break_long_words=False, break_on_hyphens=False)


def header(data: dict, what: str) -> str:
    return prose(f"Written by `{data['command']}`: {what}.") + "\n" + prose(f"Machine: {machine(data)}.")


GRADIENT = "gradient (head at the last position)"
FULL_HEAD = "full-head gradient (head at every position)"
LLAMA_LABELS = {
    "forward": "forward only (head at the last position)",
    "gradient": GRADIENT,
    "gradient_full_head": FULL_HEAD,
    "explain": "explain",
}


def llama_rows(data: dict) -> list[dict]:
    """Per length: the median seconds and the peak bytes of each method."""
    return [
        {
            "tokens": row["tokens"],
            "seconds": {k: median(v) for k, v in row["seconds"].items()},
            "peak": row["peak_bytes"],
            "times": row["seconds"],
        }
        for row in data["results"]["lengths"]
    ]


def llama_block(data: dict) -> str:
    s = data["settings"]
    rows = []
    for row in llama_rows(data):
        t, p = row["seconds"], row["peak"]
        for key, label in LLAMA_LABELS.items():
            rows.append(
                (
                    row["tokens"],
                    f"{label} {s['rules']}" if key == "explain" else label,
                    spread(row["times"][key], ms),
                    mib(p[key]),
                    x(t[key] / t["gradient"]),
                    x(t[key] / t["gradient_full_head"]),
                    x(p[key] / p["gradient"]),
                    x(p[key] / p["gradient_full_head"]),
                )
            )
    what = f"{s['model']}, {s['rules']}, {s['dtype']}; median (range) of {s['repeats']} warm calls"
    return (
        header(data, what)
        + "\n\n"
        + table(
            rows,
            (
                "tokens",
                "method",
                "ms",
                "peak MiB",
                "time × gradient",
                "time × full-head gradient",
                "memory × gradient",
                "memory × full-head gradient",
            ),
        )
        + "\n\n"
        + llama_summary(data)
    )


def llama_summary(data: dict) -> str:
    """The sentence the README quotes: explain against both gradients, time and memory, at every length."""
    rows = llama_rows(data)
    lengths = joined([str(r["tokens"]) for r in rows])

    def ratios(measure: str, base: str) -> str:
        return joined([x(r[measure]["explain"] / r[measure][base]) for r in rows])

    return prose(
        f"A warm `explain` ({data['settings']['rules']}) takes {ratios('seconds', 'gradient')} the time of the "
        f"input gradient with the vocabulary head at the last position only, at {lengths} tokens "
        f"({ratios('seconds', 'gradient_full_head')} the time of the gradient that computes the head at every "
        f"position), and {ratios('peak', 'gradient')} the gradient's peak memory "
        f"({ratios('peak', 'gradient_full_head')} the full-head gradient's)."
    )


def fastest(values: dict, keys: tuple[str, ...]) -> float:
    """The smallest of `values` at `keys`: the faster (or smaller) of several ways to compute the same gradients."""
    return min(values[key] for key in keys)


def memory_block(data: dict) -> str:
    s = data["settings"]
    k = s["targets"]
    ways = (f"gradient_{k}_targets_batched", f"gradient_{k}_targets_each")
    labels = {
        "gradient": GRADIENT,
        "gradient_full_head": FULL_HEAD,
        "explain": "explain, no budget",
        "explain_budget": "explain, budget ¼ of the store's no-budget peak",
        ways[0]: f"{k} gradients over one forward, one batched backward",
        ways[1]: f"{k} gradients over one forward, one backward each",
        f"explain_{k}_targets": f"explain, K = {k} targets in one walk",
    }
    rows, checks = [], []
    for row in data["results"]["lengths"]:
        t = {key: median(v) for key, v in row["seconds"].items()}
        p, store = row["peak_bytes"], row["store_peak_bytes"]
        for key, label in labels.items():
            rows.append(
                (
                    row["tokens"],
                    label,
                    spread(row["seconds"][key], ms),
                    mib(p[key]),
                    mib(store[key]) if key in store else "",
                    x(t[key] / t["gradient"]),
                    x(p[key] / p["gradient"]),
                    x(p[key] / p["gradient_full_head"]),
                )
            )
        within = "within it" if store["explain_budget"] <= store["budget"] else "over it"
        checks.append(
            (
                row["tokens"],
                f"{mib(store['budget'])} MiB, store peak {mib(store['explain_budget'])} MiB ({within})",
                x(t["explain_budget"] / t["explain"]),
                x(p["explain_budget"] / p["explain"]),
                x(t[f"explain_{k}_targets"] / t["explain"]),
                x(t[f"explain_{k}_targets"] / fastest(t, ways)),
                x(p[f"explain_{k}_targets"] / fastest(p, ways)),
            )
        )
    what = f"{s['model']}, {s['rules']}, {s['dtype']}; median (range) of {s['repeats']} warm calls"
    return (
        header(data, what)
        + "\n\n"
        + table(
            rows,
            (
                "tokens",
                "method",
                "ms",
                "peak MiB",
                "store peak MiB",
                "time × gradient",
                "memory × gradient",
                "memory × full-head gradient",
            ),
        )
        + "\n\n"
        + prose(
            f"The budget, and K = {k} targets against the faster (time) and the smaller (memory) of the two ways "
            f"to take {k} gradients:"
        )
        + "\n\n"
        + table(
            checks,
            (
                "tokens",
                "budget",
                "budgeted: time × no budget",
                "budgeted: memory × no budget",
                f"K = {k}: time × one target",
                f"K = {k}: time × {k} gradients",
                f"K = {k}: memory × {k} gradients",
            ),
        )
    )


CORPUS_LABELS = {
    "gradient": "gradients, one call per prompt (head at the last position)",
    "gradient_full_head": "full-head gradients, one call per prompt (head at every position)",
    "gradient_batched": "gradients in explain_many's batches (head at each last position)",
    "explain_each_traced": "`explain`, one call per prompt, trace included",
    "explain_each": "`explain`, a second call per prompt (the trace made)",
    "explain_many_traced": "`explain_many`, trace included",
    "explain_many": "`explain_many` again (the trace made)",
}


def corpus_block(data: dict) -> str:
    s, r = data["settings"], data["results"]
    total = {key: median(v) for key, v in r["corpus_seconds"].items()}
    rows = [
        (
            label,
            spread(r["corpus_seconds"][key], sec),
            x(total[key] / total["gradient"]),
            x(total[key] / total["gradient_full_head"]),
            x(total[key] / total["gradient_batched"]),
        )
        for key, label in CORPUS_LABELS.items()
    ]
    first_labels = {
        "explain_cold": "`explain`, trace cache empty (it traces)",
        "explain_warm_disk": "`explain`, trace cache on disk filled by an earlier process",
        "gradient": GRADIENT,
    }
    firsts = []
    for key, label in first_labels.items():
        runs = r["first_call"][key]
        firsts.append(
            (
                label,
                spread([run["first"] for run in runs], sec),
                x(median([run["first"] / run["gradient"] for run in runs])),
                x(median([run["first"] / run["gradient_full_head"] for run in runs])),
                spread([run["collect"] for run in runs], sec),
            )
        )
    lengths = s["lengths"]
    what = (
        f"{len(lengths)} prompts of distinct lengths {lengths[0]}–{lengths[-1]}, one target each; {s['model']}, "
        f"{s['rules']}; explain_many's batches ≤ {s['batch_size']} inputs and ≤ {s['max_tokens']} padded tokens; "
        f"seconds for the whole corpus, median (range) of {s['repeats']} runs"
    )
    return (
        header(data, what)
        + "\n\n"
        + table(rows, ("work", "seconds", "× gradients", "× full-head gradients", "× batched gradients"))
        + "\n\n"
        + prose(
            f"The first call of a new process at {s['first_call_tokens']} tokens, each in its own process "
            f"(median (range) of {s['repeats']}); ratios against a warm gradient in the same process:"
        )
        + "\n\n"
        + table(
            firsts,
            ("first call", "seconds", "× gradient", "× full-head gradient", "gc.collect() before it, s"),
        )
    )


GENERATION_WAYS = ("gradient_batched", "gradient_each")


def generation_block(data: dict) -> str:
    s, r = data["settings"], data["results"]
    n = s["new_tokens"]
    labels = {
        "explain_generation": f"`explain_generation` ({n} tokens, one forward, one walk)",
        "explain_each": f"{n} × `explain`",
        "gradient_batched": f"{n} gradients over one forward, one batched backward (head at the {n} positions)",
        "gradient_each": f"{n} gradients over one forward, one backward each (head at the {n} positions)",
        "gradient_full_head": f"{n} gradients over one forward, one batched backward (head at every position)",
        "generate": f"`generate` {n} tokens (no explanation)",
    }
    t = {key: median(v) for key, v in r["seconds"].items()}
    p = r["peak_bytes"]
    rows = [
        (
            label,
            spread(r["seconds"][key], sec),
            mib(p[key]),
            x(t[key] / fastest(t, GENERATION_WAYS)),
            x(t[key] / t["gradient_full_head"]),
            x(p[key] / fastest(p, GENERATION_WAYS)),
        )
        for key, label in labels.items()
    ]
    what = (
        f"{s['prompt_tokens']}-token prompt, {n} generated tokens; {s['model']}, {s['rules']}; "
        f'median (range) of {s["repeats"]} warm calls; "gradients" is the faster (time) or the smaller (memory) '
        "of the two ways to take them with the head at the needed positions only"
    )
    return (
        header(data, what)
        + "\n\n"
        + table(
            rows,
            ("work", "seconds", "peak MiB", "time × gradients", "time × full-head gradients", "memory × gradients"),
        )
        + "\n\n"
        + generation_summary(data)
    )


def generation_summary(data: dict) -> str:
    """The sentence the README quotes."""
    s, r = data["settings"], data["results"]
    n = s["new_tokens"]
    t = {key: median(v) for key, v in r["seconds"].items()}
    gradients = fastest(t, GENERATION_WAYS)
    return prose(
        f"On the Llama-shaped benchmark model ({data['machine']['device']}, {data['machine']['threads']} threads), "
        f"{n} tokens after a {s['prompt_tokens']}-token prompt: `explain_generation` {sec(t['explain_generation'])} s, "
        f"{x(t['explain_each'] / t['explain_generation'])} faster than {n} separate `explain` calls "
        f"({sec(t['explain_each'])} s), and {x(t['explain_generation'] / gradients)} the time of the {n} input "
        f"gradients a user would write ({sec(gradients)} s: one forward with the head at the {n} positions only, "
        f"then one batched backward or one backward per token, whichever was faster); the matrix equals the "
        f"separate explains to {r['matrix_vs_explains_max_relative_difference']:.1e} (largest difference relative "
        "to the largest relevance; `benchmarks/bench_generation.py`)."
    )


SIMILARITY_LABELS = {
    "explain": "`explain`, cosine seed, both sentences in one batch (first-order rows)",
    "explain_similarity": "`explain_similarity` (BiLRP; the maps as T rows of a transposed walk)",
    "explain_similarity_seeds": "`explain_similarity` walking the D seeds of each side instead",
    "gradient_x_input_jacobians": "gradient × input form by autograd (D × T Jacobian of each side)",
}


def similarity_block(data: dict) -> str:
    s, r = data["settings"], data["results"]
    t = {key: median(v) for key, v in r["seconds"].items()}
    rows = [
        (label, spread(r["seconds"][key], ms), x(t[key] / t["explain"])) for key, label in SIMILARITY_LABELS.items()
    ]
    what = (
        f"two sentences of {s['tokens']} tokens; {s['model']}, {s['rules']}; median (range) of {s['repeats']} warm "
        "calls"
    )
    return (
        header(data, what)
        + "\n\n"
        + table(rows, ("work", "ms", "time × explain"))
        + "\n\n"
        + prose(
            f"The two routes give the same maps to {r['routes_max_relative_difference']:.1e} (largest difference "
            f"relative to the largest map). The pairs hold {r['interactions_sum']:.4f} of the cosine similarity "
            f"{r['similarity']:.4f}; the rest stays with the biases, the token-type and position embeddings and the "
            "rules' stabilizers, as in the first-order rows."
        )
        + "\n\n"
        + similarity_summary(data)
    )


def gib(n: float) -> str:
    return f"{n / 2**30:.2f}"


def quantized_block(data: dict) -> str:
    s, r = data["settings"], data["results"]
    big, peak, f32, i8 = r["int8"], r["int8_memory"], r["twin_float32"], r["twin_int8"]
    float_weights = big["parameters"] * 4
    runs = {
        f"{s['layers']} layers, int8 weights": big,
        f"{s['twin_layers']} layers, int8 weights": i8,
        f"{s['twin_layers']} layers, float32": f32,
    }
    rows = [
        (label, f"{r['parameters'] / 1e9:.2f}", sec(r["explain_seconds"]), sec(r["gradient_seconds"]),
         x(r["explain_seconds"] / r["gradient_seconds"]))
        for label, r in runs.items()
    ]  # fmt: skip
    what = (
        f"a Llama of hidden {s['shape']['hidden_size']}, MLP {s['shape']['intermediate_size']}, "
        f"{s['shape']['num_attention_heads']} heads over {s['shape']['num_key_value_heads']} key/value heads, "
        f"vocabulary {s['shape']['vocab_size']}; linear layers quantized by torchao's Int8WeightOnlyConfig; AttnLRP at "
        f"{s['tokens']} tokens, one warm call each"
    )
    return (
        header(data, what)
        + "\n\n"
        + table(rows, ("model", "parameters (B)", "explain s", "fair gradient s", "explain × gradient"))
        + "\n\n"
        + prose(
            f"The int8 model holds {gib(big['resident_bytes'])} GiB; its explain held "
            f"{gib(peak['explain_peak_bytes'])} GiB beyond that at its peak, so the whole call needs "
            f"{gib(big['resident_bytes'] + peak['explain_peak_bytes'])} GiB. In float32 the weights alone are "
            f"{gib(float_weights)} GiB (parameters × 4 bytes), {gib(float_weights + peak['explain_peak_bytes'])} GiB "
            f"with the same explain peak. On the {s['twin_layers']}-layer twin, int8 weights make an explain "
            f"{x(i8['explain_seconds'] / f32['explain_seconds'])} the float32 one's time (each weight is dequantized "
            "where the forward and the rule read it). The relative conservation error (seed − input total) / |seed| "
            f"is {big['conservation_error']:.2f} on the {s['layers']}-layer int8 model and "
            f"{f32['conservation_error']:.2f} (float32) / {i8['conservation_error']:.2f} (int8) on the twins: with "
            "random weights much of the logit stays with AttnLRP's stabilisers, more of it in the deeper model "
            "(tests/test_quantized.py shows int8 and float32 with the same weights give the same relevance)."
        )
        + "\n\n"
        + quantized_summary(data)
    )


def quantized_summary(data: dict) -> str:
    """The sentence the README quotes."""
    s, r = data["settings"], data["results"]
    big, peak = r["int8"], r["int8_memory"]
    return prose(
        f"A {big['parameters'] / 1e9:.1f}-billion-parameter Llama shape with torchao int8 weights "
        f"({data['machine']['device']}, {data['machine']['threads']} threads) explains {s['tokens']} tokens in "
        f"{big['explain_seconds']:.0f} s ({x(big['explain_seconds'] / big['gradient_seconds'])} the fair gradient), "
        f"holding {gib(big['resident_bytes'] + peak['explain_peak_bytes'])} GiB in all; its float32 weights alone "
        f"would be {gib(big['parameters'] * 4)} GiB (`benchmarks/bench_quantized.py`)."
    )


def similarity_summary(data: dict) -> str:
    """The sentence the README quotes."""
    s, r = data["settings"], data["results"]
    t = {key: median(v) for key, v in r["seconds"].items()}
    return prose(
        f"On all-MiniLM-L6-v2 ({data['machine']['device']}, {data['machine']['threads']} threads), two "
        f"{s['tokens']}-token sentences: `explain_similarity` takes {ms(t['explain_similarity'])} ms, "
        f"{x(t['explain_similarity'] / t['explain'])} one first-order `explain` of the pair "
        f"({ms(t['explain'])} ms); walking each side's 384 seeds instead of transposing takes "
        f"{x(t['explain_similarity_seeds'] / t['explain'])} (`benchmarks/bench_similarity.py`)."
    )


def patching_block(data: dict) -> str:
    s, r = data["settings"], data["results"]
    rows = []
    for kind, found in r["kinds"].items():
        p, t = found["pearson"], found["seconds"]
        rows.append(
            (
                kind,
                f"{p['relevance_patching']:.3f}",
                f"{p['relevance_patching_gradient_attention']:.3f}",
                f"{p['attribution_patching']:.3f}",
                f"{t['activation_patching']:.2f}",
                f"{t['attribution_patching']:.2f}",
                f"{t['relevance_patching']:.2f}",
            )
        )
    mlp = r["kinds"]["MLP output"]["pearson"]
    holds = mlp["relevance_patching"] >= mlp["attribution_patching"]
    what = (
        f"{s['model']} (held-out accuracy {r['accuracy']:.3f}, {r['train_seconds']:.0f} s of training); "
        f"{s['pairs']} clean/corrupted prompt pairs of {s['positions']} tokens; components: every (layer, position) "
        "of each type; Pearson r of each estimate with activation patching over every (prompt, layer, position)"
    )
    return (
        header(data, what)
        + "\n\n"
        + table(
            rows,
            (
                "component",
                "RelP r",
                "RelP r, attention by gradient",
                "attribution patching r",
                "activation patching s",
                "attribution s",
                "RelP s",
            ),
        )
        + "\n\n"
        + prose(
            f"The metric (answer − subject logit) falls by {r['clean_minus_corrupted_metric']:.2f} on average from "
            "clean to corrupted prompts. The RelP paper's claim that RelP tracks activation patching at least as "
            "well as attribution patching on MLP outputs "
            + ("holds here" if holds else "does **not** hold here")
            + f" (r = {mlp['relevance_patching']:.3f} against {mlp['attribution_patching']:.3f})."
        )
    )


def patching_summary(data: dict) -> str:
    """The sentence the README quotes."""
    s, r = data["settings"], data["results"]
    kinds = r["kinds"]
    parts = ", ".join(
        f"{kind} {k['pearson']['relevance_patching']:.2f} against {k['pearson']['attribution_patching']:.2f}"
        for kind, k in kinds.items()
    )
    return prose(
        f"On a {s['layers']}-layer GPT-2 trained here on an IOI-like task, the Pearson correlation with activation "
        f"patching over every (prompt, layer, position) of {s['pairs']} prompt pairs is, for RelP against "
        f"attribution patching: {parts} (`benchmarks/bench_patching.py`)."
    )


def main_job_block(data: dict) -> str:
    """What the main job printed, as the benchmark recorded it."""
    return "```\n" + data["results"]["main_job_stdout"].rstrip("\n") + "\n```"


def cnn_block(data: dict) -> str:
    rows = []
    for model in data["results"]["models"]:
        t = {key: median(v) for key, v in model["seconds"].items()}
        p = model["peak_bytes"]
        for key in model["seconds"]:
            label = {
                "gradient": "gradient, input only (parameters frozen)",
                "gradient_parameters": "gradient with parameter gradients (`.backward()`)",
            }.get(key, key)
            rows.append(
                (
                    f"{model['model']}, batch {model['batch']}",
                    label,
                    spread(model["seconds"][key], ms),
                    mib(p[key]),
                    x(t[key] / t["gradient"]),
                    x(p[key] / p["gradient"]),
                )
            )
    what = f"median (range) of {data['settings']['repeats']} warm calls"
    return (
        header(data, what)
        + "\n\n"
        + table(rows, ("model", "method", "ms", "peak MiB", "time × gradient", "memory × gradient"))
    )


MAMBA_NAMES = {"mamba": "Mamba", "mamba2": "Mamba-2"}


def mamba_block(data: dict) -> str:
    rows = []
    for row in data["results"]["rows"]:
        t = {key: median(v) for key, v in row["seconds"].items()}
        p = row["peak_bytes"]
        rows.append(
            (
                MAMBA_NAMES[row["model"]],
                row["tokens"],
                f"{row['tracer']}, {row['nodes']} nodes",
                spread(row["seconds"]["gradient"], ms),
                sec(row["first_explain"]),
                spread(row["seconds"]["explain"], ms),
                x(t["explain"] / t["gradient"]),
                mib(p["gradient"]),
                mib(p["explain"]),
                x(p["explain"] / p["gradient"]),
            )
        )
    what = f"median (range) of {data['settings']['repeats']} warm calls, rules `{data['settings']['rules']}`"
    headers = (
        "model",
        "tokens",
        "graph",
        "gradient ms",
        "first explain s",
        "warm explain ms",
        "time × gradient",
        "gradient peak MiB",
        "explain peak MiB",
        "memory × gradient",
    )
    text = header(data, what) + "\n\n" + table(rows, headers)
    mamba = sorted((r for r in data["results"]["rows"] if r["model"] == "mamba"), key=lambda r: r["tokens"])
    if len(mamba) >= 2:
        short, long = mamba[0], mamba[-1]
        grew = {key: median(long["seconds"][key]) / median(short["seconds"][key]) for key in ("gradient", "explain")}
        text += "\n\n" + prose(
            f"From {short['tokens']} to {long['tokens']} tokens ({long['tokens'] / short['tokens']:.0f}× longer) "
            f"Mamba's gradient takes {grew['gradient']:.0f}× the time and the warm explain {grew['explain']:.0f}×: the "
            "model's scan is a Python loop reading `x[:, :, t]` at every step, and autograd's backward of each such "
            "read writes a tensor of x's full size (O(T²)). "
            + (
                "lrpgraph traces the loop as one `linear_scan` op, so the graph has the same nodes at every length, "
                "one trace serves them all, and the explain's walk of the scan is O(T). "
                if len({r["nodes"] for r in mamba}) == 1
                else "The trace unrolls the loop: the graph grows with the length and each length is traced again. "
            )
            + "The first explain is a fresh copy of the model: its trace, which no gradient pays, is included."
        )
    return text


def ray_block(data: dict) -> str:
    s, r = data["settings"], data["results"]
    local = r["explain_many_seconds"]
    rows = [("`explain_many`, this process", 1, sec(local), f"{s['prompts'] / local:.2f}", x(1.0))]
    for workers, seconds in r["ray_seconds"].items():
        rows.append(
            (f"Ray, {workers} worker(s)", workers, sec(seconds), f"{s['prompts'] / seconds:.2f}", x(seconds / local))
        )
    what = (
        f"{s['prompts']} prompts of {s['shortest']}–{s['longest']} tokens, {s['model']}, {s['rules']}, batches of "
        f"{s['batch_size']}, {s['torch_threads_per_worker']} torch thread per worker, the trace cache warm; the Ray "
        f"rows include building the model in each actor and writing Parquet, not starting Ray "
        f"({sec(r['ray_startup_seconds'])} s)"
    )
    return header(data, what) + "\n\n" + table(rows, ("path", "workers", "seconds", "prompts/s", "× explain_many"))


def _ratio(values: dict, key: str, base: str) -> float | None:
    return values[key] / values[base] if values else None


def targets(results: dict) -> list[tuple[str, str, float | None, str, float]]:
    """(issue, what, measured, "≤" or "≥", bound) for every target an issue set these benchmarks, the unit in
    the bound's text ("s" where the row says seconds, else a ratio); measured is None where the JSON does not
    hold that case (a run without that length)."""
    found = []

    def add(issue: str, what: str, value: float | None, bound: float, at_least: bool = False) -> None:
        found.append((issue, what, value, "≥" if at_least else "≤", bound))

    llama = {row["tokens"]: row for row in llama_rows(results["llama"])}
    for tokens, bound in ((128, 1.2), (512, 1.1), (1024, 1.0)):
        t = llama[tokens]["seconds"] if tokens in llama else {}
        add("27", f"warm explain at {tokens} tokens, time × gradient", _ratio(t, "explain", "gradient"), bound)
    p = llama[1024]["peak"] if 1024 in llama else {}
    add("27", "warm explain at 1024 tokens, peak memory × gradient", _ratio(p, "explain", "gradient"), 0.98)
    corpus = results["corpus"]["results"]
    total = {key: median(v) for key, v in corpus["corpus_seconds"].items()}
    what = "with the trace, time × one gradient per prompt"
    add("27", f"corpus, `explain_many` {what}", total["explain_many_traced"] / total["gradient"], 1.0)
    add("27", f"corpus, one `explain` per prompt {what}", total["explain_each_traced"] / total["gradient"], 1.3)
    tokens = results["corpus"]["settings"]["first_call_tokens"]
    cold = median([run["first"] for run in corpus["first_call"]["explain_cold"]])
    add("27", f"cold first call at {tokens} tokens, seconds", cold, 1.5)
    warm = median([run["first"] / run["gradient"] for run in corpus["first_call"]["explain_warm_disk"]])
    add("27", f"first call of a new process, trace cache on disk warm, {tokens} tokens, × a gradient", warm, 3.0)

    memory = {row["tokens"]: row for row in results["memory"]["results"]["lengths"]}
    k = results["memory"]["settings"]["targets"]
    t = {key: median(v) for key, v in memory[4096]["seconds"].items()} if 4096 in memory else {}
    p = memory[4096]["peak_bytes"] if 4096 in memory else {}
    add("3", "explain without budget at 4096 tokens, peak memory × gradient", _ratio(p, "explain", "gradient"), 0.5)
    add("3", "explain with a budget at 4096 tokens, time × no budget", _ratio(t, "explain_budget", "explain"), 1.4)
    add("3", f"K = {k} targets at 4096 tokens, time × one target", _ratio(t, f"explain_{k}_targets", "explain"), 3.0)

    for model in results["cnn"]["results"]["models"]:
        t = {key: median(v) for key, v in model["seconds"].items()}
        explains = [key for key in t if key.startswith("explain")]
        slowest = max(t[key] / t["gradient"] for key in explains)
        largest = max(model["peak_bytes"][key] / model["peak_bytes"]["gradient"] for key in explains)
        add("2", f"{model['model']}, the slowest preset, time × gradient", slowest, 1.5)
        add("2", f"{model['model']}, the largest preset peak, memory × gradient", largest, 1.0)

    pairs = {key: median(v) for key, v in results["similarity"]["results"]["seconds"].items()}
    tokens = results["similarity"]["settings"]["tokens"]
    what = f"`explain_similarity`, two {tokens}-token sentences on MiniLM, time × one first-order explain"
    add("29", what, pairs["explain_similarity"] / pairs["explain"], 25.0)

    mamba = {(row["model"], row["tokens"]): row for row in results["mamba"]["results"]["rows"]}
    row = mamba.get(("mamba", 1024))
    t = {key: median(v) for key, v in row["seconds"].items()} if row else {}
    add("31", "4-layer Mamba at 1024 tokens, warm explain time × gradient", _ratio(t, "explain", "gradient"), 2.0)
    add(
        "31",
        "4-layer Mamba at 1024 tokens, peak memory × gradient",
        _ratio(row["peak_bytes"] if row else {}, "explain", "gradient"),
        2.0,
    )

    first = row["first_explain"] / t["gradient"] if row else None
    add("31", "4-layer Mamba at 1024 tokens, first explain (its trace included) × warm gradient", first, 2.0)

    g = {key: median(v) for key, v in results["generation"]["results"]["seconds"].items()}
    speedup = g["explain_each"] / g["explain_generation"]
    add("18", "`explain_generation`, speed-up over one `explain` per token", speedup, 3.0, at_least=True)
    return found


def targets_block(results: dict) -> str:
    rows = []
    for issue, what, value, relation, bound in targets(results):
        unit = " s" if what.endswith("seconds") else "×"
        if value is None:
            shown = verdict = "not measured"
        else:
            shown = f"{value:.2f}{unit}"
            verdict = "met" if (value >= bound if relation == "≥" else value <= bound) else "**not met**"
        rows.append((issue, what, f"{relation} {bound:g}{unit}", shown, verdict))
    return (
        prose(
            "Each issue's target, checked against the measurements above (ratios against the gradient with the "
            "head at the last position and no parameter gradients):"
        )
        + "\n\n"
        + table(rows, ("issue", "what", "target", "measured", ""))
    )


LXT = """LXT (AttnLRP's reference implementation, PyPI `lxt`) is not a column here: it does not run with the
torch and transformers this project is tested on. Tried with `lxt` 2.1 (the newest on PyPI), installed with
torch 2.13.0+cpu and transformers 5.25.0 held fixed by a constraints file (without one, pip replaces torch
with 2.14.1): its dependency `open_clip_torch` brings torchvision 0.28.0 from PyPI, whose compiled operators
do not register with the CPU build of torch ("operator torchvision::nms does not exist"); transformers then
imports that torchvision, and `LlamaForCausalLM` itself fails to import, lrpgraph included. With torchvision
removed again, `import lxt.efficient` fails: its BERT patch imports `find_pruneable_heads_and_indices`, which
transformers 5 removed, and its ViT patch imports torchvision. With both stubbed out,
`monkey_patch(modeling_llama)` replaces transformers' attention registry (`ALL_ATTENTION_FUNCTIONS`) with a
plain dict, and every forward of this transformers' Llama fails ("'dict' object has no attribute
'get_interface'"), with eager and SDPA attention alike. A column would need LXT itself patched, which would no
longer be LXT as its users install it."""


def speed_section(results: dict) -> str:
    """RESULTS.md from the "## Speed and memory" heading to the end, made from the benchmarks' JSON."""
    blocks = {name: render(results) for name, render in RESULTS_BLOCKS.items()}
    return f"""{SECTION}

Everything from this heading down is written by `python benchmarks/report.py` from the JSON files in
`benchmarks/results/`, which the benchmark scripts write (seconds and bytes, the command and the machine);
`tests/test_benchmark_report.py` fails if it differs. Each ratio is of medians taken in the same run.

The baselines are the strongest a user would write for the same attribution: "gradient" is the gradient of the
explained logit with respect to the input embeddings (`torch.autograd.grad`), the parameters without
`requires_grad` (the embeddings the only leaf), the vocabulary head computed at the explained position only
(`logits_to_keep=1`, or the head applied to the needed rows). "Full-head gradient" is the same with the
head computed at every position (the model's default, `logits_to_keep=0`), which earlier versions of these
benchmarks took as the baseline; it is kept as a second column. Peak memory is the resident set's high-water
mark during one call less the resident set before it, in a process started with `MALLOC_MMAP_THRESHOLD_=65536`
so that freed large blocks go back to the system (see `benchmarks/measure.py`); it counts everything the call
held, not only tensors. Blocks under 64 KiB still come from the heap and may reuse memory freed before the
call, so peaks of a few MiB (the shortest inputs) read low. The load average is printed with each run:
timings taken while the machine was busy with other work are slower and noisier, and a ratio is only as good
as the two timings it divides.

### One warm explain on a Llama-shaped model

{_marked("llama", blocks["llama"])}

### Memory budgets and K targets

{_marked("memory", blocks["memory"])}

### A corpus of prompts, and the first call of a new process

{_marked("corpus", blocks["corpus"])}

### Explaining a generation

{_marked("generation", blocks["generation"])}

### Explaining a similarity pair by pair (BiLRP)

{_marked("similarity", blocks["similarity"])}

### Relevance patching on an IOI-like task

{_marked("patching", blocks["patching"])}

### A model too big for float32, in int8 weights

{_marked("quantized", blocks["quantized"])}

### A CNN and an MLP

{_marked("cnn", blocks["cnn"])}

### State-space models (MambaLRP)

{_marked("mamba", blocks["mamba"])}

### A corpus on Ray

{_marked("ray", blocks["ray"])}

### Targets

{_marked("targets", blocks["targets"])}

### LXT

{LXT}
"""


def _marked(name: str, text: str) -> str:
    return f"<!-- bench:{name} -->\n{text}\n<!-- /bench:{name} -->"


RESULTS_BLOCKS: dict[str, Callable[[dict], str]] = {
    "llama": lambda r: llama_block(r["llama"]),
    "memory": lambda r: memory_block(r["memory"]),
    "corpus": lambda r: corpus_block(r["corpus"]),
    "generation": lambda r: generation_block(r["generation"]),
    "cnn": lambda r: cnn_block(r["cnn"]),
    "ray": lambda r: ray_block(r["ray"]),
    "similarity": lambda r: similarity_block(r["similarity"]),
    "patching": lambda r: patching_block(r["patching"]),
    "quantized": lambda r: quantized_block(r["quantized"]),
    "mamba": lambda r: mamba_block(r["mamba"]),
    "targets": targets_block,
}
README_BLOCKS: dict[str, Callable[[dict], str]] = {
    "readme-llama": lambda r: llama_summary(r["llama"]),
    "readme-generation": lambda r: generation_summary(r["generation"]),
    "readme-similarity": lambda r: similarity_summary(r["similarity"]),
    "readme-main-job": lambda r: main_job_block(r["similarity"]),
    "readme-patching": lambda r: patching_summary(r["patching"]),
    "readme-quantized": lambda r: quantized_summary(r["quantized"]),
}
MARKED = re.compile(r"<!-- bench:(?P<name>[\w-]+) -->\n(?:.*?\n)?<!-- /bench:(?P=name) -->", re.S)


def with_blocks(text: str, blocks: dict[str, str]) -> str:
    """`text` with each marked block replaced by its new body; a block the text lacks is an error."""
    missing = set(blocks) - {m["name"] for m in MARKED.finditer(text)}
    if missing:
        raise ValueError(f"no <!-- bench:NAME --> block for {sorted(missing)}")
    return MARKED.sub(lambda m: _marked(m["name"], blocks[m["name"]]) if m["name"] in blocks else m[0], text)


def results_md(results: dict, current: str) -> str:
    """RESULTS.md with its speed section made again (what faithfulness.py wrote above it kept)."""
    above = current[: current.index(SECTION)] if SECTION in current else current.rstrip("\n") + "\n\n"
    return above + speed_section(results)


def readme(results: dict, current: str) -> str:
    return with_blocks(current, {name: render(results) for name, render in README_BLOCKS.items()})


def main() -> None:
    results = load()
    RESULTS_MD.write_text(results_md(results, RESULTS_MD.read_text()))
    README.write_text(readme(results, README.read_text()))
    print(f"wrote {RESULTS_MD.relative_to(HERE.parent)} and {README.relative_to(HERE.parent)}")


if __name__ == "__main__":
    main()
