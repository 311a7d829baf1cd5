"""One measurement, inside a fresh worker process (`workers.run_worker` starts it): bare river,
a pipeline run (batch, streaming, mini-batch) or the floor."""
from __future__ import annotations

import cProfile
import json
import os
import resource
import shutil
import statistics
import tempfile
import time

from benchmarks.throughput.data import TARGET, read_examples
from benchmarks.throughput.floor import measure_floor


def measure_raw(table: str, model: str, min_seconds: float = 1.0, max_repeats: int = 20) -> dict:
    """Bare river: predict_proba_one + learn_one per event, one model per key.

    Short loops repeat (fresh models each time) until `min_seconds` have passed; the median
    wall time counts.
    """
    from river import metrics

    from models import factory

    events = read_examples(table)
    build = factory.Fresh(model)  # as the learner makes a model per key
    walls = []
    while not walls or (sum(walls) < min_seconds and len(walls) < max_repeats):
        models, probas = None, None  # free the previous repetition's models first
        models, probas = {}, []
        start = time.perf_counter()
        for key, x, y in events:
            m = models.get(key)
            if m is None:
                m = models[key] = build()
            probas.append(m.predict_proba_one(x))
            m.learn_one(x, y)
        walls.append(time.perf_counter() - start)
    wall = statistics.median(walls)
    auc = metrics.ROCAUC()
    for (_, _, y), p in zip(events, probas):
        if p:
            auc.update(y, p)
    return {"events": len(events), "keys_used": len(models), "wall_s": wall, "repeats": len(walls),
            "eps": len(events) / wall, "rocauc": auc.get(), "dead_letters": 0}


def measure_pipeline(table: str, model: str, streaming: bool, profile: str | None = None,
                     mini_batch: int = 0) -> dict:
    """`pipelines.prequential` from the Avro table to written predictions and metrics."""
    import logging

    from pipelines import prequential

    logging.getLogger().setLevel(logging.WARNING)
    out = tempfile.mkdtemp(prefix="prequential-", dir=os.path.dirname(table))
    argv = ["--input", table, "--target", TARGET, "--model", model, "--output", out,
            "--timestamp", "event_time", "--id", "event_id", "--model_key", "key"]
    argv += ["--streaming"] if streaming else ["--direct_running_mode=in_memory"]
    argv += ["--mini_batch", str(mini_batch)] if mini_batch else []
    profiler = cProfile.Profile() if profile else None
    start = time.perf_counter()
    if profiler:
        profiler.runcall(prequential.run, argv)
    else:
        prequential.run(argv)
    wall = time.perf_counter() - start
    if profiler:
        profiler.dump_stats(profile)
    with open(os.path.join(out, "metrics.json")) as f:
        summary = json.load(f)
    shutil.rmtree(out)
    return {"events": summary["predictions"], "dead_letters": summary["dead_letters"],
            "wall_s": wall, "eps": summary["predictions"] / wall, "rocauc": summary["rocauc"]}


def worker_main(spec: dict) -> dict:
    """The measurement `spec` names (what: raw, floor, batch or stream), with the worker's
    own peak RSS."""
    if spec["what"] == "raw":
        result = measure_raw(spec["table"], spec["model"])
    elif spec["what"] == "floor":
        result = measure_floor(spec["table"], spec["model"])
    else:
        result = measure_pipeline(spec["table"], spec["model"], spec["what"] == "stream",
                                  spec.get("profile"), spec.get("mini_batch", 0))
    result["self_maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result
