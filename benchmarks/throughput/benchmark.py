"""The whole run: the code snapshot, the simulated table, every measurement, the profiles,
into one report (config, results, profiles, timings, notes)."""
from __future__ import annotations

import datetime
import os
import platform
import subprocess
import time

from benchmarks.throughput.data import simulate_impressions
from benchmarks.throughput.models import MODELS
from benchmarks.throughput.notes import notes
from benchmarks.throughput.profiling import profile_batch
from benchmarks.throughput.runs import Runs, measure_config
from benchmarks.throughput.workers import PROJECT_ROOT, log, snapshot_code

# The measured code, for `uncommitted_changes_measured`.
MEASURED_PACKAGES = ("core", "models", "pipelines", "simulator", "stores", "transforms")


def benchmark(args, workdir: str) -> dict:
    t0 = time.perf_counter()
    keys = [int(k) for k in args.keys.split(",")]
    models = args.models.split(",")
    modes = (["batch"] + ([] if args.skip_stream else ["stream"])
             + ([] if args.skip_minibatch or not args.mini_batch else ["minibatch"]))
    started = {"started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               **_code_version()}
    code_root, code_hash = snapshot_code(workdir)
    log(f"simulating {args.events:,} impressions")
    rows = simulate_impressions(args.events, args.seed, os.path.join(workdir, "simulated.avro"))
    runs = Runs(rows[:args.events], workdir, code_root, args.mini_batch)
    timings = {"prepare_s": round(time.perf_counter() - t0, 1)}
    results = [measure_config(runs, model, k, modes, args) for model in models for k in keys]
    timings["measure_s"] = round(time.perf_counter() - t0 - timings["prepare_s"], 1)
    profiles = []
    if args.profile:
        t1 = time.perf_counter()
        events = min(args.events, args.profile_events)
        for k in (int(k) for k in args.profile_keys.split(",")):
            log(f"profiling the batch pipeline: recommender, {k:,} keys, {events:,} events")
            profiles.append(profile_batch(runs.table(k, events), MODELS["recommender"],
                                          os.path.join(workdir, f"batch-keys{k}.prof"), code_root))
            profiles[-1].update({"keys": k, "model": "recommender"})
        timings["profile_s"] = round(time.perf_counter() - t1, 1)
    timings["total_s"] = round(time.perf_counter() - t0, 1)
    return {"config": {**_config(args, keys, modes), **started, "code_snapshot_sha256": code_hash},
            "results": results, "profiles": profiles,
            "timings": timings, "notes": notes(results, args, keys, modes)}


def _config(args, keys, modes) -> dict:
    import apache_beam
    import river

    return {"events": args.events, "keys": keys, "modes": modes,
            "batch_events_cap": args.batch_events, "stream_events_cap": args.stream_events,
            "max_pipeline_keys": args.max_pipeline_keys, "seed": args.seed,
            "mini_batch": args.mini_batch,
            "models": {n: MODELS[n] for n in args.models.split(",")},
            "python": platform.python_version(), "apache_beam": apache_beam.__version__,
            "river": river.__version__, "cpus": os.cpu_count()}


def _code_version() -> dict:
    """The commit, and the uncommitted changes in the measured code (copied at the start)."""
    def git(*args):
        done = subprocess.run(["git", "-C", PROJECT_ROOT, *args], capture_output=True, text=True)
        return done.stdout.rstrip("\n") if done.returncode == 0 else None

    dirty = git("status", "--porcelain", "--", *MEASURED_PACKAGES)
    return {"git_commit": git("rev-parse", "--short", "HEAD").strip(),
            "uncommitted_changes_measured": sorted(line[3:] for line in dirty.splitlines()) if dirty else []}
