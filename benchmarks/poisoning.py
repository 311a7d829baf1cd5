"""The poisoning run (issue 17): an attack the simulator knows, against the guarded main job and
its clean twin.

    .venv/bin/python -m benchmarks.poisoning --json out.json [--quick] [--kind flip|fake_clicks]

The simulator draws a stream and its twin, equal record for record but for the attackers'
outcomes: from half of the impressions on, 2% of the users (drawn apart from everything else)
answer every impression falsely ('flip': click what they would not, ignore what they would;
'fake_clicks': click all). `pipelines.recommend` learns each (its main model only), four ways:

- `twin`: the clean stream, unguarded, the model that never saw the attack;
- `attacked`: the attacked stream, unguarded;
- `guarded`: the attacked stream with `--guard`;
- `clean_guarded`: the clean stream with `--guard` (what the guard costs when nobody attacks).

Reported:
- detection: the poisoned labels (attackers' impressions after the attack began) before the first
  quarantine, and before each attacker's; attackers caught; honest users quarantined;
- rollbacks (the final version's guard summary), and the alerts: incidents by kind, with the
  drift and quality ones in full;
- log loss on the honest users' impressions, against the twin's on the same impressions: after
  the attack, and in the last quarter of the stream (after recovery).
"""
from __future__ import annotations

import argparse
import json
import math
import pathlib
import random
import tempfile
import time

from pipelines import recommend
from simulator.stream import Attack, SimulatorConfig, generate_with_truth
from simulator.world import World
from stores.registry import open_registry

USERS, IMPRESSIONS, SEED = 600, 60_000, 11
ATTACK = {"attack_users": 0.02, "attack_at": 0.5, "attack_rate": 1.0}
EPS = 1e-6


def run(kind: str, users: int, impressions: int, seed: int, workdir: pathlib.Path) -> dict:
    attack = {**ATTACK, "attack_kind": kind}
    config = SimulatorConfig(seed=seed, users=users, impressions=impressions, **attack)
    world = World(config, random.Random(f"{seed}:world"))
    attackers = set(Attack(config, world).user_ids)
    impressions_of = [(r, t) for r, t in generate_with_truth(config) if r["event_type"] == "impression"]
    user_of = {r["event_id"]: r["user_id"] for r, _ in impressions_of}
    poisoned = sorted((r["event_time"], r["user_id"]) for r, t in impressions_of if t.poisoned)
    attack_start = poisoned[0][0]
    flags = ["--users", str(users), "--impressions", str(impressions), "--seed", str(seed), "--no_baselines"]
    attack_flags = ["--attack_users", str(ATTACK["attack_users"]), "--attack_at", str(ATTACK["attack_at"]),
                    "--attack_kind", kind, "--attack_rate", str(ATTACK["attack_rate"])]
    runs = {"twin": [], "attacked": attack_flags, "guarded": attack_flags + ["--guard"],
            "clean_guarded": ["--guard"]}
    out, predictions, seconds = {}, {}, {}
    for name, extra in runs.items():
        started = time.monotonic()
        recommend.run(flags + extra + ["--output", str(workdir / name)])
        seconds[name] = round(time.monotonic() - started, 1)
        predictions[name] = _predictions(workdir / name / "predictions.jsonl", user_of)
    end = max(t for t, _, _, _ in predictions["twin"].values())
    last_quarter = attack_start + 0.5 * (end - attack_start)
    out["log_loss"] = {}
    for window, since in (("after_attack", attack_start), ("last_quarter", last_quarter)):
        honest = [i for i, (t, user, y, _) in predictions["twin"].items()
                  if t >= since and user not in attackers and y is not None]
        twin = _log_loss(predictions["twin"], honest)
        out["log_loss"][window] = {"impressions": len(honest), "twin": round(twin, 5), **{
            name: {"log_loss": round(_log_loss(predictions[name], honest), 5),
                   "vs_twin_pct": round(100 * (_log_loss(predictions[name], honest) / twin - 1), 2)}
            for name in ("attacked", "guarded", "clean_guarded")}}
    for name in ("guarded", "clean_guarded"):
        out[name] = _detection(workdir / name, attackers, poisoned, attack_start if name == "guarded" else None)
    out["seconds"] = seconds
    out["setup"] = {"users": users, "impressions": impressions, "seed": seed, **attack,
                    "attackers": sorted(attackers), "poisoned_impressions": len(poisoned),
                    "attack_event_time": attack_start,  # the simulator's taste drift is at the same impression
                    "taste_drift_event_time": abs(impressions_of[round(config.drift_at * impressions)][0]["event_time"])}
    return out


def _detection(folder: pathlib.Path, attackers: set, poisoned: list, attack_start: int | None) -> dict:
    """Who was quarantined when, from the dead letters; the guard's summary from the registry."""
    first = {}
    for line in open(folder / "dead_letters.jsonl"):
        record = json.loads(line)
        if record["stage"] == "LearnOnline" and record["reason"].startswith("quarantined: source "):
            user = record["reason"].split("source ", 1)[1]
            first[user] = min(first.get(user, math.inf), record["event_time"])
    registry = open_registry(str(folder / "registry.sqlite"))
    try:
        guard = registry.latest(recommend.MAIN).metrics.get("guard", {})
    finally:
        registry.close()
    alerts = [json.loads(line) for line in open(folder / "alerts.jsonl")]
    out = {"alerts": [{k: a[k] for k in ("signal", "kind", "event_time", "reason")} for a in alerts
                      if a["kind"] not in ("poisoning", "quarantine")],
           "incidents": {kind: sum(a["kind"] == kind for a in alerts) for kind in
                         sorted({a["kind"] for a in alerts})},
           "quarantined": len(first), "honest_quarantined": sorted(set(first) - attackers),
           "attackers_caught": len(set(first) & attackers), "attackers": len(attackers), "guard": guard}
    if attack_start is not None and first:
        def before(t):
            return sum(1 for when, _ in poisoned if when < t)
        caught = sorted((t, u) for u, t in first.items() if u in attackers)
        out["poisoned_before_first_quarantine"] = before(min(first.values()))
        out["poisoned_before_each_attacker"] = [before(t) for t, _ in caught]
        out["poisoned_of_attackers_not_caught"] = sorted(sum(1 for _, u in poisoned if u == user)
                                                         for user in attackers - set(first))
    return out


def _predictions(path: pathlib.Path, user_of: dict) -> dict:
    """event id -> (event time, user, label, P(click)) of the main model's predictions."""
    out = {}
    for line in open(path):
        p = json.loads(line)
        if p["model_key"] == recommend.MAIN:
            out[p["event_id"]] = (p["event_time"], user_of.get(p["event_id"]), p["y_true"],
                                  (p.get("y_proba") or {}).get("True"))
    return out


def _log_loss(predictions: dict, ids: list) -> float:
    total = 0.0
    for i in ids:
        _, _, y, p = predictions[i]
        p = min(max(p if p is not None else 0.5, EPS), 1 - EPS)
        total -= math.log(p if y else 1 - p)
    return total / len(ids)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.poisoning", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", help="Write the results here.")
    parser.add_argument("--kind", choices=("flip", "fake_clicks"), default="flip")
    parser.add_argument("--quick", action="store_true", help="200 users, 20,000 impressions (for CI).")
    args = parser.parse_args(argv)
    users, impressions = (200, 20_000) if args.quick else (USERS, IMPRESSIONS)
    with tempfile.TemporaryDirectory() as workdir:
        results = run(args.kind, users, impressions, SEED, pathlib.Path(workdir))
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        pathlib.Path(args.json).write_text(text + "\n")
    return results


if __name__ == "__main__":
    main()
