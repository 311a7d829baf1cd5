"""Measurements run once each, and the result row per model and key count.

Per model and per K keys, the first rows of the table keyed round robin over K. Pipeline runs
may use fewer events than bare river, and say so in the results (`batch_events`,
`stream_events`, notes), to keep a 200,000-event run under 10 minutes on 2 cores: a pipeline
costs several times bare river per event, streaming on Prism pays a state round trips and two
timer firings per key (10-15 ms), and at 100,000 keys river itself builds a model per key (its
`compose.Pipeline` inspects each step's signature once per new model). See `--batch_events`,
`--stream_events`, `--max_pipeline_keys`. Bare river is then measured again over those same
events for the ratio.
"""
from __future__ import annotations

import os

from benchmarks.throughput.data import write_table
from benchmarks.throughput.models import MINI_BATCH_MODELS, MODELS
from benchmarks.throughput.workers import log, run_worker

STARTUP_EVENTS = 10


class Runs:
    """Measurements in fresh workers, each run once: (what, model, keys, events) -> result.

    The table of the first `events` rows keyed round robin over `keys` is written on demand.
    With keys >= events every event has its own key, so all such tables are the same file
    and the same measurement.
    """

    def __init__(self, rows: list[dict], workdir: str, code_root: str, mini_batch: int = 0):
        self.rows, self.workdir, self.code_root = rows, workdir, code_root
        self.mini_batch = mini_batch
        self.results: dict[tuple, dict] = {}

    def table(self, keys: int, events: int) -> str:
        keys = min(keys, events)
        path = os.path.join(self.workdir, f"events{events}-keys{keys}.avro")
        if not os.path.exists(path):
            write_table(self.rows[:events], keys, path)
        return path

    def get(self, what: str, model: str, keys: int, events: int) -> dict:
        keys = min(keys, events)
        key = (what, model, keys, events)
        if key not in self.results:
            log(f"{model}: {what}, {keys:,} keys, {events:,} events")
            spec = {"what": what, "model": MODELS[model], "table": self.table(keys, events)}
            if what == "minibatch":  # the batch pipeline, learning mini-batches of the twin model
                spec.update(what="batch", model=MINI_BATCH_MODELS[model], mini_batch=self.mini_batch)
            if what == "raw_minibatch_model":  # bare river, per event, on the twin model
                spec.update(what="raw", model=MINI_BATCH_MODELS[model])
            self.results[key] = run_worker(spec, self.code_root)
            log(f"  {self.results[key]['wall_s']:.1f} s, {self.results[key]['eps']:,.0f} events/s")
        return self.results[key]


def pipeline_events(mode: str, keys: int, events: int, args) -> int:
    """Events of a pipeline run: all, or fewer under --batch_events / --stream_events /
    --max_pipeline_keys."""
    cap = args.stream_events if mode == "stream" else args.batch_events
    n = min(events, cap) if cap else events
    return min(n, args.max_pipeline_keys) if keys > args.max_pipeline_keys else n


def measure_config(runs: Runs, model: str, keys: int, modes: list[str], args) -> dict:
    """One row: bare river over all events, then each pipeline mode, with its own bare-river
    figure over the same events for the ratio."""
    n = len(runs.rows)
    raw = runs.get("raw", model, keys, n)
    row = {"model": model, "model_spec": MODELS[model], "keys": keys, "events": n,
           "keys_used": raw["keys_used"], "raw_river_eps": round(raw["eps"]),
           "raw_wall_s": round(raw["wall_s"], 2), "peak_rss_mb": {"raw": raw["peak_tree_rss_mb"]},
           "rss_per_key_kb": {"raw": rss_per_key(runs, "raw", model, keys, n)}}
    for mode in modes:
        events = pipeline_events(mode, keys, n, args)
        if mode == "minibatch":
            row.update(minibatch_row(runs, model, keys, events))
            if row.get("minibatch_events"):
                row["peak_rss_mb"][mode] = runs.get(mode, model, keys, events)["peak_tree_rss_mb"]
                row["rss_per_key_kb"][mode] = rss_per_key(runs, mode, model, keys, events)
            continue
        startup_s = runs.get(mode, model, 1, STARTUP_EVENTS)["wall_s"]
        pipe = runs.get(mode, model, keys, events)
        same = runs.get("raw", model, keys, events)
        excl = events / (pipe["wall_s"] - startup_s) if pipe["wall_s"] > startup_s else None
        row.update({
            f"{mode}_events": events, f"{mode}_keys_used": same["keys_used"],
            f"pipeline_{mode}_wall_s": round(pipe["wall_s"], 2), f"{mode}_startup_s": round(startup_s, 2),
            f"pipeline_{mode}_eps": round(pipe["eps"], 1),
            f"pipeline_{mode}_eps_excl_startup": None if excl is None else round(excl, 1),
            f"raw_river_eps_{mode}_events": round(same["eps"]),
            f"ratio_{mode}": round(pipe["eps"] / same["eps"], 5),
            f"ratio_{mode}_excl_startup": None if excl is None else round(excl / same["eps"], 5),
            f"{mode}_all_predicted": pipe["events"] == events and pipe["dead_letters"] == 0,
            f"{mode}_rocauc_equals_raw": abs(pipe["rocauc"] - same["rocauc"]) < 1e-9,
        })
        row["peak_rss_mb"][mode] = pipe["peak_tree_rss_mb"]
        row["rss_per_key_kb"][mode] = rss_per_key(runs, mode, model, keys, events)
        if mode == "batch":
            row.update(floor_row(runs, model, keys, events, row))
    return row


def floor_row(runs: Runs, model: str, keys: int, events: int, row: dict) -> dict:
    """The batch pipeline's work without Beam (`measure_floor`) over the batch run's events:
    the most the batch ratio can be with this work, and how far Beam is from it."""
    floor = runs.get("floor", model, keys, events)
    same = runs.get("raw", model, keys, events)
    parts = floor["parts_us_per_event"]
    other_us = sum(parts.values()) - parts["predict_learn_us"]
    excl = row.get("pipeline_batch_eps_excl_startup")
    return {"floor_eps": round(floor["eps"]), "floor_parts_us_per_event": parts,
            "ratio_floor": round(floor["eps"] / same["eps"], 5),
            "batch_vs_floor_excl_startup": None if excl is None else round(excl / floor["eps"], 5),
            "floor_rocauc_equals_raw": abs(floor["rocauc"] - same["rocauc"]) < 1e-9,
            # Were predict + learn free, the rest of the work alone would allow this many events/s:
            "floor_eps_without_predict_learn": round(1e6 / other_us) if other_us > 0 else None}


def minibatch_row(runs: Runs, model: str, keys: int, events: int) -> dict:
    """The mini-batch mode (not exact: see `LearnOnline`): the batch pipeline with
    --mini_batch on the model's mini-batch twin, against bare per-event river on the model
    itself (`ratio_minibatch`) and on the twin (`ratio_minibatch_same_model`)."""
    if MINI_BATCH_MODELS.get(model) is None or keys >= events:
        # (keys >= events: every key gets one event, a "mini-batch" of one: not measured)
        return {"minibatch_events": None, "minibatch_model_spec": MINI_BATCH_MODELS.get(model)}
    startup_s = runs.get("minibatch", model, 1, STARTUP_EVENTS)["wall_s"]
    pipe = runs.get("minibatch", model, keys, events)
    same = runs.get("raw", model, keys, events)
    twin = runs.get("raw_minibatch_model", model, keys, events)
    excl = events / (pipe["wall_s"] - startup_s) if pipe["wall_s"] > startup_s else None
    return {
        "minibatch_events": events, "minibatch_size": runs.mini_batch,
        "minibatch_model_spec": MINI_BATCH_MODELS[model],
        "pipeline_minibatch_wall_s": round(pipe["wall_s"], 2), "minibatch_startup_s": round(startup_s, 2),
        "pipeline_minibatch_eps": round(pipe["eps"], 1),
        "pipeline_minibatch_eps_excl_startup": None if excl is None else round(excl, 1),
        "raw_river_eps_minibatch_events": round(same["eps"]),
        "raw_river_eps_minibatch_model": round(twin["eps"]),
        "ratio_minibatch": round(pipe["eps"] / same["eps"], 5),
        "ratio_minibatch_excl_startup": None if excl is None else round(excl / same["eps"], 5),
        "ratio_minibatch_same_model": round(pipe["eps"] / twin["eps"], 5),
        "minibatch_all_predicted": pipe["events"] == events and pipe["dead_letters"] == 0,
        "minibatch_rocauc": pipe["rocauc"], "raw_rocauc_minibatch_model_per_event": twin["rocauc"],
        "raw_rocauc": same["rocauc"],
    }


def rss_per_key(runs: Runs, what: str, model: str, keys: int, events: int) -> float | None:
    """(peak RSS at `keys` keys - peak at 1 key, over the same events) / keys used, in KB."""
    used = min(keys, events)  # round robin
    if used <= 1:
        return None
    run, base = runs.get(what, model, keys, events), runs.get(what, model, 1, events)
    return round((run["peak_tree_rss_mb"] - base["peak_tree_rss_mb"]) * 1024 / used, 2)
