"""Drift detection (issue 17): river's detectors on simulated streams whose changes are known,
tuned on some seeds and scored on others, beside river's defaults on the same streams.

    .venv/bin/python -m benchmarks.drift --json out.json [--tune] [--quick]

The streams are labelled predictions (`monitoring.drift` watches their log loss, residual and
a key feature):
- stationary: users' click probabilities p ~ Beta(2, 38) (a 5% CTR), predicted exactly, and a
  key feature (log-normal) that does not move;
- a CTR shift: the same, with every label's probability 1.2 times p from event 20,000 on (5% ->
  6%), which the predictions do not know;
- the simulator's taste drift, through the main job's own model: `pipelines.recommend`'s
  predictions, in event-time order, with the drift's time from its events.

Reported: false alarms per million stationary events; the CTR shift's median delay (events
after the change to the first alarm; a run with none within 60,000 counts as never) and its
misses; the taste drift's delay and the alarms before it. `--tune` first picks each signal's
parameters on seeds 1000+ (the fastest median delay with no false alarm in the tuning
events); scoring uses what it picked, else `monitoring.drift.TUNED` (what it picked last), and
seeds 0+.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import tempfile
import time

import numpy as np

from monitoring.drift import FEATURE, TUNED, Monitor, Spec

CHANGE_AT, AFTER = 20_000, 60_000
INCIDENT = 5_000  # alarms this close to the one before are the same incident (one click burst moves two signals)
TUNING_SEED = 1000
DEFAULTS = {"log_loss": Spec("PageHinkley", {"mode": "up"}), "residual": Spec("PageHinkley"),
            "feature:activity": Spec("ADWIN")}
GRID = {"log_loss": [Spec("PageHinkley", {"mode": "up", "alpha": 1.0, "min_instances": 1000, "delta": d,
                                          "threshold": h}) for d in (0.01, 0.015) for h in (80, 100, 130, 170, 220, 280)],
        "residual": [Spec("PageHinkley", {"mode": "both", "alpha": 1.0, "min_instances": 1000, "delta": d,
                                          "threshold": h}) for d in (0.004, 0.005) for h in (30, 40, 50, 65, 80, 100)]}


def stream(seed: int, n: int, change_at: int | None = None, factor: float = 1.2, activity_shift: float = 0.0):
    """(y, p, x) of `n` labelled predictions; from `change_at` on, labels' probabilities times
    `factor` and the key feature plus `activity_shift`."""
    rng = np.random.default_rng(seed)
    p = rng.beta(2, 38, n)
    truth = p.copy()
    if change_at is not None:
        truth[change_at:] *= factor
    y = rng.random(n) < truth
    activity = rng.lognormal(1.0, 0.5, n)
    if change_at is not None:
        activity[change_at:] += activity_shift
    return zip(y.tolist(), p.tolist(), ({"activity": a} for a in activity.tolist()))


def false_alarms(signals: dict[str, Spec], seeds, n: int) -> dict:
    """Alarms per signal over `n` stationary events of each seed, per million events, and the
incidents they make (alarms within INCIDENT events of the one before are one)."""
    counts, incidents = {s: 0 for s in signals}, 0
    for seed in seeds:
        monitor = Monitor(signals)
        for y, p, x in stream(seed, n):
            monitor.update(y, p, x)
        for alarm in monitor.alarms:
            counts[alarm.signal] += 1
        at = [a.at for a in monitor.alarms]
        incidents += sum(1 for i, t in enumerate(at) if i == 0 or t - at[i - 1] > INCIDENT)
    total = n * len(seeds)
    return {"events": total, "alarms": counts, "per_million": sum(counts.values()) / total * 1e6,
            "incidents": incidents, "incidents_per_million": incidents / total * 1e6}


def shift_delays(signals: dict[str, Spec], seeds) -> dict:
    """Per run: the delay of the first alarm after the CTR shift (None: none within AFTER), and
    the alarms before it; the median delay (never counts as infinite) and the misses."""
    delays, early, by = [], 0, {}
    for seed in seeds:
        monitor, delay = Monitor(signals), None
        for i, (y, p, x) in enumerate(stream(seed, CHANGE_AT + AFTER, CHANGE_AT)):
            for alarm in monitor.update(y, p, x):
                if i < CHANGE_AT:
                    early += 1
                elif delay is None:
                    delay = i - CHANGE_AT + 1
                    by[alarm.signal] = by.get(alarm.signal, 0) + 1
            if delay is not None:
                break
        delays.append(delay)
    finite = sorted(d if d is not None else float("inf") for d in delays)
    median = statistics.median(finite)
    return {"runs": len(seeds), "median_delay": None if median == float("inf") else median,
            "missed": sum(d is None for d in delays), "alarms_before_change": early, "first_by": by,
            "quartiles": [finite[len(finite) // 4], finite[3 * len(finite) // 4]]}


def tune(runs: int, events: int) -> dict:
    """Each signal's grid point with no false alarm in `events` stationary tuning events and
    the least median delay over `runs` tuning shifts."""
    chosen = {}
    for signal, grid in GRID.items():
        rows, quiet = [], set()
        for spec in grid:  # thresholds ascending per delta: past the first quiet one, only slower
            if spec.params["delta"] in quiet:
                continue
            alarms = false_alarms({signal: spec}, range(TUNING_SEED, TUNING_SEED + 3), events // 3)["alarms"][signal]
            delay = shift_delays({signal: spec}, range(TUNING_SEED + 10, TUNING_SEED + 10 + runs))["median_delay"] \
                if alarms == 0 else None
            rows.append({"spec": str(spec), "false_alarms": alarms, "median_delay": delay})
            if alarms == 0:
                quiet.add(spec.params["delta"])
            print(f"tune {signal}: {spec}: {alarms} false alarms, median delay {delay}", flush=True)
        ok = sorted((r["median_delay"], r["spec"]) for r in rows if r["false_alarms"] == 0 and r["median_delay"])
        chosen[signal] = {"grid": rows, "chosen": ok[0][1] if ok else None,
                          "spec": next(g for g in grid if str(g) == ok[0][1]) if ok else None}
    return chosen


def taste_drift(configs: dict[str, dict[str, Spec]], impressions: int, seed: int) -> dict:
    """The main job's model over a simulated stream whose tastes drift at half, watched by each
    of `configs`: the first alarm's delay after the drift (in labelled predictions), and the
    alarms before it."""
    import fastavro

    from pipelines import recommend

    with tempfile.TemporaryDirectory(prefix="bench-drift-") as tmp:
        recommend.run(["--impressions", str(impressions), "--seed", str(seed), "--output", tmp])
        with open(f"{tmp}/events.avro", "rb") as f:
            shown = [r["event_time"] for r in fastavro.reader(f) if r["event_type"] == "impression"]
        drift_ms = shown[round(0.5 * len(shown))]  # simulator.SimulatorConfig's drift_at
        with open(f"{tmp}/predictions.jsonl") as f:
            rows = [r for r in map(json.loads, f) if r["model_key"] == "recommender"]
    rows.sort(key=lambda r: (r["event_time"], r["event_id"]))
    results = {"impressions": impressions, "seed": seed, "predictions": len(rows),
               "after_drift": sum(r["event_time"] >= drift_ms for r in rows)}
    for name, signals in configs.items():
        monitor = Monitor({k: v for k, v in signals.items() if not k.startswith("feature")})
        before, after, first = 0, 0, None
        for r in rows:
            alarms = monitor.update(bool(r["y_true"]), r["y_proba"]["True"])
            if r["event_time"] < drift_ms:
                before += len(alarms)
            else:
                after += 1
                if alarms and first is None:
                    first = {"events": after, "signal": alarms[0].signal}
        results[name] = {"alarms_before_drift": before, "first_alarm_after_drift": first,
                         "alarms_after_drift": len(monitor.alarms) - before}
    return results


def run(args) -> dict:
    scale = 10 if args.quick else 1
    started = time.perf_counter()
    tuning = tune(40 // scale, 6_000_000 // scale) if args.tune else None
    tuned = {**TUNED, **({k: v.pop("spec") for k, v in tuning.items() if v["spec"]} if tuning else {}),
             "feature:activity": FEATURE}
    results = {"tuning": tuning}
    for name, signals in (("tuned", tuned), ("river_defaults", DEFAULTS)):
        results[name] = {"signals": {k: str(v) for k, v in signals.items()},
                         "stationary": false_alarms(signals, range(3), 1_000_000 // scale),
                         "ctr_shift": shift_delays(signals, range(10, 10 + 200 // scale))}
        print(name, json.dumps(results[name]), flush=True)
    if args.taste_impressions:
        results["taste_drift"] = taste_drift({"tuned": tuned, "river_defaults": DEFAULTS}, args.taste_impressions, 7)
    results["seconds"] = round(time.perf_counter() - started)
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.drift", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tune", action="store_true", help="pick the parameters first (tuning seeds)")
    parser.add_argument("--quick", action="store_true", help="a tenth of the events and runs (CI)")
    parser.add_argument("--taste_impressions", type=int, default=40_000,
                        help="the taste-drift run's size (0: skip; default: %(default)s)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    results = run(args)
    print(json.dumps(results, indent=2))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
