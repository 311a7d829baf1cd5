"""Drift detection (issue 17): `monitoring.drift`'s detectors on simulated streams whose changes
are known, tuned on some seeds and scored on others, beside river's defaults on the same streams.

    .venv/bin/python -m benchmarks.drift --json out.json [--tune] [--quick]

The streams are labelled predictions (`monitoring.drift` watches their calibration, log loss,
residual and a key feature):
- stationary: users' click probabilities p ~ Beta(2, 38) (a 5% CTR), predicted exactly, and a
  key feature (log-normal) that does not move;
- a CTR shift: the same, with every label's probability 1.2 times p from event 20,000 on (5% ->
  6%), which the predictions do not know;
- a feature shift: the same, with the key feature's log-mean up `FEATURE_SHIFT` from event
  20,000 on (its mean about 10% up), the labels as before;
- the simulator's taste drift, through the main job's own model: `pipelines.recommend`'s
  predictions, in event-time order, with the drift's time from its events.

Reported, per configuration (`tuned`: `monitoring.drift.TUNED` or what `--tune` picks; the
PageHinkley ones tuned before the CUSUM; river's defaults): false alarms per million stationary
events; each shift's median delay (events after the change to the first alarm; a run with none
within 60,000 counts as never) and its misses; the taste drift's delay and the alarms before it.
And the floor: the oracle, a one-sided CUSUM for exactly this change (ratio 1.2 up) at one false
alarm per million, the optimal test for it (Lorden, Moustakides): no detector's delay at that
rate is much below its. With the theory: the information per event, Siegmund's thresholds.

`--tune` first, on seeds 1000+: the CUSUMs' thresholds, from Siegmund's approximation, then
fitted to the false alarms they raise at lower thresholds on stationary events (log rate linear
in the threshold) and solved for the rate wanted (`CALIBRATION_RATE` per million; the oracle's,
one); the feature's ADWIN, the fastest median delay on feature shifts with no false alarm in the
tuning events. Scoring uses what it picked, else `TUNED` and `ORACLE` (what it picked last), and
seeds 0+.
"""
from __future__ import annotations

import argparse
import json
import math
import pathlib
import statistics
import tempfile
import time

import numpy as np

from monitoring.drift import EPS, FEATURE, LOG_LOSS, Monitor, Spec, TUNED

CHANGE_AT, AFTER = 20_000, 60_000
INCIDENT = 5_000  # alarms this close to the one before are the same incident (one click burst moves two signals)
TUNING_SEED = 1000
RATIO = 1.2  # the CTR shift's, which the CUSUMs are designed for
FEATURE_SHIFT = 0.1  # the key feature's log-mean, up
CALIBRATION_RATE = 0.5  # the CUSUM's false alarms per million: half the monitor's budget of one
FIT_THRESHOLDS = (5.0, 6.0, 7.0, 8.0)
ORACLE = Spec("BernoulliCUSUM", {"ratio": RATIO, "mode": "up", "threshold": 7.08})
PAGEHINKLEY = {"log_loss": LOG_LOSS,
               "residual": Spec("PageHinkley", {"mode": "both", "delta": 0.004, "threshold": 50.0, "alpha": 1.0,
                                                "min_instances": 1000}),
               "feature:activity": Spec("ADWIN", {"delta": 1e-7})}  # TUNED of docs/bench/drift-2026-12-03.json
DEFAULTS = {"log_loss": Spec("PageHinkley", {"mode": "up"}), "residual": Spec("PageHinkley"),
            "feature:activity": Spec("ADWIN")}
FEATURE_GRID = [Spec("ADWIN", {"delta": d}) for d in (1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8)]  # slower and quieter


def stream(seed: int, n: int, change_at: int | None = None, factor: float = RATIO, activity_shift: float = 0.0):
    """(y, p, x) of `n` labelled predictions; from `change_at` on, labels' probabilities times
    `factor` and the key feature's log-mean plus `activity_shift`."""
    rng = np.random.default_rng(seed)
    p = rng.beta(2, 38, n)
    truth = p.copy()
    if change_at is not None:
        truth[change_at:] *= factor
    y = rng.random(n) < truth
    activity = rng.lognormal(1.0, 0.5, n)
    if change_at is not None:
        activity[change_at:] *= math.exp(activity_shift)
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


def shift_delays(signals: dict[str, Spec], seeds, factor: float = RATIO, activity_shift: float = 0.0) -> dict:
    """Per run: the delay of the first alarm after the shift (None: none within AFTER), and the
    alarms before it; the median delay (never counts as infinite) and the misses."""
    delays, early, by = [], 0, {}
    for seed in seeds:
        monitor, delay = Monitor(signals), None
        for i, (y, p, x) in enumerate(stream(seed, CHANGE_AT + AFTER, CHANGE_AT, factor, activity_shift)):
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
            "mean_delay": round(statistics.mean(d for d in delays if d is not None)) if any(delays) else None,
            "missed": sum(d is None for d in delays), "alarms_before_change": early, "first_by": by,
            "quartiles": [finite[len(finite) // 4], finite[3 * len(finite) // 4]]}


def theory(ratio: float = RATIO, rate: float = CALIBRATION_RATE, n: int = 1_000_000) -> dict:
    """Information per event (nats) with p ~ Beta(2, 38): `before`, of labels at p against p *
    ratio (up) or p / ratio (down), the CUSUM statistic's drift down before a change; `after`, of
    labels at p * ratio against p (the 5% -> 6% shift). Siegmund's thresholds: the oracle's at one
    false alarm per million, the two-sided CUSUM's at `rate` (each side half of it); the oracle's
    mean delay, (h - 1 + e^-h) / after; Lorden's asymptote, ln(1e6 * after) / after."""
    p = np.random.default_rng(99).beta(2, 38, n)

    def kl(a, b):
        return float(np.mean(a * np.log(a / b) + (1 - a) * np.log((1 - a) / (1 - b))))
    up, down, after = kl(p, np.minimum(p * ratio, 1 - EPS)), kl(p, p / ratio), kl(np.minimum(p * ratio, 1 - EPS), p)
    oracle = siegmund(1e6, up)
    return {"information_before": {"up": up, "down": down}, "information_after": after,
            "oracle_threshold": oracle, "oracle_mean_delay": (oracle - 1 + math.exp(-oracle)) / after,
            "lorden_delay": math.log(1e6 * after) / after,
            "two_sided_threshold": max(siegmund(2e6 / rate, up), siegmund(2e6 / rate, down))}


def siegmund(arl: float, information: float) -> float:
    """The threshold h with (e^h - h - 1) / information = arl: a one-sided CUSUM's mean run to a
    false alarm, by Siegmund's approximation."""
    h = math.log(arl * information + 1)
    for _ in range(100):
        h = math.log(arl * information + h + 1)
    return h


def cusum_alarms(specs: list[Spec], seeds, n: int) -> list[int]:
    """Each CUSUM's alarms over `n` stationary events of each seed (the same events for all)."""
    counts = [0] * len(specs)
    for seed in seeds:
        detectors = [spec.make() for spec in specs]
        for y, p, _ in stream(seed, n):
            for i, detector in enumerate(detectors):
                detector.update((y, p))
                counts[i] += detector.drift_detected
    return counts


def fit_thresholds(params: dict[str, dict], rates: dict[str, float], events: int, fallback: dict) -> dict:
    """Per CUSUM (`params` without the threshold): its alarms at FIT_THRESHOLDS on `events`
    stationary tuning events; log rate fitted linear in the threshold (weighted by the counts),
    solved for `rates` (per million), else (alarms at fewer than two) `fallback`'s; the alarms at
    the threshold found, on the same events."""
    seeds = range(TUNING_SEED, TUNING_SEED + 3)
    specs = [Spec("BernoulliCUSUM", {**ps, "threshold": h}) for ps in params.values() for h in FIT_THRESHOLDS]
    counts = cusum_alarms(specs, seeds, events // 3)
    fits, k = {}, len(FIT_THRESHOLDS)
    for j, name in enumerate(params):
        c = np.array(counts[j * k:(j + 1) * k], dtype=float)
        hs = np.array(FIT_THRESHOLDS)[c > 0]
        if len(hs) >= 2:
            slope, intercept = np.polyfit(hs, np.log(c[c > 0] / events * 1e6), 1, w=np.sqrt(c[c > 0]))
            slope, h = float(slope), round(float((math.log(rates[name]) - intercept) / slope), 2)
        else:  # too few alarms to fit (a short run)
            slope, h = None, round(float(fallback[name]), 2)
        fits[name] = {"alarms": dict(zip(FIT_THRESHOLDS, c.astype(int).tolist())), "events": events,
                      "slope": slope, "threshold": h, "spec": Spec("BernoulliCUSUM", {**params[name], "threshold": h})}
        print(f"tune {name}: alarms {fits[name]['alarms']}, slope {slope}: threshold {h}", flush=True)
    checked = cusum_alarms([f["spec"] for f in fits.values()], seeds, events // 3)
    for f, c in zip(fits.values(), checked):
        f["alarms_at_threshold"] = c
    return fits


def tune(runs: int, events: int) -> dict:
    """The CUSUMs' thresholds (`fit_thresholds`), the tuned one's median delay over `runs`
    tuning CTR shifts; the feature's ADWIN: the first of FEATURE_GRID (fastest first) with no
    false alarm in `events` stationary tuning events, and its median delay on feature shifts."""
    shifts = range(TUNING_SEED + 10, TUNING_SEED + 10 + runs)
    prior = theory()
    fits = fit_thresholds({"calibration": {"ratio": RATIO}, "oracle": {"ratio": RATIO, "mode": "up"}},
                          {"calibration": CALIBRATION_RATE, "oracle": 1.0}, events,
                          {"calibration": prior["two_sided_threshold"], "oracle": prior["oracle_threshold"]})
    fits["calibration"]["ctr_shift"] = shift_delays({"calibration": fits["calibration"]["spec"]}, shifts)
    rows, chosen = [], None
    for spec in FEATURE_GRID:
        alarms = false_alarms({"feature:activity": spec}, range(TUNING_SEED, TUNING_SEED + 3), events // 3)
        alarms = alarms["alarms"]["feature:activity"]
        delay = shift_delays({"feature:activity": spec}, shifts, 1.0, FEATURE_SHIFT)["median_delay"]
        rows.append({"spec": str(spec), "false_alarms": alarms, "median_delay": delay})
        print(f"tune feature: {spec}: {alarms} false alarms, median delay {delay}", flush=True)
        if alarms == 0:
            chosen = spec
            break
    fits["feature:activity"] = {"grid": rows, "spec": chosen}
    return fits


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
    picked = {k: v.pop("spec") for k, v in (tuning or {}).items()}
    tuned = {**TUNED, "feature:activity": FEATURE, **{k: v for k, v in picked.items() if v and k != "oracle"}}
    oracle = picked.get("oracle") or ORACLE
    results = {"tuning": tuning, "theory": theory()}
    stationary, shifts = range(3), range(10, 10 + 200 // scale)
    for name, signals in (("tuned", tuned), ("pagehinkley", PAGEHINKLEY), ("river_defaults", DEFAULTS)):
        results[name] = {"signals": {k: str(v) for k, v in signals.items()},
                         "stationary": false_alarms(signals, stationary, 1_000_000 // scale),
                         "ctr_shift": shift_delays(signals, shifts),
                         "feature_shift": shift_delays({"feature:activity": signals["feature:activity"]}, shifts,
                                                       1.0, FEATURE_SHIFT)}
        print(name, json.dumps(results[name]), flush=True)
    results["oracle"] = {"signals": {"calibration": str(oracle)},
                         "stationary": false_alarms({"calibration": oracle}, stationary, 1_000_000 // scale),
                         "ctr_shift": shift_delays({"calibration": oracle}, shifts)}
    print("oracle", json.dumps(results["oracle"]), flush=True)
    if args.taste_impressions:
        results["taste_drift"] = taste_drift({"tuned": tuned, "pagehinkley": PAGEHINKLEY, "river_defaults": DEFAULTS},
                                             args.taste_impressions, 7)
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
    print(json.dumps(results, indent=2, default=str))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(results, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
