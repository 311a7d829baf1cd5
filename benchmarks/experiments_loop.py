"""Experiments through the real serving process: a few cases on the live closed loop
(`pipelines.live --experiment`), each decided by the owner as the simulated-population
benchmark (`benchmarks.experiments`) says it should be.

    .venv/bin/python -m benchmarks.experiments_loop [--duration_s 120] [--json out.json]

- `bad-canary`: a model that predicts 0.9 for everything, on half the users: aborted;
- `aa`: the main model against a twin of the same spec, each learning from what it served: no
  decision (an A/A test that "finds" an effect is a false positive);
- `bandit`: the main model against one that scores every item 0.5 (so ranks them in no order):
  Thompson sampling moves the traffic to the main model.

Each case runs the loop for `--duration_s` seconds on a fresh topic (300 users, 8 visits/s,
10 s attribution window) and reads the owner's last state and events from the store.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile

from stores.experiments import open_experiment_store

ROOT = pathlib.Path(__file__).resolve().parent.parent
CASES = {  # case: (experiment file, its name, what the owner must have decided)
    "bad-canary": ("docs/experiments/bad-canary.json", "bad-canary", "aborted"),
    "aa": ("docs/experiments/aa.json", "ranker-aa", "continue"),
    "bandit": ("docs/experiments/bandit.json", "ranker-bandit", "champion favoured"),
}


def run_case(case: str, duration_s: float, port: int, bootstrap: str) -> dict:
    spec, name, expected = CASES[case]
    with tempfile.TemporaryDirectory(prefix=f"exp-loop-{case}-") as out:
        subprocess.run([sys.executable, "-m", "pipelines.live", "--output", out, "--port", str(port),
                        "--bootstrap", bootstrap, "--topic", f"exp-loop-{case}.interactions", "--kafka_out",
                        f"exp-loop-{case}", "--history", "600", "--users", "300", "--visits_per_s", "8",
                        "--attribution_s", "10", "--allowed_lateness_s", "2", "--status_s", "30",
                        "--duration_s", str(duration_s), "--experiment", spec],
                       cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        store = open_experiment_store(f"{out}/registry.sqlite")
        state, events = store.get(name).state, [e for _, _, e in store.events(name)]
        store.close()
    got = _outcome(state, events)
    return {"case": case, "expected": expected, "got": got, "as_expected": got == expected,
            "summary": state.get("summary"), "events": events,
            **{k: state[k] for k in ("test", "probabilities") if k in state}}


def _outcome(state: dict, events: list) -> str:
    if "probabilities" in state:
        return "champion favoured" if state["probabilities"].get("champion", 0) > 0.8 else "not yet"
    if state.get("state") in ("aborted", "promoted"):
        return state["state"]
    return state.get("decision", {}).get("action", "continue")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.experiments_loop", description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration_s", type=float, default=120.0, help="seconds per case (default: %(default)s)")
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8290)
    parser.add_argument("--bootstrap", default="127.0.0.1:19092")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    results = [run_case(case, args.duration_s, args.port, args.bootstrap) for case in args.cases.split(",")]
    for r in results:
        print(f"{r['case']}: expected {r['expected']}, got {r['got']}; "
              + "; ".join(f"{v}: {s['users']} users, CTR {s['ctr']:.3f}" for v, s in (r["summary"] or {}).items()
                          if s.get("ctr") is not None))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(results, indent=2, default=str) + "\n")
    return 0 if all(r["as_expected"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
