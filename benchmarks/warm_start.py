"""Warm start against cold start on the simulator: what a day of history learned offline is worth
to the online learner.

    .venv/bin/python -m benchmarks.warm_start [--history_hours 24] [--json out.json]

It simulates `--history_hours` of history of the default run's world (the same users, tastes and
items; other visits: `SimulatorConfig.stream_seed`), ending where the default run begins, with no
taste drift in it. The main job learns it (one pass in event-time order) and registers the model;
then the default run (`python -m pipelines.recommend`: 20,000 impressions, the taste drift half
way) runs twice: cold (from nothing) and warm (`--warm_start latest` from that registry). Both
start with empty entity profiles: only the model differs. It reports each run's progressive ROC
AUC and log loss of the recommender over the whole run and over its first hour of event time
(before the first labels of a cold start, 30 minutes in, it predicts the prior).
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
from simulator.stream import START_MS

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


def scores(out: pathlib.Path, first_ms: int) -> dict:
    """Progressive ROC AUC and log loss of the recommender over the run and its first hour."""
    rows = sorted((json.loads(line) for line in open(out / "predictions.jsonl")),
                  key=lambda r: (r["event_time"], r["event_id"]))
    rows = [r for r in rows if r["model_key"] == "recommender"]
    result = {}
    for name, part in (("run", rows), ("first_hour", [r for r in rows if r["event_time"] < first_ms + HOUR_MS])):
        auc, loss = metrics.ROCAUC(), metrics.LogLoss()
        for r in part:
            p = r["y_proba"]["True"]
            auc.update(r["y_true"], {True: p, False: 1 - p})
            loss.update(r["y_true"], {True: p, False: 1 - p})
        result[name] = {"predictions": len(part), "roc_auc": round(auc.get(), 4), "log_loss": round(loss.get(), 4)}
    return result


def run(args) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-warm-") as tmp:
        out = pathlib.Path(tmp)
        written = history(out / "history.avro", args.history_hours, args.users, args.seed)
        job("--events", str(out / "history.avro"), "--output", str(out / "history"))
        common = ["--impressions", str(args.impressions), "--users", str(args.users), "--seed", str(args.seed)]
        job(*common, "--output", str(out / "cold"))
        job(*common, "--output", str(out / "warm"), "--warm_start", "latest",
            "--warm_from", str(out / "history" / "registry.sqlite"))
        cold, warm = scores(out / "cold", START_MS), scores(out / "warm", START_MS)
    gain = {part: round(warm[part]["roc_auc"] - cold[part]["roc_auc"], 4) for part in ("run", "first_hour")}
    return {"history_hours": args.history_hours, "history_records": written, "impressions": args.impressions,
            "users": args.users, "seed": args.seed, "cold": cold, "warm": warm, "roc_auc_gain": gain,
            "targets": {"run": 0.02, "first_hour": 0.05}}


def table(r: dict) -> str:
    lines = [f"history: {r['history_hours']:g} h ({r['history_records']:,} records) before the default run "
             f"({r['impressions']:,} impressions of {r['users']} users, seed {r['seed']})",
             "| start | ROC AUC, run | log loss, run | ROC AUC, first hour | log loss, first hour |",
             "|---|---|---|---|---|"]
    for name in ("cold", "warm"):
        s = r[name]
        lines.append(f"| {name} | {s['run']['roc_auc']} | {s['run']['log_loss']} | {s['first_hour']['roc_auc']} | "
                     f"{s['first_hour']['log_loss']} |")
    lines.append(f"warm - cold ROC AUC: run {r['roc_auc_gain']['run']:+} (target +0.02), "
                 f"first hour {r['roc_auc_gain']['first_hour']:+} (target +0.05)")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.warm_start", description=__doc__.split("\n\n")[0])
    parser.add_argument("--history_hours", type=float, default=24.0, help="(default: %(default)s)")
    parser.add_argument("--impressions", type=int, default=20_000, help="the default run's (default: %(default)s)")
    parser.add_argument("--users", type=int, default=200, help="the default run's (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=7, help="the default run's (default: %(default)s)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    results = run(args)
    print(table(results))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
