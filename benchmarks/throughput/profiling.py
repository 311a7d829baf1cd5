"""`--profile`: the batch pipeline under cProfile (in-memory FnApiRunner: the SDK harness runs
in the profiled thread); hot spots, top functions and own time by package."""
from __future__ import annotations

import os
import pstats

from benchmarks.throughput.workers import PROJECT_ROOT, run_worker

# (label, file path ending, function names): cumulative time under these, overlapping.
HOT_SPOTS = [
    ("Beam state cache: deep size of each cached value (objsize)",
     "apache_beam/runners/worker/statecache.py", ("get_deep_size",)),
    ("LearnOnline (batch): a key's group, sorted, predicted and learned", "transforms/learning/batch.py",
     ("process",)),
    ("LearnOnline: apply ready events in order", "core/learning.py", ("apply",)),
    ("river: predict_proba_one + predict_one + learn_one", "river/compose/pipeline.py",
     ("predict_proba_one", "predict_one", "learn_one")),
    ("models.factory: a fresh model per key (copy of a prototype)", "models/factory.py", ("__call__",)),
    ("models.serde: pickle + HMAC of the model", "models/serde.py", ("dumps", "loads")),
    ("metrics.score: windowed and final river metrics", "core/scoring.py", ("score",)),
    ("writing outputs: to_avro + JSON", "transforms/io/sinks.py", ("_json_line", "_avro_record")),
    ("ReadRows: Avro decode", "transforms/io/files.py", ("process",)),
    ("RowsToExamples", "transforms/learning/examples.py", ("process",)),
    ("building the pipeline graph", "apache_beam/pipeline.py", ("apply",)),
]
LOCAL_PACKAGES = ("transforms", "models", "pipelines", "benchmarks", "core", "stores", "simulator")


def profile_batch(table: str, model: str, path: str, code_root: str, top: int = 25) -> dict:
    """The batch pipeline under cProfile: top functions by cumulative and by own time."""
    result = run_worker({"what": "batch", "table": table, "model": model, "profile": path}, code_root)
    stats = pstats.Stats(path)
    total = stats.total_tt

    def rows(sort_key):
        entries = sorted(stats.stats.items(), key=lambda kv: kv[1][sort_key], reverse=True)[:top]
        return [{"function": _func_name(func), "calls": nc, "tottime_s": round(tt, 3),
                 "cumtime_s": round(ct, 3), "cum_pct": round(100 * ct / total, 1),
                 "tot_pct": round(100 * tt / total, 1)}
                for func, (_, nc, tt, ct, _) in entries]

    return {"events": result["events"], "wall_s_under_profiler": round(result["wall_s"], 2),
            "profiled_s": round(total, 2), "hot_spots": _hot_spots(stats, total),
            "top_cumulative": rows(3), "top_own_time": rows(2),
            "own_time_by_package": _own_time_by_package(stats, total)}


def _hot_spots(stats, total: float) -> list[dict]:
    out = []
    for label, path, names in HOT_SPOTS:
        cum = sum(ct for (filename, _, name), (_, _, _, ct, _) in stats.stats.items()
                  if filename.endswith(path) and name in names)
        out.append({"what": label, "cum_s": round(cum, 2), "cum_pct": round(100 * cum / total, 1)})
    return out


def _func_name(func) -> str:
    filename, line, name = func
    for marker in ("site-packages/", "/code/", PROJECT_ROOT + "/"):
        if marker in filename:
            filename = filename.split(marker, 1)[1]
    return f"{filename}:{line}({name})" if line else name


def _own_time_by_package(stats, total: float) -> list[dict]:
    """Own (not cumulative) time summed by where the code lives: river, Beam's parts, ..."""
    groups: dict[str, float] = {}
    for (filename, _, name), (_, _, tt, _, _) in stats.stats.items():
        groups[_package(filename, name)] = groups.get(_package(filename, name), 0.0) + tt
    return [{"package": g, "own_s": round(s, 2), "pct": round(100 * s / total, 1)}
            for g, s in sorted(groups.items(), key=lambda kv: -kv[1]) if s / total >= 0.005]


def _package(filename: str, name: str) -> str:
    if "site-packages/" in filename:
        parts = filename.split("site-packages/", 1)[1].split("/")
        if parts[0] == "apache_beam" and len(parts) > 2:
            return "/".join(parts[:2])
        return parts[0].removesuffix(".py")
    for local in LOCAL_PACKAGES:
        if f"/{local}/" in filename:
            return local
    if filename == "~":
        return f"builtin: {name}"
    return "stdlib: " + os.path.basename(filename)
