"""Offline-only, online and warm-started online learning on the same simulated stream: what a day
of history learned offline is worth, and what learning online adds through the taste drift.

    .venv/bin/python -m benchmarks.warm_start [--history_hours 24] [--json out.json] [--plot out.png]

It simulates `--history_hours` of history of the default run's world (the same users, tastes and
items; other visits: `SimulatorConfig.stream_seed`), ending where the default run begins, with no
taste drift in it. The main job learns it (one pass in event-time order) and registers the model;
then the default run (`python -m pipelines.recommend`: 20,000 impressions, the taste drift half
way) runs twice: cold (from nothing) and warm (`--warm_start latest` from that registry). Both
start with empty entity profiles: only the model differs. The offline model is also scored
frozen over the same run (`pipelines.train --evaluate`: the run's impressions with the online
features, never learned). It reports each one's ROC AUC and log loss over the whole run and over
its first hour of event time (before the first labels of a cold start, 30 minutes in, it predicts
the prior), and ROC AUC per `--window_minutes` of event time (table and plot), through the drift.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile

from river import metrics

import simulator
from core.publishing import load_version
from models import serde
from simulator.stream import START_MS
from stores.registry import open_registry

ROOT = pathlib.Path(__file__).resolve().parent.parent
HOUR_MS = 3_600_000


def history(path: pathlib.Path, hours: float, users: int, seed: int) -> int:
    config = simulator.SimulatorConfig(seed=seed, stream_seed=seed + 1000, users=users,
                                       impressions=int(hours * HOUR_MS / 600), start_ms=START_MS - int(hours * HOUR_MS),
                                       drift_at=1.0)
    return simulator.write_avro(simulator.generate(config), str(path))


def job(*args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "pipelines.recommend", "--no_baselines", *args], cwd=ROOT,
                          capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"pipelines.recommend {' '.join(args)} failed:\n{done.stderr[-3000:]}")


def online(out: pathlib.Path) -> list:
    """(event time, y, P(click)) of the recommender's progressive predictions, in event order."""
    rows = sorted((json.loads(line) for line in open(out / "predictions.jsonl")),
                  key=lambda r: (r["event_time"], r["event_id"]))
    return [(r["event_time"], r["y_true"], r["y_proba"]["True"]) for r in rows if r["model_key"] == "recommender"]


def frozen(registry: pathlib.Path, events: pathlib.Path, out: pathlib.Path) -> list:
    """The same, from version 1 of `registry` frozen over the impressions of `events`."""
    subprocess.run([sys.executable, "-m", "pipelines.train", "--events", str(events), "--split", str(START_MS),
                    "--evaluate", "1", "--registry", str(registry), "--output", str(out)],
                   check=True, cwd=ROOT, capture_output=True)
    store = open_registry(str(registry))
    model = load_version(store, store.get("recommender", 1), serde.store_key(str(registry)))
    rows = sorted((json.loads(line) for line in open(out / "held_out.jsonl")),
                  key=lambda e: (e["event_time"], e["event_id"]))
    return [(e["event_time"], e["y"], model.predict_proba_one(e["x"])[True]) for e in rows]


def quality(rows) -> dict:
    auc, loss = metrics.ROCAUC(), metrics.LogLoss()
    for _, y, p in rows:
        auc.update(y, {True: p, False: 1 - p})
        loss.update(y, {True: p, False: 1 - p})
    return {"predictions": len(rows), "roc_auc": round(auc.get(), 4), "log_loss": round(loss.get(), 4)}


def scores(rows: list, first_ms: int, window_ms: int) -> dict:
    """ROC AUC and log loss over the run, its first hour, and each window of event time."""
    windows = {}
    for row in rows:
        windows.setdefault((row[0] - first_ms) // window_ms, []).append(row)
    return {"run": quality(rows), "first_hour": quality([r for r in rows if r[0] < first_ms + HOUR_MS]),
            "windows": [{"start_min": k * window_ms // 60_000, "roc_auc": quality(w)["roc_auc"]}
                        for k, w in sorted(windows.items())]}


def run(args) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-warm-") as tmp:
        out = pathlib.Path(tmp)
        written = history(out / "history.avro", args.history_hours, args.users, args.seed)
        job("--events", str(out / "history.avro"), "--output", str(out / "history"))
        common = ["--impressions", str(args.impressions), "--users", str(args.users), "--seed", str(args.seed)]
        job(*common, "--output", str(out / "cold"))
        job(*common, "--output", str(out / "warm"), "--warm_start", "latest",
            "--warm_from", str(out / "history" / "registry.sqlite"))
        window_ms = int(args.window_minutes * 60_000)
        runs = {"offline-only": scores(frozen(out / "history" / "registry.sqlite", out / "cold" / "events.avro",
                                              out / "frozen"), START_MS, window_ms),
                "cold": scores(online(out / "cold"), START_MS, window_ms),
                "warm": scores(online(out / "warm"), START_MS, window_ms)}
    gain = {part: round(runs["warm"][part]["roc_auc"] - runs["cold"][part]["roc_auc"], 4)
            for part in ("run", "first_hour")}
    return {"history_hours": args.history_hours, "history_records": written, "impressions": args.impressions,
            "users": args.users, "seed": args.seed, "window_minutes": args.window_minutes, **runs,
            "roc_auc_gain": gain, "targets": {"run": 0.02, "first_hour": 0.05}}


def table(r: dict) -> str:
    lines = [f"history: {r['history_hours']:g} h ({r['history_records']:,} records) before the default run "
             f"({r['impressions']:,} impressions of {r['users']} users, seed {r['seed']})",
             "| start | ROC AUC, run | log loss, run | ROC AUC, first hour | log loss, first hour |",
             "|---|---|---|---|---|"]
    for name in ("offline-only", "cold", "warm"):
        s = r[name]
        lines.append(f"| {name} | {s['run']['roc_auc']} | {s['run']['log_loss']} | {s['first_hour']['roc_auc']} | "
                     f"{s['first_hour']['log_loss']} |")
    lines.append("| ROC AUC per window, from minute | " + " | ".join(
        str(w["start_min"]) for w in r["cold"]["windows"]) + " |")
    lines.append("|---|" + "---|" * len(r["cold"]["windows"]))
    for name in ("offline-only", "cold", "warm"):
        lines.append(f"| {name} | " + " | ".join(str(w["roc_auc"]) for w in r[name]["windows"]) + " |")
    lines.append(f"warm - cold ROC AUC: run {r['roc_auc_gain']['run']:+} (target +0.02), "
                 f"first hour {r['roc_auc_gain']['first_hour']:+} (target +0.05)")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.warm_start", description=__doc__.split("\n\n")[0])
    parser.add_argument("--history_hours", type=float, default=24.0, help="(default: %(default)s)")
    parser.add_argument("--impressions", type=int, default=20_000, help="the default run's (default: %(default)s)")
    parser.add_argument("--users", type=int, default=200, help="the default run's (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=7, help="the default run's (default: %(default)s)")
    parser.add_argument("--window_minutes", type=float, default=20.0, help="(default: %(default)s)")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--plot", help="also draw ROC AUC per window here (PNG)")
    args = parser.parse_args(argv)
    results = run(args)
    print(table(results))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    if args.plot:
        plot(results, args.plot)
    return 0


def plot(results: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    for name in ("offline-only", "cold", "warm"):
        windows = results[name]["windows"]
        ax.plot([w["start_min"] for w in windows], [w["roc_auc"] for w in windows], marker="o", label=name)
    drift = results["impressions"] * 0.5 * 600 / 60_000  # the simulator's drift, half way, ~0.6 s per impression
    ax.axvline(drift, color="grey", linestyle="--", label="taste drift (about)")
    ax.set_xlabel(f"minutes of event time into the run (windows of {results['window_minutes']:g})")
    ax.set_ylabel("ROC AUC")
    ax.set_title(f"Offline-only, online, warm-started online ({results['history_hours']:g} h of history)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    raise SystemExit(main())
