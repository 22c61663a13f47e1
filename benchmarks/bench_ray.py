"""Explaining a corpus on Ray: throughput with 1 and 2 workers, and the Ray path's overhead over `explain_many`.

    python benchmarks/bench_ray.py [--prompts 160] [--shortest 16] [--longest 256] [--layers 4]

Model: the Llama-shaped model of bench_llama.py with `--layers` layers (hidden 512, vocab 32000, random
weights). Prompts: token sequences of lengths spread from `--shortest` to `--longest`, each explained for
its predicted next token with AttnLRP, in batches of 8. Each worker uses one torch thread; the local
baseline (`explain_many` in this process) too, measured in the same run. Every path starts with a warm
trace cache (one trace, made before the timings), so the numbers compare explaining, not tracing. Ray's
start-up (a local cluster) is printed apart; the Ray rows include building the model in each actor and
writing the Parquet files. Results of every path are checked equal.
Writes benchmarks/results/ray.json (--json) and prints the table report.py makes from it.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from functools import partial
from pathlib import Path

import bench_llama
import torch
from measure import Record, json_argument
from report import ray_block

import lrpgraph
from lrpgraph.distributed import explain_dataset, read_results

BATCH = 8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=160)
    parser.add_argument("--shortest", type=int, default=16)
    parser.add_argument("--longest", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    json_argument(parser, "ray")
    args = parser.parse_args()
    import ray

    torch.set_num_threads(1)  # as each worker runs

    generator = torch.Generator().manual_seed(0)
    step = (args.longest - args.shortest) / max(1, args.prompts - 1)
    prompts = [
        {"input_ids": torch.randint(0, 32000, (round(args.shortest + i * step),), generator=generator)}
        for i in range(args.prompts)
    ]
    ray.cloudpickle.register_pickle_by_value(bench_llama)  # the actors build the model from this script's folder
    factory = partial(bench_llama.llama, torch.device("cpu"), torch.float32, layers=args.layers)
    with tempfile.TemporaryDirectory() as folder:
        cache = Path(folder) / "traces"
        model = factory()
        settings = {
            "model": bench_llama.describe(model),
            "rules": "attnlrp",
            "prompts": args.prompts,
            "shortest": args.shortest,
            "longest": args.longest,
            "batch_size": BATCH,
            "torch_threads_per_worker": 1,
        }
        record = Record("ray", torch.device("cpu"), settings)
        lrpgraph.explain_many(model, prompts[:2], rules="attnlrp", cache_dir=cache)  # the one trace, on disk
        start = time.perf_counter()
        local = lrpgraph.explain_many(model, prompts, rules="attnlrp", batch_size=BATCH, cache_dir=cache)
        local_seconds = time.perf_counter() - start
        start = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
        startup = time.perf_counter() - start
        ray_seconds = {}
        for workers in (1, 2):
            output = Path(folder) / f"out-{workers}"
            run = explain_dataset(
                factory, prompts, output, rules="attnlrp", batch_size=BATCH, workers=workers, cache_dir=cache,
                progress=False,
            )  # fmt: skip
            assert run.explained == args.prompts and not run.failed, run
            for got, expected in zip(read_results(output), local, strict=True):
                torch.testing.assert_close(got["relevance"]["input_ids"], expected.relevance["input_ids"],
                                           rtol=1e-5, atol=1e-6)  # fmt: skip
            ray_seconds[str(workers)] = run.seconds
        ray.shutdown()
    record.write(
        args.json, {"explain_many_seconds": local_seconds, "ray_startup_seconds": startup, "ray_seconds": ray_seconds}
    )
    print(ray_block(record.data))


if __name__ == "__main__":
    main()
