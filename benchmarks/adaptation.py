"""Adapting after the taste drift, and forgetting (issue 17, item 6).

    .venv/bin/python -m benchmarks.adaptation --json out.json [--seeds 7 8 9 10 11] [--quick]

For each seed, `pipelines.recommend --guard` learns the simulator's stream (600 users, 60,000
impressions, every user's tastes rotating at half of them) twice: `--taste_alarm off` (today's
default) and `--taste_alarm reset` (a taste alarm from the clicks restarts the users' genre
profiles). Reported:

- adaptation: the main model's exact ROC AUC (`core.progressive`: river's 10-threshold ROCAUC
  reads 0.01-0.055 low here) per half hour of event time from the drift, and the gap of each
  half hour to the hour before the drift; the target is a gap within 0.03 within an hour;
- the alarm's delay after the drift (from the run's alerts);
- forgetting: the impressions of an hour of the old regime, with the features they were served
  and their labels, a fixed replay: the hour that ends an hour before the drift, so that the
  last version published before the drift has learned all of its labels (30 min late). Every
  model version the guarded job published (one per 5,000 labels) is scored on it: how much of
  the old regime each version still knows.
"""
from __future__ import annotations

import argparse
import json
import math
import pathlib
import statistics
import tempfile
import time

from core.features import reference_features
from core.interactions import impression_features
from core.progressive import _rocauc
from core.publishing import load_version
from models import serde
from pipelines import recommend
from simulator.stream import SimulatorConfig, generate
from stores.registry import open_registry

USERS, IMPRESSIONS, SEEDS = 600, 60_000, (7, 8, 9, 10, 11)
HALF_HOUR = 1_800_000
WINDOWS = range(-2, 6)  # half hours from the drift
MODES = ("off", "reset")


def run(seed: int, users: int, impressions: int, workdir: pathlib.Path) -> dict:
    config = SimulatorConfig(seed=seed, users=users, impressions=impressions)
    events = [e for e in generate(config) if isinstance(e, dict) and e.get("event_type")]
    shown = sorted((e for e in events if e["event_type"] == "impression"), key=lambda e: (e["event_time"], e["event_id"]))
    drift = shown[round(config.drift_at * impressions)]["event_time"]
    out = {"drift_event_time": drift}
    for mode in MODES:
        folder = workdir / f"{seed}-{mode}"
        started = time.monotonic()
        recommend.run(["--users", str(users), "--impressions", str(impressions), "--seed", str(seed), "--guard",
                       "--no_baselines", "--taste_alarm", mode, "--output", str(folder)])
        predictions = _predictions(folder / "predictions.jsonl")
        alarms = [a["event_time"] for a in map(json.loads, open(folder / "alerts.jsonl"))
                  if a["model_key"] == "user_features"]
        out[mode] = {"seconds": round(time.monotonic() - started, 1),
                     "alarm_minutes_after_drift": [round((a - drift) / 60_000, 1) for a in alarms],
                     "auc_by_half_hour": _by_half_hour(predictions, drift),
                     "replay": _replay(folder, events, predictions, drift, alarms)}
        before = _pooled_auc(predictions, drift - 2 * HALF_HOUR, drift)
        out[mode]["auc_hour_before"] = round(before, 4)
        out[mode]["gap"] = {k: round(v - before, 4) for k, v in out[mode]["auc_by_half_hour"].items()}
    return out


def _predictions(path: pathlib.Path) -> dict:
    """event id -> (event time, label, P(click)) of the main model's labelled predictions."""
    out = {}
    for line in open(path):
        p = json.loads(line)
        if p["model_key"] == recommend.MAIN and p["y_true"] is not None:
            out[p["event_id"]] = (p["event_time"], bool(p["y_true"]), (p.get("y_proba") or {}).get("True", 0.5))
    return out


def _pooled_auc(predictions: dict, since: int, until: int) -> float:
    pairs = [(y, p) for t, y, p in predictions.values() if since <= t < until]
    return _rocauc(pairs, sum(y for y, _ in pairs))


def _by_half_hour(predictions: dict, drift: int) -> dict:
    return {f"{k / 2:+.1f}h": round(_pooled_auc(predictions, drift + k * HALF_HOUR, drift + (k + 1) * HALF_HOUR), 4)
            for k in WINDOWS}


def _replay(folder: pathlib.Path, events: list, predictions: dict, drift: int, alarms: list) -> list:
    """Each retained version of the main model scored on the hour of the old regime."""
    features = reference_features(events, alarms)
    replay = [(impression_features({**e, "features": features[e["event_id"]]}), predictions[e["event_id"]][1])
              for e in events if e["event_type"] == "impression" and drift - 4 * HALF_HOUR <= e["event_time"] < drift - 2 * HALF_HOUR
              and e["event_id"] in predictions]
    location = str(folder / "registry.sqlite")
    registry, keys = open_registry(location), serde.store_key(location)
    try:
        out = []
        for version in registry.versions(recommend.MAIN):
            model = load_version(registry, version, keys)
            pairs = [(y, model.predict_proba_one(x).get(True, 0.5)) for x, y in replay]
            logloss = -sum(math.log(min(max(p if y else 1 - p, 1e-15), 1)) for y, p in pairs) / len(pairs)
            out.append({"version": version.version, "step": version.step,
                        "hours_after_drift": round((version.clock_ms - drift) / 3_600_000, 2),
                        "auc": round(_rocauc(pairs, sum(y for y, _ in pairs)), 4), "logloss": round(logloss, 4)})
        return out
    finally:
        registry.close()


def summarise(results: dict) -> dict:
    """Means over seeds of each mode's gaps, and the forgetting: the replay AUC of the last
    version and of the worst after the drift, against the last version before it."""
    out = {}
    for mode in MODES:
        gaps = [r[mode]["gap"] for r in results.values()]
        forgetting, worst = [], []
        for r in results.values():
            replay = r[mode]["replay"]
            before = [v for v in replay if v["hours_after_drift"] < 0]
            after = [v["auc"] for v in replay if v["hours_after_drift"] >= 0]
            if before and after:
                forgetting.append(replay[-1]["auc"] - before[-1]["auc"])
                worst.append(min(after) - before[-1]["auc"])
        out[mode] = {"mean_gap": {k: round(statistics.mean(g[k] for g in gaps), 4) for k in gaps[0]},
                     "seeds_within_0.03_in_first_hour": sum(g["+0.5h"] >= -0.03 for g in gaps),
                     "replay_auc_change_last_vs_before_drift": [round(f, 4) for f in forgetting],
                     "replay_auc_change_worst_vs_before_drift": [round(f, 4) for f in worst]}
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.adaptation", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", help="Write the results here.")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--quick", action="store_true", help="200 users, 20,000 impressions, seed 7 (for CI).")
    args = parser.parse_args(argv)
    users, impressions, seeds = (200, 20_000, [7]) if args.quick else (USERS, IMPRESSIONS, args.seeds)
    with tempfile.TemporaryDirectory() as tmp:
        results = {str(seed): run(seed, users, impressions, pathlib.Path(tmp)) for seed in seeds}
    report = {"setup": {"users": users, "impressions": impressions, "seeds": seeds}, "seeds": results,
              "summary": summarise(results)}
    text = json.dumps(report, indent=2)
    if args.json:
        pathlib.Path(args.json).write_text(text + "\n")
    print(text)
    return report


if __name__ == "__main__":
    main()
