"""The trade-off report: batch against real-time serving in the closed loop, and offline-only
against online against warm-started online learning, on the simulator's world, with one command.

    .venv/bin/python -m benchmarks.tradeoffs --output docs/bench/tradeoffs-2026-12-03
    .venv/bin/python -m benchmarks.tradeoffs --duration_s 120 --learning_json docs/bench/warm_start-2026-12-03.json

1. **Serving.** `pipelines.live --arms live,batch` for `--duration_s`: one streaming learner,
   two servers over its stores, and simulated users split between them for good (by a hash of
   the user id): the *live* arm ranks on arrival with the newest model and profiles; the *batch*
   arm answers from top lists that `pipelines.batch_serve` recomputes every `--batch_every_s`
   from the newest model and profiles (real-time ranking for a user or device it did not cover).
   The users start once the learner has caught up with the simulated history (`--caught_up`).
   Both log what they serve to the learner's topic. The users' tastes drift after
   `--drift_after_s`. From the users' truth (`truth.jsonl`: what each impression's true click
   probability was, what the best items would have had, and what the user did), per arm: CTR,
   expected CTR (the mean true click probability of what was shown, far less noisy than
   clicks), the share of the oracle's expected clicks (the simulator's best items for the
   user then, slot for slot: this one does not depend on which users an arm happened to
   get, and their tastes differ a lot), ROC AUC and log loss of the
   probability served against the click, the age of the features behind each answer (freshness)
   and the lookup latency the users saw; before and after the drift, and per minute.
2. **Learning.** `benchmarks.warm_start` (a day of history, then the default run cold, warm and
   offline-only), or its JSON from an earlier run (`--learning_json`).

Writes `report.md`, `tradeoffs.json` and `tradeoffs.png` (both halves) into `--output`.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import subprocess
import sys

from benchmarks import warm_start
from pipelines import live

ROOT = pathlib.Path(__file__).resolve().parent.parent
MINUTE_MS = 60_000


def serve(args, loop: pathlib.Path) -> list:
    """Runs the closed loop in `loop`; the truth of every impression shown, in serving order."""
    live.run(["--output", str(loop), "--arms", "live,batch", "--caught_up", "--duration_s", str(args.duration_s),
              "--batch_every_s", str(args.batch_every_s), "--drift_after_s", str(args.drift_after_s),
              "--visits_per_s", str(args.visits_per_s), "--port", str(args.port), "--status_s", "30",
              "--history", str(args.history), "--users", str(args.users)])
    rows = [json.loads(line) for line in open(loop / "truth.jsonl")]
    if not rows:
        raise SystemExit("the closed loop served nothing")
    return sorted(rows, key=lambda r: (r["served_at_ms"], r["impression_id"]))


def arm_report(rows: list) -> dict:
    """What one arm's users got."""
    scored = [(r["served_at_ms"], r["outcome"] == "click", r["probability"]) for r in rows
              if r["probability"] is not None]
    ages = sorted(r["served_at_ms"] - r["features_ms"] for r in rows)
    latencies = sorted({r["impression_id"].rsplit("-", 1)[0]: r["latency_ms"] for r in rows}.values())
    return {"impressions": len(rows), "ctr": round(sum(r["outcome"] == "click" for r in rows) / len(rows), 4),
            "expected_ctr": round(statistics.fmean(r["true_click_probability"] for r in rows), 4),
            "of_oracle": round(sum(r["true_click_probability"] for r in rows)
                               / sum(r["oracle_click_probability"] for r in rows), 4),
            **{f"served_{k}": v for k, v in warm_start.quality(scored).items()},
            "from_batch": round(sum(r["source"] == "batch" for r in rows) / len(rows), 4),
            "feature_age_s": {"p50": round(_pct(ages, 0.5) / 1000, 1), "p99": round(_pct(ages, 0.99) / 1000, 1)},
            "latency_ms": {"p50": round(_pct(latencies, 0.5), 2), "p99": round(_pct(latencies, 0.99), 2)}}


def serving_report(rows: list, args) -> dict:
    first = rows[0]["served_at_ms"]
    report = {"duration_s": args.duration_s, "drift_after_s": args.drift_after_s, "batch_every_s": args.batch_every_s,
              "visits_per_s": args.visits_per_s, "arms": {}, "minutes": {}}
    for arm in ("live", "batch"):
        mine = [r for r in rows if r["arm"] == arm]
        if not mine:
            raise SystemExit(f"no user of the {arm} arm was served")
        report["arms"][arm] = {"run": arm_report(mine),
                               "before_drift": arm_report([r for r in mine if not r["drifted"]] or mine),
                               "after_drift": arm_report([r for r in mine if r["drifted"]] or mine)}
        per_minute = {}
        for r in mine:
            per_minute.setdefault((r["served_at_ms"] - first) // MINUTE_MS, []).append(r)
        report["minutes"][arm] = [{"minute": m, "of_oracle": arm_report(group)["of_oracle"]}
                                  for m, group in sorted(per_minute.items())]
    return report


def table(serving: dict, learning: dict) -> str:
    lines = [f"Serving: {serving['duration_s']:g} s of closed loop, {serving['visits_per_s']:g} visits/s of 5 items, "
             f"batch recomputed every {serving['batch_every_s']:g} s, tastes drift after {serving['drift_after_s']:g} s",
             "", "| arm, part | impressions | CTR | expected CTR | of the oracle's | ROC AUC served | log loss served "
             "| from batch | feature age p50 / p99 (s) | latency p50 / p99 (ms) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for arm, parts in serving["arms"].items():
        for part, r in parts.items():
            lines.append(f"| {arm}, {part.replace('_', ' ')} | {r['impressions']:,} | {r['ctr']} | {r['expected_ctr']} "
                         f"| {r['of_oracle']:.1%} "
                         f"| {r['served_roc_auc']} | {r['served_log_loss']} | {r['from_batch']:.0%} "
                         f"| {r['feature_age_s']['p50']} / {r['feature_age_s']['p99']} "
                         f"| {r['latency_ms']['p50']} / {r['latency_ms']['p99']} |")
    return "\n".join(lines + ["", "Learning:", "", warm_start.table(learning)])


def plot(serving: dict, learning: dict, path: pathlib.Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.2))
    for arm, minutes in serving["minutes"].items():
        left.plot([m["minute"] for m in minutes], [m["of_oracle"] for m in minutes], marker="o",
                  label=f"{arm} serving")
    left.axvline(serving["drift_after_s"] / 60, color="grey", linestyle="--", label="taste drift")
    left.set_xlabel("minute of the closed loop")
    left.set_ylabel("expected clicks, share of the oracle's")
    left.set_title(f"Batch (every {serving['batch_every_s']:g} s) vs real-time serving")
    left.legend()
    for name in ("offline-only", "cold", "warm"):
        windows = learning[name]["windows"]
        right.plot([w["start_min"] for w in windows], [w["roc_auc"] for w in windows], marker="o", label=name)
    right.axvline(learning["impressions"] * 0.5 * 600 / 60_000, color="grey", linestyle="--", label="taste drift")
    right.set_xlabel(f"minutes of event time ({learning['window_minutes']:g} min windows)")
    right.set_ylabel("ROC AUC")
    right.set_title(f"Offline-only, online, warm-started ({learning['history_hours']:g} h of history)")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def learn(args, out: pathlib.Path) -> dict:
    if args.learning_json:
        return json.loads(pathlib.Path(args.learning_json).read_text())
    subprocess.run([sys.executable, "-m", "benchmarks.warm_start", "--history_hours", str(args.history_hours),
                    "--json", str(out / "learning.json")], check=True, cwd=ROOT)
    return json.loads((out / "learning.json").read_text())


def _pct(values: list, q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tradeoffs", description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default="out/tradeoffs", help="the report's folder (default: %(default)s)")
    parser.add_argument("--loop_dir", default="out/tradeoffs-loop",
                        help="the closed loop's stores, logs and truth (default: %(default)s)")
    parser.add_argument("--duration_s", type=float, default=900.0, help="of the closed loop (default: %(default)s)")
    parser.add_argument("--drift_after_s", type=float, help="(default: half the duration)")
    parser.add_argument("--batch_every_s", type=float, default=180.0, help="(default: %(default)s)")
    parser.add_argument("--visits_per_s", type=float, default=4.0, help="(default: %(default)s)")
    parser.add_argument("--history", type=int, default=3000, help="impressions of simulated history before the loop "
                                                                  "(default: %(default)s)")
    parser.add_argument("--users", type=int, default=1000, help="simulated users, split between the arms "
                                                                "(default: %(default)s)")
    parser.add_argument("--port", type=int, default=8100, help="the live arm's; the batch arm's is the next")
    parser.add_argument("--history_hours", type=float, default=24.0, help="benchmarks.warm_start's (default: %(default)s)")
    parser.add_argument("--learning_json", help="benchmarks.warm_start's results from an earlier run, instead of "
                                                "running it (it takes a few minutes)")
    args = parser.parse_args(argv)
    args.drift_after_s = args.duration_s / 2 if args.drift_after_s is None else args.drift_after_s
    out = pathlib.Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    serving = serving_report(serve(args, pathlib.Path(args.loop_dir)), args)
    learning = learn(args, out)
    results = {"serving": serving, "learning": learning}
    (out / "tradeoffs.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(serving, learning, out / "tradeoffs.png")
    (out / "report.md").write_text("# Trade-offs\n\n" + table(serving, learning)
                                   + "\n\n![batch vs real-time serving; learning modes](tradeoffs.png)\n")
    print(table(serving, learning))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
