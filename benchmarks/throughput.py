"""Events/s of the prequential learner: bare river against the Beam pipeline, batch and streaming.

    python -m benchmarks.throughput --events 200000 --json out/throughput.json \\
        [--keys 1,1000,100000] [--models scaled_logistic,recommender] \\
        [--batch_events 50000] [--stream_events 500] [--max_pipeline_keys 3000] \\
        [--png out/throughput.png] [--md out/throughput.md] [--profile]

The simulator's impressions (written to an Avro file by `pipelines.simulate`) become a flat
feature table: `user_id`, `item_id`, `device` (text), `position`, `hour` (numbers), one 0/1
column per genre, the label `clicked` (a click or a watch of the impression followed) and a
`key` column that assigns the i-th event to model key `k{i % K}` (round robin). The same
events, features and model for every measurement; per model and per K:

- `raw_river_eps`: a bare Python loop of `predict_proba_one` + `learn_one` over the decoded
  events, one model per key, made as the learner makes them (`models.factory.Fresh`: a copy
  of a pristine model) (reading and decoding the file excluded; a loop shorter than 1 s is
  repeated with fresh models, and the median counts);
- `pipeline_batch_eps`: `pipelines.prequential` (Avro -> predictions, windowed and final
  metrics, dead letters) on the default batch runner (FnApiRunner): events / wall time of
  the run; `..._excl_startup`: events / (wall - wall of the same pipeline over 10 events);
- `pipeline_stream_eps`: the same with `--streaming` (Prism);
- `ratio_batch`, `ratio_stream`: pipeline eps / bare-river eps over the same events;
- `floor_eps`: the batch pipeline's work without Beam (`measure_floor`: the project's own
  decode, examples, learner, metrics and JSON functions in one plain loop), with its cost per
  event by part; `ratio_floor` = floor / bare river is the most `ratio_batch` can reach
  with this work, and `batch_vs_floor_excl_startup` what Beam keeps of it;
- peak RSS of the process tree (the measuring process and its children, e.g. Prism),
  sampled from /proc, and `rss_per_key_kb` = (peak at K keys - peak at 1 key, over the same
  events) / keys used.

Pipeline runs may use fewer events than bare river, and say so in the results
(`batch_events`, `stream_events`, notes), to keep a 200,000-event run under 10 minutes on
2 cores: a pipeline costs several times bare river per event, streaming on Prism pays a
state round trips and two timer firings per key (10-15 ms), and at 100,000 keys river itself builds a model per key
(its `compose.Pipeline` inspects each step's signature once per new model). See
`--batch_events`, `--stream_events`, `--max_pipeline_keys`. Bare river is then measured again
over those same events for the ratio.

Every measurement runs in a fresh Python process, so one run's memory and caches do not leak
into the next, on a copy of the project's packages taken at the start (others may edit the
working tree meanwhile; `code_snapshot_sha256` in the results names the copy). `--profile`
also runs the batch pipeline under cProfile (in-memory FnApiRunner: the SDK harness runs in
the profiled thread) and reports hot spots and the top functions. Results go to --json,
Markdown tables (stdout and --md) and a bar chart (--png).
"""
from __future__ import annotations

import argparse
import cProfile
import datetime
import hashlib
import json
import os
import platform
import pstats
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import fastavro

MODELS = {
    "scaled_logistic": "benchmarks.throughput:scaled_logistic",
    "recommender": "models.zoo:recommender",
}
# The opt-in mini-batch mode (`--mini_batch`) needs models whose every step learns DataFrames:
# per model, the twin it is measured with (None: the model has no mini-batch twin).
MINI_BATCH_MODELS = {
    "scaled_logistic": "benchmarks.throughput:scaled_logistic_many",
    "recommender": None,
}
STARTUP_EVENTS = 10
PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CODE_PACKAGES = ("benchmarks", "models", "pipelines", "schemas", "transforms")
TABLE_META = ("event_id", "event_time", "key", "clicked")  # not features
TARGET = "clicked"


# --- models -------------------------------------------------------------------------------

def scaled_logistic():
    """`StandardScaler | LogisticRegression` over the table: text features one-hot first.

    (`models.zoo.logistic_regression` is the same model for numeric-only tables; its scaler
    cannot take the text columns.)
    """
    from river import compose, linear_model, preprocessing

    from models.zoo import one_hot_text

    return (compose.FuncTransformer(one_hot_text) | preprocessing.StandardScaler()
            | linear_model.LogisticRegression())


def scaled_logistic_many(learning_rate: float = 2.0):
    """The mini-batch twin of `scaled_logistic` (learn_many / predict_proba_many): the numeric
    columns, scaled, into a logistic regression. The text columns are left out: one-hot over
    DataFrames (river's OneHotEncoder) costs ~10 ms a call, more than the rest of a 1,024-event
    mini-batch; per event, this model's ROC AUC equals `scaled_logistic`'s on the simulator's
    table. A mini-batch is one SGD step on its mean gradient, hence the larger learning rate.
    """
    from river import compose, linear_model, optim, preprocessing

    numeric = ["position", "hour"] + [_genre_column(g) for g in _genres()]
    return (compose.Select(*numeric) | preprocessing.StandardScaler()
            | linear_model.LogisticRegression(optimizer=optim.SGD(learning_rate)))


def _genres():
    from pipelines import simulate

    return simulate.SimulatorConfig().genres


# --- data ---------------------------------------------------------------------------------

def simulate_impressions(events: int, seed: int, path: str) -> list[dict]:
    """Writes the simulator's stream for `events` impressions to `path`, reads it back and
    returns one flat feature row per impression, in event order."""
    from pipelines import simulate

    config = simulate.SimulatorConfig(impressions=events, seed=seed, malformed_fraction=0.0)
    simulate.write_avro(simulate.generate(config), path)
    with open(path, "rb") as f:
        records = list(fastavro.reader(f))
    positive = {r["impression_id"] for r in records if r["event_type"] in ("click", "watch")}
    genres = config.genres
    return [_feature_row(r, r["event_id"] in positive, genres)
            for r in records if r["event_type"] == "impression"]


def _feature_row(impression: dict, clicked: bool, genres) -> dict:
    shown = set(impression["item_genres"])
    row = {"event_id": impression["event_id"], "event_time": impression["event_time"],
           "user_id": impression["user_id"], "item_id": impression["item_id"],
           "device": impression["device"], "position": impression["position"],
           "hour": impression["event_time"] // 3_600_000 % 24}
    row.update({_genre_column(g): float(g in shown) for g in genres})
    row[TARGET] = clicked
    return row


def _genre_column(genre: str) -> str:
    return "genre_" + "".join(c if c.isalnum() else "_" for c in genre)


def write_table(rows: list[dict], keys: int, path: str) -> None:
    """The rows with `key` = k{i % keys}, as an Avro file."""
    types = {bool: "boolean", int: "long", float: "double", str: "string"}
    first = {**rows[0], "key": ""}
    schema = {"type": "record", "name": "Event",
              "fields": [{"name": k, "type": types[type(v)]} for k, v in first.items()]}
    keyed = ({**row, "key": f"k{i % keys}"} for i, row in enumerate(rows))
    with open(path, "wb") as f:
        fastavro.writer(f, fastavro.parse_schema(schema), keyed, codec="null")


def read_examples(path: str) -> list[tuple]:
    """(key, x, y) per row, x without the id, time, key and label columns (as the pipeline)."""
    with open(path, "rb") as f:
        return [(row["key"], {k: v for k, v in row.items() if k not in TABLE_META}, row[TARGET])
                for row in fastavro.reader(f)]


# --- measurements (each in a fresh worker process) ------------------------------------------

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


def measure_floor(table: str, model: str, window_s: float = 1000.0) -> dict:
    """The batch pipeline's work without Beam: one plain Python pass of the project's own
    functions over the Avro file (decode to rows, rows to examples, per key in event order
    predict + learn, windowed metrics per key and over all keys, final metrics, predictions
    and windowed metrics as JSON lines). What Beam adds is the pipeline's time beyond this;
    `floor_eps` / bare river is the most `ratio_batch` can reach with this work.
    """
    import collections

    from apache_beam.transforms.window import IntervalWindow

    from transforms import metrics, sinks, sources
    from transforms.examples import _ToExampleDoFn
    from transforms.learner import _Learner

    clock = [time.perf_counter()]
    parts = {}

    def lap(name):
        clock.append(time.perf_counter())
        parts[name] = clock[-1] - clock[-2]

    read = sources._ReadFileDoFn("avro", "event_time", "event_id")
    rows = [timestamped.value for timestamped in read.process(table)]
    lap("decode_us")
    to_examples = _ToExampleDoFn(TARGET, ("event_time", "event_id"), "key")
    examples = [example for row in rows for example in to_examples.process(row)]
    lap("examples_us")
    by_key = collections.defaultdict(list)
    for example in examples:
        by_key[example.model_key].append(example)
    learner = _Learner(model, b"floor")
    learner.setup()
    predictions = []
    for key in sorted(by_key):
        predictions += learner._apply(key, by_key[key], learner._new_model(key), 0, None)[1]
    lap("predict_learn_us")
    size_ms = int(window_s * 1000)
    windows = collections.defaultdict(list)
    for p in predictions:
        windows[p.event_time // size_ms * size_ms].append(p)
    scorer = metrics._ScoreWindowDoFn("binary")
    windowed = [m for start, ps in sorted(windows.items())
                for m in scorer.process(("", [ps]), IntervalWindow(start / 1000, (start + size_ms) / 1000))]
    lap("windowed_metrics_us")
    final = metrics.score(predictions, "binary")
    lap("final_metrics_us")
    lines = [sinks._json_line(r) for r in predictions] + [sinks._json_line(r) for r in windowed]
    lap("write_us")
    n = len(predictions)
    wall = clock[-1] - clock[0]
    return {"events": n, "wall_s": wall, "eps": n / wall, "rocauc": final["rocauc"], "dead_letters": 0,
            "lines": len(lines), "parts_us_per_event": {k: round(v * 1e6 / n, 2) for k, v in parts.items()}}


def worker_main(spec: dict) -> dict:
    if spec["what"] == "raw":
        result = measure_raw(spec["table"], spec["model"])
    elif spec["what"] == "floor":
        result = measure_floor(spec["table"], spec["model"])
    else:
        result = measure_pipeline(spec["table"], spec["model"], spec["what"] == "stream",
                                  spec.get("profile"), spec.get("mini_batch", 0))
    result["self_maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def run_worker(spec: dict, code_root: str) -> dict:
    """Runs one measurement in a fresh process on the code under `code_root`; adds the peak
    RSS of its process tree."""
    env = {**os.environ, "PYTHONPATH": code_root,
           "STREAMML_PRISM": os.environ.get("STREAMML_PRISM", _live_prism())}
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.throughput", "--worker", json.dumps(spec)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    sampler = _TreeRssSampler(proc.pid)
    sampler.start()
    stdout, stderr = proc.communicate()
    sampler.stop()
    if proc.returncode != 0:
        raise RuntimeError(f"worker {spec} failed ({proc.returncode}):\n{stderr[-4000:]}")
    result = json.loads(stdout.strip().splitlines()[-1])
    result["peak_tree_rss_mb"] = round(sampler.peak_kb / 1024, 1)
    return result


def snapshot_code(workdir: str) -> tuple[str, str]:
    """Copies the project's packages to `workdir/code`, so that every worker of this run
    measures the same code while others edit the working tree; returns the copy's root and
    a short hash of its files."""
    dest = os.path.join(workdir, "code")
    shutil.rmtree(dest, ignore_errors=True)
    digest = hashlib.sha256()
    for package in CODE_PACKAGES:
        shutil.copytree(os.path.join(PROJECT_ROOT, package), os.path.join(dest, package),
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for folder, dirs, files in sorted(os.walk(dest)):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(folder, name)
            digest.update(os.path.relpath(path, dest).encode())
            with open(path, "rb") as f:
                digest.update(f.read())
    return dest, digest.hexdigest()[:12]


def _live_prism() -> str:
    return os.path.join(PROJECT_ROOT, ".cache", "prism", "bin", "prism")


class _TreeRssSampler(threading.Thread):
    """Samples the summed VmRSS of a process and all its descendants; keeps the peak."""

    def __init__(self, pid: int, interval_s: float = 0.05):
        super().__init__(daemon=True)
        self.pid, self.interval_s, self.peak_kb = pid, interval_s, 0
        self._done = threading.Event()

    def run(self):
        while not self._done.is_set():
            self.peak_kb = max(self.peak_kb, sum(_rss_kb(p) for p in _tree(self.pid)))
            self._done.wait(self.interval_s)

    def stop(self):
        self._done.set()
        self.join()


def _tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


# --- the benchmark --------------------------------------------------------------------------

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
            _log(f"{model}: {what}, {keys:,} keys, {events:,} events")
            spec = {"what": what, "model": MODELS[model], "table": self.table(keys, events)}
            if what == "minibatch":  # the batch pipeline, learning mini-batches of the twin model
                spec.update(what="batch", model=MINI_BATCH_MODELS[model], mini_batch=self.mini_batch)
            if what == "raw_minibatch_model":  # bare river, per event, on the twin model
                spec.update(what="raw", model=MINI_BATCH_MODELS[model])
            self.results[key] = run_worker(spec, self.code_root)
            _log(f"  {self.results[key]['wall_s']:.1f} s, {self.results[key]['eps']:,.0f} events/s")
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


def _rss_below_noise(results: list[dict], share: float = 0.1) -> list[str]:
    """Per-key figures whose RSS difference is under `share` of the peak: noise, not models."""
    out = []
    for r in results:
        for what, per_key in r["rss_per_key_kb"].items():
            events = r["events"] if what == "raw" else r[f"{what}_events"]
            used = min(r["keys"], events)
            if per_key is not None and abs(per_key * used / 1024) < share * r["peak_rss_mb"][what]:
                out.append(f"{r['model']} {what} {r['keys']:,} keys")
    return out


def benchmark(args, workdir: str) -> dict:
    t0 = time.perf_counter()
    keys = [int(k) for k in args.keys.split(",")]
    models = args.models.split(",")
    modes = (["batch"] + ([] if args.skip_stream else ["stream"])
             + ([] if args.skip_minibatch or not args.mini_batch else ["minibatch"]))
    started = {"started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               **_code_version()}
    code_root, code_hash = snapshot_code(workdir)
    _log(f"simulating {args.events:,} impressions")
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
            _log(f"profiling the batch pipeline: recommender, {k:,} keys, {events:,} events")
            profiles.append(profile_batch(runs.table(k, events), MODELS["recommender"],
                                          os.path.join(workdir, f"batch-keys{k}.prof"), code_root))
            profiles[-1].update({"keys": k, "model": "recommender"})
        timings["profile_s"] = round(time.perf_counter() - t1, 1)
    timings["total_s"] = round(time.perf_counter() - t0, 1)
    return {"config": {**_config(args, keys, modes), **started, "code_snapshot_sha256": code_hash},
            "results": results, "profiles": profiles,
            "timings": timings, "notes": _notes(results, args, keys, modes)}


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


# (label, file path ending, function names): cumulative time under these, overlapping.
HOT_SPOTS = [
    ("Beam state cache: deep size of each cached value (objsize)",
     "apache_beam/runners/worker/statecache.py", ("get_deep_size",)),
    ("LearnOnline (batch): a key's group, sorted, predicted and learned", "transforms/learner.py", ("process",)),
    ("LearnOnline: apply ready events in order", "transforms/learner.py", ("_apply",)),
    ("river: predict_proba_one + predict_one + learn_one", "river/compose/pipeline.py",
     ("predict_proba_one", "predict_one", "learn_one")),
    ("models.factory: a fresh model per key (copy of a prototype)", "models/factory.py", ("__call__",)),
    ("models.serde: pickle + HMAC of the model", "models/serde.py", ("dumps", "loads")),
    ("metrics.score: windowed and final river metrics", "transforms/metrics.py", ("score",)),
    ("writing outputs: to_avro + JSON", "transforms/sinks.py", ("_json_line", "_avro_record")),
    ("ReadRows: Avro decode", "transforms/sources.py", ("process",)),
    ("RowsToExamples", "transforms/examples.py", ("process",)),
    ("building the pipeline graph", "apache_beam/pipeline.py", ("apply",)),
]


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
    for local in ("transforms", "models", "pipelines", "benchmarks"):
        if f"/{local}/" in filename:
            return local
    if filename == "~":
        return f"builtin: {name}"
    return "stdlib: " + os.path.basename(filename)


# --- reporting ------------------------------------------------------------------------------

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

    dirty = git("status", "--porcelain", "--", "transforms", "pipelines", "models")
    return {"git_commit": git("rev-parse", "--short", "HEAD").strip(),
            "uncommitted_changes_measured": sorted(line[3:] for line in dirty.splitlines()) if dirty else []}


def _notes(results, args, keys, modes) -> list[str]:
    notes = []
    for k in keys:
        if k > args.events:
            notes.append(f"{k:,} keys > {args.events:,} events: only {args.events:,} keys get events")
    for mode in modes:
        capped = sorted({(r["keys"], r[f"{mode}_events"]) for r in results
                         if r.get(f"{mode}_events") and r[f"{mode}_events"] < r["events"]})
        if capped:
            notes.append(f"{mode} runs over fewer events than bare river (keys: events): "
                         + ", ".join(f"{k:,}: {e:,}" for k, e in capped)
                         + f"; ratio_{mode} compares with bare river over those same events")
    own_key = sorted({(m, r[f"{m}_events"]) for r in results for m in modes
                      if r.get(f"{m}_events") and r["keys"] >= r[f"{m}_events"]})
    if own_key:
        notes.append("at keys >= a run's events every event has its own key: one measurement, "
                     "shared by every such key count (" + ", ".join(
                         f"{m} over {e:,} events" for m, e in own_key) + ")")
    if any(not r.get(f"{m}_all_predicted", True) or not r.get(f"{m}_rocauc_equals_raw", True)
           for r in results for m in modes):
        notes.append("WARNING: a pipeline run did not predict every event, or its ROC AUC differs "
                     "from bare river's over the same events (see *_all_predicted, *_rocauc_equals_raw)")
    notes.append("bare river calls predict_proba_one + learn_one; so does the pipeline (y_pred is the "
                 "argmax of the probabilities, as river's predict_one), which also reads the Avro "
                 "file, groups events per key (batch) or keeps them in Beam state (streaming), and "
                 "writes predictions, windowed and final metrics")
    if "minibatch" in modes:
        notes.append("minibatch not measured where every key gets one event (keys >= events)")
        notes.append(f"minibatch: the batch pipeline with --mini_batch {args.mini_batch} (opt-in, NOT "
                     "the same as per-event learning) on the model's mini-batch twin "
                     f"({MINI_BATCH_MODELS}); ratio_minibatch = its eps / bare per-event river on the "
                     "row's model, ratio_minibatch_same_model = / bare per-event river on the twin; "
                     "compare minibatch_rocauc with raw_rocauc for accuracy")
    noisy = _rss_below_noise(results)
    if noisy:
        notes.append("RSS/key within noise (difference < 10% of the peak, e.g. buffered events and "
                     "GC timing dominate): " + ", ".join(noisy))
    notes.append("model size grows with the distinct features a key has seen, so RSS/key "
                 "depends on events per key (events / keys)")
    if "batch" in modes:
        notes.append("floor = the batch pipeline's work (decode, examples, predict + learn per key in "
                     "event order, windowed and final metrics, JSON lines) in one plain Python pass of "
                     "the project's own functions, no Beam: ratio floor = floor eps / bare river eps is "
                     "the most ratio_batch can reach with this work; batch / floor is what Beam keeps")
    notes.append("eps excl. start-up = events / (wall - wall of the same pipeline over "
                 f"{STARTUP_EVENTS} events, 1 key)")
    return notes


def markdown(report: dict) -> str:
    modes = report["config"]["modes"]
    head = ["model", "keys", "events", "raw eps"]
    for mode in modes:
        head += [f"{mode} events", f"raw eps ({mode} events)", f"{mode} eps",
                 f"{mode} eps excl. start-up", f"ratio {mode}", f"ratio {mode} excl. start-up"]
    lines = [_md_row(head), _md_row(["---"] * len(head))]
    for r in report["results"]:
        cells = [r["model"], _fmt(r["keys"]), _fmt(r["events"]), _fmt(r["raw_river_eps"])]
        for mode in modes:
            cells += [_fmt(r.get(f"{mode}_events")), _fmt(r.get(f"raw_river_eps_{mode}_events")),
                      _fmt(r.get(f"pipeline_{mode}_eps")), _fmt(r.get(f"pipeline_{mode}_eps_excl_startup")),
                      _fmt(r.get(f"ratio_{mode}")), _fmt(r.get(f"ratio_{mode}_excl_startup"))]
        lines.append(_md_row(cells))
    if "batch" in modes:
        parts = list(next((r["floor_parts_us_per_event"] for r in report["results"]
                           if r.get("floor_parts_us_per_event")), {}))
        head = (["model", "keys", "batch events", "floor eps", "ratio floor (max batch ratio)",
                 "batch / floor (excl. start-up)", "floor eps without predict+learn"]
                + [p.removesuffix("_us").replace("_", " ") + " us/ev" for p in parts])
        lines += ["", _md_row(head), _md_row(["---"] * len(head))]
        for r in report["results"]:
            lines.append(_md_row([r["model"], _fmt(r["keys"]), _fmt(r.get("batch_events")),
                                  _fmt(r.get("floor_eps")), _fmt(r.get("ratio_floor")),
                                  _fmt(r.get("batch_vs_floor_excl_startup")),
                                  _fmt(r.get("floor_eps_without_predict_learn"))]
                                 + [_fmt(r.get("floor_parts_us_per_event", {}).get(p)) for p in parts]))
    whats = ["raw"] + modes
    head = (["model", "keys"] + [f"peak RSS MB {w}" for w in whats]
            + [f"RSS/key KB {w}" for w in whats] + [f"wall s {w}" for w in whats])
    lines += ["", _md_row(head), _md_row(["---"] * len(head))]
    for r in report["results"]:
        walls = [r["raw_wall_s"]] + [r.get(f"pipeline_{m}_wall_s") for m in modes]
        lines.append(_md_row([r["model"], _fmt(r["keys"])]
                             + [_fmt(r["peak_rss_mb"].get(w)) for w in whats]
                             + [_fmt(r["rss_per_key_kb"].get(w)) for w in whats]
                             + [_fmt(w) for w in walls]))
    startups = sorted({(m, r["model"], r[f"{m}_startup_s"]) for r in report["results"] for m in modes
                       if r.get(f"{m}_startup_s") is not None})
    lines += ["", f"Start-up (wall of a {STARTUP_EVENTS}-event run): "
              + "; ".join(f"{m} {model} {s:.1f} s" for m, model, s in startups)]
    if "minibatch" in modes:
        lines += ["", _md_row(["model", "keys", "mini-batch", "minibatch eps", "ratio vs raw (model)",
                               "ratio vs raw (twin)", "ROC AUC minibatch", "ROC AUC raw (model)",
                               "ROC AUC raw per event (twin)"]), _md_row(["---"] * 9)]
        for r in report["results"]:
            if r.get("minibatch_events"):
                lines.append(_md_row([r["model"], _fmt(r["keys"]), r["minibatch_size"],
                                      _fmt(r["pipeline_minibatch_eps"]), _fmt(r["ratio_minibatch"]),
                                      _fmt(r["ratio_minibatch_same_model"]), _fmt(r["minibatch_rocauc"]),
                                      _fmt(r["raw_rocauc"]), _fmt(r["raw_rocauc_minibatch_model_per_event"])]))
    lines += [f"- {n}" for n in report["notes"]]
    lines += [f"- run time: {json.dumps(report['timings'])}"]
    for profile in report["profiles"]:
        lines += ["", profile_markdown(profile)]
    return "\n".join(lines)


def profile_markdown(profile: dict, top: int = 25) -> str:
    lines = [f"Batch profile: {profile['model']}, {profile['keys']:,} keys, {profile['events']:,} "
             f"events; {profile['profiled_s']} s under cProfile", "",
             "| hot spot (cumulative, overlapping) | s | % |", "|---|---|---|"]
    lines += [f"| {h['what']} | {h['cum_s']} | {h['cum_pct']} |" for h in profile["hot_spots"]]
    lines += ["", "| function (top cumulative) | calls | own s | cum s | cum % |", "|---|---|---|---|---|"]
    lines += [f"| `{e['function']}` | {e['calls']:,} | {e['tottime_s']} | {e['cumtime_s']} | {e['cum_pct']} |"
              for e in profile["top_cumulative"][:top]]
    lines += ["", "| function (top own time) | calls | own s | own % |", "|---|---|---|---|"]
    lines += [f"| `{e['function']}` | {e['calls']:,} | {e['tottime_s']} | {e['tot_pct']} |"
              for e in profile["top_own_time"][:15]]
    lines += ["", "| own time by package | s | % |", "|---|---|---|"]
    lines += [f"| {g['package']} | {g['own_s']} | {g['pct']} |" for g in profile["own_time_by_package"]]
    return "\n".join(lines)


def _md_row(cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and abs(value) < 10:
        return f"{value:.3g}"
    return f"{value:,.0f}"


def plot(report: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = report["config"]["modes"]
    series = [("raw_river_eps", "bare river (all events)")]
    if "batch" in modes:
        series += [("floor_eps", "batch work without Beam (batch events)")]
    for mode in modes:
        series += [(f"raw_river_eps_{mode}_events", f"bare river ({mode} events)"),
                   (f"pipeline_{mode}_eps", f"{mode} pipeline"),
                   (f"pipeline_{mode}_eps_excl_startup", f"{mode} pipeline excl. start-up")]
    results = report["results"]
    labels = [f"{r['model']}\n{r['keys']:,} keys\n" + "\n".join(
        f"{m}: {r[f'{m}_events']:,} ev" for m in modes if r.get(f"{m}_events")) for r in results]
    width = 0.85 / len(series)
    colors = plt.get_cmap("tab20").colors
    fig, ax = plt.subplots(figsize=(max(9, 2.4 * len(results)), 6))
    for i, (field, label) in enumerate(series):
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(results))]
        ax.bar(xs, [r.get(field) or 0 for r in results], width, label=label, color=colors[i % len(colors)])
    ax.set_xticks(range(len(results)), labels, fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("events / s (log scale)")
    ax.set_title(f"Prequential throughput, {report['config']['events']:,} simulated impressions")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.throughput",
                                     description=__doc__.split("\n\n")[0])
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
    workdir = args.workdir or tempfile.mkdtemp(prefix="throughput-")
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


if __name__ == "__main__":
    main()
