"""The command line, `python -m benchmarks.throughput` (see the package's docstring), and the
entry point of each worker process (`--worker SPEC`, run by `workers.run_worker`)."""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import benchmarks.throughput as package
from benchmarks.throughput.benchmark import benchmark
from benchmarks.throughput.markdown import markdown
from benchmarks.throughput.measure import worker_main
from benchmarks.throughput.models import MODELS
from benchmarks.throughput.plot import plot
from benchmarks.throughput.runs import STARTUP_EVENTS


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.throughput",
                                     description=package.__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000, help="impressions (default %(default)s)")
    parser.add_argument("--keys", default="1,1000,100000", help="model-key counts (default %(default)s)")
    parser.add_argument("--models", default=",".join(MODELS),
                        help=f"comma-separated, of {sorted(MODELS)} (default: all)")
    parser.add_argument("--batch_events", type=int, default=50_000,
                        help="at most this many events per batch pipeline run; 0 = all "
                             "(default %(default)s)")
    parser.add_argument("--stream_events", type=int, default=10_000,
                        help="at most this many events per streaming pipeline run; 0 = all "
                             "(default %(default)s)")
    parser.add_argument("--max_pipeline_keys", type=int, default=3_000,
                        help="pipeline runs at more keys than this run over at most this many "
                             "events, so that at most this many keys get a model: per-key costs "
                             "(a model built per key, Prism's state round trips) dominate there "
                             "(default %(default)s)")
    parser.add_argument("--skip_stream", action="store_true", help="no streaming runs")
    parser.add_argument("--mini_batch", type=int, default=1024,
                        help="mini-batch size of the opt-in mini-batch mode (default %(default)s; "
                             "0 = do not measure it)")
    parser.add_argument("--skip_minibatch", action="store_true", help="no mini-batch runs")
    parser.add_argument("--profile", action="store_true",
                        help="also profile batch runs of the recommender with cProfile")
    parser.add_argument("--profile_keys", default="1,1000",
                        help="key counts of the profiled runs (default %(default)s)")
    parser.add_argument("--profile_events", type=int, default=20_000,
                        help="events of the profiled runs (default %(default)s)")
    parser.add_argument("--seed", type=int, default=7, help="simulator seed (default %(default)s)")
    parser.add_argument("--json", required=True, help="write the results here")
    parser.add_argument("--md", help="also write the Markdown tables here")
    parser.add_argument("--png", help="also plot events/s per configuration here")
    parser.add_argument("--workdir", help="folder for the generated tables (default: a temp folder)")
    args = parser.parse_args(argv)
    unknown = set(args.models.split(",")) - set(MODELS)
    if unknown:
        parser.error(f"unknown models {sorted(unknown)}; choose from {sorted(MODELS)}")
    if args.events < STARTUP_EVENTS:
        parser.error(f"--events must be >= {STARTUP_EVENTS}")
    return args


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        print(json.dumps(worker_main(json.loads(argv[1]))))
        return None
    args = parse_args(argv)
    # absolute: the workers run in the code snapshot's folder
    workdir = os.path.abspath(args.workdir or tempfile.mkdtemp(prefix="throughput-"))
    os.makedirs(workdir, exist_ok=True)
    report = benchmark(args, workdir)
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(report, f, indent=2)
    table = markdown(report)
    print(table)
    if args.md:
        with open(args.md, "w") as f:
            f.write(table + "\n")
    if args.png:
        plot(report, args.png)
    return report
